//! `diskvault unforget`: bring forgotten points back.

use std::path::PathBuf;

use clap::Args;
use diskvault::PointId;
use serde::Serialize;

use crate::cli::output::print_json;
use crate::cli::{exit, Globals, PassArgs};

/// Bring forgotten points back (before prune has freed them).
#[derive(Args, Debug)]
pub struct UnforgetArgs {
    repo: PathBuf,
    #[arg(value_name = "POINT", required = true)]
    points: Vec<String>,
    /// Print the points brought back as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// `unforget --json`: the points brought back.
#[derive(Serialize)]
struct UnforgetJson {
    unforgotten: Vec<PointId>,
}

/// Unforgets the points named.
pub fn run(a: UnforgetArgs, g: &Globals) -> anyhow::Result<i32> {
    let r = g.open(&a.repo, &a.pass)?;
    let ids = diskvault::unforget(&r, &a.points)?;
    if a.json {
        print_json(&UnforgetJson { unforgotten: ids });
        return Ok(exit::OK);
    }
    for id in ids {
        out!("unforgot {}", id.short());
    }
    Ok(exit::OK)
}

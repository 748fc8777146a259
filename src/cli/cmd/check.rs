//! `diskvault check`: verify the repository's structure, and with
//! `--read-data` every chunk.

use std::path::PathBuf;

use clap::Args;
use diskvault::{CheckOptions, CheckReport};
use serde::Serialize;

use crate::cli::args::parse_threads;
use crate::cli::human::size;
use crate::cli::output::print_json;
use crate::cli::{exit, Globals, PassArgs};

/// Verify the repository: structure, and with --read-data every chunk.
#[derive(Args, Debug)]
pub struct CheckArgs {
    repo: PathBuf,
    /// Read, decrypt and verify every chunk.
    #[arg(long)]
    read_data: bool,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// `check --json`: the library's report and whether it found nothing
/// wrong.
#[derive(Serialize)]
struct CheckJson<'a> {
    /// True when no problem was found.
    ok: bool,
    /// Whether every chunk was read (`--read-data`).
    read_data: bool,
    #[serde(flatten)]
    report: &'a CheckReport,
}

/// Checks; exits 4 when something is wrong.
pub fn run(a: CheckArgs, g: &Globals) -> anyhow::Result<i32> {
    let r = g.open(&a.repo, &a.pass)?;
    let bar = g.bar("check");
    let report = diskvault::check(
        &r,
        &CheckOptions {
            read_data: a.read_data,
            threads: a.threads,
            progress: bar.progress(),
        },
    );
    bar.finish();
    let report = report?;
    if a.json {
        print_json(&CheckJson {
            ok: report.is_ok(),
            read_data: a.read_data,
            report: &report,
        });
    } else {
        render(&report, a.read_data);
    }
    Ok(if report.is_ok() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

fn render(rep: &CheckReport, read_data: bool) {
    out!(
        "checked {} points, {} index files, {} packs, {} chunks{}",
        rep.points,
        rep.index_files,
        rep.packs,
        rep.chunks,
        if read_data {
            format!(
                " ({} verified, {} read)",
                rep.chunks_verified,
                size(rep.bytes_read)
            )
        } else {
            " (structure only; --read-data verifies every chunk)".into()
        }
    );
    if rep.unindexed_packs > 0 {
        out!(
            "note: {} packs are not indexed yet (left by an interrupted backup); the next backup reuses them",
            rep.unindexed_packs
        );
    }
    for stray in &rep.strays {
        out!("note: {stray} is not where an object lives (ignored by every command); remove it if nothing else put it there");
    }
    if rep.stale_temporaries > 0 {
        out!(
            "note: {} temporary files under tmp/ are over an hour old (left by commands that were killed); the next backup, sync or prune removes them",
            rep.stale_temporaries
        );
    }
    if rep.is_ok() {
        out!("no problems found");
        return;
    }
    out!("{} problems found:", rep.problems.len());
    for p in &rep.problems {
        out!("  {}: {}", p.object, p.reason);
        if !p.affected_points.is_empty() {
            let ids: Vec<String> = p.affected_points.iter().map(|i| i.short()).collect();
            out!("    affects points: {}", ids.join(" "));
        }
    }
    if rep.problems.iter().any(|p| p.object.starts_with("index/")) {
        out!("to rebuild damaged index files from the packs: diskvault repair REPO --index");
    }
    out!(
        "to mend the rest from a replica: diskvault repair REPO --from REPLICA (points not listed above restore as they are)"
    );
}

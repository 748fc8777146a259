//! `diskvault unlock`: remove stale locks (or every lock).

use std::path::PathBuf;

use clap::Args;
use diskvault::LockInfo;
use serde::Serialize;

use crate::cli::output::print_json;
use crate::cli::{exit, location, lock_options, Globals};

/// Remove stale locks (left by commands that died), or with --all every
/// lock. Needs no passphrase.
#[derive(Args, Debug)]
pub struct UnlockArgs {
    repo: PathBuf,
    /// Remove every lock, also those of commands still running: only
    /// when you know they are gone (on another machine, say).
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

/// A lock in `unlock --json`: the library's record and its description.
#[derive(Serialize)]
struct LockJson<'a> {
    #[serde(flatten)]
    lock: &'a LockInfo,
    description: String,
}

impl<'a> LockJson<'a> {
    fn of(lock: &'a LockInfo) -> Self {
        LockJson {
            lock,
            description: lock.describe(),
        }
    }
}

/// `unlock --json`: the locks removed and those still held.
#[derive(Serialize)]
struct UnlockJson<'a> {
    removed: Vec<LockJson<'a>>,
    remaining: Vec<LockJson<'a>>,
}

/// Removes the locks and says which are left.
pub fn run(a: UnlockArgs, g: &Globals) -> anyhow::Result<i32> {
    let location = location(&a.repo)?;
    // Refuse a path that is no repository before touching it.
    location.read_config()?;
    let opts = lock_options(&g.lock);
    if a.all {
        note!(
            "warning: removing every lock of {}, also those of commands that may still be running; a prune or backup running now is no longer protected",
            a.repo.display()
        );
    }
    let removed = diskvault::repo::lock::remove_locks(location.store().as_ref(), a.all, &opts)?;
    let left = diskvault::repo::lock::list_locks(location.store().as_ref(), &opts)?;
    if a.json {
        print_json(&UnlockJson {
            removed: removed.iter().map(LockJson::of).collect(),
            remaining: left.iter().map(LockJson::of).collect(),
        });
    } else {
        render(&removed, &left);
    }
    Ok(exit::OK)
}

fn render(removed: &[LockInfo], left: &[LockInfo]) {
    for l in removed {
        match &l.stale {
            Some(why) => out!("removed {} ({why})", l.describe()),
            None => out!("removed {}", l.describe()),
        }
    }
    if removed.is_empty() {
        out!("no stale locks");
    }
    for l in left {
        out!("still held: {}", l.describe());
    }
}

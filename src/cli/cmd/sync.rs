//! `diskvault sync`: copy recovery points to a replica.

use std::path::PathBuf;

use clap::Args;
use diskvault::{ObjectTally, SyncOptions, SyncReport};
use serde::Serialize;

use crate::cli::args::parse_threads;
use crate::cli::human::{plural, rate, size};
use crate::cli::output::print_json;
use crate::cli::{exit, location, lock_options, Globals, PassArgs};

/// Copy recovery points to a replica, sending only the objects it lacks
/// (verbatim and still encrypted: no passphrase needed).
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The repository to copy from.
    src: PathBuf,
    /// A replica of SRC, or a new or empty directory to create one in.
    dst: PathBuf,
    /// Send only points whose id starts with PREFIX (repeatable, or
    /// comma-separated); `latest` needs the passphrase.
    #[arg(long = "points", value_name = "PREFIX", value_delimiter = ',')]
    points: Vec<String>,
    /// Send only points with this tag (repeatable; needs the passphrase).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Open and verify every chunk of every copied pack (needs the passphrase).
    #[arg(long)]
    verify: bool,
    /// Objects copied at once (default: --connections, 8).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
    /// Make DST's live points exactly SRC's live (selected) points:
    /// forget in DST what SRC forgot or no longer has, unforget what
    /// SRC has live. Deletes nothing; DST's own prune frees the space
    /// after its grace period (needs the passphrase).
    #[arg(long)]
    delete: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// `sync --json`: the library's report and two figures derived from it.
#[derive(Serialize)]
struct SyncJson<'a> {
    #[serde(flatten)]
    report: &'a SyncReport,
    /// Bytes copied per second.
    bytes_per_second: f64,
    /// True when the destination already held everything.
    nothing_copied: bool,
}

/// Copies what the replica lacks and reports it.
pub fn run(a: SyncArgs, g: &Globals) -> anyhow::Result<i32> {
    // Objects move verbatim, so the passphrase is needed only to read
    // points (tags, `latest`), open chunks (--verify) or read and write
    // forget records (--delete).
    let needs_key =
        a.verify || a.delete || !a.tags.is_empty() || a.points.iter().any(|p| p == "latest");
    let bar = g.bar("sync");
    let opts = SyncOptions {
        points: a.points,
        tags: a.tags,
        verify: a.verify,
        threads: a.threads,
        progress: bar.progress(),
        delete: a.delete,
        lock: Some(lock_options(&g.lock)),
    };
    let destination = location(&a.dst)?;
    // The replica marker records where the source is: make that path mean
    // something from anywhere.
    let src = a.src;
    let is_url = src
        .to_str()
        .is_some_and(|t| diskvault::store::ObjectUrl::parse(t).is_some());
    let src = if is_url {
        src
    } else {
        std::path::absolute(&src).unwrap_or(src)
    };
    let report = if needs_key {
        let r = g.open(&src, &a.pass)?;
        diskvault::sync_with_key(&r, &destination, &opts)
    } else {
        diskvault::sync(&location(&src)?, &destination, &opts)
    };
    bar.finish();
    let report = report?;
    if a.json {
        print_json(&SyncJson {
            report: &report,
            bytes_per_second: report.bytes_per_second(),
            nothing_copied: report.copied_nothing(),
        });
    } else {
        render(&report);
    }
    Ok(exit::OK)
}

/// `3 packs, 1 index file, 2 points`: the non-zero counts of a tally.
fn tally(t: &ObjectTally) -> String {
    let parts: Vec<String> = [
        (t.packs, "pack", "packs"),
        (t.index_files, "index file", "index files"),
        (t.points, "point", "points"),
        (t.key_files, "key file", "key files"),
    ]
    .iter()
    .filter(|(n, _, _)| *n > 0)
    .map(|(n, one, many)| plural(*n, one, many))
    .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

fn render(rep: &SyncReport) {
    let secs = rep.duration.as_secs_f64();
    if rep.created {
        out!("created {} as a replica of {}", rep.destination, rep.source);
    }
    if rep.points_forgotten + rep.points_unforgotten > 0 {
        out!(
            "in {}: forgot {} that {} does not have live, unforgot {}",
            rep.destination,
            plural(rep.points_forgotten, "point", "points"),
            rep.source,
            rep.points_unforgotten
        );
    }
    if rep.copied_nothing() {
        out!(
            "nothing to copy: {} already holds the {} ({} objects checked in {secs:.2} s)",
            rep.destination,
            plural(rep.points_selected, "selected point", "selected points"),
            rep.skipped.objects()
        );
        return;
    }
    out!(
        "copied {}: {} in {secs:.2} s ({})",
        tally(&rep.copied),
        size(rep.copied.bytes),
        rate(rep.copied.bytes, secs)
    );
    if rep.skipped.objects() > 0 {
        out!(
            "already there: {} ({})",
            tally(&rep.skipped),
            size(rep.skipped.bytes)
        );
    }
    if rep.selective {
        let which = match rep.points_selected {
            1 => "the selected point needs".to_string(),
            n => format!("the {n} selected points need"),
        };
        out!(
            "sent only the packs {which}; wrote {} for them",
            plural(rep.index_files_written, "index file", "index files")
        );
    }
    if rep.chunks_verified > 0 {
        out!(
            "verified {} chunks in {}",
            rep.chunks_verified,
            rep.destination
        );
    }
}

//! `diskvault restore`: write the disks of a recovery point, verified.

use std::path::{Path, PathBuf};

use clap::Args;
use diskvault::{RestoreOptions, RestoreReport};

use crate::cli::args::parse_threads;
use crate::cli::human::{rate, size};
use crate::cli::output::{damaged_warnings, print_json, REINDEX};
use crate::cli::{exit, location, signals, Globals, PassArgs};

/// Restore disks of a recovery point, verified byte for byte.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    repo: PathBuf,
    /// Point id, unique id prefix, or `latest`.
    point: String,
    /// Output file or block device (a directory when restoring several disks).
    #[arg(required_unless_present = "into")]
    output: Option<PathBuf>,
    /// Update an existing older copy of the disk in place instead: only
    /// the chunks that differ are fetched and written, after all of them
    /// were read and verified. A file whose size differs from the
    /// disk's needs --force.
    #[arg(long, value_name = "EXISTING", conflicts_with = "output")]
    into: Option<PathBuf>,
    /// Restore only this disk.
    #[arg(long)]
    disk: Option<String>,
    /// Replace an existing file or write an existing block device (and,
    /// with --into, update a copy whose size differs from the disk's).
    #[arg(long)]
    force: bool,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
    /// A replica of the repository to read chunks from when they are
    /// missing or damaged in REPO.
    #[arg(long, value_name = "REPLICA")]
    fallback: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// Restores the point and reports what was written.
pub fn run(a: RestoreArgs, g: &Globals) -> anyhow::Result<i32> {
    let r = g.open(&a.repo, &a.pass)?;
    let into_existing = a.into.is_some();
    let bar = g.bar("restore");
    let report = diskvault::restore(
        &r,
        &RestoreOptions {
            point: a.point,
            disk: a.disk,
            output: a.into.or(a.output).unwrap_or_default(),
            force: a.force,
            threads: a.threads,
            into_existing,
            progress: bar.progress(),
            fallback: a.fallback.as_deref().map(location).transpose()?,
            cancel: Some(signals::cancel_on_signals()),
        },
    );
    bar.finish();
    let report = report?;
    damaged_warnings(&report.damaged_index_files, "the restore", REINDEX);
    if a.json {
        print_json(&report);
    } else {
        render(&report, &a.repo, a.fallback.as_deref());
    }
    Ok(exit::OK)
}

fn render(rep: &RestoreReport, repo: &Path, fallback: Option<&Path>) {
    let secs = rep.duration.as_secs_f64();
    for d in &rep.disks {
        if d.chunks_reused > 0 {
            out!(
                "updated disk {} in {} ({}: {} chunks already correct, {} fetched, {} written, verified)",
                d.name,
                d.path.display(),
                size(d.size),
                d.chunks_reused,
                d.chunks_fetched,
                size(d.bytes_written)
            );
        } else {
            out!(
                "restored disk {} to {} ({}, {} chunks, verified)",
                d.name,
                d.path.display(),
                size(d.size),
                d.chunks
            );
        }
    }
    let total: u64 = rep.disks.iter().map(|d| d.size).sum();
    out!(
        "point {} in {secs:.2} s ({} of image)",
        rep.point.short(),
        rate(total, secs)
    );
    let from_replica: u64 = rep.disks.iter().map(|d| d.chunks_from_replica).sum();
    if let (true, Some(replica)) = (from_replica > 0, fallback) {
        out!(
            "{from_replica} chunks were missing or damaged in {} and were read from the replica {}; run 'diskvault repair {} --from {}'",
            repo.display(),
            replica.display(),
            repo.display(),
            replica.display()
        );
    }
}

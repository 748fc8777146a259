//! `diskvault restore`: write the disks of a recovery point, verified.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::Args;
use diskvault::{RestoreOptions, RestoreReport};

use super::restore_stdout;
use crate::cli::args::parse_threads;
use crate::cli::human::{rate, size};
use crate::cli::output::{damaged_warnings, print_json, REINDEX};
use crate::cli::{exit, location, signals, Globals, PassArgs};

/// Restore disks of a recovery point, verified byte for byte.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    repo: PathBuf,
    /// Point id, unique id prefix, `latest`, or `latest~N` (the Nth point before the newest).
    point: String,
    /// Output file or block device (a directory when restoring several
    /// disks), or `-` for standard output: one disk's raw image, in order
    /// (the report then goes to standard error).
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
    // `-`: the image goes to standard output, the report to standard
    // error. Opened before the repository, so a refusal comes before the
    // passphrase prompt.
    let mut stdout = restore_stdout::is_stdout(a.output.as_deref())
        .then(restore_stdout::open_stdout)
        .transpose()?;
    let r = g.open(&a.repo, &a.pass)?;
    let into_existing = a.into.is_some();
    let bar = g.bar("restore");
    let opts = RestoreOptions {
        point: a.point,
        disk: a.disk,
        output: match stdout {
            Some(_) => restore_stdout::NAME.into(),
            None => a.into.or(a.output).unwrap_or_default(),
        },
        force: a.force,
        threads: a.threads,
        into_existing,
        progress: bar.progress(),
        fallback: a.fallback.as_deref().map(location).transpose()?,
        cancel: Some(signals::cancel_on_signals()),
    };
    let to_stderr = stdout.is_some();
    let report = match &mut stdout {
        Some(sink) => diskvault::restore_to_writer(&r, &opts, sink),
        None => diskvault::restore(&r, &opts),
    };
    bar.finish();
    let report = report?;
    damaged_warnings(&report.damaged_index_files, "the restore", REINDEX);
    let say = |line: std::fmt::Arguments<'_>| {
        if to_stderr {
            note!("{line}");
        } else {
            crate::cli::write_out(line);
        }
    };
    if a.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) if to_stderr => note!("{text}"),
            _ => print_json(&report),
        }
    } else {
        render(&report, &a.repo, a.fallback.as_deref(), &say);
    }
    Ok(exit::OK)
}

fn render(
    rep: &RestoreReport,
    repo: &Path,
    fallback: Option<&Path>,
    say: &dyn Fn(std::fmt::Arguments<'_>),
) {
    let secs = rep.duration.as_secs_f64();
    for d in &rep.disks {
        for stale in &d.stale_temporaries {
            let held = std::fs::metadata(stale).map(|m| m.blocks() * 512);
            note!(
                "warning: {} looks like the temporary of an earlier restore that was killed (no restore holds it){}; remove it to free the space",
                stale.display(),
                held.map(|b| format!(", holding {}", size(b)))
                    .unwrap_or_default()
            );
        }
        if d.chunks_reused > 0 {
            say(format_args!(
                "updated disk {} in {} ({}: {} chunks already correct, {} fetched, {} written, verified)",
                d.name,
                d.path.display(),
                size(d.size),
                d.chunks_reused,
                d.chunks_fetched,
                size(d.bytes_written)
            ));
        } else {
            say(format_args!(
                "restored disk {} to {} ({}, {} chunks, verified)",
                d.name,
                d.path.display(),
                size(d.size),
                d.chunks
            ));
        }
    }
    let total: u64 = rep.disks.iter().map(|d| d.size).sum();
    say(format_args!(
        "point {} in {secs:.2} s ({} of image)",
        rep.point.short(),
        rate(total, secs)
    ));
    let from_replica: u64 = rep.disks.iter().map(|d| d.chunks_from_replica).sum();
    if let (true, Some(replica)) = (from_replica > 0, fallback) {
        say(format_args!(
            "{from_replica} chunks were missing or damaged in {} and were read from the replica {}; run 'diskvault repair {} --from {}'",
            repo.display(),
            replica.display(),
            repo.display(),
            replica.display()
        ));
    }
}

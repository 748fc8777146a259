//! `diskvault backup`: back up disk images as a new recovery point.

use std::path::PathBuf;

use clap::Args;
use diskvault::{BackupOptions, BackupReport, CompressionSetting, DiskStats, Encryption};
use serde::Serialize;

use super::backup_input::BackupInputArgs;
use super::show::origin;
use crate::cli::args::parse_threads;
use crate::cli::human::{rate, size};
use crate::cli::output::{damaged_warnings, print_json, REINDEX};
use crate::cli::{exit, signals, Globals, PassArgs};

/// Back up one or more disks (raw image files, block devices, NBD exports or standard input) as a new recovery point.
#[derive(Args, Debug)]
pub struct BackupArgs {
    repo: PathBuf,
    /// Raw image files or block devices, one per disk; `-` reads one disk
    /// from standard input; `nbd://HOST[:PORT]/EXPORT` or
    /// `nbd+unix:///EXPORT?socket=PATH` reads an NBD export (a live VM's
    /// disk). Name stdin and NBD disks with --disk.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Disk name for each image, in order (default: the image's file name).
    #[arg(long = "disk", value_name = "NAME")]
    disks: Vec<String>,
    /// Tag the recovery point (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Compression of new chunks, overriding the repository default.
    #[arg(long)]
    compression: Option<CompressionSetting>,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    input: BackupInputArgs,
    #[command(flatten)]
    pass: PassArgs,
}

/// `backup --json`: the library's report, with the sums over the disks
/// that the text output shows too.
#[derive(Serialize)]
struct BackupJson<'a> {
    #[serde(flatten)]
    report: &'a BackupReport,
    /// Sum of the disks' sizes.
    logical_bytes: u64,
    /// Sums of the disks' figures.
    #[serde(flatten)]
    totals: DiskStats,
}

/// Backs the images up and reports the new point.
pub fn run(a: BackupArgs, g: &Globals) -> anyhow::Result<i32> {
    // Usage errors first, then the vault: with the arguments swapped, "no
    // vault here" is the error that helps, not "cannot read the image".
    a.input.validate(&a.images, &a.disks)?;
    let r = g.open(&a.repo, &a.pass)?;
    let sources = a.input.disks(&a.images, &a.disks)?;
    let bar = g.bar("backup");
    let report = diskvault::backup(
        &r,
        &BackupOptions {
            disks: sources,
            tags: a.tags,
            host: a.host,
            compression: a.compression,
            threads: a.threads,
            progress: bar.progress(),
            parent: a.input.parent.clone(),
            verify_unchanged: a.input.verify_unchanged,
            hooks: a.input.hooks(),
            require_app_consistent: a.input.require_app_consistent,
            cancel: Some(signals::cancel_on_signals()),
        },
    );
    bar.finish();
    let report = report?;
    if let Some(w) = &report.hook_warning {
        note!("warning: {w}");
    }
    damaged_warnings(&report.damaged_index_files, "the backup", REINDEX);
    if a.json {
        print_json(&BackupJson {
            report: &report,
            logical_bytes: report.logical_bytes(),
            totals: report.totals(),
        });
    } else {
        render(&report, r.config().encryption == Encryption::Aes256Gcm);
    }
    Ok(exit::OK)
}

fn render(rep: &BackupReport, encrypted: bool) {
    let t = rep.totals();
    let secs = rep.duration.as_secs_f64();
    let logical = rep.logical_bytes();
    out!("recovery point {}", rep.point);
    for d in &rep.body.disks {
        out!("  disk {:<12} {}{}", d.name, size(d.size), origin(d));
    }
    if let Some(c) = &rep.body.consistency {
        out!("  consistency     {} ({})", c.level.name(), c.reason);
    }
    if rep.bytes_from_repository > 0 {
        out!(
            "  read back       {} of unchanged chunks in changed 4 MiB spans, to hash them",
            size(rep.bytes_from_repository)
        );
    }
    out!("  logical size    {}", size(logical));
    out!(
        "  bytes read      {} (holes skipped: {})",
        size(t.bytes_read),
        size(logical.saturating_sub(t.bytes_read))
    );
    out!(
        "  new unique      {} in {} chunks",
        size(t.new_bytes),
        t.new_chunks
    );
    out!(
        "  stored          {} (after compression{})",
        size(t.stored_bytes),
        if encrypted {
            " and encryption"
        } else {
            "; not encrypted"
        }
    );
    let reused = logical.saturating_sub(rep.image_bytes_hashed);
    if reused > 0 {
        out!(
            "  image hashed    {} ({} in 4 MiB spans unchanged since the last point: not hashed again)",
            size(rep.image_bytes_hashed),
            size(reused)
        );
    } else {
        out!("  image hashed    {}", size(rep.image_bytes_hashed));
    }
    out!(
        "  duration        {secs:.2} s ({} of image)",
        rate(logical, secs)
    );
    if rep.recovered_packs > 0 {
        out!(
            "  reused {} packs left by an interrupted backup",
            rep.recovered_packs
        );
    }
}

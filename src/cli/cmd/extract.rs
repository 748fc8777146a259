//! `diskvault extract`: copy files and directories out of a disk of a
//! recovery point into a local directory.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use diskvault::fs::extract::{extract, ExtractOptions};
use serde::Serialize;

use super::files::{fetched_line, open_volume, VolumeArgs};
use crate::cli::human::size;
use crate::cli::output::print_json;
use crate::cli::{exit, Globals};

/// Copy files and directories out of a disk of a recovery point (ext2/3/4,
/// NTFS) into a directory, with their permissions and times, reading only
/// the chunks they need.
#[derive(Args, Debug)]
pub struct ExtractArgs {
    #[command(flatten)]
    volume: VolumeArgs,
    /// Files or directories to extract, from the file system's root (`/`
    /// for everything). Each lands at its full path under --to, as with
    /// tar: /etc/fstab becomes DIR/etc/fstab.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,
    /// The directory to extract into (created if missing).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Replace files that already exist under DIR.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct JsonReport {
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
    skipped: Vec<JsonSkipped>,
    bytes_fetched: u64,
    disk_size: u64,
    duration_seconds: f64,
}

#[derive(Serialize)]
struct JsonSkipped {
    path: String,
    reason: String,
}

/// Extracts the paths.
pub fn run(a: ExtractArgs, g: &Globals) -> anyhow::Result<i32> {
    let started = Instant::now();
    let (disk, fs, place) = open_volume(&a.volume, g)?;
    let opts = ExtractOptions {
        overwrite: a.force,
        ..ExtractOptions::default()
    };
    let bar = g.bar("extract");
    let report = extract(fs.as_ref(), &a.paths, &a.to, &opts, &mut |_path| {})?;
    bar.finish();
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        print_json(&JsonReport {
            files: report.files,
            dirs: report.dirs,
            symlinks: report.symlinks,
            bytes: report.bytes,
            skipped: report
                .skipped
                .iter()
                .map(|(path, reason)| JsonSkipped {
                    path: path.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            bytes_fetched: disk.stats().bytes_fetched,
            disk_size: disk.disk().size,
            duration_seconds: secs,
        });
    } else {
        for (path, why) in &report.skipped {
            note!("skipped {path}: {why}");
        }
        out!(
            "extracted {} files, {} directories, {} links ({}) from {place} to {}",
            report.files,
            report.dirs,
            report.symlinks,
            size(report.bytes),
            a.to.display()
        );
        out!("{}", fetched_line(&disk, secs));
    }
    // Special files (devices, FIFOs) and names that cannot be written
    // safely are reported above, as tar does, without failing the rest.
    Ok(exit::OK)
}

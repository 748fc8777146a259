//! What `partitions`, `ls`, `cat`, `extract` and `serve-nbd` share: a
//! disk of a recovery point opened for random access, a partition of it,
//! and the file system inside.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use diskvault::fs::{open_filesystem, FileSystem};
use diskvault::image::partition::select_partition;
use diskvault::image::ImageRead;
use diskvault::DiskReader;

use crate::cli::{Globals, PassArgs};

/// The disk a command reads: repository, point and disk name.
#[derive(Args, Debug)]
pub struct DiskArgs {
    /// The repository (path or URL).
    pub repo: PathBuf,
    /// Point id, unique id prefix, `latest`, or `latest~N` (the Nth point before the newest).
    pub point: String,
    /// The disk to read (needed when the point holds several).
    #[arg(long)]
    pub disk: Option<String>,
    #[command(flatten)]
    pub pass: PassArgs,
}

/// A file system inside a disk: the disk, and which partition.
#[derive(Args, Debug)]
pub struct VolumeArgs {
    #[command(flatten)]
    pub disk: DiskArgs,
    /// The partition holding the file system: its number (1-based, as
    /// `diskvault partitions` lists it) or its GPT label. Not needed for
    /// a disk without a partition table, or with one file system.
    #[arg(long, value_name = "N|LABEL")]
    pub part: Option<String>,
}

/// Opens the disk for random access. The reader holds a shared lock on the
/// repository for as long as it lives.
pub fn open_disk(a: &DiskArgs, g: &Globals) -> anyhow::Result<Arc<DiskReader>> {
    let repo = Arc::new(g.open(&a.repo, &a.pass)?);
    Ok(Arc::new(DiskReader::open(
        repo,
        &a.point,
        a.disk.as_deref(),
    )?))
}

/// Opens the file system `a` names, read-only.
pub fn open_volume(
    a: &VolumeArgs,
    g: &Globals,
) -> anyhow::Result<(Arc<DiskReader>, Box<dyn FileSystem>, String)> {
    let disk = open_disk(&a.disk, g)?;
    let volume = select_partition(disk.clone(), a.part.as_deref())?;
    let place = volume.image.describe();
    let fs = open_filesystem(Box::new(volume.image))?;
    Ok((disk, fs, place))
}

/// One line on what a command read from the repository: the figure that
/// shows a file-level restore did not read the whole disk.
pub fn fetched_line(disk: &DiskReader, secs: f64) -> String {
    let s = disk.stats();
    format!(
        "read {} from the repository for a {} disk ({} blobs) in {secs:.2} s",
        crate::cli::human::size(s.bytes_fetched),
        crate::cli::human::size(disk.size()),
        s.blobs_fetched
    )
}

/// A name from a file system, printable: UTF-8 as is, other bytes as
/// `\xNN` escapes (ext4 names are any bytes).
pub fn printable(name: &[u8]) -> String {
    let mut out = String::new();
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

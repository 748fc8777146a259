//! The backup options about what is read and around it: standard input,
//! changed-block lists and their parent, consistency scripts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use diskvault::format::changes::ChangedRanges;
use diskvault::ScriptHooks;
use diskvault::{BackupDisk, NbdSource};

use crate::cli::args::parse_duration;
use crate::cli::UsageError;

/// Flags of `backup` about its input and its consistency hooks.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BackupInputArgs {
    /// Run this shell command before any disk is read (freeze or quiesce
    /// the applications); a success makes the point application-consistent.
    #[arg(long, value_name = "CMD")]
    pub pre_script: Option<String>,
    /// Run this shell command after the reads end (thaw), also when the
    /// backup fails or is interrupted.
    #[arg(long, value_name = "CMD")]
    pub post_script: Option<String>,
    /// Kill a script that runs longer than this (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub script_timeout: Duration,
    /// Write no point unless it is application-consistent (the pre script
    /// succeeded).
    #[arg(long)]
    pub require_app_consistent: bool,
    /// The byte ranges of the image that changed since --parent (text
    /// `OFFSET LENGTH` lines, JSON, or qemu-img map JSON of a dirty
    /// bitmap; spec/CHANGED-BLOCKS.md). One per image, in order.
    #[arg(long = "changed-blocks", value_name = "FILE")]
    pub changed_blocks: Vec<PathBuf>,
    /// For NBD sources (`nbd://HOST:PORT/EXPORT`): read only the ranges
    /// the export's QEMU dirty bitmap NAME marks as changed since --parent
    /// (meta context `qemu:dirty-bitmap:NAME`).
    #[arg(long, value_name = "NAME")]
    pub dirty_bitmap: Option<String>,
    /// The point the changed-block lists or the dirty bitmap are relative
    /// to (`latest`, an id or a prefix).
    #[arg(long, value_name = "POINT")]
    pub parent: Option<String>,
    /// With --changed-blocks or --dirty-bitmap: read everything anyway and
    /// fail if a byte outside the changed ranges differs from the parent
    /// point.
    #[arg(long)]
    pub verify_unchanged: bool,
}

impl BackupInputArgs {
    /// The disks to back up: `images` (`-` for standard input) named by
    /// `names`, with their changed-block lists.
    pub fn disks(&self, images: &[PathBuf], names: &[String]) -> anyhow::Result<Vec<BackupDisk>> {
        self.validate(images, names)?;
        let mut out = Vec::with_capacity(images.len());
        for (i, path) in images.iter().enumerate() {
            let name = disk_name(path, names, i)?;
            let disk = if path.as_os_str() == "-" {
                BackupDisk::stdin(name)
            } else if is_nbd(path) {
                let url = path.to_string_lossy();
                let source = match &self.dirty_bitmap {
                    Some(bitmap) => NbdSource::with_dirty_bitmap(&url, bitmap)?,
                    None => NbdSource::connect(&url)?,
                };
                BackupDisk::new(name, source)
            } else {
                BackupDisk::file(name, path)?
            };
            let disk = match self.changed_blocks.get(i) {
                None => disk,
                Some(list) => {
                    let size = disk.source.size().unwrap_or(u64::MAX);
                    disk.with_changes(read_list(list, size)?)
                }
            };
            out.push(disk);
        }
        Ok(out)
    }

    /// Refuses flag combinations that cannot work (exit 2), before the
    /// vault or any disk is opened.
    pub fn validate(&self, images: &[PathBuf], names: &[String]) -> anyhow::Result<()> {
        if !names.is_empty() && names.len() != images.len() {
            bail!(UsageError(format!(
                "{} --disk names for {} images: give one name per image, in order",
                names.len(),
                images.len()
            )));
        }
        if !self.changed_blocks.is_empty() && self.changed_blocks.len() != images.len() {
            bail!(UsageError(format!(
                "{} --changed-blocks lists for {} images: give one list per image, in order",
                self.changed_blocks.len(),
                images.len()
            )));
        }
        let incremental = !self.changed_blocks.is_empty() || self.dirty_bitmap.is_some();
        if !incremental && (self.parent.is_some() || self.verify_unchanged) {
            bail!(UsageError(
                "--parent and --verify-unchanged go with --changed-blocks or --dirty-bitmap".into()
            ));
        }
        if incremental && self.parent.is_none() {
            bail!(UsageError(
                "--changed-blocks and --dirty-bitmap need --parent POINT, the point the changes are relative to".into()
            ));
        }
        if self.dirty_bitmap.is_some() && !images.iter().any(|p| is_nbd(p)) {
            bail!(UsageError(
                "--dirty-bitmap reads a QEMU dirty bitmap over NBD: give the disk as nbd://HOST:PORT/EXPORT (for an image file, use --changed-blocks)".into()
            ));
        }
        if self.require_app_consistent && self.pre_script.is_none() {
            bail!(UsageError(
                "--require-app-consistent needs a --pre-script that makes the disks consistent"
                    .into()
            ));
        }
        if images.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
            bail!(UsageError(
                "only one disk can be read from standard input".into()
            ));
        }
        for (i, path) in images.iter().enumerate() {
            disk_name(path, names, i)?;
            let (stdin, nbd) = (path.as_os_str() == "-", is_nbd(path));
            if self.changed_blocks.get(i).is_some() && (stdin || nbd) {
                bail!(UsageError(format!(
                    "a changed-block list needs an image file or device, not {}{}",
                    path.display(),
                    if nbd {
                        " (use --dirty-bitmap for an NBD export)"
                    } else {
                        ""
                    }
                )));
            }
        }
        Ok(())
    }

    /// The consistency hooks, if any script was given.
    pub fn hooks(&self) -> Option<Arc<dyn diskvault::ConsistencyHooks>> {
        if self.pre_script.is_none() && self.post_script.is_none() {
            return None;
        }
        Some(Arc::new(ScriptHooks {
            pre: self.pre_script.clone(),
            post: self.post_script.clone(),
            timeout: self.script_timeout,
        }))
    }
}

/// The name of disk `i` read from `path`: its --disk name, else the file
/// name; standard input and NBD exports must be named.
fn disk_name(path: &Path, names: &[String], i: usize) -> anyhow::Result<String> {
    if let Some(n) = names.get(i) {
        return Ok(n.clone());
    }
    if path.as_os_str() == "-" {
        bail!(UsageError(
            "name the disk read from standard input with --disk NAME".into()
        ));
    }
    if is_nbd(path) {
        bail!(UsageError(format!(
            "name the disk read from {} with --disk NAME",
            path.display()
        )));
    }
    Ok(path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("disk{i}")))
}

/// True when the image argument is an NBD URL.
pub fn is_nbd(path: &Path) -> bool {
    let s = path.to_string_lossy();
    s.starts_with("nbd://") || s.starts_with("nbd+unix://")
}

/// Reads a changed-block list for an image of `size` bytes.
fn read_list(list: &Path, size: u64) -> anyhow::Result<ChangedRanges> {
    // A list that cannot be read is named like an image that cannot be
    // (exit 5).
    let unreadable = |source| diskvault::Error::Source {
        path: list.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(list).map_err(unreadable)?;
    if meta.len() > diskvault::format::changes::MAX_LIST_BYTES as u64 {
        bail!(UsageError(format!(
            "the changed-block list {} is {} bytes; at most {} are read",
            list.display(),
            meta.len(),
            diskvault::format::changes::MAX_LIST_BYTES
        )));
    }
    let bytes = std::fs::read(list).map_err(unreadable)?;
    ChangedRanges::parse(&bytes, size).map_err(|e| {
        anyhow::Error::new(UsageError(format!(
            "the changed-block list {} is refused: {e}",
            list.display()
        )))
    })
}

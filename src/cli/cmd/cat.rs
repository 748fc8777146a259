//! `diskvault cat`: write a file from inside a disk of a recovery point
//! to standard output.

use std::time::Instant;

use clap::Args;
use diskvault::fs::EntryKind;
use diskvault::Error;

use super::files::{fetched_line, open_volume, VolumeArgs};
use super::restore_stdout;
use crate::cli::{exit, Globals};

/// Write a file from a disk of a recovery point (ext2/3/4, NTFS) to
/// standard output, reading only the chunks it needs.
#[derive(Args, Debug)]
pub struct CatArgs {
    #[command(flatten)]
    volume: VolumeArgs,
    /// The file, from the file system's root.
    path: String,
}

/// Streams the file.
pub fn run(a: CatArgs, g: &Globals) -> anyhow::Result<i32> {
    let started = Instant::now();
    let (disk, fs, place) = open_volume(&a.volume, g)?;
    let entry = fs.metadata(&a.path)?;
    if entry.kind != EntryKind::File {
        anyhow::bail!(Error::InvalidArgument(format!(
            "{} in {place} is not a regular file; 'diskvault ls' lists what it holds",
            a.path
        )));
    }
    // Unbuffered: copy_file writes in large pieces.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    match fs.copy_file(&a.path, &mut out) {
        Ok(_) => {}
        // `diskvault cat ... | head`: the reader left, as with any Unix tool.
        Err(Error::Output { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(exit::OK)
        }
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = std::io::Write::flush(&mut out) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            anyhow::bail!(Error::Output {
                path: restore_stdout::NAME.into(),
                source: e
            });
        }
    }
    if !g.quiet {
        note!(
            "{} ({} bytes) from {place}: {}",
            a.path,
            entry.size,
            fetched_line(&disk, started.elapsed().as_secs_f64())
        );
    }
    Ok(exit::OK)
}

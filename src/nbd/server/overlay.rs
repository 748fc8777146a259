//! The overlay of a writable export: a local file holding the blocks
//! clients wrote, so the image in the vault is never written.

use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::image::ImageRead;

/// The overlay's unit: a block is either wholly in the overlay or wholly
/// read from the image.
pub(crate) const OVERLAY_BLOCK: u64 = 4096;

/// Locks taken to copy a block up from the image; a block's lock is its
/// index modulo this. Two partial writes into one block must not both
/// copy it up, or the second copy would undo the first write.
const COPY_LOCKS: usize = 64;

/// Zeroes are written in pieces of this size, so that a 4 GiB
/// write-zeroes request allocates 1 MiB.
const ZERO_PIECE: usize = 1 << 20;

/// Where a writable NBD export keeps what clients write: a local file with
/// the written blocks at their own offsets (a sparse file the size of the
/// image), and a map in memory of which 4 KiB blocks it holds. Reads take
/// those blocks from the overlay and every other byte from the image.
///
/// The map is not saved: the overlay's content means something only while
/// the server that wrote it runs. After the server stops, the file holds
/// the written blocks but not which ones they are, and it is never opened
/// again ([`NbdOverlay::create`] refuses an existing path).
#[derive(Debug)]
pub struct NbdOverlay {
    file: File,
    path: Option<PathBuf>,
    size: u64,
    /// One bit per block: set once the block's bytes are in the file.
    /// Set after the bytes are written (release), read before reading
    /// them (acquire), so a reader that sees the bit sees the bytes.
    held: Vec<AtomicU64>,
    copy_locks: Vec<Mutex<()>>,
}

impl NbdOverlay {
    /// Creates the overlay for an image of `size` bytes: a new file at
    /// `path` (refused if anything exists there), or with `None` an
    /// anonymous temporary file, removed from the directory at once, that
    /// vanishes with the server.
    pub fn create(path: Option<&Path>, size: u64) -> Result<NbdOverlay> {
        let blocks = size.div_ceil(OVERLAY_BLOCK);
        let words = usize::try_from(blocks.div_ceil(64)).map_err(|_| too_big(size))?;
        let mut held = Vec::new();
        held.try_reserve_exact(words).map_err(|_| too_big(size))?;
        held.resize_with(words, || AtomicU64::new(0));

        let (file, shown) = match path {
            Some(path) => (create_new(path)?, Some(path.to_path_buf())),
            None => (anonymous_file()?, None),
        };
        let overlay = NbdOverlay {
            file,
            path: shown,
            size,
            held,
            copy_locks: (0..COPY_LOCKS).map(|_| Mutex::new(())).collect(),
        };
        // A sparse file of the image's size: blocks sit at their own
        // offsets and take space only once written.
        overlay
            .file
            .set_len(size)
            .map_err(|source| overlay.error(source))?;
        Ok(overlay)
    }

    /// The overlay file's path, or `None` for an anonymous temporary file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The size of the image the overlay covers.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of the image the overlay holds (written blocks, 4 KiB each).
    pub fn bytes_held(&self) -> u64 {
        let blocks: u64 = self
            .held
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum();
        (blocks * OVERLAY_BLOCK).min(self.size)
    }

    /// Names the overlay in messages.
    pub(crate) fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("overlay {}", p.display()),
            None => "the temporary overlay file".into(),
        }
    }

    fn error(&self, source: std::io::Error) -> Error {
        Error::Output {
            path: self
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("(temporary overlay file)")),
            source,
        }
    }

    fn is_held(&self, block: u64) -> bool {
        let word = &self.held[(block / 64) as usize];
        word.load(Ordering::Acquire) & (1 << (block % 64)) != 0
    }

    fn mark_held(&self, blocks: Range<u64>) {
        for block in blocks {
            self.held[(block / 64) as usize].fetch_or(1 << (block % 64), Ordering::Release);
        }
    }

    /// The image bytes of block `block`: `[start, end)`, the last block
    /// being short when the size is not a multiple of the block.
    fn block_range(&self, block: u64) -> Range<u64> {
        let start = block * OVERLAY_BLOCK;
        start..(start + OVERLAY_BLOCK).min(self.size)
    }

    /// Splits `range` (inside the image) into runs the overlay holds
    /// (`true`) and runs to read from the image (`false`), in order.
    pub(crate) fn runs(&self, range: Range<u64>) -> Vec<(Range<u64>, bool)> {
        let mut runs: Vec<(Range<u64>, bool)> = Vec::new();
        if range.start >= range.end {
            return runs;
        }
        let mut block = range.start / OVERLAY_BLOCK;
        let last = (range.end - 1) / OVERLAY_BLOCK;
        while block <= last {
            // Whole words of the map with no block written: the common
            // case, a read of an image no client wrote there.
            if block % 64 == 0
                && block + 63 <= last
                && self.held[(block / 64) as usize].load(Ordering::Acquire) == 0
            {
                push_run(&mut runs, &range, block, block + 64, false);
                block += 64;
                continue;
            }
            let held = self.is_held(block);
            push_run(&mut runs, &range, block, block + 1, held);
            block += 1;
        }
        runs
    }

    /// Reads overlay bytes; the caller asks only for blocks it holds.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| self.error(source))
    }

    /// Writes `data` at `offset` (inside the image). Blocks the write
    /// covers in part are first copied from `image`.
    pub(crate) fn write_at(&self, image: &dyn ImageRead, data: &[u8], offset: u64) -> Result<()> {
        let end = offset + data.len() as u64;
        if data.is_empty() {
            return Ok(());
        }
        let first = offset / OVERLAY_BLOCK;
        let last = (end - 1) / OVERLAY_BLOCK;
        // The blocks the write covers whole are written in one call.
        let whole_from = if offset == self.block_range(first).start {
            first
        } else {
            first + 1
        };
        let whole_to = if end == self.block_range(last).end {
            last + 1
        } else {
            last
        };
        let slice = |r: Range<u64>| &data[(r.start - offset) as usize..(r.end - offset) as usize];
        if whole_from < whole_to {
            let start = whole_from * OVERLAY_BLOCK;
            let stop = self.block_range(whole_to - 1).end;
            self.file
                .write_all_at(slice(start..stop), start)
                .map_err(|source| self.error(source))?;
            self.mark_held(whole_from..whole_to);
        }
        let mut partial = vec![first];
        if last != first {
            partial.push(last);
        }
        for block in partial {
            if (whole_from..whole_to).contains(&block) {
                continue;
            }
            let range = self.block_range(block);
            let part = range.start.max(offset)..range.end.min(end);
            self.write_partial(image, block, slice(part.clone()), part.start)?;
        }
        Ok(())
    }

    /// Writes part of one block, copying the block up from the image
    /// first if the overlay does not hold it yet.
    fn write_partial(
        &self,
        image: &dyn ImageRead,
        block: u64,
        data: &[u8],
        offset: u64,
    ) -> Result<()> {
        let lock = &self.copy_locks[(block % COPY_LOCKS as u64) as usize];
        // The lock guards no data, only the copy-up; a panic elsewhere
        // while holding it leaves nothing half-done that matters here.
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_held(block) {
            return self
                .file
                .write_all_at(data, offset)
                .map_err(|source| self.error(source));
        }
        let range = self.block_range(block);
        let mut whole = vec![0; (range.end - range.start) as usize];
        image.read_exact_at(&mut whole, range.start)?;
        let at = (offset - range.start) as usize;
        whole[at..at + data.len()].copy_from_slice(data);
        self.file
            .write_all_at(&whole, range.start)
            .map_err(|source| self.error(source))?;
        self.mark_held(block..block + 1);
        Ok(())
    }

    /// Writes `len` zero bytes at `offset` (inside the image).
    pub(crate) fn write_zeroes_at(
        &self,
        image: &dyn ImageRead,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        let zeroes = vec![0; (len as usize).min(ZERO_PIECE)];
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(zeroes.len() as u64);
            self.write_at(image, &zeroes[..n as usize], at)?;
            at += n;
        }
        Ok(())
    }

    /// Makes everything written so far durable in the overlay file.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|source| self.error(source))
    }
}

/// Appends blocks `from..to`, clipped to `range`, to `runs`, merging with
/// the last run when it has the same state.
fn push_run(
    runs: &mut Vec<(Range<u64>, bool)>,
    range: &Range<u64>,
    from: u64,
    to: u64,
    held: bool,
) {
    let start = (from * OVERLAY_BLOCK).max(range.start);
    let end = to.saturating_mul(OVERLAY_BLOCK).min(range.end);
    if start >= end {
        return;
    }
    match runs.last_mut() {
        Some((last, state)) if *state == held && last.end == start => last.end = end,
        _ => runs.push((start..end, held)),
    }
}

fn too_big(size: u64) -> Error {
    Error::InvalidArgument(format!(
        "cannot keep a map of written blocks for an overlay of a {size}-byte image in memory; \
         serve the disk read-only (without --writable)"
    ))
}

/// Creates the overlay file, refusing to reuse anything at `path`.
fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::InvalidArgument(format!(
                    "overlay {} already exists; give a path that does not exist (an overlay \
                     is never reused: the map of its blocks lives only in the server's memory)",
                    path.display()
                ))
            } else {
                Error::Output {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
}

/// A new file in the temporary directory, unlinked at once: it lives as
/// long as the open file, and nothing is left behind if the server dies.
fn anonymous_file() -> Result<File> {
    let dir = std::env::temp_dir();
    let mut last = None;
    for _ in 0..16 {
        let mut tag = [0u8; 8];
        getrandom::fill(&mut tag).map_err(|e| {
            Error::InvalidArgument(format!("cannot name a temporary overlay file: {e}"))
        })?;
        let path = dir.join(format!(".diskvault-overlay-{}", hex::encode(tag)));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path).map_err(|source| Error::Output {
                    path: path.clone(),
                    source,
                })?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((path, e)),
            Err(source) => return Err(Error::Output { path, source }),
        }
    }
    let (path, source) = last.expect("the loop ran and every attempt collided");
    Err(Error::Output { path, source })
}

//! Where a backup's bytes come from: the [`DiskSource`] trait, and the
//! sources diskvault brings: [`FileSource`] (an image file or block
//! device, whose holes are found with SEEK_DATA/SEEK_HOLE and never read)
//! and [`StreamSource`] (standard input or any other stream, read once).
//! An NBD export (a live VM's disk) is [`crate::NbdSource`].
//!
//! A program that embeds diskvault implements [`DiskSource`] for its own
//! disks (a hypervisor's snapshot API, a storage array) and hands it to
//! [`crate::backup`] inside a [`crate::BackupDisk`]: nothing has to be
//! copied to a file first.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::format::changes::ChangedRanges;
use crate::format::point::SourceKind;

mod nbd;
pub use nbd::NbdSource;

/// A disk to back up, as the backup reads it.
///
/// The backup calls the methods from its own threads (hence `Send +
/// Sync`): first [`size`](Self::size), [`data_ranges`](Self::data_ranges)
/// and, when the caller names a parent point,
/// [`changed_ranges`](Self::changed_ranges), all before the first read;
/// then [`read_at`](Self::read_at) in increasing offset order from one
/// reader thread. Everything a source reports is checked: ranges that are
/// unsorted, overlap or pass the end are refused with an error naming the
/// source, and a source that ends early fails the backup ("the image
/// shrank"), so a wrong source cannot produce a point that claims bytes it
/// did not read.
pub trait DiskSource: Send + Sync {
    /// The disk's size in bytes; `None` for a stream, whose size is known
    /// only once [`read_at`](Self::read_at) returns 0.
    fn size(&self) -> Option<u64>;

    /// Reads bytes at `offset` into `buf` and returns how many: fewer than
    /// `buf.len()` is allowed (the backup asks again), 0 means the end of
    /// the disk. A source of unknown size is read strictly in order (each
    /// `offset` is where the previous read ended).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// The ranges `[start, end)` that may hold data, sorted and disjoint:
    /// the bytes outside them read as zeros and are not read at all (the
    /// point records them as holes). By default the whole disk.
    fn data_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        Ok(self.size().map(|s| vec![(0, s)]).unwrap_or_default())
    }

    /// The ranges that changed since the parent point the backup names
    /// ([`crate::BackupOptions::parent`]), for a source that tracks them
    /// (a dirty bitmap); `None` when it does not. Only these ranges are
    /// read, and the rest of the disk is taken from the parent point, so
    /// they must cover every byte that changed: see `--verify-unchanged`
    /// ([`crate::BackupOptions::verify_unchanged`]) to check that.
    fn changed_ranges(&self) -> io::Result<Option<ChangedRanges>> {
        Ok(None)
    }

    /// What kind of source this is, recorded in the point
    /// (spec/FORMAT.md §10.2). A program's own source keeps the default,
    /// [`SourceKind::Custom`].
    fn kind(&self) -> SourceKind {
        SourceKind::Custom
    }

    /// Names the source in messages and in the point's `source` field: a
    /// path, a URL, a volume id.
    fn describe(&self) -> String;
}

/// An image file or block device.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    path: PathBuf,
    size: u64,
}

impl FileSource {
    /// Opens a raw image file or block device for reading.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let ft = meta.file_type();
        let size = if ft.is_block_device() {
            file.seek(SeekFrom::End(0))?
        } else if ft.is_file() {
            meta.len()
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            ));
        };
        Ok(FileSource {
            file,
            path: path.to_path_buf(),
            size,
        })
    }

    /// Size of the image in bytes.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// True for an image of 0 bytes.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                shrank()
            } else {
                e
            }
        })
    }

    /// The data regions of the image, in order, as `(start, end)`. Files
    /// without hole support report one region covering everything.
    pub fn regions(&self) -> io::Result<Vec<(u64, u64)>> {
        let fd = self.file.as_raw_fd();
        let mut regions = Vec::new();
        let mut pos: u64 = 0;
        while pos < self.size {
            // SAFETY: lseek on a valid descriptor has no memory effects.
            let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
            if data < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::ENXIO) => break, // only a hole remains
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) if regions.is_empty() => {
                        return Ok(vec![(0, self.size)]);
                    }
                    _ => return Err(err),
                }
            }
            let data = (data as u64).min(self.size);
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
            let hole = if hole < 0 {
                self.size
            } else {
                (hole as u64).min(self.size)
            };
            if hole > data {
                regions.push((data, hole));
            }
            pos = hole.max(data + 1);
        }
        Ok(regions)
    }
}

/// The error of a source that ended before its size.
pub(crate) fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the image shrank while it was being read",
    )
}

impl DiskSource for FileSource {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn data_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        self.regions()
    }

    fn kind(&self) -> SourceKind {
        SourceKind::File
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// A stream read once, in order, to its end: standard input, a pipe, a
/// decompressor's output. Its size is known only at its end.
pub struct StreamSource {
    state: Mutex<StreamState>,
    name: String,
}

struct StreamState {
    reader: Box<dyn Read + Send>,
    position: u64,
}

impl StreamSource {
    /// A stream of `reader`, named `name` in messages.
    pub fn new(reader: impl Read + Send + 'static, name: impl Into<String>) -> Self {
        StreamSource {
            state: Mutex::new(StreamState {
                reader: Box::new(reader),
                position: 0,
            }),
            name: name.into(),
        }
    }

    /// This process's standard input.
    pub fn stdin() -> Self {
        StreamSource::new(io::stdin(), "standard input")
    }
}

impl std::fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DiskSource for StreamSource {
    fn size(&self) -> Option<u64> {
        None
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if offset != state.position {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a stream: it can only be read in order (asked for offset {offset}, at {})",
                    self.name, state.position
                ),
            ));
        }
        let n = state.reader.read(buf)?;
        state.position += n as u64;
        Ok(n)
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Stream
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Reads `buf.len()` bytes at `offset` from `src`, asking again after
/// short reads and interruptions (`stop` says whether to give up then).
/// Returns fewer bytes only at the source's end.
pub(crate) fn read_full(
    src: &dyn DiskSource,
    buf: &mut [u8],
    offset: u64,
    stop: &dyn Fn() -> io::Result<()>,
) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match src.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) if n <= buf.len() - got => got += n,
            Ok(n) => {
                return Err(io::Error::other(format!(
                    "{} claimed to read {n} bytes into a buffer of {}",
                    src.describe(),
                    buf.len() - got
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => stop()?,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Checks ranges a source reported against its size: sorted, disjoint,
/// non-empty and within `size`. `what` names them in the error.
pub(crate) fn checked_ranges(
    ranges: Vec<(u64, u64)>,
    size: u64,
    what: &str,
) -> io::Result<Vec<(u64, u64)>> {
    let mut end = 0;
    for (i, &(a, b)) in ranges.iter().enumerate() {
        if a >= b || b > size || (i > 0 && a < end) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the source reported {what} {a}..{b}, which is empty, out of order or past the disk's end ({size} bytes)"
                ),
            ));
        }
        end = b;
    }
    Ok(ranges)
}

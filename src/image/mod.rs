//! Positional, read-only access to a disk image: what file-level restore
//! (partition tables, file systems) and the NBD server read through,
//! whether the image is a disk in a recovery point
//! ([`crate::DiskReader`]), a file, or a partition of either.
//!
//! - [`ImageRead`]: the trait; [`FileImage`]: a file or block device.
//! - [`ImageSlice`]: a byte range of an image (a partition) as an image.
//! - [`ImageCursor`]: `Read + Seek` over an image, for parsers that want one.
//! - `partition.rs`: GPT and MBR partition tables.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

pub mod partition;

/// A disk image read by position. Implementations are safe to share
/// between threads: the NBD server reads one image from many connections.
pub trait ImageRead: Send + Sync {
    /// The image's size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the image's bytes from `offset`. A read that ends
    /// past [`ImageRead::size`] fails with [`Error::InvalidArgument`];
    /// nothing is ever filled in silently.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// The ranges of `range` known to read as zeros without being stored
    /// (holes), in order and clipped to `range`. The default knows none:
    /// every byte is data.
    fn zero_ranges(&self, range: Range<u64>) -> Result<Vec<Range<u64>>> {
        let _ = range;
        Ok(Vec::new())
    }

    /// Names the image in messages, e.g. `disk 'root' of point 1a2b3c4d`.
    fn describe(&self) -> String;
}

/// Checks that `len` bytes at `offset` lie inside an image of `size`
/// bytes: the one bounds rule every [`ImageRead`] applies.
pub fn check_bounds(what: &dyn Fn() -> String, offset: u64, len: usize, size: u64) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::InvalidArgument(format!(
            "read of {len} bytes at offset {offset} goes past the end of {} ({size} bytes)",
            what()
        ))),
    }
}

impl<T: ImageRead + ?Sized> ImageRead for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn zero_ranges(&self, range: Range<u64>) -> Result<Vec<Range<u64>>> {
        (**self).zero_ranges(range)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

impl<T: ImageRead + ?Sized> ImageRead for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn zero_ranges(&self, range: Range<u64>) -> Result<Vec<Range<u64>>> {
        (**self).zero_ranges(range)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// A disk image in a file or block device, read in place.
#[derive(Debug)]
pub struct FileImage {
    file: File,
    path: std::path::PathBuf,
    size: u64,
}

impl FileImage {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let source = |source| Error::Source {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(source)?;
        // seek(End) gives a block device's size too, where metadata says 0.
        let size = file.seek(SeekFrom::End(0)).map_err(source)?;
        Ok(FileImage {
            file,
            path: path.to_path_buf(),
            size,
        })
    }
}

impl ImageRead for FileImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_bounds(&|| self.describe(), offset, buf.len(), self.size)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| Error::Source {
                path: self.path.clone(),
                source,
            })
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// `len` bytes of an image from `start`, as an image of their own: a
/// partition.
pub struct ImageSlice<I> {
    inner: I,
    start: u64,
    len: u64,
    name: String,
}

impl<I: ImageRead> ImageSlice<I> {
    /// The bytes `start..start + len` of `inner`, named `name` in messages
    /// (e.g. `partition 2 of disk 'root'`). Refuses a range that does not
    /// lie inside `inner`.
    pub fn new(inner: I, start: u64, len: u64, name: String) -> Result<Self> {
        match start.checked_add(len) {
            Some(end) if end <= inner.size() => Ok(ImageSlice {
                inner,
                start,
                len,
                name,
            }),
            _ => Err(Error::InvalidArgument(format!(
                "{name} (bytes {start}..+{len}) does not lie inside {} ({} bytes)",
                inner.describe(),
                inner.size()
            ))),
        }
    }

    /// Offset of the slice's first byte in the image it slices.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl<I: ImageRead> ImageRead for ImageSlice<I> {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_bounds(&|| self.describe(), offset, buf.len(), self.len)?;
        self.inner.read_exact_at(buf, self.start + offset)
    }

    fn zero_ranges(&self, range: Range<u64>) -> Result<Vec<Range<u64>>> {
        let end = range.end.min(self.len);
        if range.start >= end {
            return Ok(Vec::new());
        }
        Ok(self
            .inner
            .zero_ranges(self.start + range.start..self.start + end)?
            .into_iter()
            .map(|r| r.start - self.start..r.end - self.start)
            .collect())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// `Read + Seek` over an image, for parsers that take a reader. A read
/// at the end returns 0 bytes, as a file does; a failed read is an
/// `io::Error` carrying the library error's message.
pub struct ImageCursor<I> {
    image: I,
    pos: u64,
}

impl<I: ImageRead> ImageCursor<I> {
    /// A cursor at offset 0.
    pub fn new(image: I) -> Self {
        ImageCursor { image, pos: 0 }
    }

    /// The image read.
    pub fn image(&self) -> &I {
        &self.image
    }
}

impl<I: ImageRead> Read for ImageCursor<I> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.image.size().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.image
            .read_exact_at(&mut buf[..n], self.pos)
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<I: ImageRead> Seek for ImageCursor<I> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let size = self.image.size();
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the image",
            )),
        }
    }
}

/// Refuses writes: some parsers (the `gpt` crate) ask for a device that
/// can be written, and never write when opened read-only.
impl<I: ImageRead> io::Write for ImageCursor<I> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "disk images in a recovery point are read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<I> std::fmt::Debug for ImageCursor<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCursor")
            .field("pos", &self.pos)
            .finish()
    }
}

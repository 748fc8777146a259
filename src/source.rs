//! Reading a disk image: its size, and where its data is (holes of sparse
//! files are found with SEEK_DATA/SEEK_HOLE and never read).

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// An open image file or block device.
pub struct ImageSource {
    file: File,
    size: u64,
}

impl ImageSource {
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
        Ok(ImageSource { file, size })
    }

    /// Size of the image in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the image shrank while it was being read",
                )
            } else {
                e
            }
        })
    }

    /// The data regions of the image, in order, as `(start, end)`. Files
    /// without hole support report one region covering everything.
    pub fn data_regions(&self) -> io::Result<Vec<(u64, u64)>> {
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

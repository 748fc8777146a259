//! Files inside a disk image, read in place: file-level restore without
//! mounting anything. A file system is found in an [`ImageRead`] (a whole
//! disk, or a partition of one), opened read-only, and browsed through
//! the [`FileSystem`] trait, which `ls`, `cat` and `extract` share.
//!
//! - `ext4.rs`: ext2/3/4, through the `ext4-view` crate.
//! - `ntfs.rs`: NTFS, through the `ntfs` crate.
//! - `extract.rs`: copying files and trees out to a directory.
//!
//! Paths are absolute and `/`-separated (`/etc/fstab`; NTFS paths are
//! written the same way, `/Windows/System32/drivers/etc/hosts`).

use std::io::Write;

use crate::error::Result;
use crate::image::ImageRead;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else: device, FIFO, socket, NTFS reparse point.
    Other,
}

/// A time as seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z; negative before it.
    pub secs: i64,
    /// Nanoseconds within the second, below 1,000,000,000.
    pub nanos: u32,
}

/// A file, directory or link in a file system, as `ls` shows it and
/// `extract` recreates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name in its directory (the last path component), as the file
    /// system stores it: any bytes but `/` and NUL on ext4, UTF-8 on NTFS.
    pub name: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes of a file's contents (a link's target length; 0 for
    /// a directory).
    pub size: u64,
    /// Unix permission bits (`0o7777`: setuid, setgid, sticky, rwx); for
    /// NTFS, 0o755 for directories, 0o644 for files (0o444 if read-only).
    pub mode: u32,
    /// Owner and group ids (0 where the file system has none: NTFS).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Last modification of its contents.
    pub modified: Option<Timestamp>,
    /// Last access.
    pub accessed: Option<Timestamp>,
}

/// A file system opened read-only inside an image.
pub trait FileSystem {
    /// Its type as users name it: `ext4`, `ntfs`.
    fn kind(&self) -> &'static str;

    /// The entry at `path` (`/` is the root directory, named `/`). A path
    /// that does not exist is [`crate::Error::PathNotFound`]; symbolic links
    /// are not followed for the last component.
    fn metadata(&self, path: &str) -> Result<Entry>;

    /// The entries of the directory at `path`, sorted by name, without `.`
    /// and `..`. A path that is not a directory is refused by name.
    fn read_dir(&self, path: &str) -> Result<Vec<Entry>>;

    /// The target of the symbolic link at `path`, as stored.
    fn read_link(&self, path: &str) -> Result<Vec<u8>>;

    /// Writes the contents of the regular file at `path` to `out`,
    /// streaming (never the whole file in memory), and returns the bytes
    /// written. Holes and unwritten extents come out as zeros.
    fn copy_file(&self, path: &str, out: &mut dyn Write) -> Result<u64>;

    /// [`FileSystem::metadata`] for a path given as bytes: ext4 names
    /// need not be UTF-8, and `extract` walks trees by the names
    /// `read_dir` returns. The default refuses a path that is not UTF-8.
    fn metadata_bytes(&self, path: &[u8]) -> Result<Entry> {
        self.metadata(utf8_path(path)?)
    }

    /// [`FileSystem::read_dir`] for a path given as bytes.
    fn read_dir_bytes(&self, path: &[u8]) -> Result<Vec<Entry>> {
        self.read_dir(utf8_path(path)?)
    }

    /// [`FileSystem::read_link`] for a path given as bytes.
    fn read_link_bytes(&self, path: &[u8]) -> Result<Vec<u8>> {
        self.read_link(utf8_path(path)?)
    }

    /// [`FileSystem::copy_file`] for a path given as bytes.
    fn copy_file_bytes(&self, path: &[u8], out: &mut dyn Write) -> Result<u64> {
        self.copy_file(utf8_path(path)?, out)
    }
}

/// The path as text, for file systems whose names are all UTF-8.
fn utf8_path(path: &[u8]) -> Result<&str> {
    std::str::from_utf8(path).map_err(|_| {
        crate::Error::InvalidArgument(format!(
            "{}: the path is not UTF-8, and this file system's names all are",
            String::from_utf8_lossy(path)
        ))
    })
}

pub mod ext4;
pub mod extract;
pub mod ntfs;

/// Finds the file system in `image` by its magic numbers and opens it:
/// ext2/3/4 or NTFS. Anything else is [`crate::Error::NoFileSystem`],
/// naming what was found where that can be told (e.g. a partition table:
/// choose a partition).
///
/// The image must own what it reads (`'static`): the ext4 reader keeps
/// the image inside a type that cannot carry a borrow.
pub fn open_filesystem(image: Box<dyn ImageRead>) -> Result<Box<dyn FileSystem>> {
    match readable_filesystem(&*image) {
        Some("ext4") => Ok(Box::new(ext4::Ext4FileSystem::open(image)?)),
        Some(_) => Ok(Box::new(ntfs::NtfsFileSystem::open(image)?)),
        None => Err(crate::Error::NoFileSystem {
            place: image.describe(),
            found: identify_other(&*image)?,
        }),
    }
}

/// The file system diskvault reads that `image` holds, told by its magic
/// number alone (a few bytes read): `ext4` (for ext2/3/4) or `ntfs`.
pub fn readable_filesystem(image: &dyn ImageRead) -> Option<&'static str> {
    if ext4::looks_like_ext4(image) {
        Some("ext4")
    } else if bytes_at(image, 3, 8).as_deref() == Some(b"NTFS    ") {
        Some("ntfs")
    } else {
        None
    }
}

/// `len` bytes at `offset`, or `None` when the image is shorter (or the
/// read fails: a signature that cannot be read is not there).
fn bytes_at(image: &dyn ImageRead, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0; len];
    image.read_exact_at(&mut buf, offset).ok().map(|()| buf)
}

/// How much of the start of a disk is read to tell "only zeros".
const ZERO_PROBE: u64 = 1 << 20;

/// Names what `image` holds when it is no file system diskvault reads, so
/// the user learns why: a partition table, an encrypted or pooled volume,
/// another file system, or nothing at all.
fn identify_other(image: &dyn ImageRead) -> Result<String> {
    let at =
        |offset: u64, magic: &[u8]| bytes_at(image, offset, magic.len()).as_deref() == Some(magic);
    let sector0 = bytes_at(image, 0, 512);
    let boot_signature = sector0
        .as_ref()
        .is_some_and(|s| s[510..512] == [0x55, 0xaa]);
    let found = if at(512, b"EFI PART") || at(4096, b"EFI PART") {
        "a GPT partition table: choose a partition with --part"
    } else if boot_signature
        && crate::image::partition::read_partition_table(image)
            .ok()
            .flatten()
            .is_some()
    {
        "a GPT/MBR partition table: choose a partition with --part"
    } else if at(0, b"LUKS\xba\xbe") {
        "a LUKS encrypted volume (diskvault does not decrypt it; restore the disk and open it with cryptsetup)"
    } else if at(512, b"LABELONE")
        || at(0, b"LABELONE")
        || at(1024, b"LABELONE")
        || at(1536, b"LABELONE")
    {
        "an LVM physical volume (restore the disk and activate it with LVM)"
    } else if at(0, b"XFSB") {
        "an XFS file system (not read by this build)"
    } else if at(65600, b"_BHRfS_M") {
        "a btrfs file system (not read by this build)"
    } else if at(4086, b"SWAPSPACE2") || at(4086, b"SWAP-SPACE") {
        "Linux swap space"
    } else if at(3, b"EXFAT   ") {
        "an exFAT file system (not read by this build)"
    } else if at(54, b"FAT1") || at(82, b"FAT32") {
        "a FAT file system (not read by this build)"
    } else {
        return Ok(if starts_with_zeros(image)? {
            if image.size() <= ZERO_PROBE {
                "only zeros".to_string()
            } else {
                "only zeros in its first MiB (no signature of a file system or partition table)"
                    .to_string()
            }
        } else {
            "no signature diskvault knows (not ext2/3/4, NTFS, GPT, MBR, LUKS, LVM, XFS, btrfs, FAT or swap)".to_string()
        });
    };
    Ok(found.to_string())
}

/// True when the first MiB of `image` (all of it, if smaller) is zeros.
fn starts_with_zeros(image: &dyn ImageRead) -> Result<bool> {
    let len = image.size().min(ZERO_PROBE);
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(buf.len() as u64) as usize;
        image.read_exact_at(&mut buf[..n], offset)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        offset += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
pub(crate) mod test_images;
#[cfg(test)]
mod tests;

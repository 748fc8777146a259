//! ext2/3/4 file systems, read in place through the `ext4-view` crate.
//!
//! What the crate reads: extents and block maps, htree directories,
//! 64-bit and flex block groups, metadata checksums, and the journal
//! (committed transactions are replayed in memory, so a disk backed up
//! while mounted reads as it would after recovery). What it refuses, as
//! [`Error::FileSystem`] saying "uses a feature this build does not
//! read": inline data (small files kept in the inode), compression, a
//! journal on another device, `meta_bg`, MMP, `ea_inode`, `large_dir`;
//! and encrypted (fscrypt) files.

use std::io::Write;

use ext4_view::{Ext4, Ext4Error, Ext4Read, Metadata};

use crate::error::{Error, Result};
use crate::fs::{Entry, EntryKind, FileSystem, Timestamp};
use crate::image::ImageRead;

/// Where the superblock's magic number (0xEF53, little-endian) lies.
const MAGIC_OFFSET: u64 = 1080;

/// How much of a file `copy_file` holds in memory at once.
const COPY_PIECE: usize = 256 * 1024;

/// True when `image` has the ext2/3/4 superblock magic: two bytes read.
pub fn looks_like_ext4(image: &dyn ImageRead) -> bool {
    let mut magic = [0u8; 2];
    image.read_exact_at(&mut magic, MAGIC_OFFSET).is_ok() && magic == [0x53, 0xef]
}

/// An ext2/3/4 file system inside an image, opened read-only.
pub struct Ext4FileSystem {
    fs: Ext4,
    /// `ext4 in partition 2 (root) of disk 'root' in point 1a2b3c4d`.
    place: String,
}

/// Hands the crate the image's bytes. Errors travel boxed through the
/// crate and are unboxed again in [`Ext4FileSystem::error`], so a chunk
/// missing from the vault stays that error, not "corrupt file system".
struct ImageReader(Box<dyn ImageRead>);

impl Ext4Read for ImageReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_exact_at(dst, start_byte).map_err(Box::new)?;
        Ok(())
    }
}

impl Ext4FileSystem {
    /// Opens the ext2/3/4 file system in `image`: reads its superblock,
    /// group descriptors and journal.
    pub fn open(image: Box<dyn ImageRead>) -> Result<Self> {
        let place = format!("ext4 in {}", image.describe());
        match Ext4::load(Box::new(ImageReader(image))) {
            Ok(fs) => Ok(Ext4FileSystem { fs, place }),
            Err(e) => Err(error_at(&place, None, e)),
        }
    }

    /// The crate's error for `path`, as the library's.
    fn error(&self, path: &[u8], e: Ext4Error) -> Error {
        error_at(&self.place, Some(path), e)
    }
}

fn error_at(place: &str, path: Option<&[u8]>, e: Ext4Error) -> Error {
    let shown = path.map(|p| String::from_utf8_lossy(p).into_owned());
    let object = match &shown {
        Some(p) => format!("{p} in {place}"),
        None => place.to_string(),
    };
    let reason = match e {
        Ext4Error::NotFound => {
            return Error::PathNotFound {
                path: shown.unwrap_or_else(|| "/".into()),
                place: place.to_string(),
            }
        }
        Ext4Error::NotADirectory => {
            return Error::InvalidArgument(format!(
                "{object} is not a directory (a component of the path is a file)"
            ))
        }
        Ext4Error::IsADirectory => {
            return Error::InvalidArgument(format!(
            "{object} is a directory; 'diskvault ls' lists it, 'diskvault extract' copies it out"
        ))
        }
        Ext4Error::IsASpecialFile => {
            return Error::InvalidArgument(format!(
                "{object} is a device, FIFO or socket: it has no contents to read"
            ))
        }
        Ext4Error::NotASymlink => {
            return Error::InvalidArgument(format!("{object} is not a symbolic link"))
        }
        Ext4Error::NotAbsolute | Ext4Error::MalformedPath | Ext4Error::PathTooLong => {
            return Error::InvalidArgument(format!(
                "{}: {e}; paths inside a disk are absolute, e.g. /etc/fstab",
                shown.unwrap_or_default()
            ))
        }
        Ext4Error::Io(inner) => match inner.downcast::<Error>() {
            Ok(ours) => return *ours,
            Err(other) => other.to_string(),
        },
        Ext4Error::Incompatible(i) => {
            format!("it uses a feature this build does not read ({i})")
        }
        Ext4Error::Encrypted => {
            "the file is encrypted (fscrypt), which this build does not read".into()
        }
        Ext4Error::Corrupt(c) => format!("the file system is damaged ({c})"),
        Ext4Error::TooManySymlinks => "too many levels of symbolic links".into(),
        other => other.to_string(),
    };
    Error::FileSystem {
        place: object,
        reason,
    }
}

/// Checks that `path` is absolute, and drops trailing slashes (`/etc/`
/// names `/etc`).
fn normalize(path: &[u8]) -> Result<&[u8]> {
    if path.first() != Some(&b'/') {
        return Err(Error::InvalidArgument(format!(
            "'{}' is not an absolute path; paths inside a disk start with /, e.g. /etc/fstab",
            String::from_utf8_lossy(path)
        )));
    }
    let mut end = path.len();
    while end > 1 && path[end - 1] == b'/' {
        end -= 1;
    }
    Ok(&path[..end])
}

/// The last component of a normalized path; `/` for the root.
fn last_component(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) if i + 1 < path.len() => &path[i + 1..],
        _ => b"/",
    }
}

fn timestamp(t: ext4_view::Timestamp) -> Timestamp {
    Timestamp {
        secs: t.seconds(),
        nanos: t.nanoseconds().min(999_999_999),
    }
}

fn entry(name: Vec<u8>, m: &Metadata) -> Entry {
    let file_type = m.file_type();
    let kind = if file_type.is_regular_file() {
        EntryKind::File
    } else if file_type.is_dir() {
        EntryKind::Dir
    } else if file_type.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    };
    Entry {
        name,
        kind,
        size: if kind == EntryKind::Dir { 0 } else { m.len() },
        mode: u32::from(m.mode()) & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        modified: Some(timestamp(m.modified())),
        accessed: Some(timestamp(m.accessed())),
    }
}

fn text(path: &str) -> &[u8] {
    path.as_bytes()
}

impl FileSystem for Ext4FileSystem {
    fn kind(&self) -> &'static str {
        "ext4"
    }

    fn metadata(&self, path: &str) -> Result<Entry> {
        self.metadata_bytes(text(path))
    }

    fn read_dir(&self, path: &str) -> Result<Vec<Entry>> {
        self.read_dir_bytes(text(path))
    }

    fn read_link(&self, path: &str) -> Result<Vec<u8>> {
        self.read_link_bytes(text(path))
    }

    fn copy_file(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        self.copy_file_bytes(text(path), out)
    }

    fn metadata_bytes(&self, path: &[u8]) -> Result<Entry> {
        let path = normalize(path)?;
        let m = self
            .fs
            .symlink_metadata(path)
            .map_err(|e| self.error(path, e))?;
        Ok(entry(last_component(path).to_vec(), &m))
    }

    fn read_dir_bytes(&self, path: &[u8]) -> Result<Vec<Entry>> {
        let path = normalize(path)?;
        let mut entries = Vec::new();
        for item in self.fs.read_dir(path).map_err(|e| self.error(path, e))? {
            let item = item.map_err(|e| self.error(path, e))?;
            let name = item.file_name();
            let name = name.as_ref();
            if name == b"." || name == b".." {
                continue;
            }
            let m = item
                .metadata()
                .map_err(|e| self.error(item.path().as_ref(), e))?;
            entries.push(entry(name.to_vec(), &m));
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn read_link_bytes(&self, path: &[u8]) -> Result<Vec<u8>> {
        let path = normalize(path)?;
        let target = self.fs.read_link(path).map_err(|e| self.error(path, e))?;
        Ok(target.as_ref().to_vec())
    }

    fn copy_file_bytes(&self, path: &[u8], out: &mut dyn Write) -> Result<u64> {
        let path = normalize(path)?;
        let mut file = self.fs.open(path).map_err(|e| self.error(path, e))?;
        let mut piece = vec![0u8; COPY_PIECE];
        let mut written = 0u64;
        loop {
            // The crate reads at most one block per call: gather a piece.
            let mut filled = 0;
            while filled < piece.len() {
                let n = file
                    .read_bytes(&mut piece[filled..])
                    .map_err(|e| self.error(path, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok(written);
            }
            out.write_all(&piece[..filled])
                .map_err(|source| Error::Output {
                    path: String::from_utf8_lossy(path).into_owned().into(),
                    source,
                })?;
            written += filled as u64;
        }
    }
}

//! NTFS, read in place through the `ntfs` crate: file-level restore from
//! Windows disks without mounting anything.
//!
//! What a listing shows, and why:
//! - Each file once, under its long (Win32 or POSIX) name: the DOS 8.3
//!   duplicates Windows adds (`PROGRA~1`) are skipped. A file with several
//!   hard links in one directory is listed under each of its names.
//! - The root directory hides the NTFS metadata files (`$MFT`, `$Bitmap`,
//!   `$LogFile`, `$Extend`, ...: file records below 16), as a mounted NTFS
//!   does. They can still be named: `ls /$Extend` works.
//! - Lookups ignore case the way Windows does, through the volume's own
//!   `$UpCase` table and the directory's B-tree index: a path costs a few
//!   index records per component, never a scan of the MFT.
//!
//! What a file's contents are: its unnamed `$DATA` stream. Alternate data
//! streams (`file:stream`) are not copied. Bytes past a file's valid data
//! length read as zeros, as Windows reads them. Files that NTFS compresses
//! (LZNT1) or encrypts (EFS), and files whose contents live behind a reparse
//! point (WOF/CompactOS compression, deduplication, cloud placeholders),
//! are refused by name: the crate does not decode them, and copying their
//! raw clusters would give wrong bytes silently.
//!
//! Symbolic links and junctions are [`EntryKind::Symlink`]; their target is
//! the print name Windows shows (`C:\Users\me`), with `\` turned into `/`
//! for relative links so that they resolve on Unix.
//!
//! A damaged image gives an [`Error::FileSystem`], never a panic or a hang:
//! sizes the crate would allocate on the image's say-so are checked first,
//! every operation has a budget of bytes it may read (a looping B-tree or
//! attribute list runs out of it), and a panic inside the crate is caught
//! and reported as damage.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{
    NtfsFileAttributeFlags, NtfsFileName, NtfsFileNamespace, NtfsIndexRoot,
};
use ntfs::{
    KnownNtfsFileRecordNumber, Ntfs, NtfsAttributeFlags, NtfsAttributeItem, NtfsAttributeType,
    NtfsFile, NtfsIndex, NtfsReadSeek, NtfsTime, UpcaseOrd,
};

use super::{Entry, EntryKind, FileSystem, Timestamp};
use crate::error::{Error, Result};
use crate::image::{ImageCursor, ImageRead};

/// How many bytes of metadata one step (opening the volume, looking up
/// one path component, reading one file's record) may read: a looping
/// structure stops here. Legitimate steps read a few KiB.
const STEP_BUDGET: u64 = 16 << 20;

/// The most index bytes one directory listing may read beyond its
/// index's own size (the root index and a few records read twice).
const LISTING_SLACK: u64 = 16 << 20;

/// Directory indexes larger than this are read only this far: a listing
/// keeps its entries in memory, and this is some ten million names.
const MAX_INDEX_BYTES: u64 = 1 << 30;

/// Largest file record or index record accepted: Windows writes 1 KiB or
/// 4 KiB; the crate allocates whatever the boot sector or index root says.
const MAX_RECORD_SIZE: u32 = 64 << 10;

/// Largest reparse point (`MAXIMUM_REPARSE_DATA_BUFFER_SIZE`).
const MAX_REPARSE_SIZE: u64 = 16 << 10;

/// Name comparisons one path-component lookup may make before the index
/// is judged to loop (a B-tree node holds at most a few hundred names).
const MAX_COMPARISONS: u32 = 100_000;

/// First file record that is not NTFS metadata; the root hides the ones
/// below it.
const FIRST_USER_RECORD: u64 = 16;

/// Copy buffer: files are streamed in pieces this large.
const COPY_BUFFER: usize = 1 << 20;

const IO_REPARSE_TAG_MOUNT_POINT: u32 = 0xA000_0003;
const IO_REPARSE_TAG_SYMLINK: u32 = 0xA000_000C;
const SYMLINK_FLAG_RELATIVE: u32 = 1;

/// Seconds from 1601-01-01 (the NTFS epoch) to 1970-01-01.
const NTFS_TO_UNIX_SECS: i64 = 11_644_473_600;

/// An NTFS file system opened read-only inside an image.
pub struct NtfsFileSystem<'a> {
    ntfs: Ntfs,
    reader: Mutex<BudgetReader<'a>>,
    /// `NTFS in <image>`, for messages.
    place: String,
}

/// `Read + Seek` over the image for the crate, with a budget of bytes
/// each operation may read, and reads past the image's end refused
/// rather than returning 0 (the crate would skip to the next data run).
struct BudgetReader<'a> {
    cursor: ImageCursor<Arc<dyn ImageRead + 'a>>,
    left: u64,
    exhausted: bool,
    past_end: bool,
}

impl BudgetReader<'_> {
    fn set_budget(&mut self, bytes: u64) {
        self.left = bytes;
        self.exhausted = false;
        self.past_end = false;
    }
}

impl Read for BudgetReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            self.exhausted = true;
            return Err(io::Error::other("read budget exhausted"));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.cursor.read(&mut buf[..want])?;
        if n == 0 {
            self.past_end = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the image",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

impl Seek for BudgetReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.cursor.seek(to)
    }
}

impl<'a> NtfsFileSystem<'a> {
    /// Opens the NTFS file system that fills `image` (a partition, not a
    /// whole disk): reads and checks its boot sector, and reads its
    /// `$UpCase` table for case-insensitive lookups. A damaged or
    /// unsupported volume is [`Error::FileSystem`] naming the image.
    pub fn open(image: Box<dyn ImageRead + 'a>) -> Result<Self> {
        let image: Arc<dyn ImageRead + 'a> = Arc::from(image);
        let describe = image.describe();
        let place = format!("NTFS in {describe}");
        let fail = |reason: String| Error::FileSystem {
            place: place.clone(),
            reason,
        };
        if !looks_like_ntfs(&*image) {
            return Err(fail(
                "no NTFS boot sector (OEM id 'NTFS    ' at byte 3); choose the partition that holds the file system".into(),
            ));
        }
        let mut reader = BudgetReader {
            cursor: ImageCursor::new(image),
            left: STEP_BUDGET,
            exhausted: false,
            past_end: false,
        };
        // Opening runs the crate over untrusted bytes like every other call;
        // see `guarded` for why catching a panic is sound here.
        let opened = catch_unwind(AssertUnwindSafe(|| -> std::result::Result<Ntfs, String> {
            let mut ntfs = Ntfs::new(&mut reader).map_err(|e| e.to_string())?;
            // The crate allocates one file record of this size per read.
            if ntfs.file_record_size() > MAX_RECORD_SIZE {
                return Err(format!(
                    "its boot sector gives file records of {} bytes (at most {MAX_RECORD_SIZE} are read)",
                    ntfs.file_record_size()
                ));
            }
            ntfs.read_upcase_table(&mut reader)
                .map_err(|e| format!("cannot read its $UpCase table: {e}"))?;
            Ok(ntfs)
        }));
        let ntfs = match opened {
            Ok(Ok(ntfs)) => ntfs,
            Ok(Err(reason)) => return Err(fail(explain(&reader, reason))),
            Err(panic) => return Err(fail(panic_reason(panic))),
        };
        Ok(NtfsFileSystem {
            ntfs,
            reader: Mutex::new(reader),
            place,
        })
    }

    /// Runs `f` with the reader, a fresh step budget, and the crate's
    /// panics turned into errors.
    ///
    /// The `ntfs` crate indexes slices by offsets read from the image and
    /// does unchecked arithmetic on them (e.g. an index entry length
    /// below 8 underflows); it checks most but not all of them. A panic
    /// there is damage, not a bug of ours, so it is caught as a last
    /// resort. `AssertUnwindSafe` holds: the only state `f` mutates is
    /// the reader's position and budget, which every call resets before
    /// use; the `Ntfs` value is only read.
    fn guarded<T>(
        &self,
        path: &str,
        f: impl FnOnce(&mut BudgetReader<'a>) -> Result<T>,
    ) -> Result<T> {
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        reader.set_budget(STEP_BUDGET);
        match catch_unwind(AssertUnwindSafe(|| f(&mut reader))) {
            Ok(result) => result,
            Err(panic) => Err(self.damaged(path, panic_reason(panic))),
        }
    }

    /// `path`'s structures are damaged, for `reason`.
    fn damaged(&self, path: &str, reason: String) -> Error {
        Error::FileSystem {
            place: format!("{path} in {}", self.place),
            reason,
        }
    }

    /// A crate error while reading `path`, with what the reader saw.
    fn crate_error(&self, reader: &BudgetReader<'_>, path: &str, e: ntfs::NtfsError) -> Error {
        self.damaged(path, explain(reader, e.to_string()))
    }

    /// The file at `path`, and the name it is stored under (`/` for the
    /// root). Components are matched as Windows does, ignoring case.
    fn resolve(&self, r: &mut BudgetReader<'a>, path: &str) -> Result<(NtfsFile<'_>, Vec<u8>)> {
        let components = split_path(path)?;
        let mut file = self
            .ntfs
            .root_directory(r)
            .map_err(|e| self.crate_error(r, "/", e))?;
        let mut name = b"/".to_vec();
        let mut walked = String::new();
        for component in components {
            if !file.is_directory() {
                let at = if walked.is_empty() { "/" } else { &walked };
                return Err(Error::InvalidArgument(format!(
                    "{path}: {at} is a file, not a directory, in {}",
                    self.place
                )));
            }
            let dir_path = if walked.is_empty() { "/" } else { &walked };
            r.set_budget(STEP_BUDGET);
            let (found_name, next) =
                self.find_in(r, &file, dir_path, component)?
                    .ok_or_else(|| Error::PathNotFound {
                        path: path.to_string(),
                        place: self.place.clone(),
                    })?;
            walked.push('/');
            walked.push_str(&found_name);
            file = next;
            name = found_name.into_bytes();
        }
        Ok((file, name))
    }

    /// Looks `component` up in the directory `dir` through its index:
    /// the stored name and the file, or `None`.
    fn find_in(
        &self,
        r: &mut BudgetReader<'a>,
        dir: &NtfsFile<'_>,
        dir_path: &str,
        component: &str,
    ) -> Result<Option<(String, NtfsFile<'_>)>> {
        let (index, _) = self.directory_index(r, dir, dir_path)?;
        let mut finder = index.finder();
        let comparisons = std::cell::Cell::new(0u32);
        let ntfs = &self.ntfs;
        // The crate's `NtfsFileNameIndex::find` compares the same way; this
        // closure also counts, because a zero-length index entry makes the
        // crate compare the same entry forever without reading anything.
        let found = finder.find(r, |key: &NtfsFileName| {
            comparisons.set(comparisons.get() + 1);
            if comparisons.get() > MAX_COMPARISONS {
                // Less descends or ends the search: the loop stops.
                return std::cmp::Ordering::Less;
            }
            component.upcase_cmp(ntfs, &key.name())
        });
        if comparisons.get() > MAX_COMPARISONS {
            return Err(self.damaged(
                dir_path,
                "its directory index loops (an entry of length zero)".into(),
            ));
        }
        let entry = match found {
            None => return Ok(None),
            Some(entry) => entry.map_err(|e| self.crate_error(r, dir_path, e))?,
        };
        let key = match entry.key() {
            Some(key) => key.map_err(|e| self.crate_error(r, dir_path, e))?,
            None => return Ok(None),
        };
        let stored = utf8_name(&key, dir_path, self)?;
        let reference = entry.file_reference();
        let file = reference
            .to_file(&self.ntfs, r)
            .map_err(|e| self.crate_error(r, &join(dir_path, &stored), e))?;
        Ok(Some((stored, file)))
    }

    /// The `$I30` index of directory `dir`, with the bytes a full walk of
    /// it may read. Checks the index record size before the crate
    /// allocates records of that size.
    fn directory_index<'n, 'f>(
        &self,
        r: &mut BudgetReader<'a>,
        dir: &'f NtfsFile<'n>,
        dir_path: &str,
    ) -> Result<(NtfsIndex<'n, 'f, NtfsFileNameIndex>, u64)> {
        let fail = |r: &BudgetReader<'_>, e: ntfs::NtfsError| self.crate_error(r, dir_path, e);
        let root_item = find_attribute(r, dir, NtfsAttributeType::IndexRoot, "$I30")
            .map_err(|e| fail(r, e))?
            .ok_or_else(|| self.damaged(dir_path, "directory without an $I30 index root".into()))?;
        let (record_size, large) = {
            let attribute = root_item.to_attribute().map_err(|e| fail(r, e))?;
            let root = attribute
                .resident_structured_value::<NtfsIndexRoot>()
                .map_err(|e| fail(r, e))?;
            (root.index_record_size(), root.is_large_index())
        };
        if !(256..=MAX_RECORD_SIZE).contains(&record_size) {
            return Err(self.damaged(
                dir_path,
                format!("its index root gives index records of {record_size} bytes"),
            ));
        }
        let mut allocation_item = None;
        let mut index_bytes = 0;
        if large {
            let item = find_attribute(r, dir, NtfsAttributeType::IndexAllocation, "$I30")
                .map_err(|e| fail(r, e))?
                .ok_or_else(|| {
                    self.damaged(
                        dir_path,
                        "large directory without an index allocation".into(),
                    )
                })?;
            index_bytes = item.to_attribute().map_err(|e| fail(r, e))?.value_length();
            allocation_item = Some(item);
        }
        let index = NtfsIndex::<NtfsFileNameIndex>::new(root_item, allocation_item)
            .map_err(|e| fail(r, e))?;
        Ok((index, index_bytes))
    }

    /// The entry for `file`, listed as `name`.
    fn entry_of(
        &self,
        r: &mut BudgetReader<'a>,
        file: &NtfsFile<'_>,
        name: Vec<u8>,
        path: &str,
    ) -> Result<Entry> {
        let fail = |r: &BudgetReader<'_>, e: ntfs::NtfsError| self.crate_error(r, path, e);
        let info = file.info().map_err(|e| fail(r, e))?;
        let attributes = info.file_attributes();
        let reparse = self.reparse_point(r, file, path)?;
        let (kind, size) = match &reparse {
            Some(Reparse::Link(target)) => (EntryKind::Symlink, target.len() as u64),
            _ if file.is_directory() => (EntryKind::Dir, 0),
            // Its contents live behind the reparse point, not in $DATA.
            Some(Reparse::Other(_)) => (EntryKind::Other, self.data_size(r, file, path)?),
            None => (EntryKind::File, self.data_size(r, file, path)?),
        };
        let mode = match kind {
            EntryKind::Dir => 0o755,
            EntryKind::Symlink => 0o777,
            _ if attributes.contains(NtfsFileAttributeFlags::READ_ONLY) => 0o444,
            _ => 0o644,
        };
        Ok(Entry {
            name,
            kind,
            size,
            mode,
            uid: 0,
            gid: 0,
            modified: unix_time(info.modification_time()),
            accessed: unix_time(info.access_time()),
        })
    }

    /// Size of `file`'s unnamed `$DATA` stream (0 without one).
    fn data_size(&self, r: &mut BudgetReader<'a>, file: &NtfsFile<'_>, path: &str) -> Result<u64> {
        match file.data(r, "") {
            None => Ok(0),
            Some(item) => {
                let item = item.map_err(|e| self.crate_error(r, path, e))?;
                let attribute = item
                    .to_attribute()
                    .map_err(|e| self.crate_error(r, path, e))?;
                Ok(attribute.value_length())
            }
        }
    }

    /// `file`'s reparse point, if it has one. Found by its attribute, not
    /// by the REPARSE_POINT flag in `$STANDARD_INFORMATION`: Windows sets
    /// both, other writers (ntfs-3g's `ntfscp -a 0xC0`) only the former,
    /// and the attribute is what decides where the contents are.
    fn reparse_point(
        &self,
        r: &mut BudgetReader<'a>,
        file: &NtfsFile<'_>,
        path: &str,
    ) -> Result<Option<Reparse>> {
        let fail = |r: &BudgetReader<'_>, e: ntfs::NtfsError| self.crate_error(r, path, e);
        let Some(item) =
            find_attribute(r, file, NtfsAttributeType::ReparsePoint, "").map_err(|e| fail(r, e))?
        else {
            return Ok(None);
        };
        let attribute = item.to_attribute().map_err(|e| fail(r, e))?;
        let len = attribute.value_length();
        if len > MAX_REPARSE_SIZE {
            return Err(self.damaged(
                path,
                format!("its reparse point claims {len} bytes (at most {MAX_REPARSE_SIZE})"),
            ));
        }
        let mut data = vec![0u8; len as usize];
        let mut value = attribute.value(r).map_err(|e| fail(r, e))?;
        value.read_exact(r, &mut data).map_err(|e| fail(r, e))?;
        parse_reparse_point(&data)
            .map(Some)
            .map_err(|reason| self.damaged(path, reason))
    }

    /// Streams `file`'s unnamed `$DATA` to `out`.
    fn copy_data(
        &self,
        r: &mut BudgetReader<'a>,
        file: &NtfsFile<'_>,
        path: &str,
        out: &mut dyn Write,
    ) -> Result<u64> {
        let fail = |r: &BudgetReader<'_>, e: ntfs::NtfsError| self.crate_error(r, path, e);
        let Some(item) = file.data(r, "") else {
            return Ok(0);
        };
        let item = item.map_err(|e| fail(r, e))?;
        let attribute = item.to_attribute().map_err(|e| fail(r, e))?;
        let flags = attribute.flags();
        if flags.contains(NtfsAttributeFlags::ENCRYPTED) {
            return Err(self.damaged(
                path,
                "the file is encrypted with EFS; only Windows can read it, with its owner's key"
                    .into(),
            ));
        }
        if flags.contains(NtfsAttributeFlags::COMPRESSED) {
            return Err(self.damaged(
                path,
                "the file is NTFS-compressed (LZNT1), which this build does not decompress; copy it from the running Windows, or mount the restored disk with ntfs-3g".into(),
            ));
        }
        let len = attribute.value_length();
        let valid = if attribute.is_resident() {
            len
        } else {
            valid_data_length(r, attribute.position().value().map(|p| p.get()), len)
        };
        // The data itself is read once; only the metadata has a fixed budget.
        r.set_budget(STEP_BUDGET.saturating_add(len));
        let mut value = attribute.value(r).map_err(|e| fail(r, e))?;
        let mut buf = vec![0u8; COPY_BUFFER.min(len.max(1) as usize)];
        let mut done = 0u64;
        while done < len {
            let want = buf
                .len()
                .min(usize::try_from(len - done).unwrap_or(usize::MAX));
            let n = value.read(r, &mut buf[..want]).map_err(|e| fail(r, e))?;
            if n == 0 {
                break;
            }
            // Past the valid data length the clusters hold whatever was
            // there before: Windows reads zeros.
            let start_zero = valid.saturating_sub(done).min(n as u64) as usize;
            buf[start_zero..n].fill(0);
            out.write_all(&buf[..n]).map_err(|source| Error::Output {
                path: path.into(),
                source,
            })?;
            done += n as u64;
        }
        if done != len {
            return Err(self.damaged(
                path,
                format!("its data runs end after {done} of its {len} bytes"),
            ));
        }
        Ok(done)
    }
}

/// Whether `image` starts with an NTFS boot sector (OEM id `NTFS    `).
pub fn looks_like_ntfs(image: &dyn ImageRead) -> bool {
    let mut head = [0u8; 11];
    image.read_exact_at(&mut head, 0).is_ok() && &head[3..11] == b"NTFS    "
}

impl FileSystem for NtfsFileSystem<'_> {
    fn kind(&self) -> &'static str {
        "ntfs"
    }

    fn metadata(&self, path: &str) -> Result<Entry> {
        self.guarded(path, |r| {
            let (file, name) = self.resolve(r, path)?;
            r.set_budget(STEP_BUDGET);
            self.entry_of(r, &file, name, path)
        })
    }

    fn read_dir(&self, path: &str) -> Result<Vec<Entry>> {
        self.guarded(path, |r| {
            let (dir, _) = self.resolve(r, path)?;
            if !dir.is_directory() {
                return Err(Error::InvalidArgument(format!(
                    "{path} is a file, not a directory, in {}",
                    self.place
                )));
            }
            let is_root =
                dir.file_record_number() == KnownNtfsFileRecordNumber::RootDirectory as u64;
            r.set_budget(STEP_BUDGET);
            let (index, index_bytes) = self.directory_index(r, &dir, path)?;
            let index_bytes = index_bytes.min(MAX_INDEX_BYTES);
            // A legitimate walk reads each index record once; a cycle of
            // subnode links reads on until this runs out.
            r.set_budget(index_bytes + LISTING_SLACK);
            // Every entry takes at least 16 bytes of the index: more than
            // this many means entries of length zero repeating.
            let max_entries = (index_bytes + LISTING_SLACK) / 16;
            let mut found: Vec<(String, u64)> = Vec::new();
            let mut entries = index.entries();
            let mut seen = 0u64;
            while let Some(entry) = entries.next(r) {
                let entry = entry.map_err(|e| self.crate_error(r, path, e))?;
                seen += 1;
                if seen > max_entries {
                    return Err(self.damaged(
                        path,
                        "its directory index loops (an entry of length zero)".into(),
                    ));
                }
                let Some(key) = entry.key() else { continue };
                let key = key.map_err(|e| self.crate_error(r, path, e))?;
                if key.namespace() == NtfsFileNamespace::Dos {
                    continue;
                }
                let record = entry.file_reference().file_record_number();
                if is_root && record < FIRST_USER_RECORD {
                    continue;
                }
                let name = utf8_name(&key, path, self)?;
                if name == "." || name == ".." {
                    continue;
                }
                found.push((name, record));
            }
            drop(entries);
            let mut listing = Vec::with_capacity(found.len());
            for (name, record) in found {
                let entry_path = join(path, &name);
                r.set_budget(STEP_BUDGET);
                let file = self
                    .ntfs
                    .file(r, record)
                    .map_err(|e| self.crate_error(r, &entry_path, e))?;
                listing.push(self.entry_of(r, &file, name.into_bytes(), &entry_path)?);
            }
            listing.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(listing)
        })
    }

    fn read_link(&self, path: &str) -> Result<Vec<u8>> {
        self.guarded(path, |r| {
            let (file, _) = self.resolve(r, path)?;
            r.set_budget(STEP_BUDGET);
            match self.reparse_point(r, &file, path)? {
                Some(Reparse::Link(target)) => Ok(target),
                Some(Reparse::Other(tag)) => Err(Error::InvalidArgument(format!(
                    "{path} in {} is not a symbolic link or junction: its reparse point is {}",
                    self.place,
                    reparse_tag_name(tag)
                ))),
                None => Err(Error::InvalidArgument(format!(
                    "{path} in {} is not a symbolic link",
                    self.place
                ))),
            }
        })
    }

    fn copy_file(&self, path: &str, out: &mut dyn Write) -> Result<u64> {
        self.guarded(path, |r| {
            let (file, _) = self.resolve(r, path)?;
            r.set_budget(STEP_BUDGET);
            if file.is_directory() {
                return Err(Error::InvalidArgument(format!(
                    "{path} is a directory in {}, not a file",
                    self.place
                )));
            }
            match self.reparse_point(r, &file, path)? {
                Some(Reparse::Link(_)) => {
                    return Err(Error::InvalidArgument(format!(
                        "{path} in {} is a symbolic link, not a file; read its target with read_link",
                        self.place
                    )))
                }
                Some(Reparse::Other(tag)) => {
                    return Err(self.damaged(
                        path,
                        format!(
                            "its contents live behind a reparse point ({}), which this build does not read",
                            reparse_tag_name(tag)
                        ),
                    ))
                }
                None => {}
            }
            self.copy_data(r, &file, path, out)
        })
    }
}

/// The first attribute of type `ty` named `name` (`""`: unnamed) of
/// `file`, following attribute lists.
fn find_attribute<'n, 'f>(
    r: &mut BudgetReader<'_>,
    file: &'f NtfsFile<'n>,
    ty: NtfsAttributeType,
    name: &str,
) -> std::result::Result<Option<NtfsAttributeItem<'n, 'f>>, ntfs::NtfsError> {
    let mut attributes = file.attributes();
    while let Some(item) = attributes.next(r) {
        let item = item?;
        let attribute = item.to_attribute()?;
        // Unknown attribute types are skipped, not fatal.
        if attribute.ty().ok() != Some(ty) {
            continue;
        }
        if attribute.name()? != name {
            continue;
        }
        return Ok(Some(item));
    }
    Ok(None)
}

/// Splits an absolute path into components (`/` or `\` separated),
/// resolving `.` and `..` lexically.
fn split_path(path: &str) -> Result<Vec<&str>> {
    if !path.starts_with(['/', '\\']) {
        return Err(Error::InvalidArgument(format!(
            "{path}: paths inside a disk are absolute, e.g. /Windows/System32"
        )));
    }
    let mut components = Vec::new();
    for component in path.split(['/', '\\']) {
        match component {
            "" | "." => {}
            ".." => {
                components.pop();
            }
            name => components.push(name),
        }
    }
    Ok(components)
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A file name from the index as UTF-8; names with unpaired surrogates
/// (which Windows allows) are refused by name rather than mangled.
fn utf8_name(key: &NtfsFileName, dir_path: &str, fs: &NtfsFileSystem<'_>) -> Result<String> {
    key.name().to_string().map_err(|_| {
        fs.damaged(
            dir_path,
            format!(
                "a name in it is not valid UTF-16 ({}), and cannot be given as UTF-8",
                key.name().to_string_lossy()
            ),
        )
    })
}

/// NTFS time (100 ns ticks since 1601-01-01 UTC) as Unix time; 0 means
/// "not set".
fn unix_time(time: NtfsTime) -> Option<Timestamp> {
    let ticks = time.nt_timestamp();
    if ticks == 0 {
        return None;
    }
    // ticks / 10^7 < 2^64 / 10^7 < 2^41: fits an i64.
    let secs = (ticks / 10_000_000) as i64 - NTFS_TO_UNIX_SECS;
    let nanos = (ticks % 10_000_000) as u32 * 100;
    Some(Timestamp { secs, nanos })
}

/// What a reparse point is.
#[derive(Debug, PartialEq, Eq)]
enum Reparse {
    /// A symbolic link or junction, with its target.
    Link(Vec<u8>),
    /// Anything else, by tag.
    Other(u32),
}

/// Parses a `REPARSE_DATA_BUFFER`. Symbolic links and junctions give
/// their print name (or substitute name, without its `\??\` prefix);
/// other tags are returned as they are.
fn parse_reparse_point(data: &[u8]) -> std::result::Result<Reparse, String> {
    let u16_at = |d: &[u8], at: usize| d.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |d: &[u8], at: usize| {
        d.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let short = || format!("its reparse point is cut short ({} bytes)", data.len());
    let tag = u32_at(data, 0).ok_or_else(short)?;
    let body_len = u16_at(data, 4).ok_or_else(short)? as usize;
    let body = data.get(8..8 + body_len).ok_or_else(short)?;
    let (buffer_start, relative) = match tag {
        IO_REPARSE_TAG_SYMLINK => {
            let flags = u32_at(body, 8).ok_or_else(short)?;
            (12, flags & SYMLINK_FLAG_RELATIVE != 0)
        }
        IO_REPARSE_TAG_MOUNT_POINT => (8, false),
        other => return Ok(Reparse::Other(other)),
    };
    let field = |at| u16_at(body, at).map(usize::from).ok_or_else(short);
    let (substitute_at, substitute_len) = (field(0)?, field(2)?);
    let (print_at, print_len) = (field(4)?, field(6)?);
    let buffer = &body[buffer_start.min(body.len())..];
    let name_at = |at: usize, len: usize| -> std::result::Result<String, String> {
        let bytes = buffer
            .get(at..at + len)
            .ok_or_else(|| "its reparse point names a target outside itself".to_string())?;
        if len % 2 != 0 {
            return Err("its reparse point target has an odd length".into());
        }
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        String::from_utf16(&units).map_err(|_| "its link target is not valid UTF-16".to_string())
    };
    let mut target = if print_len > 0 {
        name_at(print_at, print_len)?
    } else {
        let substitute = name_at(substitute_at, substitute_len)?;
        substitute
            .strip_prefix(r"\??\")
            .map(str::to_string)
            .unwrap_or(substitute)
    };
    if target.is_empty() {
        return Err("its link target is empty".into());
    }
    if relative {
        target = target.replace('\\', "/");
    }
    Ok(Reparse::Link(target.into_bytes()))
}

/// Names a reparse tag for messages.
fn reparse_tag_name(tag: u32) -> String {
    let what = match tag {
        0x8000_0017 => "WOF/CompactOS compression",
        0x8000_0013 => "data deduplication",
        0x8000_001B => "an app execution alias",
        0x8000_0014 => "an NFS symbolic link",
        0x8000_0023 => "an AF_UNIX socket",
        t if t & 0xFFFF_0FFF == 0x9000_001A => "a OneDrive/cloud placeholder",
        _ => "an unknown kind",
    };
    format!("{what}, tag 0x{tag:08X}")
}

/// The valid data length (`initialized_size`) of the non-resident
/// attribute whose header starts at byte `position` of the volume, where
/// it lies in one piece on disk; otherwise `len`, the whole value.
///
/// The crate does not expose this field. Its header is read back from
/// the image, which holds the record before its update-sequence fixup:
/// that only differs in the last two bytes of each 512-byte sector, so
/// a field that does not touch them reads true on disk. The data size
/// beside it is checked against the crate's to make sure of the place.
fn valid_data_length(r: &mut BudgetReader<'_>, position: Option<u64>, len: u64) -> u64 {
    let Some(header) = position else { return len };
    let Some(start) = header.checked_add(0x30) else {
        return len;
    };
    // data_size (0x30..0x38) and initialized_size (0x38..0x40).
    let in_sector = start % 512;
    if in_sector + 16 > 510 {
        return len;
    }
    let mut raw = [0u8; 16];
    if r.seek(SeekFrom::Start(start)).is_err() || r.read_exact(&mut raw).is_err() {
        return len;
    }
    let data_size = u64::from_le_bytes(raw[..8].try_into().unwrap_or_default());
    let initialized = u64::from_le_bytes(raw[8..].try_into().unwrap_or_default());
    if data_size != len {
        return len;
    }
    initialized.min(len)
}

/// A crate error's text, with what the reader saw when it failed.
fn explain(reader: &BudgetReader<'_>, reason: String) -> String {
    if reader.exhausted {
        format!("its structures loop or are larger than they say (stopped after the read budget): {reason}")
    } else if reader.past_end {
        format!("it reaches past the end of the image (truncated image?): {reason}")
    } else {
        reason
    }
}

fn panic_reason(panic: Box<dyn std::any::Any + Send>) -> String {
    let detail = crate::exec::panic_message(&*panic);
    format!("its structures are damaged (the NTFS reader stopped: {detail})")
}

#[cfg(test)]
mod tests;

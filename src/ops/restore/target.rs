//! Where a restored disk goes, and the one rule that keeps a restore from
//! harming anything but its output:
//!
//! | the output path is | restore | `restore --into` |
//! |---|---|---|
//! | missing | creates a new file | refused |
//! | a regular file | replaces it with `--force` (else refused) | updates it in place; `--force` if its size differs from the disk's |
//! | a block device | writes it in place with `--force` (else refused) | updates it in place |
//! | a directory | refused (restore one disk into a file) | refused |
//! | a character device, FIFO, socket or other | refused | refused |
//! | a symbolic link | the rule of what it points to, applied to that path (the link stays); a dangling link is refused | the same |
//!
//! A new or replaced file is written under a name no user file has
//! (`NAME.diskvault-<random>.partial`, created exclusively beside it) and
//! renamed over `NAME` only once the whole image verified, so `NAME` never
//! holds wrong bytes; the temporary is removed when the restore fails or
//! is interrupted. A restore holds a lock (`flock`) on its temporary while
//! it runs, so the temporary of a restore that was killed (and could not
//! remove it) is told from a running one's: the next restore to `NAME`
//! names it, so that its space can be freed. It does not remove it: a
//! file of the user's could have that name.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What the output path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OutputKind {
    New,
    File,
    BlockDevice,
}

/// The output of one disk, resolved and judged by the rule above.
#[derive(Debug, Clone)]
pub(super) struct Output {
    /// The path given.
    pub given: PathBuf,
    /// Where the bytes go: `given`, or what a symbolic link points to.
    pub path: PathBuf,
    pub kind: OutputKind,
}

fn refuse(path: &Path, what: &str) -> Error {
    Error::InvalidArgument(format!(
        "{} is {what}; restore writes only to a new file, a regular file (replaced with --force) or a block device",
        path.display()
    ))
}

/// Resolves `given` (following a symbolic link) and says what it is;
/// refuses anything restore must not write.
pub(super) fn resolve(given: &Path) -> Result<Output> {
    let output_error = |source| Error::Output {
        path: given.to_path_buf(),
        source,
    };
    let link = match fs::symlink_metadata(given) {
        Ok(m) => m.file_type().is_symlink(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Output {
                given: given.to_path_buf(),
                path: given.to_path_buf(),
                kind: OutputKind::New,
            })
        }
        Err(e) => return Err(output_error(e)),
    };
    let path = if link {
        match fs::canonicalize(given) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(refuse(
                    given,
                    "a symbolic link to nothing (a dangling link)",
                ))
            }
            Err(e) => return Err(output_error(e)),
        }
    } else {
        given.to_path_buf()
    };
    let ft = fs::metadata(&path).map_err(output_error)?.file_type();
    let kind = if ft.is_file() {
        OutputKind::File
    } else if ft.is_block_device() {
        OutputKind::BlockDevice
    } else if ft.is_dir() {
        return Err(refuse(given, "a directory"));
    } else if ft.is_char_device() {
        return Err(refuse(given, "a character device"));
    } else if ft.is_fifo() {
        return Err(refuse(given, "a FIFO (named pipe)"));
    } else if ft.is_socket() {
        return Err(refuse(given, "a socket"));
    } else {
        return Err(refuse(given, "not a regular file or block device"));
    };
    Ok(Output {
        given: given.to_path_buf(),
        path,
        kind,
    })
}

/// Where a disk's bytes go.
pub(super) struct Target {
    pub file: File,
    /// Path written during the restore (a temporary for new files).
    pub write_path: PathBuf,
    /// Where the result ends up.
    pub path: PathBuf,
    /// How zero runs are written.
    pub zeros: ZeroPolicy,
    /// Compare with the existing content before writing (restore --into).
    pub compare_existing: bool,
    /// Temporaries that killed restores to the same path left.
    pub stale: Vec<PathBuf>,
}

impl Target {
    /// True when the restore writes the output itself, not a temporary.
    pub fn in_place(&self) -> bool {
        self.write_path == self.path
    }
}

/// What a zero run needs in the output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ZeroPolicy {
    /// A new sparse file: nothing, it is a hole already.
    Skip,
    /// An existing file: punch a hole (or write zeros where that fails).
    Punch,
    /// A block device: write zeros.
    Write,
}

pub(super) fn output_error(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Output {
        path: path.to_path_buf(),
        source,
    }
}

fn device_size(file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::End(0))
}

/// Opens the output of a full restore: a block device in place, or a new
/// temporary beside a new or replaced file.
pub(super) fn open_for_restore(out: &Output, size: u64) -> Result<Target> {
    if out.kind == OutputKind::BlockDevice {
        let mut t = open_in_place(out, size)?;
        // A fresh copy: comparing with what was there is pointless.
        t.compare_existing = false;
        return Ok(t);
    }
    let name = out.path.file_name().unwrap_or_default().to_os_string();
    let stale = stale_temporaries(&out.path);
    // A name no user file has, created exclusively: an existing file is
    // never overwritten, even if it has the name of a temporary.
    let (file, write_path) = loop {
        let mut raw = [0u8; 6];
        crate::crypto::fill_random(&mut raw);
        let mut temp = name.clone();
        temp.push(format!(".diskvault-{}.partial", hex::encode(raw)));
        let write_path = out.path.with_file_name(temp);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&write_path)
        {
            Ok(f) => {
                // Marks the temporary as in use for as long as the file is
                // open. Where the file system has no locks, no temporary is
                // ever taken for stale (stale_temporaries).
                let _ = try_lock(&f);
                break (f, write_path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(output_error(&out.given)(e)),
        }
    };
    if let Err(e) = file.set_len(size) {
        let _ = fs::remove_file(&write_path);
        return Err(output_error(&out.given)(e));
    }
    Ok(Target {
        file,
        write_path,
        path: out.path.clone(),
        zeros: ZeroPolicy::Skip,
        compare_existing: false,
        stale,
    })
}

/// A temporary this old and unlocked is a killed restore's. The age covers
/// the instant between a restore creating its temporary and locking it.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `name` is one of `output`'s temporaries: `NAME.diskvault-` and
/// 12 hex digits, then `.partial`.
fn is_temporary_of(name: &[u8], output: &[u8]) -> bool {
    let Some(rest) = name
        .strip_prefix(output)
        .and_then(|r| r.strip_prefix(b".diskvault-"))
        .and_then(|r| r.strip_suffix(b".partial"))
    else {
        return false;
    };
    rest.len() == 12 && rest.iter().all(u8::is_ascii_hexdigit)
}

/// Takes the lock a running restore holds on its temporary, if no one
/// holds it.
fn try_lock(file: &File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on an open descriptor has no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The temporaries that killed restores left beside `path`: named as a
/// restore names them, no running restore holds them locked, last written
/// over a minute ago. Anything that cannot be judged (unreadable, locks not
/// supported) is not listed. Nothing is removed.
fn stale_temporaries(path: &Path) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let (Some(dir), Some(output)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        if !is_temporary_of(entry.file_name().as_bytes(), output.as_bytes()) {
            continue;
        }
        let candidate = entry.path();
        // Not following links: a temporary is always a regular file.
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&candidate)
        else {
            continue;
        };
        let old = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER);
        // The lock taken here goes with `file`, at the end of the loop.
        if old && try_lock(&file).is_ok() {
            stale.push(candidate);
        }
    }
    stale.sort();
    stale
}

/// Opens an existing file or device to be updated in place (`--into`, or a
/// block device).
pub(super) fn open_in_place(out: &Output, size: u64) -> Result<Target> {
    let path = &out.path;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(output_error(&out.given))?;
    let is_device = out.kind == OutputKind::BlockDevice;
    if is_device {
        let dev_size = device_size(&file).map_err(output_error(&out.given))?;
        if dev_size < size {
            return Err(Error::InvalidArgument(format!(
                "{} holds {dev_size} bytes, the disk needs {size}",
                out.given.display()
            )));
        }
    }
    Ok(Target {
        file,
        write_path: path.clone(),
        path: path.clone(),
        zeros: if is_device {
            ZeroPolicy::Write
        } else {
            ZeroPolicy::Punch
        },
        compare_existing: true,
        stale: Vec::new(),
    })
}

/// The writer thread: positional writes in arrival order; returns the bytes
/// written after making them durable.
pub(super) fn write_pieces(
    file: File,
    zeros: ZeroPolicy,
    rx: std::sync::mpsc::Receiver<Vec<super::Piece>>,
) -> io::Result<u64> {
    use super::Piece;
    let zero_buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let mut writeback = Writeback::default();
    for batch in rx {
        for piece in batch {
            match piece {
                Piece::Data {
                    offset,
                    bytes,
                    write: true,
                } => {
                    file.write_all_at(&bytes, offset)?;
                    written += bytes.len() as u64;
                    writeback.wrote_up_to(&file, offset + bytes.len() as u64);
                }
                Piece::Data { write: false, .. } => {}
                Piece::Zero { offset, len } => match zeros {
                    ZeroPolicy::Skip => {}
                    ZeroPolicy::Punch if punch_hole(&file, offset, len).is_ok() => {}
                    ZeroPolicy::Punch | ZeroPolicy::Write => {
                        let (mut off, mut left) = (offset, len);
                        while left > 0 {
                            let k = left.min(zero_buf.len() as u64) as usize;
                            file.write_all_at(&zero_buf[..k], off)?;
                            off += k as u64;
                            left -= k as u64;
                        }
                        writeback.wrote_up_to(&file, offset + len);
                    }
                },
            }
        }
    }
    file.sync_all()?;
    Ok(written)
}

/// Bytes a restore writes before it asks the kernel to start writing them
/// out.
const WRITEBACK_STEP: u64 = 32 << 20;

/// Starts writing a restore's output to its disk while the restore goes
/// on, so that the final `fsync` finds little left to do.
///
/// The kernel starts writeback on its own only once a tenth of memory is
/// dirty (2.3 GB on a 24 GiB machine), so a restore smaller than that used
/// to leave all of it to the `fsync`: 0.45-0.57 s of a 2.3-2.6 s restore of
/// the 1.2 GB bench image, spent waiting on the disk with the CPUs idle.
/// Asking for writeback of each 32 MiB as it is written
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which only starts the writes)
/// overlaps them with fetching; the `fsync` then takes 0.01-0.02 s. It also
/// keeps a large restore from filling memory with dirty pages.
///
/// Only a hint: durability still comes from the `fsync` at the end, which
/// also reports any error of these writes.
#[derive(Debug, Default)]
pub(super) struct Writeback {
    /// Offset up to which writeback was requested.
    started_to: u64,
}

impl Writeback {
    /// Bytes of `file` up to `end` were written (a restore writes in image
    /// order).
    pub fn wrote_up_to(&mut self, file: &File, end: u64) {
        use std::os::unix::io::AsRawFd;
        if end < self.started_to + WRITEBACK_STEP {
            return;
        }
        // SAFETY: sync_file_range on an open descriptor has no memory
        // effects. Its result is ignored: it is a hint, and an error of
        // the writes it starts is reported by the final fsync.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                self.started_to as libc::off64_t,
                (end - self.started_to) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.started_to = end;
    }
}

/// Deallocates a range of a file, which then reads as zeros.
pub(super) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: fallocate on a valid descriptor has no memory effects.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

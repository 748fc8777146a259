//! Copying files and trees out of a file system into a directory, as
//! `tar -x` does: each path asked for is recreated below the destination
//! at its full path (`/etc/fstab` lands in `TO/etc/fstab`; `/` extracts
//! the whole file system).
//!
//! The image is untrusted, and so is whatever already sits in the
//! destination. Names that could step outside it (empty, `.`, `..`, or
//! holding `/` or NUL) are skipped and reported. Every file, directory
//! and link is created relative to an open handle on its parent
//! directory, and no symbolic link in the destination is ever followed:
//! directories are opened with `O_NOFOLLOW`, files created with
//! `O_EXCL|O_NOFOLLOW`, and with `overwrite` an existing entry is removed
//! first, never written through.
//!
//! Hard links come out as separate copies of the file (the file system
//! trait does not say which names share an inode). Devices, FIFOs and
//! sockets are skipped and reported.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{Entry, EntryKind, FileSystem, Timestamp};

/// How `extract` treats existing files and ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Replace files, links (and non-directories in the way of
    /// directories) that already exist. Without it an existing entry is
    /// [`Error::OutputExists`]. Existing directories are always merged
    /// into.
    pub overwrite: bool,
    /// Give files the owner and group the file system records, and keep
    /// setuid and setgid bits. The default is true only when running as
    /// root, as with `tar`: others cannot give files away, and a setuid
    /// bit on a file they own would be a surprise.
    pub restore_owner: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            overwrite: false,
            // SAFETY: geteuid has no preconditions and cannot fail.
            restore_owner: unsafe { libc::geteuid() } == 0,
        }
    }
}

/// What `extract` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractReport {
    /// Regular files written.
    pub files: u64,
    /// Directories created or merged into.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Entries not extracted: their path in the file system, and why.
    pub skipped: Vec<(String, String)>,
}

/// Directories nested deeper than this are not followed: a hostile image
/// can make a directory contain itself.
const MAX_DEPTH: usize = 256;

/// Extracts each of `paths` (absolute paths in `fs`) below `to`, at their
/// full paths, creating `to` if needed. Parent directories are created
/// with the modes and times they have in the file system; directories are
/// extracted with everything in them, their times set once their contents
/// are written. Files get their mode (setuid/setgid only with
/// `restore_owner`), modification and access times to the nanosecond, and
/// owner and group when `opts.restore_owner`. `progress` is called with
/// each path as it is extracted.
///
/// Stops at the first error: [`Error::OutputExists`] for an existing
/// entry without `overwrite`, [`Error::Output`] when writing fails (the
/// file being written is removed), or the file system's error. Damaged
/// entries ([`Error::FileSystem`]), bad names and special files are
/// skipped and listed in the report instead.
pub fn extract(
    fs: &dyn FileSystem,
    paths: &[String],
    to: &Path,
    opts: &ExtractOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<ExtractReport> {
    std::fs::create_dir_all(to).map_err(|source| Error::Output {
        path: to.to_path_buf(),
        source,
    })?;
    let root = Dir::open_path(to)?;
    let mut run = Extraction {
        fs,
        opts,
        report: ExtractReport::default(),
        progress,
    };
    for path in paths {
        run.extract_path(&root, path)?;
    }
    Ok(run.report)
}

struct Extraction<'a> {
    fs: &'a dyn FileSystem,
    opts: &'a ExtractOptions,
    report: ExtractReport,
    progress: &'a mut dyn FnMut(&str),
}

/// The components of an absolute path; `.` and empty ones (from `//` or
/// a trailing `/`) are dropped, `..` is refused.
fn components(path: &str) -> Result<Vec<&[u8]>> {
    if !path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "'{path}' is not an absolute path; paths inside a disk start with /, e.g. /etc/fstab"
        )));
    }
    let mut parts = Vec::new();
    for part in path.as_bytes().split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(Error::InvalidArgument(format!(
                    "'{path}' contains '..'; name the path without it"
                )))
            }
            _ => parts.push(part),
        }
    }
    Ok(parts)
}

/// Why `name` cannot be a name in a directory, if it cannot.
fn bad_name(name: &[u8]) -> Option<&'static str> {
    match name {
        b"" => Some("its name is empty"),
        b"." | b".." => Some("its name is '.' or '..'"),
        _ if name.contains(&b'/') => Some("its name contains '/'"),
        _ if name.contains(&0) => Some("its name contains a NUL byte"),
        _ => None,
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = parent.to_vec();
    if path.last() != Some(&b'/') {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

impl Extraction<'_> {
    fn extract_path(&mut self, root: &Dir, path: &str) -> Result<()> {
        let parts = components(path)?;
        let Some((last, parents)) = parts.split_last() else {
            // `/`: the root's contents go straight into the destination,
            // whose own mode and times are left as the user made them.
            return self.extract_dir_contents(root, b"/", 0);
        };
        let entry = self.fs.metadata_bytes(path.as_bytes())?;
        // Parents are created as the file system has them; their times
        // are set last, after what is written into them.
        let mut chain: Vec<(Dir, Option<Entry>)> = Vec::new();
        let mut source = Vec::new();
        for part in parents {
            source = join(&source, part);
            let dir = chain.last().map_or(root, |(d, _)| d);
            let made = dir.ensure_dir(part, self.opts.overwrite)?;
            let attrs = match made {
                Made::New(_) => self
                    .fs
                    .metadata_bytes(&source)
                    .ok()
                    .filter(|e| e.kind == EntryKind::Dir),
                Made::Existing(_) => None,
            };
            chain.push((made.into_dir(), attrs));
        }
        let parent = chain.last().map_or(root, |(d, _)| d);
        self.extract_entry(parent, last, &join(&source, last), &entry, parents.len())?;
        for (dir, attrs) in chain.iter().rev() {
            if let Some(e) = attrs {
                self.apply_dir_attrs(dir, e)?;
            }
        }
        Ok(())
    }

    fn extract_entry(
        &mut self,
        parent: &Dir,
        name: &[u8],
        source: &[u8],
        entry: &Entry,
        depth: usize,
    ) -> Result<()> {
        (self.progress)(&lossy(source));
        let result = match entry.kind {
            EntryKind::File => self.extract_file(parent, name, source, entry),
            EntryKind::Symlink => self.extract_symlink(parent, name, source, entry),
            EntryKind::Dir => {
                if depth >= MAX_DEPTH {
                    self.skip(
                        source,
                        &format!(
                            "nested more than {MAX_DEPTH} directories deep (a directory loop?)"
                        ),
                    );
                    return Ok(());
                }
                let dir = parent.ensure_dir(name, self.opts.overwrite)?.into_dir();
                self.extract_dir_contents(&dir, source, depth + 1)?;
                self.apply_dir_attrs(&dir, entry)?;
                self.report.dirs += 1;
                Ok(())
            }
            _ => {
                self.skip(source, "a device, FIFO or socket: not extracted");
                Ok(())
            }
        };
        match result {
            // A damaged file or directory is reported; the rest goes on.
            Err(Error::FileSystem { reason, .. }) => {
                self.skip(source, &format!("cannot be read: {reason}"));
                Ok(())
            }
            other => other,
        }
    }

    fn extract_dir_contents(&mut self, dir: &Dir, source: &[u8], depth: usize) -> Result<()> {
        for child in self.fs.read_dir_bytes(source)? {
            let path = join(source, &child.name);
            if let Some(why) = bad_name(&child.name) {
                self.skip(&path, &format!("{why}; not extracted"));
                continue;
            }
            self.extract_entry(dir, &child.name, &path, &child, depth)?;
        }
        Ok(())
    }

    fn skip(&mut self, source: &[u8], why: &str) {
        self.report.skipped.push((lossy(source), why.to_string()));
    }

    fn extract_file(
        &mut self,
        parent: &Dir,
        name: &[u8],
        source: &[u8],
        entry: &Entry,
    ) -> Result<()> {
        let file = parent.create_file(name, self.opts.overwrite)?;
        let mut out = TrackedWriter {
            file: &file,
            error: None,
        };
        let written = self.fs.copy_file_bytes(source, &mut out).and_then(|n| {
            self.apply_owner_mode(&Target::Fd(file.as_raw_fd()), entry)
                .map_err(|e| parent.output_error(name, e))?;
            set_times(&Target::Fd(file.as_raw_fd()), entry)
                .map_err(|e| parent.output_error(name, e))?;
            Ok(n)
        });
        match written {
            Ok(n) => {
                self.report.files += 1;
                self.report.bytes += n;
                Ok(())
            }
            Err(e) => {
                // No half file is left to look like a whole one.
                let _ = parent.remove(name);
                match out.error {
                    Some(source) => Err(parent.output_error(name, source)),
                    None => Err(e),
                }
            }
        }
    }

    fn extract_symlink(
        &mut self,
        parent: &Dir,
        name: &[u8],
        source: &[u8],
        entry: &Entry,
    ) -> Result<()> {
        let target = self.fs.read_link_bytes(source)?;
        if target.is_empty() || target.contains(&0) {
            self.skip(source, "its link target is empty or contains a NUL byte");
            return Ok(());
        }
        parent.create_symlink(name, &target, self.opts.overwrite)?;
        let link = Target::Name(parent, cstring(name));
        if self.opts.restore_owner {
            chown(&link, entry).map_err(|e| parent.output_error(name, e))?;
        }
        set_times(&link, entry).map_err(|e| parent.output_error(name, e))?;
        self.report.symlinks += 1;
        Ok(())
    }

    fn apply_dir_attrs(&self, dir: &Dir, entry: &Entry) -> Result<()> {
        let target = Target::Fd(dir.fd.as_raw_fd());
        self.apply_owner_mode(&target, entry)
            .and_then(|()| set_times(&target, entry))
            .map_err(|source| Error::Output {
                path: dir.path.clone(),
                source,
            })
    }

    /// Owner first: changing it clears setuid and setgid.
    fn apply_owner_mode(&self, target: &Target, entry: &Entry) -> io::Result<()> {
        let mut mode = entry.mode & 0o7777;
        if self.opts.restore_owner {
            chown(target, entry)?;
        } else {
            mode &= !0o6000;
        }
        let Target::Fd(fd) = target else {
            return Ok(());
        };
        // SAFETY: fd is an open descriptor owned by the caller.
        check(unsafe { libc::fchmod(*fd, mode as libc::mode_t) })
    }
}

/// Keeps the write error of a file, so a failed copy is reported with
/// the destination's path rather than the source's.
struct TrackedWriter<'a> {
    file: &'a File,
    error: Option<io::Error>,
}

impl Write for TrackedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.file).write(buf).inspect_err(|e| {
            self.error = Some(io::Error::new(e.kind(), e.to_string()));
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A directory in the destination, held open so that what is created in
/// it cannot be redirected by a symlink swapped in along its path.
struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Whether `ensure_dir` made the directory or found it.
enum Made {
    New(Dir),
    Existing(Dir),
}

impl Made {
    fn into_dir(self) -> Dir {
        match self {
            Made::New(d) | Made::Existing(d) => d,
        }
    }
}

fn cstring(name: &[u8]) -> CString {
    // Names were checked by `bad_name` or come from `components`, which
    // split on '/': a NUL in one is refused before it gets here, and the
    // fallback name cannot be created by accident.
    CString::new(name).unwrap_or_else(|_| c"\u{fffd}".to_owned())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Dir {
    fn open_path(path: &Path) -> Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
            Error::InvalidArgument(format!("{} contains a NUL byte", path.display()))
        })?;
        // SAFETY: c is a valid C string; the returned descriptor is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::Output {
                path: path.to_path_buf(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Dir {
            // SAFETY: fd was just opened and is owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    fn child_path(&self, name: &[u8]) -> PathBuf {
        self.path.join(OsStr::from_bytes(name))
    }

    fn output_error(&self, name: &[u8], source: io::Error) -> Error {
        Error::Output {
            path: self.child_path(name),
            source,
        }
    }

    /// Opens the directory `name`, never through a symlink.
    fn open_dir(&self, name: &CString) -> io::Result<OwnedFd> {
        // SAFETY: valid descriptor and C string; the result is owned below.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The directory `name`, made (owner-only until its attributes are
    /// set) or an existing real directory. Anything else in the way (a
    /// file, or a symlink, which is never followed) is
    /// [`Error::OutputExists`], or removed first with `overwrite`.
    fn ensure_dir(&self, name: &[u8], overwrite: bool) -> Result<Made> {
        let c = cstring(name);
        let path = self.child_path(name);
        // SAFETY: valid descriptor and C string.
        let rc = unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o700) };
        let new = if rc == 0 {
            true
        } else {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::AlreadyExists {
                return Err(self.output_error(name, err));
            }
            false
        };
        match self.open_dir(&c) {
            Ok(fd) => {
                let dir = Dir { fd, path };
                Ok(if new {
                    Made::New(dir)
                } else {
                    Made::Existing(dir)
                })
            }
            // ELOOP: a symlink; ENOTDIR: a file.
            Err(e)
                if !new && matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) =>
            {
                if !overwrite {
                    return Err(Error::OutputExists(path));
                }
                self.remove(name).map_err(|e| self.output_error(name, e))?;
                self.ensure_dir(name, false)
            }
            Err(e) => Err(self.output_error(name, e)),
        }
    }

    /// Removes the non-directory `name`; an existing directory is not
    /// removed (nor anything in it).
    fn remove(&self, name: &[u8]) -> io::Result<()> {
        let c = cstring(name);
        // SAFETY: valid descriptor and C string.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) })
    }

    /// Makes way for a new non-directory `name`: nothing there, or the
    /// old entry removed with `overwrite`.
    fn make_way(&self, name: &[u8], overwrite: bool) -> Result<()> {
        let c = cstring(name);
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid descriptor, C string and out pointer.
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                stat.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(self.output_error(name, err)),
            };
        }
        if !overwrite {
            return Err(Error::OutputExists(self.child_path(name)));
        }
        // SAFETY: fstatat succeeded, so stat is initialized.
        let is_dir = unsafe { stat.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir {
            return Err(self.output_error(
                name,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a directory is in the way of a file or link; remove it to extract here",
                ),
            ));
        }
        self.remove(name).map_err(|e| self.output_error(name, e))
    }

    /// A new file `name`, created exclusively and never through a link.
    fn create_file(&self, name: &[u8], overwrite: bool) -> Result<File> {
        self.make_way(name, overwrite)?;
        let c = cstring(name);
        // SAFETY: valid descriptor and C string; the result is owned below.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.kind() {
                io::ErrorKind::AlreadyExists => Error::OutputExists(self.child_path(name)),
                _ => self.output_error(name, err),
            });
        }
        // SAFETY: fd was just opened and is owned by nothing else.
        Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn create_symlink(&self, name: &[u8], target: &[u8], overwrite: bool) -> Result<()> {
        self.make_way(name, overwrite)?;
        let c = cstring(name);
        let t = cstring(target);
        // SAFETY: valid descriptor and C strings.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.fd.as_raw_fd(), c.as_ptr()) })
            .map_err(|e| self.output_error(name, e))
    }
}

/// What attributes are set on: an open descriptor, or a link by name
/// (links cannot be opened).
enum Target<'a> {
    Fd(libc::c_int),
    Name(&'a Dir, CString),
}

fn chown(target: &Target, entry: &Entry) -> io::Result<()> {
    // SAFETY: valid descriptors and C strings.
    check(unsafe {
        match target {
            Target::Fd(fd) => libc::fchown(*fd, entry.uid, entry.gid),
            Target::Name(dir, name) => libc::fchownat(
                dir.fd.as_raw_fd(),
                name.as_ptr(),
                entry.uid,
                entry.gid,
                libc::AT_SYMLINK_NOFOLLOW,
            ),
        }
    })
}

fn set_times(target: &Target, entry: &Entry) -> io::Result<()> {
    let spec = |t: Option<Timestamp>| match t {
        Some(t) => libc::timespec {
            tv_sec: t.secs as libc::time_t,
            tv_nsec: t.nanos as libc::c_long,
        },
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    };
    let times = [spec(entry.accessed), spec(entry.modified)];
    // SAFETY: valid descriptors, C strings and a two-element array.
    check(unsafe {
        match target {
            Target::Fd(fd) => libc::futimens(*fd, times.as_ptr()),
            Target::Name(dir, name) => libc::utimensat(
                dir.fd.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            ),
        }
    })
}

//! A repository in a local directory.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{ObjectInfo, PutMode, PutStream, Store, StoreError};

/// Directory under the root where objects are written before being renamed
/// into place.
const TMP_DIR: &str = "tmp";

/// Objects in a directory tree: key `a/b` is the file `ROOT/a/b`.
///
/// `put` writes `ROOT/tmp/<random>`, fsyncs it and renames it over the key
/// (a create-only put renames with `RENAME_NOREPLACE`, or links where the
/// file system lacks it), so a crash leaves either the old state or the
/// whole new object (plus, at worst, a stray temporary file). The renames become durable when
/// [`Store::barrier`] fsyncs the directories they touched.
pub struct LocalStore {
    places: Places,
}

/// What placing a written temporary file under its key needs; shared by
/// the store and its streamed puts, which outlive a borrow of it.
#[derive(Clone)]
struct Places {
    root: PathBuf,
    /// Directories whose entries changed since the last barrier.
    dirty_dirs: Arc<Mutex<HashSet<PathBuf>>>,
    /// Mode of new files: 0600 for key files is set by the caller's key name.
    private_prefixes: &'static [&'static str],
}

impl LocalStore {
    /// Opens a store rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        // An absolute root keeps every parent directory nameable (the parent
        // of a relative `repo` would be the empty path).
        let root = std::path::absolute(&root).unwrap_or(root);
        LocalStore {
            places: Places {
                root,
                dirty_dirs: Arc::new(Mutex::new(HashSet::new())),
                private_prefixes: &["keys/"],
            },
        }
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.places.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.places.root.join(key)
    }

    fn mark_dirty(&self, dir: PathBuf) {
        self.places.mark_dirty(dir)
    }
}

impl Places {
    fn private(&self, key: &str) -> bool {
        self.private_prefixes.iter().any(|p| key.starts_with(p))
    }

    fn mark_dirty(&self, dir: PathBuf) {
        self.dirty_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir);
    }

    /// Creates a new temporary file under `tmp/` with mode `mode`.
    fn create_temp(&self, mode: u32) -> io::Result<(File, PathBuf)> {
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir)?;
        let mut rnd = [0u8; 12];
        crate::crypto::fill_random(&mut rnd);
        let tmp = tmp_dir.join(format!("{}.tmp", hex::encode(rnd)));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        Ok((f, tmp))
    }

    fn write_temp(&self, key: &str, data: &[u8]) -> io::Result<PathBuf> {
        let (mut f, tmp) = self.create_temp(if self.private(key) { 0o600 } else { 0o644 })?;
        let res = f.write_all(data).and_then(|_| f.sync_all());
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    /// Renames the fsynced temporary file `tmp` over `key` (or beside
    /// nothing, for a create-only put) and notes the directories whose
    /// entries the next barrier must make durable. `tmp` is removed on
    /// failure.
    fn place(&self, tmp: &Path, key: &str, mode: PutMode) -> Result<(), StoreError> {
        let dest = self.root.join(key);
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        let res = fs::create_dir_all(&parent).and_then(|_| match mode {
            PutMode::Overwrite => fs::rename(tmp, &dest),
            PutMode::Create => rename_no_replace(tmp, &dest),
        });
        if let Err(e) = res {
            let _ = fs::remove_file(tmp);
            return Err(StoreError::io(key, e));
        }
        self.mark_dirty(parent.clone());
        // A directory created on the way must itself be durable in its
        // parent, up to and including the repository root's own entry.
        let mut dir = parent.as_path();
        while let Some(up) = dir.parent() {
            self.mark_dirty(up.to_path_buf());
            if dir == self.root {
                break;
            }
            dir = up;
        }
        Ok(())
    }
}

/// A streamed put into a local store: the bytes go to a temporary file as
/// they come, and `commit` fsyncs it and renames it into place, as `put`
/// does with a whole object.
struct LocalPut {
    places: Places,
    /// `None` once committed.
    file: Option<(File, PathBuf)>,
    len: u64,
}

impl LocalPut {
    fn temp_name(&self) -> String {
        match &self.file {
            Some((_, tmp)) => tmp.display().to_string(),
            None => TMP_DIR.into(),
        }
    }
}

impl PutStream for LocalPut {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let name = self.temp_name();
        let Some((f, _)) = &mut self.file else {
            return Err(StoreError::io(
                &name,
                io::Error::other("the put was committed"),
            ));
        };
        f.write_all(data).map_err(|e| StoreError::io(&name, e))?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn commit(mut self: Box<Self>, key: &str, mode: PutMode) -> Result<(), StoreError> {
        let Some((f, tmp)) = self.file.take() else {
            return Err(StoreError::io(
                key,
                io::Error::other("the put was committed"),
            ));
        };
        let private = self.places.private(key);
        let synced = (|| {
            if private {
                f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            }
            f.sync_all()
        })();
        drop(f);
        if let Err(e) = synced {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(key, e));
        }
        self.places.place(&tmp, key, mode)
    }
}

impl Drop for LocalPut {
    /// An abandoned put leaves nothing behind.
    fn drop(&mut self) {
        if let Some((_, tmp)) = self.file.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

impl Store for LocalStore {
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        fs::read(self.path(key)).map_err(|e| StoreError::io(key, e))
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let f = File::open(self.path(key)).map_err(|e| StoreError::io(key, e))?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StoreError::Io {
                    key: key.to_string(),
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("object is shorter than {} bytes", offset + len as u64),
                    ),
                }
            } else {
                StoreError::io(key, e)
            }
        })?;
        Ok(buf)
    }

    fn size(&self, key: &str) -> Result<u64, StoreError> {
        Ok(fs::metadata(self.path(key))
            .map_err(|e| StoreError::io(key, e))?
            .len())
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StoreError> {
        let tmp = self
            .places
            .write_temp(key, data)
            .map_err(|e| StoreError::io(key, e))?;
        self.places.place(&tmp, key, mode)
    }

    fn begin_put(&self) -> Result<Option<Box<dyn PutStream>>, StoreError> {
        let file = self
            .places
            .create_temp(0o644)
            .map_err(|e| StoreError::io(TMP_DIR, e))?;
        Ok(Some(Box::new(LocalPut {
            places: self.places.clone(),
            file: Some(file),
            len: 0,
        })))
    }

    /// Two: one pack waiting for its fsync while the next is written.
    fn large_puts_in_flight(&self) -> Option<usize> {
        Some(2)
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match fs::symlink_metadata(self.path(key)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let base = self.path(prefix);
        let mut stack = vec![(base, prefix.trim_end_matches('/').to_string())];
        while let Some((dir, key)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // The root itself is named by its path, not by "".
                Err(e) if key.is_empty() => {
                    return Err(StoreError::io(&self.places.root.display().to_string(), e))
                }
                Err(e) => return Err(StoreError::io(&key, e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| StoreError::io(&key, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = if key.is_empty() {
                    name
                } else {
                    format!("{key}/{name}")
                };
                let ft = entry.file_type().map_err(|e| StoreError::io(&child, e))?;
                if ft.is_dir() {
                    stack.push((entry.path(), child));
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Deleted between the directory read and the stat:
                    // it is not there any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io(&child, e)),
                };
                out.push(ObjectInfo {
                    key: child,
                    size: meta.len(),
                    modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                });
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let p = self.path(key);
        match fs::remove_file(&p) {
            Ok(()) => {
                self.mark_dirty(p.parent().unwrap_or(&self.places.root).to_path_buf());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(key, e)),
        }
    }

    fn remove_stale_temporaries(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        let dir = self.places.root.join(TMP_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io(TMP_DIR, e)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed >= age);
            if stale && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn ensure_durable(&self, key: &str) -> Result<(), StoreError> {
        let p = self.path(key);
        // The file itself was fsynced before its rename; its directory entry
        // (and the directories above it) may not be.
        let mut dir = p.parent();
        while let Some(d) = dir {
            self.mark_dirty(d.to_path_buf());
            if d == self.places.root {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn barrier(&self) -> Result<(), StoreError> {
        let dirs: Vec<PathBuf> = self
            .places
            .dirty_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for d in dirs {
            let key = d.to_string_lossy().into_owned();
            let f = File::open(&d).map_err(|e| StoreError::io(&key, e))?;
            f.sync_all().map_err(|e| StoreError::io(&key, e))?;
        }
        Ok(())
    }
}

/// Renames `from` to `to` unless `to` exists, atomically: `EEXIST` if it
/// does. `renameat2(RENAME_NOREPLACE)` where the file system supports it,
/// otherwise a hard link (which also fails on an existing name) and the
/// removal of `from`.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: both pointers are valid NUL-terminated strings for the
        // duration of the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // Not supported by this file system (or kernel): fall back.
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {}
            _ => return Err(e),
        }
    }
    fs::hard_link(from, to)?;
    // The object is in place; a temporary left behind is removed later by
    // `remove_stale_temporaries`.
    let _ = fs::remove_file(from);
    Ok(())
}

//! A repository in a local directory.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Store, StoreError};

/// Directory under the root where objects are written before being renamed
/// into place.
const TMP_DIR: &str = "tmp";

/// Objects in a directory tree: key `a/b` is the file `ROOT/a/b`.
///
/// `put` writes `ROOT/tmp/<random>`, fsyncs it and renames it over the key,
/// so a crash leaves either the old state or the whole new object (plus, at
/// worst, a stray temporary file). The renames become durable when
/// [`Store::barrier`] fsyncs the directories they touched.
pub struct LocalStore {
    root: PathBuf,
    dirty_dirs: Mutex<HashSet<PathBuf>>,
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
            root,
            dirty_dirs: Mutex::new(HashSet::new()),
            private_prefixes: &["keys/"],
        }
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn mark_dirty(&self, dir: PathBuf) {
        self.dirty_dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir);
    }

    fn write_temp(&self, key: &str, data: &[u8]) -> io::Result<PathBuf> {
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir)?;
        let mut rnd = [0u8; 12];
        crate::crypto::fill_random(&mut rnd);
        let tmp = tmp_dir.join(format!("{}.tmp", hex::encode(rnd)));
        let private = self.private_prefixes.iter().any(|p| key.starts_with(p));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&tmp)?;
        let res = f.write_all(data).and_then(|_| f.sync_all());
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
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

    fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let dest = self.path(key);
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        let tmp = self
            .write_temp(key, data)
            .map_err(|e| StoreError::io(key, e))?;
        let res = fs::create_dir_all(&parent).and_then(|_| fs::rename(&tmp, &dest));
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
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

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match fs::symlink_metadata(self.path(key)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let base = self.path(prefix);
        let mut stack = vec![(base, prefix.trim_end_matches('/').to_string())];
        while let Some((dir, key)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
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
                } else {
                    out.push(child);
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let p = self.path(key);
        match fs::remove_file(&p) {
            Ok(()) => {
                self.mark_dirty(p.parent().unwrap_or(&self.root).to_path_buf());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(key, e)),
        }
    }

    fn remove_stale_temporaries(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        let dir = self.root.join(TMP_DIR);
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
            if d == self.root {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn barrier(&self) -> Result<(), StoreError> {
        let dirs: Vec<PathBuf> = self
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

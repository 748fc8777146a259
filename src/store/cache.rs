//! A local cache of small immutable objects of a remote store, so that
//! listing points or starting a backup does not download every index file
//! and point again; and of sealed manifest nodes (read by range from
//! packs), so that prune and check, which walk every point's manifest, do
//! not fetch the nodes points share again and again.
//!
//! Only content-named objects are cached (their key ends in the BLAKE3 of
//! their bytes, 64 hex characters) and only those the caller's predicate
//! accepts. Every read from the cache hashes the bytes against the name:
//! a damaged entry is detected, removed and fetched again. Sealed blobs
//! stay sealed on disk (nothing of the vault's plaintext is cached) and the
//! repository verifies each as it verifies a chunk read from a pack
//! ([`Store::cached_blob`]). The cache is an optimisation only: deleting
//! it changes no result.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ObjectInfo, PutMode, PutStream, RequestCounts, Store, StoreError};

/// A store that keeps copies of some objects of `inner` in `dir`.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    dir: PathBuf,
    cacheable: fn(&str) -> bool,
}

impl CachedStore {
    /// Caches in `dir` the objects whose keys `cacheable` accepts (and
    /// that are named by their hash).
    pub fn new(inner: Arc<dyn Store>, dir: PathBuf, cacheable: fn(&str) -> bool) -> Self {
        CachedStore {
            inner,
            dir,
            cacheable,
        }
    }

    /// Where the cache of a store at `url` goes: `$DISKVAULT_CACHE_DIR`,
    /// else `$XDG_CACHE_HOME/diskvault`, else `~/.cache/diskvault`, then a
    /// folder per URL. `None` when there is no home to put it in.
    pub fn default_dir(url: &str) -> Option<PathBuf> {
        let base = std::env::var_os("DISKVAULT_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("diskvault"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/diskvault"))
            })?;
        let tag = blake3::hash(url.as_bytes()).to_hex();
        Some(base.join(&tag[..16]))
    }

    /// The object's name when it is a content name: its hash.
    fn content_hash(key: &str) -> Option<[u8; 32]> {
        let name = key.rsplit('/').next()?;
        if name.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(name, &mut out).ok()?;
        Some(out)
    }

    fn file(&self, key: &str) -> Option<(PathBuf, [u8; 32])> {
        if !(self.cacheable)(key) || key.split('/').any(|p| p == ".." || p.is_empty()) {
            return None;
        }
        Some((self.dir.join(key), Self::content_hash(key)?))
    }

    /// Where a sealed blob is kept: `blobs/` and its name's first two
    /// characters, as packs are spread.
    fn blob_file(&self, name: &str) -> Option<PathBuf> {
        let ok = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| self.dir.join("blobs").join(&name[..2]).join(name))
    }

    /// A cached copy that still hashes to its name; a damaged one is
    /// removed.
    fn cached(path: &Path, hash: &[u8; 32]) -> Option<Vec<u8>> {
        let bytes = fs::read(path).ok()?;
        if blake3::hash(&bytes).as_bytes() == hash {
            return Some(bytes);
        }
        let _ = fs::remove_file(path);
        None
    }

    /// Keeps a copy (best effort: a full or read-only cache disk changes
    /// nothing but speed). Written under a temporary name and renamed, so
    /// a reader never sees half a file.
    fn keep(path: &Path, bytes: &[u8]) {
        let Some(parent) = path.parent() else { return };
        if fs::create_dir_all(parent).is_err() {
            return;
        }
        let mut raw = [0u8; 8];
        crate::crypto::fill_random(&mut raw);
        let tmp = parent.join(format!(".{}.tmp", hex::encode(raw)));
        if fs::write(&tmp, bytes).is_ok() && fs::rename(&tmp, path).is_ok() {
            return;
        }
        let _ = fs::remove_file(&tmp);
    }
}

impl Store for CachedStore {
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let Some((path, hash)) = self.file(key) else {
            return self.inner.get(key);
        };
        if let Some(bytes) = Self::cached(&path, &hash) {
            return Ok(bytes);
        }
        let bytes = self.inner.get(key)?;
        // Only a genuine object is kept; a damaged one is the caller's to
        // report, and must be fetched again next time.
        if blake3::hash(&bytes).as_bytes() == &hash {
            Self::keep(&path, &bytes);
        }
        Ok(bytes)
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        if let Some((path, hash)) = self.file(key) {
            if let Some(bytes) = Self::cached(&path, &hash) {
                let end = offset.saturating_add(len as u64);
                if end <= bytes.len() as u64 {
                    return Ok(bytes[offset as usize..end as usize].to_vec());
                }
            }
        }
        self.inner.get_range(key, offset, len)
    }

    fn size(&self, key: &str) -> Result<u64, StoreError> {
        if let Some((path, _)) = self.file(key) {
            // The length of a cached copy; its bytes are checked when read.
            if let Ok(m) = fs::metadata(&path) {
                return Ok(m.len());
            }
        }
        self.inner.size(key)
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StoreError> {
        self.inner.put(key, data, mode)?;
        if let Some((path, hash)) = self.file(key) {
            if blake3::hash(data).as_bytes() == &hash {
                Self::keep(&path, data);
            }
        }
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        // Deletions happen in the store, not here: ask it.
        self.inner.exists(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key)?;
        if let Some((path, _)) = self.file(key) {
            let _ = fs::remove_file(path);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<(), StoreError> {
        self.inner.barrier()
    }

    fn ensure_durable(&self, key: &str) -> Result<(), StoreError> {
        self.inner.ensure_durable(key)
    }

    fn remove_stale_temporaries(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        self.inner.remove_stale_temporaries(age)
    }

    /// Streamed puts go to the store; what they hold is cached when it is
    /// read.
    fn begin_put(&self) -> Result<Option<Box<dyn PutStream>>, StoreError> {
        self.inner.begin_put()
    }

    fn large_puts_in_flight(&self) -> Option<usize> {
        self.inner.large_puts_in_flight()
    }

    fn requests(&self) -> Option<RequestCounts> {
        self.inner.requests()
    }

    fn cached_blob(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.blob_file(name)?).ok()
    }

    fn keep_blob(&self, name: &str, sealed: &[u8]) {
        if let Some(path) = self.blob_file(name) {
            Self::keep(&path, sealed);
        }
    }

    fn forget_blob(&self, name: &str) {
        if let Some(path) = self.blob_file(name) {
            let _ = fs::remove_file(path);
        }
    }

    fn without_cache(&self) -> Option<Arc<dyn Store>> {
        Some(self.inner.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FaultyStore, MemoryStore, OpKind};

    fn key_of(bytes: &[u8]) -> String {
        format!("index/{}", blake3::hash(bytes).to_hex())
    }

    #[test]
    fn cached_objects_are_read_once_and_damaged_copies_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Arc::new(FaultyStore::counting(Arc::new(MemoryStore::new())));
        let cache = CachedStore::new(remote.clone(), dir.path().to_path_buf(), |k| {
            k.starts_with("index/")
        });
        let body = b"an index file".to_vec();
        let key = key_of(&body);
        remote.put(&key, &body, PutMode::Overwrite).unwrap();
        for _ in 0..3 {
            assert_eq!(cache.get(&key).unwrap(), body);
        }
        assert_eq!(remote.counts().ops(OpKind::Read), 1, "fetched once");

        // A damaged cache entry is detected and fetched again.
        let file = dir.path().join(&key);
        fs::write(&file, b"rotten").unwrap();
        assert_eq!(cache.get(&key).unwrap(), body);
        assert_eq!(remote.counts().ops(OpKind::Read), 2);
        assert_eq!(fs::read(&file).unwrap(), body, "and the entry is mended");

        // Deleting the cache changes nothing but the requests.
        fs::remove_dir_all(dir.path()).unwrap();
        assert_eq!(cache.get(&key).unwrap(), body);

        // Objects the predicate refuses, or not named by their hash, pass
        // through.
        remote.put("config", b"{}", PutMode::Overwrite).unwrap();
        cache.get("config").unwrap();
        cache.get("config").unwrap();
        assert!(!dir.path().join("config").exists());
    }
}

//! A repository held in memory: for tests, and for embedders that want a
//! scratch vault. Nothing survives the process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::{ObjectInfo, PutMode, Store, StoreError};

/// One stored object: its bytes (shared, so reads copy only what they
/// return) and when it was written.
#[derive(Clone)]
struct Object {
    bytes: Arc<[u8]>,
    modified: SystemTime,
}

/// Objects in a map behind a mutex. Every operation is atomic and
/// immediately visible, and barriers have nothing to do.
#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Object>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Object>> {
        // The map is consistent after every statement that changes it, so
        // a panic elsewhere while the lock was held leaves it usable.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn object(&self, key: &str) -> Result<Object, StoreError> {
        self.objects()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                key: key.to_string(),
            })
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.object(key)?.bytes.to_vec())
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let obj = self.object(key)?;
        let end = offset.checked_add(len as u64);
        match end {
            Some(end) if end <= obj.bytes.len() as u64 => {
                Ok(obj.bytes[offset as usize..end as usize].to_vec())
            }
            _ => Err(StoreError::Io {
                key: key.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "object is shorter than {} bytes",
                        offset.saturating_add(len as u64)
                    ),
                ),
            }),
        }
    }

    fn size(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.object(key)?.bytes.len() as u64)
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StoreError> {
        let mut objects = self.objects();
        if mode == PutMode::Create && objects.contains_key(key) {
            return Err(StoreError::AlreadyExists {
                key: key.to_string(),
            });
        }
        objects.insert(
            key.to_string(),
            Object {
                bytes: data.into(),
                modified: SystemTime::now(),
            },
        );
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.objects().contains_key(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // `packs/` lists `packs/ab/...`; `packs` alone would also match
        // `packsX`, so a prefix is a directory: it ends with '/' or is empty.
        let dir = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        Ok(self
            .objects()
            .range(dir.clone()..)
            .take_while(|(k, _)| k.starts_with(&dir))
            .map(|(k, o)| ObjectInfo {
                key: k.clone(),
                size: o.bytes.len() as u64,
                modified: o.modified,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.objects().remove(key);
        Ok(())
    }

    fn barrier(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

//! Where repository objects live: a flat namespace of relative keys with `/`
//! separators, behind the [`Store`] trait.
//!
//! Promises every implementation keeps:
//! - `put` is atomic: a reader sees the whole object or nothing, never a
//!   prefix, and a crash never leaves a partial object under its key.
//! - `put` does not by itself make the object durable; [`Store::barrier`]
//!   makes every earlier `put` durable before returning. Writers call it
//!   between the stages whose order matters (packs, then index, then points).

pub mod faulty;
mod local;

pub use faulty::{Fault, FaultyStore, OpCounts, OpKind, WriteEvent};
pub use local::LocalStore;

use std::io;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("object '{key}' does not exist")]
    NotFound { key: String },
    #[error("no space left on the device holding the repository while writing '{key}'; free some space and run the command again (objects already written are reused)")]
    NoSpace { key: String },
    #[error("I/O error on '{key}': {source}")]
    Io {
        key: String,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Wraps an I/O error, recognising a full disk.
    pub fn io(key: &str, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            return StoreError::NotFound {
                key: key.to_string(),
            };
        }
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
            || source.kind() == io::ErrorKind::StorageFull
        {
            return StoreError::NoSpace {
                key: key.to_string(),
            };
        }
        StoreError::Io {
            key: key.to_string(),
            source,
        }
    }

    /// True when the object is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// A place that holds repository objects.
pub trait Store: Send + Sync {
    /// Reads a whole object.
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// Reads `len` bytes at `offset`; fails if the object is shorter.
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError>;
    /// Size of an object in bytes.
    fn size(&self, key: &str) -> Result<u64, StoreError>;
    /// Writes an object atomically, replacing any object under the key.
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StoreError>;
    /// True if the object exists.
    fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Keys of the objects under `prefix` (a directory such as `packs/`), in
    /// no particular order, recursively.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Removes an object; removing a missing object is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Makes every earlier `put` and `delete` durable.
    fn barrier(&self) -> Result<(), StoreError>;
    /// Makes an object written by another process (which may have died
    /// before its own barrier) durable at the next [`Store::barrier`].
    fn ensure_durable(&self, key: &str) -> Result<(), StoreError> {
        let _ = key;
        Ok(())
    }
    /// Removes temporary files that writers which died left behind, if they
    /// are older than `age` (a live writer renames its file within seconds).
    /// Returns how many were removed. Stores without temporaries remove none.
    fn remove_stale_temporaries(&self, age: std::time::Duration) -> Result<usize, StoreError> {
        let _ = age;
        Ok(0)
    }
}

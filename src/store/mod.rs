//! Where repository objects live: a flat namespace of relative keys with `/`
//! separators, behind the [`Store`] trait.
//!
//! # The contract
//! Every implementation keeps these promises; [`testing::conformance`]
//! checks them, and every backend runs it.
//!
//! - **Atomic puts.** A reader sees a whole object or none, never a prefix,
//!   and a crash never leaves a partial object under its key.
//! - **Create-only puts.** [`PutMode::Create`] stores the object only if
//!   nothing is stored under the key, atomically: of two writers racing to
//!   create one key, exactly one succeeds and the other gets
//!   [`StoreError::AlreadyExists`]. Never implemented as check-then-write.
//!   The repository's `config`, the replica marker, key files and lock
//!   objects are written this way.
//! - **Read-after-write.** Once a put, delete or create returned, every
//!   later `get`, `exists` and `list` (from any process) sees it.
//! - **Listings carry metadata.** [`Store::list`] returns each object's size
//!   and modification time, so nothing asks for them once per object.
//! - **Barriers.** A put is not durable by itself; [`Store::barrier`] makes
//!   every earlier put and delete durable before it returns. Writers call it
//!   between the stages whose order matters (packs, then index, then points).
//! - **Streamed puts are puts.** A put begun with [`Store::begin_put`]
//!   keeps every promise above: nothing is under its key until
//!   [`PutStream::commit`] returns, a crash or a dropped stream leaves at
//!   most a temporary file that [`Store::remove_stale_temporaries`] clears,
//!   and the object is durable at the next barrier.
//! - **Typed failures.** A missing object is [`StoreError::NotFound`]; a
//!   failure worth retrying (a timeout, a busy server) is
//!   [`StoreError::Transient`]; refusal by permissions or a read-only medium
//!   is [`StoreError::Denied`]; everything else is permanent.

mod cache;
mod local;
mod memory;
pub mod object;
mod retry;
pub mod testing;

pub use cache::CachedStore;
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use object::{BackendFailure, ObjectBackend, ObjectUrl};
pub use retry::RetryStore;
pub use testing::faulty::{Fault, FaultyStore, OpCounts, OpKind, WriteEvent};

use std::io;
use std::time::SystemTime;

/// How [`Store::put`] treats an object already stored under the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace it. Content-named objects use this: the same name means the
    /// same bytes, so replacing changes nothing.
    Overwrite,
    /// Fail with [`StoreError::AlreadyExists`] and leave it untouched.
    Create,
}

/// One object as [`Store::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's key, e.g. `packs/ab/ab12...`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, by the store's clock.
    pub modified: SystemTime,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No object is stored under the key.
    #[error("object '{key}' does not exist")]
    NotFound {
        /// The object's key.
        key: String,
    },
    /// A [`PutMode::Create`] put found an object already stored under the
    /// key; it was left untouched.
    #[error("object '{key}' already exists")]
    AlreadyExists {
        /// The object's key.
        key: String,
    },
    /// The device holding the repository is full. Free some space and run
    /// the command again (objects already written are reused).
    #[error("no space left on the device holding the repository while writing '{key}'; free some space and run the command again (objects already written are reused)")]
    NoSpace {
        /// The object being written.
        key: String,
    },
    /// Writing was refused by permissions or a read-only medium. Check the
    /// repository's permissions.
    #[error("not allowed to write '{key}': {source}; check the permissions of the repository, or whether it is on a read-only medium")]
    Denied {
        /// The object's key.
        key: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A failure that may pass (interrupted, timed out, busy); running the
    /// command again may succeed.
    #[error("temporary failure on '{key}': {source}; running the command again may succeed")]
    Transient {
        /// The object's key.
        key: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Any other I/O error.
    #[error("I/O error on '{key}': {source}")]
    Io {
        /// The object's key.
        key: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// An object store (Azure, S3) cannot be used; the message says what
    /// to check.
    #[error("{key}: {failure} ({}); {}", brief(detail), failure_hint(key, *failure))]
    Backend {
        /// The object's key, or the store's URL.
        key: String,
        /// What kind of failure.
        failure: BackendFailure,
        /// The service's own message.
        detail: String,
    },
}

/// What to do about a failure to talk to an object store at `url`.
fn failure_hint(url: &str, f: BackendFailure) -> &'static str {
    let azure = url.starts_with("az://");
    match (f, azure) {
        (BackendFailure::Unreachable, true) => {
            "check AZURE_STORAGE_ENDPOINT (or AZURITE_BLOB_STORAGE_URL) and that the service is running"
        }
        (BackendFailure::Unreachable, false) => {
            "check AWS_ENDPOINT_URL and AWS_REGION, and that the service is running"
        }
        (BackendFailure::Credentials, true) => {
            "check AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY)"
        }
        (BackendFailure::Credentials, false) => {
            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)"
        }
        (BackendFailure::MissingContainer, _) => {
            "create it first (diskvault does not create containers or buckets)"
        }
        (BackendFailure::Configuration, _) => {
            "check the URL and the storage environment variables (README, Object storage)"
        }
    }
}

/// A service's error, without the XML body some services append.
fn brief(detail: &str) -> &str {
    let cut = detail.find("<?xml").unwrap_or(detail.len());
    detail[..cut].trim_end_matches([' ', ':'])
}

/// Requests a remote store made, and the bytes it moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// GET requests.
    pub get: u64,
    /// PUT requests.
    pub put: u64,
    /// LIST requests.
    pub list: u64,
    /// DELETE requests.
    pub delete: u64,
    /// HEAD requests.
    pub head: u64,
    /// Bytes uploaded.
    pub bytes_sent: u64,
    /// Bytes downloaded.
    pub bytes_received: u64,
}

impl RequestCounts {
    /// Requests of every kind.
    pub fn total(&self) -> u64 {
        self.get + self.put + self.list + self.delete + self.head
    }
}

impl StoreError {
    /// Wraps an I/O error, recognising a missing object, a full disk, a
    /// refusal and the errors worth retrying.
    pub fn io(key: &str, source: io::Error) -> Self {
        let key = key.to_string();
        let errno = source.raw_os_error();
        match source.kind() {
            io::ErrorKind::NotFound => return StoreError::NotFound { key },
            io::ErrorKind::AlreadyExists => return StoreError::AlreadyExists { key },
            io::ErrorKind::StorageFull => return StoreError::NoSpace { key },
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                return StoreError::Denied { key, source }
            }
            io::ErrorKind::Interrupted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::ResourceBusy => return StoreError::Transient { key, source },
            _ => {}
        }
        match errno {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::NoSpace { key },
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => {
                StoreError::Denied { key, source }
            }
            Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ETIMEDOUT) | Some(libc::EBUSY) => {
                StoreError::Transient { key, source }
            }
            _ => StoreError::Io { key, source },
        }
    }

    /// True when the object is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// True when a create-only put found the key taken.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, StoreError::AlreadyExists { .. })
    }

    /// True when the same operation may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }

    /// True when the store refused a write (permissions, read-only medium).
    pub fn is_denied(&self) -> bool {
        matches!(self, StoreError::Denied { .. })
    }

    /// The key of the object concerned.
    pub fn key(&self) -> &str {
        match self {
            StoreError::NotFound { key }
            | StoreError::AlreadyExists { key }
            | StoreError::NoSpace { key }
            | StoreError::Denied { key, .. }
            | StoreError::Transient { key, .. }
            | StoreError::Io { key, .. }
            | StoreError::Backend { key, .. } => key,
        }
    }
}

/// A put whose bytes arrive in pieces and whose key is known only once
/// they all have (a pack is named by the hash of its bytes): the store
/// keeps the bytes, not the caller, so a large object costs no memory.
/// Dropping it without [`PutStream::commit`] abandons it: nothing is
/// stored.
pub trait PutStream: Send {
    /// Appends bytes to the object.
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;
    /// Bytes written so far.
    fn len(&self) -> u64;
    /// True when nothing was written.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Stores what was written under `key`, atomically, as
    /// [`Store::put`] with `mode` would.
    fn commit(self: Box<Self>, key: &str, mode: PutMode) -> Result<(), StoreError>;
}

/// A place that holds repository objects. See the module documentation for
/// the contract every implementation keeps.
pub trait Store: Send + Sync {
    /// Reads a whole object.
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// Reads `len` bytes at `offset`; fails if the object is shorter.
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError>;
    /// Size of one object in bytes. To learn the sizes of many objects, use
    /// [`Store::list`].
    fn size(&self, key: &str) -> Result<u64, StoreError>;
    /// Writes an object atomically; `mode` says what happens when the key
    /// is taken.
    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StoreError>;
    /// True if the object exists.
    fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// The objects under `prefix` (a directory such as `packs/`, or `""`
    /// for all), recursively, in no particular order, with their sizes and
    /// modification times.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
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
    /// Begins a put whose bytes are written in pieces, for stores that
    /// can hold them outside memory (a local file system). `None` (the
    /// default): the caller assembles the object and calls [`Store::put`].
    fn begin_put(&self) -> Result<Option<Box<dyn PutStream>>, StoreError> {
        Ok(None)
    }
    /// How many large puts (whole packs, 16 MiB by default) are worth
    /// running at once. Each holds its bytes in memory until it returns,
    /// so this bounds a backup's memory as much as its speed. `None` (the
    /// default): as many as requests may be in flight (`--connections`),
    /// which hides an object store's latency. A local file system gains
    /// nothing from more than one or two: the puts queue on the same disk,
    /// each waiting for its own fsync. Decorators pass their inner store's
    /// on.
    fn large_puts_in_flight(&self) -> Option<usize> {
        None
    }
    /// The requests this store made so far, for stores that make requests
    /// (object storage); decorators pass their inner store's on.
    fn requests(&self) -> Option<RequestCounts> {
        None
    }
    /// A local copy of the sealed blob `name` (a chunk id in hex) kept by
    /// a cache in front of a remote store, or `None`. Only the caller can
    /// verify a sealed blob (it needs the key): it must open it as it opens
    /// one read from a pack, and call [`Store::forget_blob`] when that
    /// fails. Stores without a cache keep nothing.
    fn cached_blob(&self, name: &str) -> Option<Vec<u8>> {
        let _ = name;
        None
    }
    /// Offers a sealed blob, read from a pack and verified, to the cache.
    fn keep_blob(&self, name: &str, sealed: &[u8]) {
        let _ = (name, sealed);
    }
    /// Drops a cached blob that did not verify.
    fn forget_blob(&self, name: &str) {
        let _ = name;
    }
    /// The store behind a local cache, for a reader that must see what the
    /// store holds (`check`); `None` when this store keeps no cache.
    fn without_cache(&self) -> Option<std::sync::Arc<dyn Store>> {
        None
    }
}

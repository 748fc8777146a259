//! [`Repository`]: opening and creating repositories, and the typed
//! methods through which operations read and write objects. Object keys are
//! spelled in [`layout`] only.
//!
//! - `keys.rs`: key files (passphrases);
//! - `objects.rs`: index files, packs, points, forget records, the policy;
//! - `location.rs`: a repository without its key ([`RepoLocation`]), and
//!   copies of one repository (replicas);
//! - `reader.rs`: reading chunks through the index, with a fallback replica;
//! - `lock.rs`: the lock protocol.

mod keys;
pub mod layout;
pub(crate) mod location;
pub mod lock;
mod objects;
pub use objects::Damaged;
mod disk_reader;
pub(crate) mod reader;
pub use disk_reader::{DiskReader, DiskReaderOptions, ReadStats};

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::crypto::{self, KdfCost, MasterKey, Sealer};
use crate::error::{Error, Result};
use crate::format::config::{ChunkerParams, CompressionSetting, Encryption, RepoConfig};
use crate::format::{KeyId, ObjectHeader, ObjectKind, MAX_BLOB_PLAINTEXT, OBJECT_HEADER_LEN};
use crate::store::{LocalStore, PutMode, Store, StoreError};

pub(crate) use keys::remove_foreign_key_files;
pub use layout::{index_key, key_key, pack_key, point_key, CONFIG_KEY, REPLICA_KEY};
pub use location::RepoLocation;
pub(crate) use location::{check_compatible, open_copy};
pub use lock::{LockEvent, LockInfo, LockKind, LockNotifier, LockOptions, RepoLock};

/// Options for [`Repository::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Whether to encrypt, and with which key derivation.
    pub encryption: Encryption,
    /// How to cut images into chunks (the config's `chunker`).
    pub chunker: ChunkerParams,
    /// Default compression for new chunks (can be changed later).
    pub compression: CompressionSetting,
    /// Argon2id cost of the first key file.
    pub kdf: KdfCost,
    /// Format major version of the new repository: the newest
    /// ([`crate::format::FORMAT_MAJOR`]) unless a reader that knows only
    /// format 1 must read it.
    pub format_major: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encryption: Encryption::Aes256Gcm,
            chunker: ChunkerParams::DEFAULT,
            compression: CompressionSetting::DEFAULT,
            kdf: KdfCost::default(),
            format_major: crate::format::FORMAT_MAJOR,
        }
    }
}

/// A key file as listed by [`Repository::list_keys`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// The key file's id (its name under `keys/`).
    pub id: KeyId,
    /// When the key file was made, Unix seconds.
    pub created: i64,
    /// Host that made the key file.
    pub host: String,
    /// User that made the key file.
    #[serde(rename = "user")]
    pub username: String,
    /// True for the key that opened this repository handle.
    pub current: bool,
}

/// An open repository.
pub struct Repository {
    store: Arc<dyn Store>,
    location: String,
    config: RepoConfig,
    /// Associated data of this repository's wrapped keys
    /// ([`crypto::key_binding`]).
    key_binding: Vec<u8>,
    sealer: Arc<Sealer>,
    master_key: Option<MasterKey>,
    key_id: Option<KeyId>,
    lock_options: LockOptions,
}

pub(crate) fn now_unix() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub(crate) fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }))
}

/// Refuses `dir` unless it holds nothing but what an interrupted or a
/// concurrent `init` leaves: files under `keys/` and `tmp/`, and no
/// `config`. Nothing is removed here: another `init` may be writing its
/// key file right now. The winner of the race to write `config` removes
/// the key files of other repository ids once it has won.
fn refuse_foreign_contents(dir: &Path) -> Result<()> {
    let refuse = || Error::AlreadyExists(dir.display().to_string());
    for entry in std::fs::read_dir(dir).map_err(|_| refuse())? {
        let entry = entry.map_err(|_| refuse())?;
        let name = entry.file_name();
        if !(name == "keys" || name == "tmp") || !entry.path().is_dir() {
            return Err(refuse());
        }
        for file in std::fs::read_dir(entry.path()).map_err(|_| refuse())? {
            let file = file.map_err(|_| refuse())?;
            if !file.file_type().map_err(|_| refuse())?.is_file() {
                return Err(refuse());
            }
        }
    }
    Ok(())
}

impl Repository {
    /// Creates a repository in the directory `path`, which must not exist or
    /// be empty. `passphrase` is required for an encrypted repository.
    ///
    /// A directory holding only what an interrupted `init` leaves (key
    /// files and temporary files, but no `config`) is no repository: it is
    /// created anew, and the leftovers are removed once it exists.
    pub fn init(path: &Path, passphrase: Option<&[u8]>, opts: &InitOptions) -> Result<Repository> {
        if std::fs::read_dir(path).is_ok() {
            refuse_foreign_contents(path)?;
        } else if path.exists() {
            return Err(Error::AlreadyExists(path.display().to_string()));
        }
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(path));
        Self::init_in(store, path.display().to_string(), passphrase, opts)
    }

    /// Creates a repository in an empty store.
    ///
    /// Of several `init`s of one store at once, exactly one succeeds: the
    /// config is written create-only, and the others get
    /// [`Error::AlreadyExists`] and remove their key files.
    pub fn init_in(
        store: Arc<dyn Store>,
        location: String,
        passphrase: Option<&[u8]>,
        opts: &InitOptions,
    ) -> Result<Repository> {
        opts.chunker.validate().map_err(Error::InvalidArgument)?;
        if store.exists(CONFIG_KEY)? {
            return Err(Error::AlreadyExists(location));
        }
        let mut id = [0u8; 32];
        crypto::fill_random(&mut id);
        let (now, _) = now_unix();
        if opts.format_major == 0 || opts.format_major > crate::format::FORMAT_MAJOR {
            return Err(Error::InvalidArgument(format!(
                "format {} does not exist: this diskvault writes formats 1 to {}",
                opts.format_major,
                crate::format::FORMAT_MAJOR
            )));
        }
        let config = RepoConfig::new(
            hex::encode(id),
            opts.chunker,
            opts.compression,
            opts.encryption,
            now,
        )
        .with_major(opts.format_major);
        let config_bytes = config.encode();
        let key_binding = crypto::key_binding(config.format.major, &config.id, &config_bytes);
        let (sealer, master_key, key_id) = match opts.encryption {
            Encryption::Aes256Gcm => {
                let pass = passphrase.ok_or(Error::PassphraseRequired)?;
                if pass.is_empty() {
                    return Err(Error::InvalidArgument(
                        "the passphrase must not be empty".into(),
                    ));
                }
                let key = MasterKey::generate();
                let file = crypto::wrap_master_key(
                    &key,
                    pass,
                    &config.id,
                    &key_binding,
                    opts.kdf,
                    now,
                    host_name(),
                    user_name(),
                )
                .map_err(Error::KeyManagement)?;
                let bytes = file.encode();
                let kid = KeyId::hash_of(&bytes);
                store.put(&key_key(&kid), &bytes, PutMode::Create)?;
                (Sealer::encrypted(&key), Some(key), Some(kid))
            }
            Encryption::None => (Sealer::plain(), None, None),
        };
        // The key must be durable before the config that makes the
        // repository exist.
        store.barrier()?;
        match store.put(CONFIG_KEY, &config_bytes, PutMode::Create) {
            Ok(()) => {}
            Err(e) if e.is_already_exists() => {
                // Another init won the race: our key file wraps a key of a
                // repository that will never exist.
                if let Some(kid) = key_id {
                    let _ = store.delete(&key_key(&kid));
                    let _ = store.barrier();
                }
                return Err(Error::AlreadyExists(location));
            }
            Err(e) => return Err(e.into()),
        }
        store.barrier()?;
        // Key files of other repository ids are leftovers of inits that
        // were interrupted or lost the race: they can never open this one.
        // Tidying only: the repository exists now, whatever happens here.
        let _ = keys::remove_foreign_key_files(store.as_ref(), &config.id);
        Ok(Repository {
            store,
            location,
            config,
            key_binding,
            sealer: Arc::new(sealer),
            master_key,
            key_id,
            lock_options: LockOptions::default(),
        })
    }

    /// Opens the repository in the directory `path`.
    pub fn open(path: &Path, passphrase: Option<&[u8]>) -> Result<Repository> {
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(path));
        Self::open_in(store, path.display().to_string(), passphrase)
    }

    /// Opens the repository held by `store`; `location` names it in messages.
    pub fn open_in(
        store: Arc<dyn Store>,
        location: String,
        passphrase: Option<&[u8]>,
    ) -> Result<Repository> {
        let (config, config_bytes) = Self::read_config_bytes(store.as_ref(), &location)?;
        let key_binding = crypto::key_binding(config.format.major, &config.id, &config_bytes);
        let (sealer, master_key, key_id) = match config.encryption {
            Encryption::None => {
                Self::refuse_downgrade(store.as_ref(), passphrase.is_some())?;
                (Sealer::plain(), None, None)
            }
            Encryption::Aes256Gcm => {
                let pass = passphrase.ok_or(Error::PassphraseRequired)?;
                let (kid, key) = Self::unlock(store.as_ref(), &config, &key_binding, pass)?;
                (Sealer::encrypted(&key), Some(key), Some(kid))
            }
        };
        Ok(Repository {
            store,
            location,
            config,
            key_binding,
            sealer: Arc::new(sealer),
            master_key,
            key_id,
            lock_options: LockOptions::default(),
        })
    }

    /// Reads and parses the config object without any key.
    pub fn read_config(store: &dyn Store, location: &str) -> Result<RepoConfig> {
        Ok(Self::read_config_bytes(store, location)?.0)
    }

    /// [`Repository::read_config`], with the bytes it was parsed from.
    fn read_config_bytes(store: &dyn Store, location: &str) -> Result<(RepoConfig, Vec<u8>)> {
        let bytes = match layout::read_object(store, CONFIG_KEY, None) {
            Ok(b) => b,
            Err(Error::Store(e)) if e.is_not_found() => {
                return Err(Error::NotARepository(location.to_string()))
            }
            // The location is a file (say, a disk image given in the
            // repository's place), not a directory holding a repository.
            Err(Error::Store(StoreError::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotADirectory =>
            {
                return Err(Error::NotARepository(location.to_string()))
            }
            Err(Error::Store(e)) => return Err(e.into()),
            Err(e) => return Err(e),
        };
        let config = RepoConfig::decode(&bytes).map_err(|e| Error::format(CONFIG_KEY, e))?;
        Ok((config, bytes))
    }

    /// The format major version of this repository: what its objects are
    /// written and read as.
    pub fn format_major(&self) -> u8 {
        self.config.format.major as u8
    }

    /// Where the repository is, as given when it was opened.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The repository's config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The storage holding the repository.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A handle on `store`, another copy of this repository (same config
    /// id, so the same key material), that reads and writes with this
    /// handle's key: how `sync`, `repair` and `restore --fallback` use a
    /// replica without asking for its passphrase. The caller has checked
    /// that `config` is compatible.
    pub(crate) fn with_store_of_copy(
        &self,
        store: Arc<dyn Store>,
        location: String,
        config: RepoConfig,
    ) -> Repository {
        Repository {
            store,
            location,
            config,
            key_binding: self.key_binding.clone(),
            sealer: self.sealer.clone(),
            master_key: self.master_key.clone(),
            key_id: None,
            lock_options: self.lock_options.clone(),
        }
    }

    // ---- locks -------------------------------------------------------------

    /// Sets how this handle takes locks: how long to wait for a conflicting
    /// one, and whom to tell. Every operation takes the lock it needs.
    pub fn set_lock_options(&mut self, opts: LockOptions) {
        self.lock_options = opts;
    }

    /// How this handle takes locks.
    pub fn lock_options(&self) -> &LockOptions {
        &self.lock_options
    }

    /// Takes a lock on the repository for `command`, held until the
    /// returned guard is dropped. Operations call this themselves; an
    /// embedder needs it only to hold a lock across several of them.
    pub fn lock(&self, kind: LockKind, command: &str) -> Result<RepoLock> {
        RepoLock::acquire(
            &self.store,
            &self.location,
            kind,
            command,
            &self.lock_options,
        )
    }

    /// An exclusive lock taken while this process holds `shared` (prune:
    /// it plans under a shared lock, then deletes under an exclusive one).
    /// Its own shared lock does not conflict; every other lock does.
    pub fn lock_exclusive_beside(&self, shared: &RepoLock, command: &str) -> Result<RepoLock> {
        // Read at every try: the shared lock's id changes when it is
        // refreshed while this one waits.
        let ignore = || shared.id().into_iter().collect::<Vec<String>>();
        RepoLock::acquire_ignoring(
            &self.store,
            &self.location,
            LockKind::Exclusive,
            command,
            &self.lock_options,
            &ignore,
        )
    }

    /// A shared lock for a command that only reads: on a repository that
    /// cannot be written (read-only medium), it goes on without one.
    pub fn lock_for_reading(&self, command: &str) -> Result<RepoLock> {
        RepoLock::acquire_for_reading(&self.store, &self.location, command, &self.lock_options)
    }

    /// This repository read past any local cache of its store: what
    /// `check` reads, so that it judges the objects the store holds, not
    /// copies of them. `None` when the store keeps no cache.
    pub(crate) fn without_cache(&self) -> Option<Repository> {
        Some(Repository {
            store: self.store.without_cache()?,
            location: self.location.clone(),
            config: self.config.clone(),
            key_binding: self.key_binding.clone(),
            sealer: self.sealer.clone(),
            master_key: self.master_key.clone(),
            key_id: self.key_id,
            lock_options: self.lock_options.clone(),
        })
    }

    /// The sealer for this repository's blobs.
    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }

    /// Bytes of plaintext a chunk may have in this repository (data chunks
    /// are bounded by the chunker; manifest nodes by the node format).
    pub(crate) fn max_chunk_plain(&self) -> usize {
        (self.config.chunker.max_chunk_size() as usize).max(crate::manifest::MAX_NODE_BYTES)
    }

    // ---- sealed objects ----------------------------------------------------

    /// Encodes a content-named object: header, then the sealed body, and
    /// returns its bytes (the id is BLAKE3 of them).
    pub(crate) fn seal_object(&self, kind: ObjectKind, body: &[u8], compress: bool) -> Vec<u8> {
        let header = ObjectHeader::new(kind, self.format_major()).encode();
        let comp = if compress {
            CompressionSetting::Zstd(3)
        } else {
            CompressionSetting::None
        };
        let sealed = self.sealer.seal(body, &header, comp);
        let mut out = Vec::with_capacity(OBJECT_HEADER_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        out
    }

    /// Refuses an object whose format version is not the repository's:
    /// every object of a repository is written in its format.
    pub(crate) fn check_object_version(&self, key: &str, version: u8) -> Result<()> {
        if version != self.format_major() {
            return Err(Error::damaged(
                key,
                format!(
                    "it is a format-{version} object in a format-{} repository",
                    self.format_major()
                ),
            ));
        }
        Ok(())
    }

    /// Verifies a content-named object's bytes against its id and opens its
    /// sealed body.
    pub(crate) fn open_object(
        &self,
        key: &str,
        kind: ObjectKind,
        expected_hash: &[u8; 32],
        bytes: &[u8],
    ) -> Result<Vec<u8>> {
        if blake3::hash(bytes).as_bytes() != expected_hash {
            return Err(Error::damaged(key, "content does not match its name"));
        }
        self.open_named_object(key, kind, bytes)
    }

    /// Opens the sealed body of an object whose name is not its hash (the
    /// policy): the header is checked, the body authenticated.
    pub(crate) fn open_named_object(
        &self,
        key: &str,
        kind: ObjectKind,
        bytes: &[u8],
    ) -> Result<Vec<u8>> {
        let header = ObjectHeader::decode(bytes, kind).map_err(|e| Error::format(key, e))?;
        self.check_object_version(key, header.version)?;
        let header_bytes = header.encode();
        self.sealer
            .open(
                &bytes[OBJECT_HEADER_LEN..],
                &header_bytes,
                MAX_BLOB_PLAINTEXT,
            )
            .map_err(|e| Error::open(key, e))
    }
}

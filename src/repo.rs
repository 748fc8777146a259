//! [`Repository`]: opening and creating repositories, and the one place that
//! knows how objects are named and sealed.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::crypto::{self, KdfCost, MasterKey, Sealer};
use crate::error::{Error, Result};
use crate::format::config::{ChunkerParams, CompressionSetting, Encryption, RepoConfig};
use crate::format::index::IndexBody;
use crate::format::keyfile::KeyFile;
use crate::format::point::PointBody;
use crate::format::{
    ChunkId, IndexId, KeyId, ObjectHeader, ObjectKind, PackId, PointId, MAX_BLOB_PLAINTEXT,
    OBJECT_HEADER_LEN,
};
use crate::index::{ChunkIndex, ChunkLocation};
use crate::store::{LocalStore, Store, StoreError};

/// Key of the config object.
pub const CONFIG_KEY: &str = "config";

/// Key of the replica marker, present in repositories created by `sync`.
pub const REPLICA_KEY: &str = "replica";

/// Object key of a pack.
pub fn pack_key(id: &PackId) -> String {
    let h = id.to_hex();
    format!("packs/{}/{}", &h[..2], h)
}

/// Object key of an index file.
pub fn index_key(id: &IndexId) -> String {
    format!("index/{id}")
}

/// Object key of a recovery point.
pub fn point_key(id: &PointId) -> String {
    format!("points/{id}")
}

/// Object key of a key file.
pub fn key_key(id: &KeyId) -> String {
    format!("keys/{id}")
}

/// Options for [`Repository::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub encryption: Encryption,
    pub chunker: ChunkerParams,
    pub compression: CompressionSetting,
    /// Argon2id cost of the first key file.
    pub kdf: KdfCost,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encryption: Encryption::Aes256Gcm,
            chunker: ChunkerParams::DEFAULT,
            compression: CompressionSetting::DEFAULT,
            kdf: KdfCost::default(),
        }
    }
}

/// A key file as listed by [`Repository::list_keys`].
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: KeyId,
    pub created: i64,
    pub host: String,
    pub username: String,
    /// True for the key that opened this repository handle.
    pub current: bool,
}

/// An open repository.
pub struct Repository {
    store: Arc<dyn Store>,
    location: String,
    config: RepoConfig,
    sealer: Arc<Sealer>,
    master_key: Option<MasterKey>,
    key_id: Option<KeyId>,
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

fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Empties `dir` if it holds nothing but the leftovers of an interrupted
/// `init`: files under `keys/` and `tmp/`, and no `config`. Anything else
/// makes it a directory that is not ours to reuse.
fn remove_interrupted_init(dir: &Path) -> Result<()> {
    let refuse = || Error::AlreadyExists(dir.display().to_string());
    let mut leftovers = Vec::new();
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
            leftovers.push(file.path());
        }
    }
    // The key files wrap a master key of a repository that never came to
    // exist (its config was never written): nothing can be lost by
    // removing them, and left behind they would be listed as keys of the
    // new repository.
    for file in leftovers {
        std::fs::remove_file(&file).map_err(|e| StoreError::io(&file.display().to_string(), e))?;
    }
    Ok(())
}

impl Repository {
    /// Creates a repository in the directory `path`, which must not exist or
    /// be empty. `passphrase` is required for an encrypted repository.
    ///
    /// A directory holding only what an interrupted `init` leaves (key
    /// files and temporary files, but no `config`) is no repository: those
    /// leftovers are removed and the repository is created anew.
    pub fn init(path: &Path, passphrase: Option<&[u8]>, opts: &InitOptions) -> Result<Repository> {
        if std::fs::read_dir(path).is_ok() {
            remove_interrupted_init(path)?;
        } else if path.exists() {
            return Err(Error::AlreadyExists(path.display().to_string()));
        }
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(path));
        Self::init_in(store, path.display().to_string(), passphrase, opts)
    }

    /// Creates a repository in an empty store.
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
        let config = RepoConfig::new(
            hex::encode(id),
            opts.chunker,
            opts.compression,
            opts.encryption,
            now,
        );
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
                    opts.kdf,
                    now,
                    host_name(),
                    user_name(),
                )
                .map_err(Error::KeyManagement)?;
                let bytes = file.encode();
                let kid = KeyId::hash_of(&bytes);
                store.put(&key_key(&kid), &bytes)?;
                (Sealer::encrypted(&key), Some(key), Some(kid))
            }
            Encryption::None => (Sealer::plain(), None, None),
        };
        // The key must be durable before the config that makes the
        // repository exist.
        store.barrier()?;
        store.put(CONFIG_KEY, &config.encode())?;
        store.barrier()?;
        Ok(Repository {
            store,
            location,
            config,
            sealer: Arc::new(sealer),
            master_key,
            key_id,
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
        let config = Self::read_config(store.as_ref(), &location)?;
        let (sealer, master_key, key_id) = match config.encryption {
            Encryption::None => {
                Self::refuse_downgrade(store.as_ref(), passphrase.is_some())?;
                (Sealer::plain(), None, None)
            }
            Encryption::Aes256Gcm => {
                let pass = passphrase.ok_or(Error::PassphraseRequired)?;
                let (kid, key) = Self::unlock(store.as_ref(), &config, pass)?;
                (Sealer::encrypted(&key), Some(key), Some(kid))
            }
        };
        Ok(Repository {
            store,
            location,
            config,
            sealer: Arc::new(sealer),
            master_key,
            key_id,
        })
    }

    /// The config is not authenticated: someone who can write the storage
    /// could flip an encrypted repository's config to `none`, so that new
    /// backups are stored in plaintext and planted plaintext points restore
    /// as "verified" (spec/SECURITY.md §9). An unencrypted repository never
    /// has key files, and its user has no passphrase to give: either sign
    /// means the config was changed.
    fn refuse_downgrade(store: &dyn Store, passphrase_given: bool) -> Result<()> {
        let has_keys = store.list("keys/")?.iter().any(|k| {
            k.rsplit('/')
                .next()
                .is_some_and(|n| n.parse::<KeyId>().is_ok())
        });
        if has_keys {
            return Err(Error::damaged(
                CONFIG_KEY,
                "it says the repository is unencrypted, but the repository has key files: \
                 the config was probably tampered with; do not back up into it, and restore \
                 its config from a replica or a copy",
            ));
        }
        if passphrase_given {
            return Err(Error::InvalidArgument(
                "this repository is not encrypted, but a passphrase was given; if it should be \
                 encrypted, its config was tampered with. Otherwise unset DISKVAULT_PASSWORD \
                 (or drop --password-file) to use it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Reads and parses the config object without any key.
    pub fn read_config(store: &dyn Store, location: &str) -> Result<RepoConfig> {
        let bytes = match store.get(CONFIG_KEY) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(Error::NotARepository(location.to_string())),
            // The location is a file (say, a disk image given in the
            // repository's place), not a directory holding a repository.
            Err(StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotADirectory =>
            {
                return Err(Error::NotARepository(location.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        RepoConfig::decode(&bytes).map_err(|e| Error::format(CONFIG_KEY, e))
    }

    /// Every key file, each read and verified on its own, so that one
    /// damaged file neither hides the others nor locks out their
    /// passphrases.
    fn read_each_key_file(store: &dyn Store) -> Result<Vec<(KeyId, Result<KeyFile>)>> {
        let mut out = Vec::new();
        for key in store.list("keys/")? {
            let Some(id) = key
                .strip_prefix("keys/")
                .and_then(|h| h.parse::<KeyId>().ok())
            else {
                continue;
            };
            let file = store.get(&key).map_err(Error::from).and_then(|bytes| {
                if KeyId::hash_of(&bytes) != id {
                    return Err(Error::damaged(&key, "content does not match its name"));
                }
                KeyFile::decode(&bytes).map_err(|e| Error::format(&key, e))
            });
            out.push((id, file));
        }
        Ok(out)
    }

    fn read_key_files(store: &dyn Store) -> Result<Vec<(KeyId, KeyFile)>> {
        let mut out = Vec::new();
        for (id, file) in Self::read_each_key_file(store)? {
            out.push((id, file?));
        }
        out.sort_by_key(|(_, f)| f.created);
        Ok(out)
    }

    fn unlock(store: &dyn Store, config: &RepoConfig, pass: &[u8]) -> Result<(KeyId, MasterKey)> {
        let files = Self::read_each_key_file(store)?;
        if files.is_empty() {
            return Err(Error::damaged(
                "keys/",
                "the repository is encrypted but has no key files",
            ));
        }
        let mut unusable = None;
        let mut ours = 0;
        // Cheapest key derivation first: a planted key file with a huge
        // Argon2 cost cannot stall opening with a genuine key.
        let mut files = files;
        files.sort_by_key(|(_, f)| match f {
            Ok(k) => (k.kdf.memory_kib as u64) * (k.kdf.iterations as u64),
            Err(_) => u64::MAX,
        });
        for (id, file) in files {
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    unusable.get_or_insert(e);
                    continue;
                }
            };
            if file.repository_id != config.id {
                continue;
            }
            ours += 1;
            if let Some(k) = crypto::unwrap_master_key(&file, pass) {
                return Ok((id, k));
            }
        }
        // The passphrase may be that of the damaged key file: say so
        // rather than call it wrong.
        if let Some(e) = unusable {
            return Err(e);
        }
        if ours == 0 {
            return Err(Error::damaged(
                CONFIG_KEY,
                "its repository id matches none of the key files (the config is damaged, or the key files come from another repository)",
            ));
        }
        Err(Error::WrongPassphrase)
    }

    /// Key files that cannot be used: unreadable, damaged, or belonging to
    /// another repository. For `check`: each is a problem, though the
    /// repository may still open with another key.
    pub(crate) fn key_file_problems(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (id, file) in Self::read_each_key_file(self.store.as_ref())? {
            let key = key_key(&id);
            match file {
                Err(Error::Damaged { reason, .. }) => out.push((key, reason)),
                Err(e) => out.push((key, e.to_string())),
                Ok(f) if f.repository_id != self.config.id => out.push((
                    key,
                    "it belongs to another repository (its repository id differs from the config's)"
                        .into(),
                )),
                Ok(_) => {}
            }
        }
        Ok(out)
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
            sealer: self.sealer.clone(),
            master_key: self.master_key.clone(),
            key_id: None,
        }
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

    // ---- keys -------------------------------------------------------------

    /// Lists the key files.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        Ok(Self::read_key_files(self.store.as_ref())?
            .into_iter()
            .map(|(id, f)| KeyInfo {
                current: Some(id) == self.key_id,
                id,
                created: f.created,
                host: f.host,
                username: f.username,
            })
            .collect())
    }

    /// Adds a key file that opens the repository with `passphrase`.
    pub fn add_key(&self, passphrase: &[u8], cost: KdfCost) -> Result<KeyId> {
        let key = self.master_key.as_ref().ok_or_else(|| {
            Error::KeyManagement("the repository is not encrypted: it has no keys".into())
        })?;
        if passphrase.is_empty() {
            return Err(Error::InvalidArgument(
                "the passphrase must not be empty".into(),
            ));
        }
        let file = crypto::wrap_master_key(
            key,
            passphrase,
            &self.config.id,
            cost,
            now_unix().0,
            host_name(),
            user_name(),
        )
        .map_err(Error::KeyManagement)?;
        let bytes = file.encode();
        let id = KeyId::hash_of(&bytes);
        self.store.put(&key_key(&id), &bytes)?;
        self.store.barrier()?;
        Ok(id)
    }

    /// Removes a key file, named by a unique prefix of its id. Refuses to
    /// remove the key that opened this handle or the last key.
    pub fn remove_key(&self, spec: &str) -> Result<KeyId> {
        let keys = self.list_keys()?;
        let matches: Vec<&KeyInfo> = keys
            .iter()
            .filter(|k| k.id.to_hex().starts_with(&spec.to_ascii_lowercase()))
            .collect();
        let k = match matches.as_slice() {
            [] => {
                return Err(Error::KeyManagement(format!(
                    "no key file matches '{spec}'; 'diskvault key list' shows them"
                )))
            }
            [k] => *k,
            _ => {
                return Err(Error::KeyManagement(format!(
                    "'{spec}' matches several key files; give more characters"
                )))
            }
        };
        if k.current {
            return Err(Error::KeyManagement(
                "refusing to remove the key in use; open the repository with another passphrase to remove this one (or use 'key passwd')".into(),
            ));
        }
        if keys.len() == 1 {
            return Err(Error::KeyManagement(
                "refusing to remove the last key".into(),
            ));
        }
        self.store.delete(&key_key(&k.id))?;
        self.store.barrier()?;
        Ok(k.id)
    }

    /// Replaces the key in use by a new one with `passphrase`.
    pub fn change_passphrase(&mut self, passphrase: &[u8], cost: KdfCost) -> Result<KeyId> {
        let old = self.key_id.ok_or_else(|| {
            Error::KeyManagement("the repository is not encrypted: it has no keys".into())
        })?;
        let new = self.add_key(passphrase, cost)?;
        // The new key is durable before the old one goes.
        self.store.delete(&key_key(&old))?;
        self.store.barrier()?;
        self.key_id = Some(new);
        Ok(new)
    }

    // ---- sealed objects ----------------------------------------------------

    /// Encodes a content-named object: header, then the sealed body, and
    /// returns its bytes (the id is BLAKE3 of them).
    pub(crate) fn seal_object(&self, kind: ObjectKind, body: &[u8], compress: bool) -> Vec<u8> {
        let header = ObjectHeader::current(kind).encode();
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
        let header = ObjectHeader::decode(bytes, kind).map_err(|e| Error::format(key, e))?;
        let header_bytes = header.encode();
        self.sealer
            .open(
                &bytes[OBJECT_HEADER_LEN..],
                &header_bytes,
                MAX_BLOB_PLAINTEXT,
            )
            .map_err(|e| Error::open(key, e))
    }

    // ---- index -------------------------------------------------------------

    /// Ids of all index files.
    pub fn list_index_files(&self) -> Result<Vec<IndexId>> {
        list_ids(self.store.as_ref(), "index/")
    }

    /// Reads one index file.
    pub fn read_index_file(&self, id: &IndexId) -> Result<IndexBody> {
        let key = index_key(id);
        let bytes = self.store.get(&key)?;
        let body = self.open_object(&key, ObjectKind::Index, &id.0, &bytes)?;
        IndexBody::decode(&body).map_err(|e| Error::format(key, e))
    }

    /// Writes an index file (after the packs it names are durable).
    pub fn write_index_file(&self, body: &IndexBody) -> Result<IndexId> {
        let bytes = self.seal_object(ObjectKind::Index, &body.encode(), false);
        let id = IndexId::hash_of(&bytes);
        self.store.put(&index_key(&id), &bytes)?;
        Ok(id)
    }

    /// Loads every index file into memory.
    pub fn load_index(&self) -> Result<ChunkIndex> {
        let mut index = ChunkIndex::default();
        for id in self.list_index_files()? {
            let body = self.read_index_file(&id)?;
            index.add_body(&body);
        }
        index.finish();
        Ok(index)
    }

    /// Ids of all packs present in the store.
    pub fn list_packs(&self) -> Result<Vec<PackId>> {
        list_ids(self.store.as_ref(), "packs/")
    }

    /// Reads and opens one chunk at a known location, verifying its id.
    pub fn read_chunk(&self, id: &ChunkId, loc: &ChunkLocation, pack: &PackId) -> Result<Vec<u8>> {
        let key = pack_key(pack);
        let sealed = self
            .store
            .get_range(&key, loc.offset as u64, loc.length as usize)?;
        self.sealer
            .open_chunk(&sealed, id, self.max_chunk_plain())
            .map_err(|e| Error::damaged(format!("chunk {} in {}", id.short(), key), e))
    }

    // ---- points ------------------------------------------------------------

    /// Ids of all recovery points.
    pub fn list_point_ids(&self) -> Result<Vec<PointId>> {
        list_ids(self.store.as_ref(), "points/")
    }

    /// Reads one recovery point.
    pub fn read_point(&self, id: &PointId) -> Result<PointBody> {
        let key = point_key(id);
        let bytes = self.store.get(&key).map_err(|e| {
            if e.is_not_found() {
                Error::UnknownPoint(id.to_hex())
            } else {
                e.into()
            }
        })?;
        let body = self.open_object(&key, ObjectKind::Point, &id.0, &bytes)?;
        PointBody::decode(&body).map_err(|e| Error::format(key, e))
    }

    /// Writes a recovery point (after everything it references is durable).
    pub fn write_point(&self, body: &PointBody) -> Result<PointId> {
        body.validate()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let bytes = self.seal_object(ObjectKind::Point, &body.encode(), true);
        let id = PointId::hash_of(&bytes);
        self.store.put(&point_key(&id), &bytes)?;
        self.store.barrier()?;
        Ok(id)
    }

    /// All recovery points, oldest first.
    pub fn list_points(&self) -> Result<Vec<(PointId, PointBody)>> {
        let mut points = Vec::new();
        for id in self.list_point_ids()? {
            points.push((id, self.read_point(&id)?));
        }
        points.sort_by(|a, b| {
            (a.1.time_secs, a.1.time_nanos, a.0).cmp(&(b.1.time_secs, b.1.time_nanos, b.0))
        });
        Ok(points)
    }

    /// Resolves `latest`, a full id, or a unique id prefix to a point id.
    pub fn resolve_point(&self, spec: &str) -> Result<PointId> {
        if spec == "latest" {
            return self
                .list_points()?
                .last()
                .map(|(id, _)| *id)
                .ok_or_else(|| {
                    Error::UnknownPoint("latest (the repository has no points)".into())
                });
        }
        let lower = spec.to_ascii_lowercase();
        if lower.is_empty() || !lower.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::UnknownPoint(spec.to_string()));
        }
        let matches: Vec<PointId> = self
            .list_point_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&lower))
            .collect();
        match matches.len() {
            0 => Err(Error::UnknownPoint(spec.to_string())),
            1 => Ok(matches[0]),
            n => Err(Error::AmbiguousPoint {
                spec: spec.to_string(),
                count: n,
            }),
        }
    }
}

/// Lists the ids of objects under `prefix`, ignoring names that are not ids
/// (stray files are reported by `check`, not fatal here).
pub(crate) fn list_ids<T: std::str::FromStr>(store: &dyn Store, prefix: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for key in store.list(prefix)? {
        if let Some(name) = key.rsplit('/').next() {
            if let Ok(id) = name.parse::<T>() {
                out.push(id);
            }
        }
    }
    Ok(out)
}

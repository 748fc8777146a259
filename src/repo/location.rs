//! Where a repository is, without its key ([`RepoLocation`]), and pairs of
//! repositories that hold the same key material (replicas).
//!
//! Two repositories can exchange chunks only if they have the same config
//! id (hence the same key files and master key material: ids are random at
//! `init`, and `sync` copies the config when it creates a replica), the same
//! chunker and the same encryption.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::layout::{
    list_ids_sized, read_object, FORGOTTEN, INDEX, KEYS, PACKS, POINTS, REPLICA_KEY,
};
use super::lock::{LockKind, LockOptions, RepoLock};
use super::Repository;
use crate::error::{Error, Result};
use crate::format::config::RepoConfig;
use crate::format::replica::ReplicaMarker;
use crate::format::{ForgetId, IndexId, KeyId, PackId, PointId};
use crate::store::{LocalStore, Store};

/// Where a repository is: its storage, and how messages name it. Enough
/// for the operations that need no key (a key-free `sync`).
#[derive(Clone)]
pub struct RepoLocation {
    store: Arc<dyn Store>,
    name: String,
    /// The directory, for a repository on the local file system.
    local: Option<std::path::PathBuf>,
}

impl fmt::Debug for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoLocation({})", self.name)
    }
}

impl RepoLocation {
    /// A repository in a local directory (which need not exist yet).
    pub fn local(path: &Path) -> Self {
        RepoLocation {
            local: Some(path.to_path_buf()),
            ..RepoLocation::new(Arc::new(LocalStore::new(path)), path.display().to_string())
        }
    }

    /// A repository held by `store`; `name` names it in messages.
    pub fn new(store: Arc<dyn Store>, name: impl Into<String>) -> Self {
        RepoLocation {
            store,
            name: name.into(),
            local: None,
        }
    }

    /// The repository `text` names: `az://CONTAINER/PREFIX` (Azure Blob
    /// Storage), `s3://BUCKET/PREFIX` (S3 and compatible stores), or else a
    /// local path. Credentials and endpoints come from the environment
    /// (see [`crate::store::object`]); a remote store is reached once here,
    /// so a wrong credential, a missing container or an unreachable endpoint
    /// fails now, saying which. Remote stores retry transient failures and
    /// keep a cache of index files and points (see
    /// [`crate::store::CachedStore`]).
    pub fn parse(text: &str) -> Result<RepoLocation> {
        Self::parse_with(text, &[])
    }

    /// [`RepoLocation::parse`] with storage settings given in the form of
    /// environment variables (`AWS_ENDPOINT_URL`, ...), over the
    /// environment's own.
    pub fn parse_with(text: &str, settings: &[(String, String)]) -> Result<RepoLocation> {
        use crate::store::{CachedStore, ObjectBackend, ObjectUrl, RetryStore};
        let url = match ObjectUrl::parse(text) {
            None => return Ok(RepoLocation::local(Path::new(text))),
            Some(Err(msg)) => return Err(Error::InvalidArgument(msg)),
            Some(Ok(url)) => url,
        };
        let backend: Arc<dyn Store> =
            Arc::new(ObjectBackend::open_with(&url, settings).map_err(Error::Store)?);
        let retrying: Arc<dyn Store> = Arc::new(RetryStore::new(backend));
        let name = url.to_string();
        let store: Arc<dyn Store> = match CachedStore::default_dir(&name) {
            Some(dir) => Arc::new(CachedStore::new(retrying, dir, super::layout::is_cacheable)),
            None => retrying,
        };
        Ok(RepoLocation::new(store, name))
    }

    /// The directory of a repository on the local file system.
    pub fn local_path(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    /// Opens the repository here (see [`Repository::open_in`]).
    pub fn open(&self, passphrase: Option<&[u8]>) -> Result<Repository> {
        match &self.local {
            Some(path) => Repository::open(path, passphrase),
            None => Repository::open_in(self.store.clone(), self.name.clone(), passphrase),
        }
    }

    /// Creates a repository here: in a new or empty directory, or under a
    /// prefix that holds nothing but what an interrupted `init` leaves.
    pub fn init(&self, passphrase: Option<&[u8]>, opts: &super::InitOptions) -> Result<Repository> {
        if let Some(path) = &self.local {
            return Repository::init(path, passphrase, opts);
        }
        let taken = self.store.list("")?.iter().any(|o| {
            !(o.key.starts_with(super::layout::KEYS) || o.key.starts_with(super::layout::TMP))
        });
        if taken {
            return Err(Error::AlreadyExists(self.name.clone()));
        }
        Repository::init_in(self.store.clone(), self.name.clone(), passphrase, opts)
    }

    /// Where an open repository is.
    pub fn of(repo: &Repository) -> Self {
        RepoLocation::new(repo.store().clone(), repo.location())
    }

    /// The storage.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The name used in messages (the path, for a local repository).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the config, without any key.
    pub fn read_config(&self) -> Result<RepoConfig> {
        Repository::read_config(self.store.as_ref(), &self.name)
    }

    /// Takes a lock on this repository (see [`RepoLock`]); needs no key.
    pub fn lock(&self, kind: LockKind, command: &str, opts: &LockOptions) -> Result<RepoLock> {
        RepoLock::acquire(&self.store, &self.name, kind, command, opts)
    }

    /// A shared lock for a command that only reads this repository: on a
    /// repository that cannot be written, it goes on without one.
    pub fn lock_for_reading(&self, command: &str, opts: &LockOptions) -> Result<RepoLock> {
        RepoLock::acquire_for_reading(&self.store, &self.name, command, opts)
    }

    /// The replica marker, if this repository was created by `sync`.
    pub fn read_marker(&self) -> Result<Option<ReplicaMarker>> {
        match read_object(self.store.as_ref(), REPLICA_KEY, None) {
            Ok(bytes) => ReplicaMarker::decode(&bytes)
                .map(Some)
                .map_err(|e| Error::format(REPLICA_KEY, e)),
            Err(Error::Store(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Refuses two configs whose chunks cannot be exchanged.
pub(crate) fn check_compatible(
    source: &RepoConfig,
    source_name: &str,
    destination: &RepoConfig,
    destination_name: &str,
) -> Result<()> {
    let reason = if source.id != destination.id {
        Some(format!(
            "it is another repository (id {} is not {}), so its key and chunk ids differ",
            &destination.id[..8.min(destination.id.len())],
            &source.id[..8.min(source.id.len())]
        ))
    } else if source.chunker != destination.chunker {
        Some(format!(
            "its chunker is {}, not {}",
            destination.chunker, source.chunker
        ))
    } else if source.encryption != destination.encryption {
        Some(format!(
            "its encryption is {}, not {}",
            destination.encryption, source.encryption
        ))
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::IncompatibleRepositories {
            source_repo: source_name.to_string(),
            destination: destination_name.to_string(),
            reason,
        }),
    }
}

/// Opens `replica` with the key of `primary`, after checking that it is a
/// copy of the same repository.
pub(crate) fn open_copy(primary: &Repository, replica: &RepoLocation) -> Result<Repository> {
    let config = replica.read_config()?;
    check_compatible(
        primary.config(),
        primary.location(),
        &config,
        replica.name(),
    )?;
    Ok(primary.with_store_of_copy(replica.store.clone(), replica.name.clone(), config))
}

/// Every content-named object of a repository with its size, listed in
/// the order that gives a consistent view while backups run: points, then
/// index files, then packs (a backup writes them the other way round, so
/// every point listed has its index files listed, and every index file its
/// packs). Forget records and key files come last.
#[derive(Default)]
pub(crate) struct Listing {
    pub points: Vec<(PointId, u64)>,
    pub index_files: Vec<(IndexId, u64)>,
    pub packs: Vec<(PackId, u64)>,
    pub forget_records: Vec<(ForgetId, u64)>,
    pub key_files: Vec<(KeyId, u64)>,
}

/// The ids of `all` that are not in `present`, with their sizes.
pub(crate) fn minus<T: Copy + Eq + std::hash::Hash>(
    all: &[(T, u64)],
    present: &[(T, u64)],
) -> Vec<(T, u64)> {
    let present: HashSet<&T> = present.iter().map(|(id, _)| id).collect();
    all.iter()
        .filter(|(id, _)| !present.contains(id))
        .copied()
        .collect()
}

impl Listing {
    pub fn read(store: &dyn Store) -> Result<Listing> {
        Ok(Listing {
            points: list_ids_sized(store, POINTS)?,
            index_files: list_ids_sized(store, INDEX)?,
            packs: list_ids_sized(store, PACKS)?,
            forget_records: list_ids_sized(store, FORGOTTEN)?,
            key_files: list_ids_sized(store, KEYS)?,
        })
    }

    /// The objects of `self` that `other` lacks.
    pub fn without(&self, other: &Listing) -> Listing {
        Listing {
            points: minus(&self.points, &other.points),
            index_files: minus(&self.index_files, &other.index_files),
            packs: minus(&self.packs, &other.packs),
            forget_records: minus(&self.forget_records, &other.forget_records),
            key_files: minus(&self.key_files, &other.key_files),
        }
    }
}

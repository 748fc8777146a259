//! Pairs of repositories that hold the same key material: where a
//! repository is ([`RepoLocation`]), whether two can exchange chunks, a
//! replica opened with its primary's key for reading chunks
//! (`ReplicaReader`, used by `restore --fallback` and `repair`), and how
//! far a replica lags behind its source ([`replica_status`]).
//!
//! Two repositories can exchange chunks only if they have the same config
//! id (hence the same key files and master key material: ids are random at
//! `init`, and `sync` copies the config when it creates a replica), the same
//! chunker and the same encryption.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::config::RepoConfig;
use crate::format::replica::ReplicaMarker;
use crate::format::{ChunkId, PointId};
use crate::index::{ChunkIndex, ChunkLocation};
use crate::ops::sync::{missing_objects, MissingObjects};
use crate::repo::{pack_key, Repository, REPLICA_KEY};
use crate::store::{LocalStore, Store};

/// Where a repository is: its storage, and how messages name it. Enough
/// for the operations that need no key (a key-free `sync`).
#[derive(Clone)]
pub struct RepoLocation {
    store: Arc<dyn Store>,
    name: String,
}

impl fmt::Debug for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoLocation({})", self.name)
    }
}

impl RepoLocation {
    /// A repository in a local directory (which need not exist yet).
    pub fn local(path: &Path) -> Self {
        RepoLocation::new(Arc::new(LocalStore::new(path)), path.display().to_string())
    }

    /// A repository held by `store`; `name` names it in messages.
    pub fn new(store: Arc<dyn Store>, name: impl Into<String>) -> Self {
        RepoLocation {
            store,
            name: name.into(),
        }
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

    /// The replica marker, if this repository was created by `sync`.
    pub fn read_marker(&self) -> Result<Option<ReplicaMarker>> {
        match self.store.get(REPLICA_KEY) {
            Ok(bytes) => ReplicaMarker::decode(&bytes)
                .map(Some)
                .map_err(|e| Error::format(REPLICA_KEY, e)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
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
            "its encryption is {:?}, not {:?}",
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

/// A replica opened with its primary's key, whose index is loaded on first
/// use: reads chunks the primary lacks or holds damaged.
pub(crate) struct ReplicaReader {
    repo: Repository,
    index: Mutex<Option<Arc<ChunkIndex>>>,
}

impl ReplicaReader {
    /// Checks that `replica` is a copy of `primary`; reads only its config.
    pub(crate) fn open(primary: &Repository, replica: &RepoLocation) -> Result<Self> {
        Ok(ReplicaReader {
            repo: open_copy(primary, replica)?,
            index: Mutex::new(None),
        })
    }

    /// The replica's repository handle.
    pub(crate) fn repo(&self) -> &Repository {
        &self.repo
    }

    /// The replica's index, loaded once.
    pub(crate) fn index(&self) -> Result<Arc<ChunkIndex>> {
        let mut slot = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ix) = slot.as_ref() {
            return Ok(ix.clone());
        }
        let ix = Arc::new(self.repo.load_index()?);
        *slot = Some(ix.clone());
        Ok(ix)
    }

    /// Where the replica keeps a chunk, naming the chunk when it has none.
    fn locate(&self, id: &ChunkId) -> Result<(Arc<ChunkIndex>, ChunkLocation)> {
        let index = self.index()?;
        let loc = index.get(id).ok_or_else(|| {
            Error::damaged(
                format!("chunk {}", id.to_hex()),
                format!(
                    "it is missing or damaged in the primary and the replica {} does not have it either",
                    self.repo.location()
                ),
            )
        })?;
        Ok((index, loc))
    }

    /// Reads and opens a chunk from the replica for a restore (see
    /// [`crate::crypto::Sealer::open_chunk_for_restore`]).
    pub(crate) fn read_chunk_for_restore(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let (index, loc) = self.locate(id)?;
        let key = pack_key(&index.pack_id(loc.pack));
        let sealed = self
            .repo
            .store()
            .get_range(&key, loc.offset as u64, loc.length as usize)?;
        self.repo
            .sealer()
            .open_chunk_for_restore(&sealed, id, self.repo.max_chunk_plain())
            .map_err(|e| {
                Error::damaged(format!("chunk {} in {} of the replica", id.short(), key), e)
            })
    }

    /// Reads a chunk's sealed bytes from the replica and verifies them
    /// completely (authentication, and the id of the plaintext). Returns
    /// the sealed bytes and the plaintext.
    pub(crate) fn read_sealed_verified(&self, id: &ChunkId) -> Result<(Vec<u8>, Vec<u8>)> {
        let (index, loc) = self.locate(id)?;
        let key = pack_key(&index.pack_id(loc.pack));
        let what = || format!("chunk {} in {} of the replica", id.short(), key);
        let sealed = self
            .repo
            .store()
            .get_range(&key, loc.offset as u64, loc.length as usize)?;
        let plain = self
            .repo
            .sealer()
            .open_chunk(&sealed, id, self.repo.max_chunk_plain())
            .map_err(|e| Error::damaged(what(), e))?;
        if plain.len() != loc.raw_length as usize {
            return Err(Error::damaged(
                what(),
                "its length differs from the replica's index",
            ));
        }
        Ok((sealed, plain))
    }
}

/// How far a replica lags behind its source.
#[derive(Debug, Clone)]
pub struct ReplicaStatus {
    pub source: String,
    pub replica: String,
    /// False when the replica does not exist yet (a sync would create it).
    pub replica_exists: bool,
    /// The replica's marker, when `sync` created it.
    pub marker: Option<ReplicaMarker>,
    /// Points of the source that the replica lacks, oldest first, with
    /// their start times (Unix seconds).
    pub missing_points: Vec<(PointId, i64)>,
    /// Points the replica holds that the source does not (backups taken
    /// into the replica; a sync the other way would send them).
    pub extra_points: usize,
    /// Objects a sync would copy (packs, index files, points, key files).
    pub objects_to_send: usize,
    /// Their bytes.
    pub bytes_to_send: u64,
    /// Newest point of the source: id and start time.
    pub source_newest: Option<(PointId, i64)>,
    /// Newest point of the replica.
    pub replica_newest: Option<(PointId, i64)>,
}

impl ReplicaStatus {
    /// True when a sync would copy nothing.
    pub fn is_current(&self) -> bool {
        self.replica_exists && self.objects_to_send == 0
    }
}

/// Compares a repository with its replica: which points the replica lacks,
/// how many bytes a sync would send, and the newest point on each side
/// (the recovery point objective, as users see it). Needs the key, because
/// point times are encrypted; reads no chunk.
pub fn replica_status(source: &Repository, replica: &RepoLocation) -> Result<ReplicaStatus> {
    let src = RepoLocation::of(source);
    let (replica_repo, marker) = match replica.read_config() {
        Ok(_) => (Some(open_copy(source, replica)?), replica.read_marker()?),
        Err(Error::NotARepository(_)) => (None, None),
        Err(e) => return Err(e),
    };
    let missing: MissingObjects = missing_objects(&src, replica)?;
    let mut bytes_to_send = 0;
    for key in missing.keys() {
        bytes_to_send += src.store().size(&key)?;
    }
    let newest = |repo: &Repository, ids: &[PointId]| -> Result<Vec<(PointId, i64, u32)>> {
        // Status is a report: a damaged point is `check`'s business.
        let mut v: Vec<(PointId, i64, u32)> = ids
            .iter()
            .filter_map(|id| {
                repo.read_point(id)
                    .ok()
                    .map(|p| (*id, p.time_secs, p.time_nanos))
            })
            .collect();
        v.sort_by_key(|(id, s, n)| (*s, *n, *id));
        Ok(v)
    };
    let src_ids = source.list_point_ids()?;
    let src_points = newest(source, &src_ids)?;
    let (replica_points, replica_ids): (Vec<(PointId, i64, u32)>, HashSet<PointId>) =
        match &replica_repo {
            Some(r) => {
                let ids = r.list_point_ids()?;
                (newest(r, &ids)?, ids.into_iter().collect())
            }
            None => (Vec::new(), HashSet::new()),
        };
    let src_set: HashSet<PointId> = src_ids.iter().copied().collect();
    Ok(ReplicaStatus {
        source: source.location().to_string(),
        replica: replica.name().to_string(),
        replica_exists: replica_repo.is_some(),
        marker,
        missing_points: src_points
            .iter()
            .filter(|(id, _, _)| !replica_ids.contains(id))
            .map(|(id, s, _)| (*id, *s))
            .collect(),
        extra_points: replica_ids
            .iter()
            .filter(|id| !src_set.contains(id))
            .count(),
        objects_to_send: missing.len(),
        bytes_to_send,
        source_newest: src_points.last().map(|(id, s, _)| (*id, *s)),
        replica_newest: replica_points.last().map(|(id, s, _)| (*id, *s)),
    })
}

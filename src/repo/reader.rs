//! Reading chunks through the index, with a replica to fall back on: the
//! chunk-reading layer that restore, check, sync and repair share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::layout::pack_key;
use super::location::{open_copy, RepoLocation};
use super::Repository;
use crate::error::{Error, Result};
use crate::format::ChunkId;
use crate::index::{ChunkIndex, ChunkLocation};

/// A replica opened with its primary's key, whose index is loaded on first
/// use: reads chunks the primary lacks or holds damaged.
pub(crate) struct ReplicaReader {
    repo: Repository,
    index: Mutex<Option<Arc<ChunkIndex>>>,
    /// Chunk groups opened lately: a repair or a restore reads many chunks
    /// of one group one by one, and the group is fetched and opened once.
    groups: Mutex<OpenedGroups>,
}

/// Opened group plaintexts by (pack number, offset), oldest dropped first
/// beyond a budget of bytes.
pub(crate) struct OpenedGroups {
    by_place: std::collections::HashMap<(u32, u32), Arc<Vec<u8>>>,
    order: std::collections::VecDeque<(u32, u32)>,
    bytes: usize,
    budget: usize,
}

impl Default for OpenedGroups {
    fn default() -> Self {
        Self::with_budget(64 << 20)
    }
}

impl OpenedGroups {
    /// Keeps at most `budget` bytes of opened groups.
    pub(crate) fn with_budget(budget: usize) -> Self {
        OpenedGroups {
            by_place: Default::default(),
            order: Default::default(),
            bytes: 0,
            budget,
        }
    }

    fn get(&self, place: (u32, u32)) -> Option<Arc<Vec<u8>>> {
        self.by_place.get(&place).cloned()
    }

    fn insert(&mut self, place: (u32, u32), plain: Arc<Vec<u8>>) {
        self.bytes += plain.len();
        if self.by_place.insert(place, plain).is_none() {
            self.order.push_back(place);
        }
        while self.bytes > self.budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(p) = self.by_place.remove(&old) {
                self.bytes -= p.len();
            }
        }
    }
}

impl ReplicaReader {
    /// Checks that `replica` is a copy of `primary`; reads only its config.
    pub(crate) fn open(primary: &Repository, replica: &RepoLocation) -> Result<Self> {
        Ok(ReplicaReader {
            repo: open_copy(primary, replica)?,
            index: Mutex::new(None),
            groups: Mutex::new(OpenedGroups::default()),
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
        // A damaged index file of the replica hides only its own chunks.
        let ix = Arc::new(self.repo.load_index_lenient()?.0);
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
        Ok(self.read_chunk(id, false)?.1)
    }

    /// Reads a chunk from the replica and verifies it completely
    /// (authentication, and the id of the plaintext). Returns the bytes
    /// read from the replica's store (its sealed chunk or group; nothing
    /// when the group was opened already) and the plaintext.
    pub(crate) fn read_sealed_verified(&self, id: &ChunkId) -> Result<(u64, Vec<u8>)> {
        self.read_chunk(id, true)
    }

    fn read_chunk(&self, id: &ChunkId, verify_id: bool) -> Result<(u64, Vec<u8>)> {
        let (index, loc) = self.locate(id)?;
        read_through_groups(
            &self.repo,
            &index,
            &self.groups,
            id,
            loc,
            verify_id,
            " of the replica",
        )
    }
}

/// Reads the chunk `id` at `loc` of `repo`, opening its group once for
/// all the members read after it while it stays in `groups`. Returns the
/// bytes fetched from the store (none for a group already open) and the
/// plaintext. `place` finishes the name of the object in messages.
pub(crate) fn read_through_groups(
    repo: &Repository,
    index: &ChunkIndex,
    groups: &Mutex<OpenedGroups>,
    id: &ChunkId,
    loc: ChunkLocation,
    verify_id: bool,
    place: &str,
) -> Result<(u64, Vec<u8>)> {
    let key = pack_key(&index.pack_id(loc.pack));
    let what = || format!("chunk {} in {}{}", id.short(), key, place);
    let fetch = || {
        repo.store()
            .get_range(&key, loc.offset as u64, loc.length as usize)
    };
    if !loc.is_grouped() {
        let sealed = fetch()?;
        let plain = repo
            .open_located(&sealed, id, &loc, verify_id)
            .map_err(|e| Error::damaged(what(), e))?;
        return Ok((sealed.len() as u64, plain));
    }
    let place = (loc.pack, loc.offset);
    let cached = groups.lock().unwrap_or_else(|e| e.into_inner()).get(place);
    let (fetched, group) = match cached {
        Some(g) => (0, g),
        None => {
            let sealed = fetch()?;
            let plain = repo
                .sealer()
                .open_group(&sealed)
                .map_err(|e| Error::damaged(what(), e))?;
            let plain = Arc::new(plain);
            groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(place, plain.clone());
            (sealed.len() as u64, plain)
        }
    };
    let bytes = repo
        .sealer()
        .group_member(&group, id, loc.member, loc.raw_length, verify_id)
        .map_err(|e| Error::damaged(what(), e))?;
    Ok((fetched, bytes.to_vec()))
}

pub(crate) fn blame_damaged_index(e: Error, damaged: &[super::Damaged]) -> Error {
    match (e, damaged.first()) {
        (Error::MissingChunk { chunk }, Some(first)) => Error::damaged(
            format!("chunk {chunk}"),
            format!(
                "it is in no readable index file, and {} index file(s) are damaged ({}: {}); 'diskvault repair REPO --index' rebuilds the index from the packs",
                damaged.len(),
                first.object,
                first.reason
            ),
        ),
        (e, _) => e,
    }
}

/// Where a restore reads chunks: the repository through its index, and a
/// replica for the chunks the repository lacks or holds damaged.
pub(crate) struct ChunkReader<'a> {
    pub repo: &'a Repository,
    pub index: &'a ChunkIndex,
    pub fallback: Option<&'a ReplicaReader>,
    /// Chunks read from the replica so far.
    from_replica: AtomicU64,
}

impl<'a> ChunkReader<'a> {
    pub fn new(
        repo: &'a Repository,
        index: &'a ChunkIndex,
        fallback: Option<&'a ReplicaReader>,
    ) -> Self {
        ChunkReader {
            repo,
            index,
            fallback,
            from_replica: AtomicU64::new(0),
        }
    }

    /// Reads one chunk (a manifest node), from the replica if need be.
    pub fn read(&self, id: &ChunkId) -> Result<Vec<u8>> {
        match (read_indexed_chunk(self.repo, self.index, id), self.fallback) {
            (Err(_), Some(f)) => self.read_from_replica(f, id),
            (result, _) => result,
        }
    }

    pub fn read_from_replica(&self, f: &ReplicaReader, id: &ChunkId) -> Result<Vec<u8>> {
        let plain = f.read_chunk_for_restore(id)?;
        self.from_replica.fetch_add(1, Ordering::Relaxed);
        Ok(plain)
    }

    pub fn replica_reads(&self) -> u64 {
        self.from_replica.load(Ordering::Relaxed)
    }
}

/// Reads a chunk through the index, naming it when missing.
pub(crate) fn read_indexed_chunk(
    repo: &Repository,
    index: &ChunkIndex,
    id: &ChunkId,
) -> Result<Vec<u8>> {
    let loc = index
        .get(id)
        .ok_or_else(|| Error::MissingChunk { chunk: id.to_hex() })?;
    repo.read_node(id, &loc, &index.pack_id(loc.pack))
}

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

/// What a reader of chunks says when a chunk is in no index it could read
/// while some index files were damaged: the likely cause, and the cure.
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

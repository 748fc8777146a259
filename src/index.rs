//! The in-memory chunk index: a sorted table of 52-byte entries, searched by
//! binary search. Built from every `index/` file when a repository is used.

use std::collections::HashMap;

use crate::format::index::{IndexBody, IndexRecord};
use crate::format::pack::PackEntry;
use crate::format::{ChunkId, PackId};

/// Where a chunk's sealed bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    /// Number of the pack in [`ChunkIndex::pack_id`].
    pub pack: u32,
    /// Offset of the sealed blob holding the chunk (the sealed chunk, or
    /// its group).
    pub offset: u32,
    /// Length of that sealed blob.
    pub length: u32,
    /// Where the chunk starts in its group's plaintext, or
    /// [`crate::format::group::SOLE`] for a chunk sealed alone.
    pub member: u32,
    /// Length of the chunk's plaintext, in bytes.
    pub raw_length: u32,
}

impl ChunkLocation {
    /// True when the chunk shares a sealed group with others.
    pub fn is_grouped(&self) -> bool {
        self.member != crate::format::group::SOLE
    }
}

#[derive(Clone, Copy)]
struct Entry {
    id: ChunkId,
    loc: ChunkLocation,
}

/// Bytes of memory one indexed chunk costs (the table entry itself).
pub const BYTES_PER_CHUNK: usize = std::mem::size_of::<Entry>();
const _: () = assert!(BYTES_PER_CHUNK == 52);

/// Where the ids with each 16-bit prefix start in a table sorted by chunk
/// id: a lookup then searches a few entries instead of all (a binary
/// search over millions of entries costs a cache miss per step).
#[derive(Default)]
pub(crate) struct PrefixTable {
    /// `starts[p]..starts[p + 1]` are the entries whose id starts with `p`.
    starts: Vec<u32>,
}

impl PrefixTable {
    /// Builds the table over ids in sorted order.
    pub(crate) fn build<'a>(sorted_ids: impl Iterator<Item = &'a ChunkId>) -> Self {
        let mut starts = vec![0u32; (1 << 16) + 1];
        for id in sorted_ids {
            starts[prefix(id) + 1] += 1;
        }
        for p in 0..(1 << 16) {
            starts[p + 1] += starts[p];
        }
        PrefixTable { starts }
    }

    /// The range of entries that may hold `id`.
    pub(crate) fn bucket(&self, id: &ChunkId) -> std::ops::Range<usize> {
        let p = prefix(id);
        self.starts[p] as usize..self.starts[p + 1] as usize
    }
}

/// All chunks the repository's index files list.
#[derive(Default)]
pub struct ChunkIndex {
    packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    entries: Vec<Entry>,
    sorted: bool,
    buckets: PrefixTable,
}

fn prefix(id: &ChunkId) -> usize {
    u16::from_be_bytes([id.0[0], id.0[1]]) as usize
}

impl ChunkIndex {
    /// The number of a pack, adding it if new.
    pub fn pack_number(&mut self, pack: PackId) -> u32 {
        if let Some(n) = self.pack_numbers.get(&pack) {
            return *n;
        }
        let n = self.packs.len() as u32;
        self.packs.push(pack);
        self.pack_numbers.insert(pack, n);
        n
    }

    /// The id of pack number `n`.
    pub fn pack_id(&self, n: u32) -> PackId {
        self.packs[n as usize]
    }

    /// All packs the index names.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// True if some chunk lives in `pack`.
    pub fn has_pack(&self, pack: &PackId) -> bool {
        self.pack_numbers.contains_key(pack)
    }

    /// Adds the records of an index file. Call [`ChunkIndex::finish`] after
    /// the last one.
    pub fn add_body(&mut self, body: &IndexBody) {
        let numbers: Vec<u32> = body.packs.iter().map(|p| self.pack_number(*p)).collect();
        self.entries.reserve(body.records.len());
        for r in &body.records {
            self.entries.push(Entry {
                id: r.id,
                loc: ChunkLocation {
                    pack: numbers[r.pack as usize],
                    offset: r.offset,
                    length: r.length,
                    member: r.member,
                    raw_length: r.raw_length,
                },
            });
        }
        self.sorted = false;
    }

    /// Adds one chunk, as the table of `pack` lists it.
    pub fn add(&mut self, pack: PackId, e: &PackEntry) {
        let pack = self.pack_number(pack);
        self.entries.push(Entry {
            id: e.id,
            loc: ChunkLocation {
                pack,
                offset: e.offset,
                length: e.length,
                member: e.member,
                raw_length: e.raw_length,
            },
        });
        self.sorted = false;
    }

    /// Sorts the table and drops duplicate ids (the same chunk in two packs
    /// after an interrupted backup; either copy is good).
    pub fn finish(&mut self) {
        self.entries.sort_unstable_by_key(|e| e.id);
        self.entries.dedup_by(|a, b| a.id == b.id);
        self.entries.shrink_to_fit();
        self.buckets = PrefixTable::build(self.entries.iter().map(|e| &e.id));
        self.sorted = true;
    }

    /// Where a chunk is, if indexed.
    pub fn get(&self, id: &ChunkId) -> Option<ChunkLocation> {
        if !self.sorted {
            // Added to since the last `finish`: correct, if slow.
            return self
                .entries
                .iter()
                .rev()
                .find(|e| e.id == *id)
                .map(|e| e.loc);
        }
        let bucket = self.buckets.bucket(id);
        let lo = bucket.start;
        self.entries[bucket]
            .binary_search_by(|e| e.id.cmp(id))
            .ok()
            .map(|i| self.entries[lo + i].loc)
    }

    /// True if the chunk is indexed.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.get(id).is_some()
    }

    /// Number of distinct chunks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no chunk is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every chunk and its location, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (ChunkId, ChunkLocation)> + '_ {
        self.entries.iter().map(|e| (e.id, e.loc))
    }

    /// The records of this index as an index file body.
    pub fn to_body(&self) -> IndexBody {
        IndexBody {
            packs: self.packs.clone(),
            records: self
                .entries
                .iter()
                .map(|e| IndexRecord {
                    id: e.id,
                    pack: e.loc.pack,
                    offset: e.loc.offset,
                    length: e.loc.length,
                    member: e.loc.member,
                    raw_length: e.loc.raw_length,
                })
                .collect(),
        }
    }
}

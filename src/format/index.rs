//! Index files (`index/<id>`): which pack, offset and length hold each
//! chunk. The body is a sealed blob whose plaintext is:
//!
//! | field | bytes |
//! |---|---|
//! | pack count P (u32 LE) | 4 |
//! | P pack ids | 32 each |
//! | entry count N (u32 LE) | 4 |
//! | N entries: chunk id, pack number (into the P ids), offset, length, raw length | 48 each |

use super::bytes::{ByteReader, PutBytes};
use super::{ChunkId, FormatError, PackId};

/// Encoded size of one index entry in format 1.
pub const INDEX_ENTRY_LEN: usize = 48;
/// Encoded size of one index entry in format 2 (with the member offset).
pub const INDEX_ENTRY_LEN_V2: usize = 52;
/// Most entries one index file may hold (48 MiB of plaintext).
pub const MAX_INDEX_ENTRIES: usize = 1 << 20;
/// Most packs one index file may name.
pub const MAX_INDEX_PACKS: usize = 1 << 20;

/// One chunk's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRecord {
    /// The chunk's id.
    pub id: ChunkId,
    /// Number of the pack in [`IndexBody::packs`].
    pub pack: u32,
    /// Offset, in bytes, of the sealed blob holding the chunk in the pack.
    pub offset: u32,
    /// Length, in bytes, of that sealed blob.
    pub length: u32,
    /// Member offset in its group, or [`super::group::SOLE`].
    pub member: u32,
    /// Length of the chunk's plaintext, in bytes.
    pub raw_length: u32,
}

impl IndexRecord {
    /// The record of a chunk a pack's table lists (its `pack` number is
    /// set when the record is grouped into an index file: see
    /// [`index_bodies`]).
    pub fn from_entry(e: &super::pack::PackEntry) -> Self {
        IndexRecord {
            id: e.id,
            pack: 0,
            offset: e.offset,
            length: e.length,
            member: e.member,
            raw_length: e.raw_length,
        }
    }
}

impl IndexRecord {
    /// The pack table entry this record repeats (its pack aside).
    pub fn as_entry(&self) -> super::pack::PackEntry {
        super::pack::PackEntry {
            id: self.id,
            offset: self.offset,
            length: self.length,
            member: self.member,
            raw_length: self.raw_length,
        }
    }
}

/// The plaintext of an index file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexBody {
    /// The packs the records point into; a record names one by position.
    pub packs: Vec<PackId>,
    /// One record per chunk indexed.
    pub records: Vec<IndexRecord>,
}

impl IndexBody {
    /// Encodes the body of an index file of format `version`.
    pub fn encode(&self, version: u8) -> Vec<u8> {
        let mut v =
            Vec::with_capacity(8 + self.packs.len() * 32 + self.records.len() * INDEX_ENTRY_LEN_V2);
        v.put_u32(self.packs.len() as u32);
        for p in &self.packs {
            v.extend_from_slice(&p.0);
        }
        v.put_u32(self.records.len() as u32);
        for r in &self.records {
            v.extend_from_slice(&r.id.0);
            v.put_u32(r.pack);
            v.put_u32(r.offset);
            v.put_u32(r.length);
            if version >= 2 {
                v.put_u32(r.member);
            }
            v.put_u32(r.raw_length);
        }
        v
    }

    /// Decodes the body of an index file of format `version`.
    pub fn decode(bytes: &[u8], version: u8) -> Result<Self, FormatError> {
        let mut r = ByteReader::new(bytes, "index");
        let np = r.count_u32(MAX_INDEX_PACKS, 32)?;
        let mut packs = Vec::with_capacity(np);
        for _ in 0..np {
            packs.push(PackId(r.array()?));
        }
        let entry_len = if version >= 2 {
            INDEX_ENTRY_LEN_V2
        } else {
            INDEX_ENTRY_LEN
        };
        let n = r.count_u32(MAX_INDEX_ENTRIES, entry_len)?;
        let mut records = Vec::with_capacity(n);
        for _ in 0..n {
            let id = ChunkId(r.array()?);
            let pack = r.u32()?;
            let offset = r.u32()?;
            let length = r.u32()?;
            let member = if version >= 2 {
                r.u32()?
            } else {
                super::group::SOLE
            };
            let rec = IndexRecord {
                id,
                pack,
                offset,
                length,
                member,
                raw_length: r.u32()?,
            };
            if rec.pack as usize >= np {
                return Err(r.invalid("entry names a pack number out of range"));
            }
            records.push(rec);
        }
        r.finish()?;
        Ok(IndexBody { packs, records })
    }
}

/// Groups located records into index file bodies of at most
/// [`MAX_INDEX_ENTRIES`] each, numbering each body's packs. The `pack` field
/// of the input records is ignored: the [`PackId`] beside each says where it
/// is.
pub fn index_bodies(records: &[(PackId, IndexRecord)]) -> Vec<IndexBody> {
    records
        .chunks(MAX_INDEX_ENTRIES)
        .map(|group| {
            let mut body = IndexBody::default();
            let mut numbers = std::collections::HashMap::new();
            for (pack, r) in group {
                let n = *numbers.entry(*pack).or_insert_with(|| {
                    body.packs.push(*pack);
                    (body.packs.len() - 1) as u32
                });
                body.records.push(IndexRecord { pack: n, ..*r });
            }
            body
        })
        .collect()
}

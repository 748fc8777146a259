//! Assembling pack files from sealed chunks, and reading a pack's table back.

use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::format::pack::{self, PackEntry, PACK_FOOTER_LEN, PACK_TABLE_AAD};
use crate::format::{ChunkId, ObjectHeader, ObjectKind, PackId, MAX_BLOB_PLAINTEXT};
use crate::repo::{pack_key, Repository};

/// Default pack size: large enough to keep object counts low on object
/// storage, small enough to keep memory bounded while one is assembled.
pub const DEFAULT_PACK_TARGET: usize = 16 << 20;

/// A pack being assembled in memory.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    target: usize,
}

/// A finished pack, ready to be stored.
pub struct FinishedPack {
    pub id: PackId,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn new(target: usize) -> Self {
        let mut buf = Vec::with_capacity(target + (1 << 20));
        buf.extend_from_slice(&ObjectHeader::current(ObjectKind::Pack).encode());
        PackBuilder {
            buf,
            entries: Vec::new(),
            target,
        }
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True once the pack reached its target size.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= self.target
    }

    /// Appends a sealed chunk.
    pub fn add(&mut self, id: ChunkId, sealed: &[u8], raw_length: u32) {
        self.entries.push(PackEntry {
            id,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_length,
        });
        self.buf.extend_from_slice(sealed);
    }

    /// Closes the pack with its sealed table and footer.
    pub fn finish(mut self, sealer: &Sealer) -> FinishedPack {
        let table = sealer.seal(
            &pack::encode_table(&self.entries),
            PACK_TABLE_AAD,
            crate::format::config::CompressionSetting::None,
        );
        self.buf.extend_from_slice(&table);
        self.buf
            .extend_from_slice(&pack::encode_footer(table.len() as u32));
        FinishedPack {
            id: PackId::hash_of(&self.buf),
            bytes: self.buf,
            entries: self.entries,
        }
    }
}

/// Reads the table of contents of a stored pack.
pub fn read_pack_table(repo: &Repository, id: &PackId) -> Result<Vec<PackEntry>> {
    let key = pack_key(id);
    let store = repo.store();
    let size = store.size(&key)?;
    if size < (crate::format::OBJECT_HEADER_LEN + PACK_FOOTER_LEN) as u64 {
        return Err(Error::damaged(&key, "too short to be a pack"));
    }
    let footer = store.get_range(&key, size - PACK_FOOTER_LEN as u64, PACK_FOOTER_LEN)?;
    let table_len = pack::decode_footer(&footer, size).map_err(|e| Error::format(&key, e))?;
    let table_start = size - PACK_FOOTER_LEN as u64 - table_len as u64;
    let sealed = store.get_range(&key, table_start, table_len as usize)?;
    let plain = repo
        .sealer()
        .open(&sealed, PACK_TABLE_AAD, MAX_BLOB_PLAINTEXT)
        .map_err(|e| Error::open(&key, e))?;
    pack::decode_table(&plain, table_start).map_err(|e| Error::format(&key, e))
}

/// Decodes the table of a pack held in memory (used when the whole pack was
/// read anyway, as by `check --read-data`).
pub fn parse_pack_table(sealer: &Sealer, key: &str, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    let size = bytes.len() as u64;
    if size < (crate::format::OBJECT_HEADER_LEN + PACK_FOOTER_LEN) as u64 {
        return Err(Error::damaged(key, "too short to be a pack"));
    }
    ObjectHeader::decode(bytes, ObjectKind::Pack).map_err(|e| Error::format(key, e))?;
    let footer = &bytes[bytes.len() - PACK_FOOTER_LEN..];
    let table_len = pack::decode_footer(footer, size).map_err(|e| Error::format(key, e))?;
    let table_start = bytes.len() - PACK_FOOTER_LEN - table_len as usize;
    let plain = sealer
        .open(
            &bytes[table_start..bytes.len() - PACK_FOOTER_LEN],
            PACK_TABLE_AAD,
            MAX_BLOB_PLAINTEXT,
        )
        .map_err(|e| Error::open(key, e))?;
    pack::decode_table(&plain, table_start as u64).map_err(|e| Error::format(key, e))
}

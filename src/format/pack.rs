//! Pack files: sealed chunks back to back, closed by a sealed table of
//! contents and a fixed footer, so that a lost index can be rebuilt from the
//! packs alone.
//!
//! | part | bytes |
//! |---|---|
//! | object header (kind pack) | 8 |
//! | sealed chunks | variable |
//! | sealed table (a blob, see [`super::blob`]) | variable |
//! | footer: table length (u32 LE) then magic `DVPT` | 8 |

use super::bytes::{ByteReader, PutBytes};
use super::{ChunkId, FormatError};

/// Magic closing every pack.
pub const PACK_FOOTER_MAGIC: [u8; 4] = *b"DVPT";
/// Length of the pack footer.
pub const PACK_FOOTER_LEN: usize = 8;
/// Encoded size of one table entry.
pub const PACK_ENTRY_LEN: usize = 44;
/// Most chunks a pack table may list.
pub const MAX_PACK_ENTRIES: usize = 1 << 20;
/// Associated-data label of a pack table.
pub const PACK_TABLE_AAD: &[u8] = b"diskvault pack table";

/// Where one sealed chunk sits inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: ChunkId,
    /// Offset of the sealed chunk from the start of the pack file.
    pub offset: u32,
    /// Length of the sealed chunk.
    pub length: u32,
    /// Length of the chunk's plaintext.
    pub raw_length: u32,
}

/// Encodes a table's plaintext: u32 count, then per entry id (32), offset,
/// length, raw length (u32 LE each).
pub fn encode_table(entries: &[PackEntry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + entries.len() * PACK_ENTRY_LEN);
    v.put_u32(entries.len() as u32);
    for e in entries {
        v.extend_from_slice(&e.id.0);
        v.put_u32(e.offset);
        v.put_u32(e.length);
        v.put_u32(e.raw_length);
    }
    v
}

/// Decodes a table's plaintext, checking that every entry lies inside the
/// chunk area of a pack of `pack_len` bytes.
pub fn decode_table(bytes: &[u8], chunk_area_end: u64) -> Result<Vec<PackEntry>, FormatError> {
    let mut r = ByteReader::new(bytes, "pack table");
    let n = r.count_u32(MAX_PACK_ENTRIES, PACK_ENTRY_LEN)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let e = PackEntry {
            id: ChunkId(r.array()?),
            offset: r.u32()?,
            length: r.u32()?,
            raw_length: r.u32()?,
        };
        if e.offset as u64 + e.length as u64 > chunk_area_end
            || (e.offset as usize) < super::OBJECT_HEADER_LEN
        {
            return Err(r.invalid("entry points outside the pack"));
        }
        out.push(e);
    }
    r.finish()?;
    Ok(out)
}

/// Encodes the footer for a sealed table of `table_len` bytes.
pub fn encode_footer(table_len: u32) -> [u8; PACK_FOOTER_LEN] {
    let mut out = [0u8; PACK_FOOTER_LEN];
    out[..4].copy_from_slice(&table_len.to_le_bytes());
    out[4..].copy_from_slice(&PACK_FOOTER_MAGIC);
    out
}

/// Decodes a footer, returning the sealed table's length after checking it
/// fits in a pack of `pack_len` bytes.
pub fn decode_footer(footer: &[u8], pack_len: u64) -> Result<u32, FormatError> {
    let mut r = ByteReader::new(footer, "pack footer");
    let table_len = r.u32()?;
    let magic: [u8; 4] = r.array()?;
    if magic != PACK_FOOTER_MAGIC {
        return Err(r.invalid("missing DVPT magic: pack is truncated or damaged"));
    }
    let min = (super::OBJECT_HEADER_LEN + PACK_FOOTER_LEN) as u64 + table_len as u64;
    if min > pack_len {
        return Err(r.invalid("table length exceeds the pack"));
    }
    Ok(table_len)
}

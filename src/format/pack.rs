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
use super::group::SOLE;
use super::{ChunkId, FormatError};

/// Magic closing every pack.
pub const PACK_FOOTER_MAGIC: [u8; 4] = *b"DVPT";
/// Length of the pack footer.
pub const PACK_FOOTER_LEN: usize = 8;
/// Encoded size of one table entry in format 1.
pub const PACK_ENTRY_LEN: usize = 44;
/// Encoded size of one table entry in format 2 (with the member offset).
pub const PACK_ENTRY_LEN_V2: usize = 48;
/// Most chunks a pack table may list.
pub const MAX_PACK_ENTRIES: usize = 1 << 20;
/// Associated-data label of a pack table.
pub const PACK_TABLE_AAD: &[u8] = b"diskvault pack table";

/// Where one chunk sits inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// The chunk's id.
    pub id: ChunkId,
    /// Offset of the sealed blob holding the chunk (the sealed chunk, or
    /// its sealed group) from the start of the pack file.
    pub offset: u32,
    /// Length of that sealed blob.
    pub length: u32,
    /// Where the chunk's plaintext starts in its group's plaintext, or
    /// [`SOLE`] for a chunk sealed alone (always so in format 1).
    pub member: u32,
    /// Length of the chunk's plaintext.
    pub raw_length: u32,
}

impl PackEntry {
    /// True when the chunk shares a sealed group with others (format 2).
    pub fn is_grouped(&self) -> bool {
        self.member != SOLE
    }
}

/// Encodes a table's plaintext for a pack of format `version`: u32 count,
/// then per entry id (32), offset, length, (format 2: member offset,) raw
/// length (u32 LE each).
pub fn encode_table(entries: &[PackEntry], version: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + entries.len() * PACK_ENTRY_LEN_V2);
    v.put_u32(entries.len() as u32);
    for e in entries {
        v.extend_from_slice(&e.id.0);
        v.put_u32(e.offset);
        v.put_u32(e.length);
        if version >= 2 {
            v.put_u32(e.member);
        }
        v.put_u32(e.raw_length);
    }
    v
}

/// Decodes the table of a pack of format `version`, checking that every
/// entry lies inside the chunk area, which ends at `chunk_area_end`.
pub fn decode_table(
    bytes: &[u8],
    chunk_area_end: u64,
    version: u8,
) -> Result<Vec<PackEntry>, FormatError> {
    let mut r = ByteReader::new(bytes, "pack table");
    let entry_len = if version >= 2 {
        PACK_ENTRY_LEN_V2
    } else {
        PACK_ENTRY_LEN
    };
    let n = r.count_u32(MAX_PACK_ENTRIES, entry_len)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = ChunkId(r.array()?);
        let offset = r.u32()?;
        let length = r.u32()?;
        let member = if version >= 2 { r.u32()? } else { SOLE };
        let raw_length = r.u32()?;
        let e = PackEntry {
            id,
            offset,
            length,
            member,
            raw_length,
        };
        if version >= 2 && e.raw_length == 0 {
            return Err(r.invalid("an entry has no plaintext"));
        }
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

//! The shape of a compressed blob body: exactly one Zstandard frame
//! (RFC 8878 §3.1.1) and nothing else (spec/FORMAT.md §2.3).
//!
//! A zstd decoder accepts more than the format allows: several frames back
//! to back, skippable frames, frames of pre-1.0 zstd versions. Each would
//! give one plaintext several encodings, and a reader in another language
//! might accept a different subset. So the body's frame structure is
//! checked here, before anything is decompressed, by walking the frame
//! header and the block headers (no decompression, no allocation).

use super::bytes::ByteReader;
use super::FormatError;

/// Magic number opening a Zstandard frame (`28 B5 2F FD` on disk).
pub const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// What the frame header of a valid body says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// `Frame_Content_Size` when the frame declares it (diskvault always
    /// writes it); equal to the blob's plaintext length when present.
    pub content_size: Option<u64>,
    /// Whether the frame ends with a 4-byte content checksum (which the
    /// decompressor then verifies).
    pub has_checksum: bool,
}

/// Checks that `body` is exactly one Zstandard frame that may decompress
/// to `plain_len` bytes: the standard magic number (so no skippable or
/// legacy frame), the reserved header bit clear, no dictionary, a declared
/// content size (if any) equal to `plain_len`, no reserved block type, and
/// the last block (and checksum) ending exactly at the end of `body`.
///
/// That the blocks really decompress to `plain_len` bytes is the
/// decompressor's part.
pub fn check_frame(body: &[u8], plain_len: u32) -> Result<FrameInfo, FormatError> {
    let mut r = ByteReader::new(body, "zstd frame");
    if r.u32()? != ZSTD_MAGIC {
        return Err(r.invalid(
            "does not start with the Zstandard frame magic (skippable and legacy frames are not allowed)",
        ));
    }
    let descriptor = r.u8()?;
    let fcs_flag = descriptor >> 6;
    let single_segment = descriptor & 0x20 != 0;
    let has_checksum = descriptor & 0x04 != 0;
    let dict_id_flag = descriptor & 0x03;
    if descriptor & 0x08 != 0 {
        return Err(r.invalid("reserved bit of the frame header is set"));
    }
    if !single_segment {
        // Window_Descriptor: any value. The reader decompresses into a
        // buffer of the declared plaintext length, which needs no window.
        r.u8()?;
    }
    let dict_id = match dict_id_flag {
        0 => 0,
        1 => r.u8()? as u32,
        2 => r.u16()? as u32,
        _ => r.u32()?,
    };
    if dict_id != 0 {
        return Err(r.invalid(format!("names dictionary {dict_id}")));
    }
    let content_size = match (fcs_flag, single_segment) {
        (0, false) => None,
        (0, true) => Some(r.u8()? as u64),
        (1, _) => Some(r.u16()? as u64 + 256),
        (2, _) => Some(r.u32()? as u64),
        _ => Some(r.u64()?),
    };
    if let Some(size) = content_size {
        if size != plain_len as u64 {
            return Err(r.invalid(format!(
                "declares {size} bytes of content, the blob header {plain_len}"
            )));
        }
    }
    loop {
        let header = r.array::<3>()?;
        let header = u32::from_le_bytes([header[0], header[1], header[2], 0]);
        let last = header & 1 != 0;
        let block_size = (header >> 3) as usize;
        match (header >> 1) & 3 {
            // Raw and compressed blocks carry Block_Size bytes, an RLE
            // block one byte repeated Block_Size times.
            0 | 2 => {
                r.take(block_size)?;
            }
            1 => {
                r.take(1)?;
            }
            _ => return Err(r.invalid("reserved block type")),
        }
        if last {
            break;
        }
    }
    if has_checksum {
        r.take(4)?;
    }
    if r.remaining() != 0 {
        return Err(r.invalid(format!(
            "{} bytes follow the frame (a second frame or trailing data)",
            r.remaining()
        )));
    }
    Ok(FrameInfo {
        content_size,
        has_checksum,
    })
}

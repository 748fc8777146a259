//! The sealed-blob envelope shared by chunks, manifest nodes, pack tables,
//! index bodies and recovery point bodies.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | compression: 0 = stored, 1 = zstd |
//! | 1 | 1 | cipher: 0 = none, 1 = AES-256-GCM |
//! | 2 | 2 | reserved, zero |
//! | 4 | 4 | plaintext length (u32 LE), after decompression |
//! | 8 | 12 | nonce (only when cipher = 1) |
//! | .. | n | payload: stored bytes, or ciphertext followed by the 16-byte tag |

use super::bytes::{ByteReader, PutBytes};
use super::FormatError;

/// How a blob's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Payload stored as is (code 0).
    Stored = 0,
    /// Payload compressed with zstd (code 1).
    Zstd = 1,
}

/// How a blob's payload is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// Payload not encrypted (code 0): a repository without encryption.
    None = 0,
    /// Payload encrypted with AES-256-GCM (code 1).
    Aes256Gcm = 1,
}

/// Length of the AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of the fixed part of the header.
pub const FIXED_HEADER_LEN: usize = 8;

/// The decoded envelope header of a sealed blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    /// How the payload is compressed.
    pub compression: Compression,
    /// How the payload is encrypted.
    pub cipher: Cipher,
    /// Length of the plaintext in bytes, after decompression.
    pub plain_len: u32,
    /// The 12-byte AES-GCM nonce; `None` when not encrypted.
    pub nonce: Option<[u8; NONCE_LEN]>,
}

impl BlobHeader {
    /// Encoded length of this header (8, or 20 with a nonce).
    pub fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN + if self.nonce.is_some() { NONCE_LEN } else { 0 }
    }

    /// Appends the header to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u8(self.compression as u8);
        out.put_u8(self.cipher as u8);
        out.put_u16(0);
        out.put_u32(self.plain_len);
        if let Some(n) = &self.nonce {
            out.extend_from_slice(n);
        }
    }

    /// Splits a sealed blob into its header and payload, refusing a declared
    /// plaintext larger than `max_plain`.
    pub fn decode(bytes: &[u8], max_plain: usize) -> Result<(BlobHeader, &[u8]), FormatError> {
        let mut r = ByteReader::new(bytes, "sealed blob");
        let compression = match r.u8()? {
            0 => Compression::Stored,
            1 => Compression::Zstd,
            c => return Err(r.invalid(format!("unknown compression {c}"))),
        };
        let cipher = match r.u8()? {
            0 => Cipher::None,
            1 => Cipher::Aes256Gcm,
            c => return Err(r.invalid(format!("unknown cipher {c}"))),
        };
        if r.u16()? != 0 {
            return Err(r.invalid("reserved bytes are not zero"));
        }
        let plain_len = r.u32()?;
        if plain_len as usize > max_plain {
            return Err(FormatError::TooLarge {
                what: "sealed blob plaintext",
                value: plain_len as u64,
                max: max_plain as u64,
            });
        }
        let nonce = match cipher {
            Cipher::Aes256Gcm => Some(r.array::<NONCE_LEN>()?),
            Cipher::None => None,
        };
        let header = BlobHeader {
            compression,
            cipher,
            plain_len,
            nonce,
        };
        let payload = r.take(r.remaining())?;
        if cipher == Cipher::Aes256Gcm && payload.len() < TAG_LEN {
            return Err(FormatError::Truncated {
                what: "sealed blob",
            });
        }
        if compression == Compression::Stored {
            let body = payload.len()
                - if cipher == Cipher::Aes256Gcm {
                    TAG_LEN
                } else {
                    0
                };
            if body != plain_len as usize {
                return Err(FormatError::Invalid {
                    what: "sealed blob",
                    reason: "stored payload length differs from declared length".into(),
                });
            }
        }
        Ok((header, payload))
    }
}

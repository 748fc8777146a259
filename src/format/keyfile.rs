//! Key files (`keys/<id>`): the master key material wrapped under a key
//! derived from a passphrase with Argon2id. JSON, so that the parameters are
//! readable by eye.

use serde::{Deserialize, Serialize};

use super::FormatError;

/// Largest key file accepted.
pub const MAX_KEYFILE_LEN: usize = 16 << 10;
/// Bounds on Argon2id parameters read from a key file, so that a hostile key
/// file cannot make `open` allocate or spin without limit.
pub const MAX_KDF_MEMORY_KIB: u32 = 4 << 20;
pub const MAX_KDF_ITERATIONS: u32 = 64;
pub const MAX_KDF_PARALLELISM: u32 = 64;

/// Argon2id parameters and salt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Always `argon2id`.
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hex, 32 bytes.
    pub salt: String,
}

/// A key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub kdf: KdfParams,
    /// Hex, 12-byte AES-GCM nonce used to wrap the master key.
    pub nonce: String,
    /// Hex, the 64-byte master key encrypted with AES-256-GCM (80 bytes with tag).
    pub wrapped_key: String,
    /// Repository id (hex) this key belongs to; also the AEAD associated data.
    pub repository_id: String,
    /// Unix seconds when the key was added.
    pub created: i64,
    /// Host and user that added the key, for `key list`.
    pub host: String,
    pub username: String,
}

impl KeyFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("key file serializes");
        v.push(b'\n');
        v
    }

    /// Parses and bounds-checks a key file.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let what = "key file";
        if bytes.len() > MAX_KEYFILE_LEN {
            return Err(FormatError::TooLarge {
                what,
                value: bytes.len() as u64,
                max: MAX_KEYFILE_LEN as u64,
            });
        }
        let k: KeyFile = serde_json::from_slice(bytes).map_err(|e| FormatError::Invalid {
            what,
            reason: e.to_string(),
        })?;
        let bad = |reason: &str| FormatError::Invalid {
            what,
            reason: reason.into(),
        };
        if k.kdf.algorithm != "argon2id" {
            return Err(bad("unknown key derivation algorithm"));
        }
        if k.kdf.memory_kib > MAX_KDF_MEMORY_KIB
            || k.kdf.iterations == 0
            || k.kdf.iterations > MAX_KDF_ITERATIONS
            || k.kdf.parallelism == 0
            || k.kdf.parallelism > MAX_KDF_PARALLELISM
        {
            return Err(bad("Argon2id parameters are out of bounds"));
        }
        let hex_len = |s: &str, n: usize| s.len() == 2 * n && hex::decode(s).is_ok();
        if !hex_len(&k.kdf.salt, 32)
            || !hex_len(&k.nonce, 12)
            || !hex_len(&k.wrapped_key, 80)
            || !hex_len(&k.repository_id, 32)
        {
            return Err(bad("a hex field has the wrong length"));
        }
        Ok(k)
    }
}

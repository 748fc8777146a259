//! Key files (`keys/<id>`): the master key material wrapped under a key
//! derived from a passphrase with Argon2id. JSON, so that the parameters are
//! readable by eye.

use serde::{Deserialize, Serialize};

use super::{is_lower_hex, FormatError};

/// Largest key file accepted.
pub const MAX_KEYFILE_LEN: usize = 16 << 10;
/// Bounds on Argon2id parameters read from a key file, so that a hostile key
/// file cannot make `open` allocate or spin without limit: memory in KiB
/// (4 GiB; at least 8 KiB per lane, as Argon2 requires).
pub const MAX_KDF_MEMORY_KIB: u32 = 4 << 20;
/// Most Argon2id passes a key file may ask for.
pub const MAX_KDF_ITERATIONS: u32 = 64;
/// Most Argon2id lanes a key file may ask for.
pub const MAX_KDF_PARALLELISM: u32 = 64;

/// Argon2id parameters and salt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Argon2 memory cost in KiB (`m`).
    pub memory_kib: u32,
    /// Argon2 passes (`t`).
    pub iterations: u32,
    /// Argon2 lanes (`p`).
    pub parallelism: u32,
    /// Lower-case hex, 32 bytes.
    pub salt: String,
}

/// A key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// How the wrapping key is derived from the passphrase.
    pub kdf: KdfParams,
    /// Hex, 12-byte AES-GCM nonce used to wrap the master key.
    pub nonce: String,
    /// Hex, the 64-byte master key encrypted with AES-256-GCM (80 bytes with tag).
    pub wrapped_key: String,
    /// Repository id (hex) this key belongs to; also the AEAD associated data.
    pub repository_id: String,
    /// Unix seconds when the key was added.
    pub created: i64,
    /// Host that added the key, for `key list`.
    pub host: String,
    /// User that added the key, for `key list`.
    pub username: String,
    /// Format 2: lower-case hex BLAKE3 of the `config` the key was made
    /// for, which is also bound into the wrapped key's associated data.
    /// Lets a reader tell a changed config from a wrong passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_blake3: Option<String>,
}

impl KeyFile {
    /// Pretty JSON with a trailing newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("key file serializes");
        v.push(b'\n');
        v
    }

    /// Parses and bounds-checks a key file. Every field is required; unknown
    /// members are ignored, as in `config` (spec/FORMAT.md §4.1).
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
        // Argon2 itself needs at least 8 KiB per lane (RFC 9106 §3.1); a key
        // file asking for less could never be opened, and would only be
        // reported as a wrong passphrase.
        if k.kdf.memory_kib > MAX_KDF_MEMORY_KIB
            || k.kdf.iterations == 0
            || k.kdf.iterations > MAX_KDF_ITERATIONS
            || k.kdf.parallelism == 0
            || k.kdf.parallelism > MAX_KDF_PARALLELISM
            || (k.kdf.memory_kib as u64) < 8 * k.kdf.parallelism as u64
        {
            return Err(bad("Argon2id parameters are out of bounds"));
        }
        // `repository_id` is compared with the config's id as a string and
        // is the associated data as written, so hex has one spelling.
        if !is_lower_hex(&k.kdf.salt, 32)
            || !is_lower_hex(&k.nonce, 12)
            || !is_lower_hex(&k.wrapped_key, 80)
            || !is_lower_hex(&k.repository_id, 32)
            || k.config_blake3
                .as_ref()
                .is_some_and(|h| !is_lower_hex(h, 32))
        {
            return Err(bad("a hex field is not lower-case hex of the right length"));
        }
        Ok(k)
    }
}

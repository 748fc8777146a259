//! Typed 32-byte identifiers, so a chunk id cannot be passed where a point id
//! belongs.

use std::fmt;
use std::str::FromStr;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first `n` hex characters, for display.
            pub fn short(&self) -> String {
                let mut s = self.to_hex();
                s.truncate(8);
                s
            }

            /// Plain BLAKE3 of `bytes`: how content-named objects get their id.
            pub fn hash_of(bytes: &[u8]) -> Self {
                $name(*blake3::hash(bytes).as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        /// Serialises as its lower-case hex text, 64 characters.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| InvalidId(s.to_string()))?;
                Ok($name(out))
            }
        }
    };
}

/// A string that is not 64 hex characters.
#[derive(Debug, Clone, thiserror::Error)]
#[error("'{0}' is not a 64-character hex id")]
pub struct InvalidId(pub String);

define_id!(
    /// Identifies a chunk: keyed BLAKE3 of its plaintext in encrypted
    /// repositories, plain BLAKE3 otherwise.
    ChunkId
);
define_id!(
    /// Identifies a pack file: BLAKE3 of its bytes.
    PackId
);
define_id!(
    /// Identifies an index file: BLAKE3 of its bytes.
    IndexId
);
define_id!(
    /// Identifies a recovery point file: BLAKE3 of its bytes.
    PointId
);
define_id!(
    /// Identifies a key file: BLAKE3 of its bytes.
    KeyId
);
define_id!(
    /// Identifies a forget record (a recovery point marked forgotten):
    /// BLAKE3 of its bytes.
    ForgetId
);

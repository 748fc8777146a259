//! On-disk types of the repository format and their byte encodings.
//!
//! Nothing here does I/O or cryptography: these are pure functions from
//! structures to bytes and back, with every length bounded. `spec/FORMAT.md`
//! documents the same layouts in prose and byte tables.

pub mod blob;
pub mod bytes;
pub mod changes;
pub mod config;
pub mod forget;
pub mod group;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod lock;
pub mod manifest;
pub mod pack;
pub mod point;
pub mod policy;
pub mod replica;
pub mod zstd_frame;

pub use id::{ChunkId, ForgetId, IndexId, KeyId, PackId, PointId};

use bytes::{ByteReader, PutBytes};

/// Major format version of new repositories, and the newest this build
/// reads. Readers refuse a newer one. Format 2 adds chunk groups, versioned
/// manifest nodes with chaining values, and key files bound to the config.
pub const FORMAT_MAJOR: u32 = 2;
/// Minor format version of new repositories: additions an older reader of
/// the same major can ignore. 1.1 added locks, forget records and the
/// stored policy; 2.0 has them from the start. A format-1 repository is
/// written as 1.1.
pub const FORMAT_MINOR: u32 = 0;

/// Largest plaintext any sealed blob may declare (chunks, manifest nodes,
/// index bodies, point bodies). Keeps a hostile length from allocating more.
pub const MAX_BLOB_PLAINTEXT: usize = 64 << 20;

/// True when `s` is exactly `bytes` bytes written as lower-case hex (2 ×
/// `bytes` characters of `0-9a-f`). Ids are compared as strings and used as
/// associated data as written, so one value must have one spelling:
/// upper-case hex is refused rather than treated as the same id.
pub(crate) fn is_lower_hex(s: &str, bytes: usize) -> bool {
    s.len() == 2 * bytes && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A decoding failure: the bytes are not a valid encoding.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The bytes end before the structure does.
    #[error("{what} is truncated")]
    Truncated {
        /// What was being decoded, e.g. `pack table`.
        what: &'static str,
    },
    /// A count or length in the bytes exceeds its format limit.
    #[error("{what} declares {value}, more than the limit {max}")]
    TooLarge {
        /// What was being decoded, e.g. `manifest node`.
        what: &'static str,
        /// The value the bytes declare.
        value: u64,
        /// The largest value the format allows.
        max: u64,
    },
    /// A field holds a value the format does not allow.
    #[error("{what} is invalid: {reason}")]
    Invalid {
        /// What was being decoded, e.g. `recovery point`.
        what: &'static str,
        /// Which field is wrong, and how.
        reason: String,
    },
    /// The object declares a newer format version than this build reads.
    /// Upgrade diskvault to read it.
    #[error("{what} has format version {found}, newer than this diskvault supports ({supported}); upgrade diskvault to read it")]
    NewerVersion {
        /// What was being decoded, e.g. `index file`.
        what: &'static str,
        /// The version the object declares.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
}

/// The kind of a repository object, as stored in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A pack file under `packs/` (kind 1).
    Pack = 1,
    /// An index file under `index/` (kind 2).
    Index = 2,
    /// A recovery point under `points/` (kind 3).
    Point = 3,
    /// A forget record (format 1.1).
    Forget = 4,
    /// The stored retention policy (format 1.1).
    Policy = 5,
}

impl ObjectKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(ObjectKind::Pack),
            2 => Some(ObjectKind::Index),
            3 => Some(ObjectKind::Point),
            4 => Some(ObjectKind::Forget),
            5 => Some(ObjectKind::Policy),
            _ => None,
        }
    }

    /// Human name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Pack => "pack",
            ObjectKind::Index => "index",
            ObjectKind::Point => "recovery point",
            ObjectKind::Forget => "forget record",
            ObjectKind::Policy => "retention policy",
        }
    }
}

/// Magic bytes opening every binary object.
pub const OBJECT_MAGIC: [u8; 4] = *b"DVLT";
/// Size of [`ObjectHeader`] on disk.
pub const OBJECT_HEADER_LEN: usize = 8;

/// The 8-byte header that opens packs, index files and recovery points.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `DVLT` |
/// | 4 | 1 | object kind |
/// | 5 | 1 | format major version |
/// | 6 | 2 | reserved, zero |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectHeader {
    /// What kind of object follows (byte 4 of the header).
    pub kind: ObjectKind,
    /// The object's format major version (byte 5 of the header).
    pub version: u8,
}

impl ObjectHeader {
    /// The header of an object of `kind` in a repository of format
    /// `version` (every object carries its repository's major version).
    pub fn new(kind: ObjectKind, version: u8) -> Self {
        ObjectHeader { kind, version }
    }

    /// The 8 header bytes: magic, kind, version, two reserved zero bytes.
    pub fn encode(&self) -> [u8; OBJECT_HEADER_LEN] {
        let mut v = Vec::with_capacity(OBJECT_HEADER_LEN);
        v.extend_from_slice(&OBJECT_MAGIC);
        v.put_u8(self.kind as u8);
        v.put_u8(self.version);
        v.put_u16(0);
        let mut out = [0u8; OBJECT_HEADER_LEN];
        out.copy_from_slice(&v);
        out
    }

    /// Decodes a header and checks it is of the `expected` kind and a
    /// version this build can read.
    pub fn decode(bytes: &[u8], expected: ObjectKind) -> Result<Self, FormatError> {
        let what = expected.name();
        let mut r = ByteReader::new(bytes, what);
        let magic: [u8; 4] = r.array()?;
        if magic != OBJECT_MAGIC {
            return Err(r.invalid("missing DVLT magic: not a diskvault object"));
        }
        let kind = ObjectKind::from_u8(r.u8()?).ok_or_else(|| r.invalid("unknown object kind"))?;
        if kind != expected {
            return Err(r.invalid(format!("is a {}, expected a {}", kind.name(), what)));
        }
        let version = r.u8()?;
        if version as u32 > FORMAT_MAJOR {
            return Err(FormatError::NewerVersion {
                what,
                found: version as u32,
                supported: FORMAT_MAJOR,
            });
        }
        if version == 0 {
            return Err(r.invalid("format version 0"));
        }
        // Readers authenticate the header they re-encode, so bytes left out of
        // that encoding must not vary: otherwise anyone could copy a point or
        // index under a new name that still opens.
        if r.u16()? != 0 {
            return Err(r.invalid("reserved bytes are not zero"));
        }
        Ok(ObjectHeader { kind, version })
    }
}

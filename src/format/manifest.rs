//! Manifest nodes: a disk's content as a tree of nodes stored as chunks.
//!
//! Leaves list extents in image order; interior nodes list children. Node
//! plaintext:
//!
//! | field | bytes |
//! |---|---|
//! | node kind: 1 = leaf, 2 = interior | 1 |
//! | level: 0 for leaves, child level + 1 for interior nodes | 1 |
//! | node version: 0 in format 1, 2 in format 2 | 1 |
//! | flags (format 2): bit 0 = a chaining value follows the offset; zero in format 1 | 1 |
//! | image offset of the node's first byte (u64 LE) | 8 |
//! | (flag bit 0) the BLAKE3 chaining value of the leaf's bytes | 32 |
//! | entry count (u32 LE) | 4 |
//! | entries | variable |
//!
//! Leaf entry: tag 1 (data) + length (u32) + chunk id (32), or tag 2 (zero
//! run) + length (u64). Interior entry: child chunk id (32) + bytes of image
//! the child covers (u64).

use super::bytes::{ByteReader, PutBytes};
use super::{ChunkId, FormatError};

/// Most entries in one node.
pub const MAX_NODE_ENTRIES: usize = 1 << 16;
/// Largest encoded node, header included. Binds before the entry count for
/// interior nodes and data extents: a reader bounds a manifest chunk's
/// plaintext by this whatever the chunker's maximum (spec/FORMAT.md §9.2).
pub const MAX_NODE_LEN: usize = 1 << 20;
/// Deepest tree accepted (fanout of at least 2 makes this far beyond any disk).
pub const MAX_LEVEL: u8 = 16;

/// One run of image bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Bytes stored as a chunk.
    Data {
        /// The chunk holding the bytes.
        id: ChunkId,
        /// Number of bytes: the chunk's plaintext length.
        length: u32,
    },
    /// Bytes that are all zero; never stored.
    Zero {
        /// Number of zero bytes.
        length: u64,
    },
}

impl Extent {
    /// Image bytes this extent covers.
    pub fn len(&self) -> u64 {
        match *self {
            Extent::Data { length, .. } => length as u64,
            Extent::Zero { length } => length,
        }
    }

    /// True for an extent of no bytes (never written by diskvault).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A child of an interior node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildRef {
    /// Id of the child node.
    pub id: ChunkId,
    /// Bytes of the image the child's subtree covers.
    pub covered: u64,
}

/// The entries of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEntries {
    /// A level-0 node: the extents of its part of the image.
    Leaf(Vec<Extent>),
    /// A node at level 1 or above: its children, in image order.
    Interior(Vec<ChildRef>),
}

/// A decoded manifest node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestNode {
    /// Level in the tree: 0 for a leaf, 1..=16 for interior nodes.
    pub level: u8,
    /// Image offset, in bytes, of the first byte the node covers.
    pub start: u64,
    /// The node's extents or children.
    pub entries: NodeEntries,
    /// Format 2 leaves that cover one whole aligned [`CV_SPAN`] of an
    /// image larger than that: the BLAKE3 chaining value of the span's
    /// bytes as a non-root subtree at its offset, so that a later backup
    /// with the same leaf need not hash them again.
    pub chaining_value: Option<[u8; 32]>,
}

/// The span a leaf's chaining value covers: a power of two, so an aligned
/// span is a complete subtree of the BLAKE3 tree.
pub const CV_SPAN: u64 = 4 << 20;
/// The node version byte of format 2.
const NODE_V2: u8 = 2;
/// Flag bit: a chaining value follows the offset.
const HAS_CV: u8 = 1;

impl ManifestNode {
    /// Bytes of image the node covers.
    pub fn covered(&self) -> u64 {
        match &self.entries {
            NodeEntries::Leaf(e) => e.iter().map(|x| x.len()).sum(),
            NodeEntries::Interior(c) => c.iter().map(|x| x.covered).sum(),
        }
    }

    /// The node's bytes in format `version` (spec/FORMAT.md §9.2). Callers
    /// keep within [`MAX_NODE_LEN`] and [`MAX_NODE_ENTRIES`]; a chaining
    /// value is written in format 2 only.
    pub fn encode(&self, version: u8) -> Vec<u8> {
        let mut v = Vec::new();
        let (kind, n) = match &self.entries {
            NodeEntries::Leaf(e) => (1, e.len()),
            NodeEntries::Interior(c) => (2, c.len()),
        };
        v.put_u8(kind);
        v.put_u8(self.level);
        let cv = self.chaining_value.filter(|_| version >= 2);
        if version >= 2 {
            v.put_u8(NODE_V2);
            v.put_u8(if cv.is_some() { HAS_CV } else { 0 });
        } else {
            v.put_u16(0);
        }
        v.put_u64(self.start);
        if let Some(cv) = cv {
            v.extend_from_slice(&cv);
        }
        v.put_u32(n as u32);
        match &self.entries {
            NodeEntries::Leaf(extents) => {
                for e in extents {
                    match *e {
                        Extent::Data { id, length } => {
                            v.put_u8(1);
                            v.put_u32(length);
                            v.extend_from_slice(&id.0);
                        }
                        Extent::Zero { length } => {
                            v.put_u8(2);
                            v.put_u64(length);
                        }
                    }
                }
            }
            NodeEntries::Interior(children) => {
                for c in children {
                    v.extend_from_slice(&c.id.0);
                    v.put_u64(c.covered);
                }
            }
        }
        v
    }

    /// Decodes a node of a repository of format `version`, refusing
    /// anything spec/FORMAT.md §9.2 forbids: more than [`MAX_NODE_LEN`]
    /// bytes, an unknown kind or entry tag, a node version other than the
    /// format's, unknown flags, a chaining value on anything but a leaf
    /// that covers one aligned [`CV_SPAN`], an empty extent, an interior
    /// node without children or with a level out of range, and trailing
    /// bytes.
    pub fn decode(bytes: &[u8], version: u8) -> Result<Self, FormatError> {
        if bytes.len() > MAX_NODE_LEN {
            return Err(FormatError::TooLarge {
                what: "manifest node",
                value: bytes.len() as u64,
                max: MAX_NODE_LEN as u64,
            });
        }
        let mut r = ByteReader::new(bytes, "manifest node");
        let kind = r.u8()?;
        let level = r.u8()?;
        let (node_version, flags) = (r.u8()?, r.u8()?);
        if version < 2 && (node_version, flags) != (0, 0) {
            return Err(r.invalid("reserved bytes are not zero"));
        }
        if version >= 2 && node_version != NODE_V2 {
            return Err(r.invalid(format!(
                "node version {node_version} in a format-{version} repository"
            )));
        }
        if flags & !HAS_CV != 0 || (flags & HAS_CV != 0 && kind != 1) {
            return Err(r.invalid(format!("flags {flags:#04x} are not allowed here")));
        }
        let start = r.u64()?;
        let chaining_value = if flags & HAS_CV != 0 {
            Some(r.array::<32>()?)
        } else {
            None
        };
        let entries = match kind {
            1 => {
                if level != 0 {
                    return Err(r.invalid("leaf with non-zero level"));
                }
                let n = r.count_u32(MAX_NODE_ENTRIES, 9)?;
                let mut extents = Vec::with_capacity(n);
                for _ in 0..n {
                    let e = match r.u8()? {
                        1 => {
                            let length = r.u32()?;
                            Extent::Data {
                                length,
                                id: ChunkId(r.array()?),
                            }
                        }
                        2 => Extent::Zero { length: r.u64()? },
                        t => return Err(r.invalid(format!("unknown extent tag {t}"))),
                    };
                    if e.is_empty() {
                        return Err(r.invalid("empty extent"));
                    }
                    extents.push(e);
                }
                NodeEntries::Leaf(extents)
            }
            2 => {
                if level == 0 || level > MAX_LEVEL {
                    return Err(r.invalid("interior node level out of range"));
                }
                let n = r.count_u32(MAX_NODE_ENTRIES, 40)?;
                // Only an empty disk covers nothing, and its manifest is an
                // empty leaf: a childless interior node is never written.
                if n == 0 {
                    return Err(r.invalid("interior node without children"));
                }
                let mut children = Vec::with_capacity(n);
                for _ in 0..n {
                    children.push(ChildRef {
                        id: ChunkId(r.array()?),
                        covered: r.u64()?,
                    });
                }
                NodeEntries::Interior(children)
            }
            k => return Err(r.invalid(format!("unknown node kind {k}"))),
        };
        r.finish()?;
        let node = ManifestNode {
            level,
            start,
            entries,
            chaining_value,
        };
        // Sums must not overflow: a node covering more than u64 is corrupt.
        let total = match &node.entries {
            NodeEntries::Leaf(e) => e.iter().try_fold(0u64, |a, x| a.checked_add(x.len())),
            NodeEntries::Interior(c) => c.iter().try_fold(0u64, |a, x| a.checked_add(x.covered)),
        };
        if total.and_then(|t| t.checked_add(start)).is_none() {
            return Err(FormatError::Invalid {
                what: "manifest node",
                reason: "covered length overflows".into(),
            });
        }
        // (After the sums are known to fit.)
        if node.chaining_value.is_some() && (start % CV_SPAN != 0 || node.covered() != CV_SPAN) {
            return Err(FormatError::Invalid {
                what: "manifest node",
                reason: "a chaining value on a leaf that is not one aligned 4 MiB span".into(),
            });
        }
        Ok(node)
    }
}

//! Building and walking a disk's manifest tree.
//!
//! Leaves cover aligned spans of [`LEAF_SPAN`] image bytes (an extent belongs
//! to the leaf where it starts; zero runs are split at span boundaries), and
//! interior nodes group [`FANOUT`] children. Because disk images never shift,
//! a change inside one span rewrites one leaf and the nodes above it: the
//! rest of the tree is made of the same chunks as the previous point's and
//! deduplicates like data.

use crate::error::{Error, Result};
use crate::format::manifest::{ChildRef, Extent, ManifestNode, NodeEntries, MAX_LEVEL};
use crate::format::ChunkId;

/// Image bytes covered by one leaf (except when a leaf fills up first).
/// Measured on a day of ext4 churn: 4 MiB leaves store 41 % less manifest
/// per incremental backup than 64 MiB leaves (see `spec/CHUNKING.md`).
pub const LEAF_SPAN: u64 = 4 << 20;
/// Most extents in a leaf written by this build.
pub const MAX_LEAF_EXTENTS: usize = 16 << 10;
/// Children per interior node.
pub const FANOUT: usize = 256;
/// Largest encoded node this build writes, and that readers accept.
pub const MAX_NODE_BYTES: usize = crate::format::manifest::MAX_NODE_LEN;
const _: () = assert!(16 + 32 + MAX_LEAF_EXTENTS * 37 <= MAX_NODE_BYTES);
const _: () = assert!(16 + FANOUT * 40 <= MAX_NODE_BYTES);

/// Streams extents into a manifest tree. `node_id` computes the chunk id of
/// an encoded node; finished nodes queue up until the caller stores them
/// ([`ManifestBuilder::drain_nodes`]).
///
/// A builder made [`ManifestBuilder::holding_leaves`] does not store a leaf
/// when it closes: the caller takes it ([`ManifestBuilder::take_closed`]),
/// works out its chaining value from the image bytes it covers, and gives
/// it back ([`ManifestBuilder::store_leaf`]), in order.
pub struct ManifestBuilder<F: Fn(&[u8]) -> ChunkId> {
    node_id: F,
    version: u8,
    hold_leaves: bool,
    finished: Vec<(ChunkId, Vec<u8>)>,
    pos: u64,
    leaf_start: u64,
    leaf: Vec<Extent>,
    /// Leaves closed and not stored yet (holding builders only).
    closed: std::collections::VecDeque<ClosedLeaf>,
    leaves: u64,
    /// `levels[i]` holds the pending children of the level `i + 1` node.
    levels: Vec<(u64, Vec<ChildRef>)>,
}

/// A leaf whose extents are complete, waiting for its chaining value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedLeaf {
    /// Image offset of its first byte.
    pub start: u64,
    /// Its extents, in image order.
    pub extents: Vec<Extent>,
}

impl ClosedLeaf {
    /// Image bytes it covers.
    pub fn covered(&self) -> u64 {
        self.extents.iter().map(Extent::len).sum()
    }

    /// True when the leaf may carry a chaining value in an image of
    /// `image_size` bytes: it covers one whole aligned
    /// [`crate::format::manifest::CV_SPAN`], which is then a complete
    /// subtree of the image's BLAKE3 tree, and not its root.
    pub fn takes_chaining_value(&self, image_size: u64) -> bool {
        use crate::format::manifest::CV_SPAN;
        self.start % CV_SPAN == 0 && self.covered() == CV_SPAN && image_size > CV_SPAN
    }

    /// The leaf as a node, with `chaining_value`.
    pub fn node(&self, chaining_value: Option<[u8; 32]>) -> ManifestNode {
        ManifestNode {
            level: 0,
            start: self.start,
            entries: NodeEntries::Leaf(self.extents.clone()),
            chaining_value,
        }
    }
}

impl<F: Fn(&[u8]) -> ChunkId> ManifestBuilder<F> {
    /// A builder of format-1 nodes that stores each leaf as it closes.
    pub fn new(node_id: F) -> Self {
        ManifestBuilder {
            node_id,
            version: 1,
            hold_leaves: false,
            finished: Vec::new(),
            pos: 0,
            leaf_start: 0,
            leaf: Vec::new(),
            closed: Default::default(),
            leaves: 0,
            levels: Vec::new(),
        }
    }

    /// Writes nodes of format `version`.
    pub fn with_format(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    /// Leaves wait for [`ManifestBuilder::store_leaf`] when they close.
    pub fn holding_leaves(mut self) -> Self {
        self.hold_leaves = true;
        self
    }

    /// The oldest leaf closed and not stored yet.
    pub fn take_closed(&mut self) -> Option<ClosedLeaf> {
        self.closed.pop_front()
    }

    /// Stores a leaf [`ManifestBuilder::take_closed`] gave, in the order
    /// they were given, with its chaining value (format 2, and only for a
    /// leaf that [`ClosedLeaf::takes_chaining_value`]).
    pub fn store_leaf(&mut self, leaf: ClosedLeaf, chaining_value: Option<[u8; 32]>) -> Result<()> {
        let node = leaf.node(chaining_value);
        let covered = node.covered();
        let id = self.store(&node);
        self.add_child(0, leaf.start, ChildRef { id, covered })
    }

    /// Takes the nodes finished since the last call, children before parents.
    pub fn drain_nodes(&mut self) -> std::vec::Drain<'_, (ChunkId, Vec<u8>)> {
        self.finished.drain(..)
    }

    fn store(&mut self, node: &ManifestNode) -> ChunkId {
        let bytes = node.encode(self.version);
        let id = (self.node_id)(&bytes);
        self.finished.push((id, bytes));
        id
    }

    /// Image bytes described so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn before_extent(&mut self) -> Result<()> {
        if !self.leaf.is_empty()
            && (self.pos / LEAF_SPAN != self.leaf_start / LEAF_SPAN
                || self.leaf.len() >= MAX_LEAF_EXTENTS)
        {
            self.flush_leaf()?;
        }
        if self.leaf.is_empty() {
            self.leaf_start = self.pos;
        }
        Ok(())
    }

    /// Appends a stored chunk of `length` bytes.
    pub fn push_data(&mut self, id: ChunkId, length: u32) -> Result<()> {
        debug_assert!(length > 0);
        self.before_extent()?;
        self.leaf.push(Extent::Data { id, length });
        self.pos += length as u64;
        Ok(())
    }

    /// Appends `length` zero bytes, merging with a preceding zero run.
    pub fn push_zero(&mut self, mut length: u64) -> Result<()> {
        while length > 0 {
            let boundary = (self.pos / LEAF_SPAN + 1) * LEAF_SPAN;
            let take = length.min(boundary - self.pos);
            self.before_extent()?;
            match self.leaf.last_mut() {
                Some(Extent::Zero { length: l }) => *l += take,
                _ => self.leaf.push(Extent::Zero { length: take }),
            }
            self.pos += take;
            length -= take;
        }
        Ok(())
    }

    fn flush_leaf(&mut self) -> Result<()> {
        let leaf = ClosedLeaf {
            start: self.leaf_start,
            extents: std::mem::take(&mut self.leaf),
        };
        self.leaves += 1;
        if self.hold_leaves {
            self.closed.push_back(leaf);
            Ok(())
        } else {
            self.store_leaf(leaf, None)
        }
    }

    /// Closes the last leaf (an empty disk's manifest is one empty leaf).
    /// A holding builder's caller then stores the closed leaves before
    /// [`ManifestBuilder::finish`].
    pub fn close(&mut self) -> Result<()> {
        if !self.leaf.is_empty() || self.leaves == 0 {
            self.flush_leaf()?;
        }
        Ok(())
    }

    fn add_child(&mut self, level: usize, start: u64, child: ChildRef) -> Result<()> {
        if self.levels.len() <= level {
            self.levels.push((start, Vec::new()));
        }
        if self.levels[level].1.is_empty() {
            self.levels[level].0 = start;
        }
        self.levels[level].1.push(child);
        if self.levels[level].1.len() >= FANOUT {
            self.flush_level(level)?;
        }
        Ok(())
    }

    fn flush_level(&mut self, level: usize) -> Result<()> {
        let (start, children) = std::mem::take(&mut self.levels[level]);
        let node = ManifestNode {
            level: level as u8 + 1,
            start,
            entries: NodeEntries::Interior(children),
            chaining_value: None,
        };
        let covered = node.covered();
        let id = self.store(&node);
        self.add_child(level + 1, start, ChildRef { id, covered })
    }

    /// Finishes the remaining nodes (collect them with
    /// [`ManifestBuilder::drain_nodes`]) and returns the root's id. Closes
    /// the last leaf first ([`ManifestBuilder::close`]); a holding builder
    /// must have stored every closed leaf.
    pub fn finish(&mut self) -> Result<ChunkId> {
        self.close()?;
        if !self.closed.is_empty() {
            return Err(Error::InvalidArgument(
                "manifest finished before its leaves were stored".into(),
            ));
        }
        let mut level = 0;
        loop {
            let is_top = level + 1 == self.levels.len();
            let pending = self.levels[level].1.len();
            if is_top && pending == 1 {
                return Ok(self.levels[level].1[0].id);
            }
            if pending > 0 {
                self.flush_level(level)?;
            }
            level += 1;
        }
    }
}

/// What [`walk`] reports, in image order.
pub enum ManifestEvent<'a> {
    /// A manifest node, before its contents.
    Node(&'a ChunkId),
    /// An extent starting at `offset`.
    Extent {
        /// Image offset of the extent's first byte.
        offset: u64,
        /// The extent.
        extent: &'a Extent,
    },
}

/// Walks the manifest rooted at `root` of a disk of `size` bytes, loading
/// nodes with `load`, checking that the tree is consistent (offsets, sizes,
/// levels), and calling `visit` for every node and extent in image order.
/// Nodes are decoded as format `version` nodes.
pub fn walk(
    root: &ChunkId,
    size: u64,
    version: u8,
    load: &mut dyn FnMut(&ChunkId) -> Result<Vec<u8>>,
    visit: &mut dyn FnMut(ManifestEvent<'_>) -> Result<()>,
) -> Result<()> {
    walk_node(root, 0, size, None, version, load, visit)
}

fn walk_node(
    id: &ChunkId,
    start: u64,
    covered: u64,
    level: Option<u8>,
    version: u8,
    load: &mut dyn FnMut(&ChunkId) -> Result<Vec<u8>>,
    visit: &mut dyn FnMut(ManifestEvent<'_>) -> Result<()>,
) -> Result<()> {
    let what = || format!("manifest node {}", id.short());
    visit(ManifestEvent::Node(id))?;
    let bytes = load(id)?;
    let node = ManifestNode::decode(&bytes, version).map_err(|e| Error::format(what(), e))?;
    let at = Placement {
        start,
        covered,
        level: level.unwrap_or(u8::MAX),
    };
    check_placement(&node, at, &what)?;
    let mut offset = start;
    match &node.entries {
        NodeEntries::Leaf(extents) => {
            for extent in extents {
                visit(ManifestEvent::Extent { offset, extent })?;
                offset += extent.len();
            }
        }
        NodeEntries::Interior(children) => {
            for c in children {
                walk_node(
                    &c.id,
                    offset,
                    c.covered,
                    Some(node.level - 1),
                    version,
                    load,
                    visit,
                )?;
                offset += c.covered;
            }
        }
    }
    Ok(())
}

/// A leaf of a disk's manifest and where its parent places it: what a
/// random-access reader keeps of a manifest, to find the leaf covering an
/// offset without reading any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafRef {
    /// The leaf node's id.
    pub id: ChunkId,
    /// Image offset of its first byte.
    pub start: u64,
    /// Image bytes it covers.
    pub covered: u64,
}

/// The leaves of the manifest rooted at `root` of a disk of `size` bytes,
/// in image order, reading only the interior nodes (one in 256 nodes),
/// each checked to sit where its parent places it.
pub fn leaf_refs(
    root: &ChunkId,
    size: u64,
    version: u8,
    load: &mut dyn FnMut(&ChunkId) -> Result<Vec<u8>>,
) -> Result<Vec<LeafRef>> {
    fn descend(
        id: &ChunkId,
        at: Placement,
        version: u8,
        load: &mut dyn FnMut(&ChunkId) -> Result<Vec<u8>>,
        out: &mut Vec<LeafRef>,
    ) -> Result<()> {
        let what = || format!("manifest node {}", id.short());
        let node =
            ManifestNode::decode(&load(id)?, version).map_err(|e| Error::format(what(), e))?;
        check_placement(&node, at, &what)?;
        match &node.entries {
            NodeEntries::Leaf(_) => out.push(LeafRef {
                id: *id,
                start: at.start,
                covered: at.covered,
            }),
            NodeEntries::Interior(children) => {
                let mut offset = at.start;
                for c in children {
                    let child = Placement {
                        start: offset,
                        covered: c.covered,
                        level: node.level - 1,
                    };
                    if node.level == 1 {
                        // Leaves are checked when they are read.
                        out.push(LeafRef {
                            id: c.id,
                            start: offset,
                            covered: c.covered,
                        });
                    } else {
                        descend(&c.id, child, version, load, out)?;
                    }
                    offset += c.covered;
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    let at = Placement {
        start: 0,
        covered: size,
        level: u8::MAX,
    };
    descend(root, at, version, load, &mut out)?;
    Ok(out)
}

/// The extents of the leaf `leaf` refers to, from its bytes, checked to
/// be a leaf that sits where its parent places it.
pub fn leaf_extents(leaf: &LeafRef, bytes: &[u8], version: u8) -> Result<Vec<Extent>> {
    let what = || format!("manifest node {}", leaf.id.short());
    let node = ManifestNode::decode(bytes, version).map_err(|e| Error::format(what(), e))?;
    let at = Placement {
        start: leaf.start,
        covered: leaf.covered,
        level: 0,
    };
    check_placement(&node, at, &what)?;
    match node.entries {
        NodeEntries::Leaf(extents) => Ok(extents),
        NodeEntries::Interior(_) => Err(Error::damaged(what(), "is at the wrong tree level")),
    }
}

/// What [`ReachWalk::walk`] reports.
pub enum Reached<'a> {
    /// A manifest node, at every place a parent (or a disk, when `parent`
    /// is `None`) references it. Its contents are read and reported only
    /// the first time (`first`).
    Node {
        /// The node's id.
        id: &'a ChunkId,
        /// The node that references it; `None` for a disk's root.
        parent: Option<&'a ChunkId>,
        /// True the first time the walk reaches this node.
        first: bool,
    },
    /// A data extent of a node read for the first time.
    Data {
        /// The data chunk's id.
        id: &'a ChunkId,
        /// Length of the extent (the chunk's plaintext), in bytes.
        length: u32,
        /// The leaf node that references it.
        node: &'a ChunkId,
    },
    /// A node that could not be read, or that does not fit where its
    /// parent places it; its subtree is skipped, the walk goes on.
    Damaged {
        /// The node's id.
        id: &'a ChunkId,
        /// The node that references it; `None` for a disk's root.
        parent: Option<&'a ChunkId>,
        /// Why it could not be used.
        error: Error,
    },
}

/// Where a node sits in the image: what every parent must agree on.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Placement {
    start: u64,
    covered: u64,
    level: u8,
}

/// Walks the manifests of many disks, reading each node once: a subtree
/// already walked (unchanged since an earlier point, as most are) is
/// skipped, after checking that its new parent places it where it was.
/// The one walk over "everything reachable" that prune's mark phase,
/// `check`, selective `sync` and `repair` share; it reads manifest nodes,
/// never data chunks.
pub struct ReachWalk {
    walked: std::collections::HashMap<ChunkId, Option<Placement>>,
    version: u8,
}

impl ReachWalk {
    /// A walk over manifests of a repository of format `version`.
    pub fn new(version: u8) -> Self {
        ReachWalk {
            walked: Default::default(),
            version,
        }
    }

    /// Manifest nodes walked so far (damaged ones included).
    pub fn nodes(&self) -> usize {
        self.walked.len()
    }

    /// True if the node was walked (or found damaged) already.
    pub fn has_walked(&self, id: &ChunkId) -> bool {
        self.walked.contains_key(id)
    }

    /// Walks the manifest of one disk of `size` bytes rooted at `root`.
    /// Errors only when `visit` does (callers that must see everything,
    /// like prune, fail on [`Reached::Damaged`]).
    pub fn walk(
        &mut self,
        root: &ChunkId,
        size: u64,
        load: &mut dyn FnMut(&ChunkId) -> Result<Vec<u8>>,
        visit: &mut dyn FnMut(Reached<'_>) -> Result<()>,
    ) -> Result<()> {
        let at = Placement {
            start: 0,
            covered: size,
            level: u8::MAX,
        };
        self.node(root, None, at, load, visit)
    }

    fn node(
        &mut self,
        id: &ChunkId,
        parent: Option<&ChunkId>,
        at: Placement,
        load: &mut dyn FnMut(&ChunkId) -> Result<Vec<u8>>,
        visit: &mut dyn FnMut(Reached<'_>) -> Result<()>,
    ) -> Result<()> {
        let what = || format!("manifest node {}", id.short());
        if let Some(seen) = self.walked.get(id) {
            visit(Reached::Node {
                id,
                parent,
                first: false,
            })?;
            return match seen {
                // Damaged: reported where first met; the new parent's
                // reference is reported above.
                None => Ok(()),
                Some(p)
                    if p.start == at.start
                        && p.covered == at.covered
                        && (at.level == u8::MAX || p.level == at.level) =>
                {
                    Ok(())
                }
                Some(_) => visit(Reached::Damaged {
                    id,
                    parent,
                    error: Error::damaged(
                        what(),
                        "is referenced at another image offset, size or level than before",
                    ),
                }),
            };
        }
        visit(Reached::Node {
            id,
            parent,
            first: true,
        })?;
        let node = load(id).and_then(|bytes| {
            let node =
                ManifestNode::decode(&bytes, self.version).map_err(|e| Error::format(what(), e))?;
            check_placement(&node, at, &what)?;
            Ok(node)
        });
        let node = match node {
            Ok(n) => n,
            Err(error) => {
                self.walked.insert(*id, None);
                return visit(Reached::Damaged { id, parent, error });
            }
        };
        self.walked.insert(
            *id,
            Some(Placement {
                level: node.level,
                ..at
            }),
        );
        match &node.entries {
            NodeEntries::Leaf(extents) => {
                for e in extents {
                    if let Extent::Data { id: chunk, length } = e {
                        visit(Reached::Data {
                            id: chunk,
                            length: *length,
                            node: id,
                        })?;
                    }
                }
            }
            NodeEntries::Interior(children) => {
                let mut offset = at.start;
                for c in children {
                    let child_at = Placement {
                        start: offset,
                        covered: c.covered,
                        level: node.level - 1,
                    };
                    self.node(&c.id, Some(id), child_at, load, visit)?;
                    offset += c.covered;
                }
            }
        }
        Ok(())
    }
}

/// Checks that `node` is where its parent places it (`at.level` is
/// `u8::MAX` for a root, whose level is free).
fn check_placement(node: &ManifestNode, at: Placement, what: &dyn Fn() -> String) -> Result<()> {
    if node.start != at.start {
        return Err(Error::damaged(what(), "starts at the wrong image offset"));
    }
    if at.level != u8::MAX && node.level != at.level {
        return Err(Error::damaged(what(), "is at the wrong tree level"));
    }
    if node.level > MAX_LEVEL {
        return Err(Error::damaged(what(), "tree is too deep"));
    }
    if node.covered() != at.covered {
        return Err(Error::damaged(
            what(),
            format!(
                "covers {} bytes where {} were expected",
                node.covered(),
                at.covered
            ),
        ));
    }
    Ok(())
}

/// What a manifest's leaves record of the image bytes they cover: for each
/// leaf with a chaining value, by its image offset, the digest of its
/// extents ([`leaf_digest`]) and the value. A backup whose leaf has the
/// same digest at the same offset covers the same bytes and takes the
/// value instead of hashing them again.
pub type LeafValues = std::collections::HashMap<u64, ([u8; 32], [u8; 32])>;

/// The digest a leaf is compared by: the BLAKE3 of its node encoded
/// without a chaining value.
pub fn leaf_digest(leaf: &ClosedLeaf) -> [u8; 32] {
    *blake3::hash(&leaf.node(None).encode(2)).as_bytes()
}

/// Collects the chaining values of the leaves of the manifest rooted at
/// `root` (format 2 and later; a format-1 manifest has none).
pub fn leaf_values(
    root: &ChunkId,
    version: u8,
    load: &mut dyn FnMut(&ChunkId) -> Result<Vec<u8>>,
) -> Result<LeafValues> {
    let mut out = LeafValues::new();
    if version < 2 {
        return Ok(out);
    }
    let mut todo = vec![*root];
    while let Some(id) = todo.pop() {
        let bytes = load(&id)?;
        let node = ManifestNode::decode(&bytes, version)
            .map_err(|e| Error::format(format!("manifest node {}", id.short()), e))?;
        match node.entries {
            NodeEntries::Interior(children) => todo.extend(children.iter().map(|c| c.id)),
            NodeEntries::Leaf(extents) => {
                if let Some(cv) = node.chaining_value {
                    let leaf = ClosedLeaf {
                        start: node.start,
                        extents,
                    };
                    out.insert(node.start, (leaf_digest(&leaf), cv));
                }
            }
        }
    }
    Ok(out)
}

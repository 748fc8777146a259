//! What spec/FORMAT.md says diskvault's writer does, checked against the
//! writer itself: FastCDC as the spec defines it (with the tables read out
//! of the spec's Appendix A), the manifest-building pseudo-code of §9.4,
//! and the figures of a disk record (§10.1). If one of these fails, either
//! the spec or the writer changed; a reimplementation written from the
//! spec would then cut other chunks or build other manifests.

mod common;

use common::{Xorshift, MIB};
use diskvault::format::manifest::{ChildRef, Extent, ManifestNode, NodeEntries};
use diskvault::format::ChunkId;
use diskvault::manifest::ManifestBuilder;

// ---- the manifest writer (§9.4) --------------------------------------------

/// The pseudo-code of §9.4, transcribed.
struct SpecManifest {
    pos: u64,
    leaf: Vec<Extent>,
    leaf_start: u64,
    levels: Vec<(u64, Vec<ChildRef>)>,
    stored: Vec<(ChunkId, Vec<u8>)>,
}

const SPAN: u64 = 4 << 20;
const MAX_LEAF: usize = 16384;
const FANOUT: usize = 256;

fn node_id(bytes: &[u8]) -> ChunkId {
    ChunkId(*blake3::hash(bytes).as_bytes())
}

impl SpecManifest {
    fn new() -> Self {
        SpecManifest {
            pos: 0,
            leaf: Vec::new(),
            leaf_start: 0,
            levels: Vec::new(),
            stored: Vec::new(),
        }
    }

    fn store(&mut self, node: ManifestNode) -> ChildRef {
        let bytes = node.encode();
        let id = node_id(&bytes);
        self.stored.push((id, bytes));
        ChildRef {
            id,
            covered: node.covered(),
        }
    }

    fn before_extent(&mut self) {
        if !self.leaf.is_empty()
            && (self.pos / SPAN != self.leaf_start / SPAN || self.leaf.len() >= MAX_LEAF)
        {
            self.flush_leaf();
        }
        if self.leaf.is_empty() {
            self.leaf_start = self.pos;
        }
    }

    fn push_data(&mut self, id: ChunkId, length: u32) {
        self.before_extent();
        self.leaf.push(Extent::Data { id, length });
        self.pos += length as u64;
    }

    fn push_zero(&mut self, mut length: u64) {
        while length > 0 {
            let take = length.min((self.pos / SPAN + 1) * SPAN - self.pos);
            self.before_extent();
            match self.leaf.last_mut() {
                Some(Extent::Zero { length: l }) => *l += take,
                _ => self.leaf.push(Extent::Zero { length: take }),
            }
            self.pos += take;
            length -= take;
        }
    }

    fn flush_leaf(&mut self) {
        let node = ManifestNode {
            level: 0,
            start: self.leaf_start,
            entries: NodeEntries::Leaf(std::mem::take(&mut self.leaf)),
        };
        let child = self.store(node);
        self.add_child(0, self.leaf_start, child);
    }

    fn add_child(&mut self, i: usize, start: u64, child: ChildRef) {
        if self.levels.len() <= i {
            self.levels.push((start, Vec::new()));
        }
        if self.levels[i].1.is_empty() {
            self.levels[i].0 = start;
        }
        self.levels[i].1.push(child);
        if self.levels[i].1.len() >= FANOUT {
            self.flush_level(i);
        }
    }

    fn flush_level(&mut self, i: usize) {
        let start = self.levels[i].0;
        let node = ManifestNode {
            level: i as u8 + 1,
            start,
            entries: NodeEntries::Interior(std::mem::take(&mut self.levels[i].1)),
        };
        let child = self.store(node);
        self.add_child(i + 1, start, child);
    }

    fn finish(&mut self) -> ChunkId {
        if !self.leaf.is_empty() || self.levels.is_empty() {
            self.flush_leaf();
        }
        let mut i = 0;
        loop {
            if i + 1 == self.levels.len() && self.levels[i].1.len() == 1 {
                return self.levels[i].1[0].id;
            }
            if !self.levels[i].1.is_empty() {
                self.flush_level(i);
            }
            i += 1;
        }
    }
}

enum Push {
    Data(u32),
    Zero(u64),
}

/// Feeds the same extents to the spec's pseudo-code and to diskvault's
/// builder; both must store the same nodes, in the same order, and name
/// the same root.
fn same_manifest(what: &str, pushes: &[Push]) -> usize {
    let mut spec = SpecManifest::new();
    let mut builder = ManifestBuilder::new(node_id);
    let mut built = Vec::new();
    for (i, p) in pushes.iter().enumerate() {
        match *p {
            Push::Data(len) => {
                let id = ChunkId(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes());
                spec.push_data(id, len);
                builder.push_data(id, len).unwrap();
            }
            Push::Zero(len) => {
                spec.push_zero(len);
                builder.push_zero(len).unwrap();
            }
        }
        built.extend(builder.drain_nodes());
    }
    let spec_root = spec.finish();
    let root = builder.finish().unwrap();
    built.extend(builder.drain_nodes());
    assert_eq!(root, spec_root, "{what}: root");
    assert_eq!(built.len(), spec.stored.len(), "{what}: node count");
    for (n, (a, b)) in built.iter().zip(&spec.stored).enumerate() {
        assert!(a == b, "{what}: node {n} differs");
    }
    built.len()
}

#[test]
fn diskvault_builds_manifests_as_the_spec_pseudo_code_does() {
    assert_eq!(same_manifest("an empty disk", &[]), 1);
    let empty = ManifestBuilder::new(node_id).finish().unwrap();
    assert_eq!(
        empty,
        node_id(
            &ManifestNode {
                level: 0,
                start: 0,
                entries: NodeEntries::Leaf(vec![]),
            }
            .encode()
        )
    );

    let mut rng = Xorshift::new(94);
    let mixed: Vec<Push> = (0..20_000)
        .map(|_| match rng.below(10) {
            0 => Push::Zero(1 + rng.below(6 * MIB)),
            1 => Push::Data(1 + rng.below(9 * MIB) as u32),
            _ => Push::Data(1 + rng.below(20_000) as u32),
        })
        .collect();
    same_manifest("mixed extents", &mixed);

    // 64-byte chunks: a span holds 65 536, so leaves close at 16 384.
    let tiny: Vec<Push> = (0..100_000).map(|_| Push::Data(64)).collect();
    same_manifest("leaves closed by their extent count", &tiny);

    // Zero runs across many spans, merged and split; data in between.
    let zeros = [
        Push::Zero(3 * MIB),
        Push::Zero(3 * MIB),
        Push::Data(16384),
        Push::Zero(17 * MIB + 5),
        Push::Data(1),
        Push::Zero(SPAN - 1),
    ];
    same_manifest("split and merged zero runs", &zeros);

    // 70 000 leaves of zeros: interior nodes of two levels above the leaves.
    let nodes = same_manifest("a 273 GiB disk of zeros", &[Push::Zero(70_000 * SPAN)]);
    assert_eq!(nodes, 70_000 + 274 + 2 + 1);
}

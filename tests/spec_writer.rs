//! What spec/FORMAT.md says diskvault's writer does, checked against the
//! writer itself: FastCDC as the spec defines it (with the tables read out
//! of the spec's Appendix A), the manifest-building pseudo-code of §9.4,
//! and the figures of a disk record (§10.1). If one of these fails, either
//! the spec or the writer changed; a reimplementation written from the
//! spec would then cut other chunks or build other manifests.

mod common;

use std::path::Path;

use common::{Xorshift, KIB, MIB};
use diskvault::format::manifest::{ChildRef, Extent, ManifestNode, NodeEntries};
use diskvault::format::ChunkId;
use diskvault::manifest::ManifestBuilder;
use diskvault::source::ImageSource;
use diskvault::{DiskRecord, Repository};

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

// ---- the figures of a disk record (§10.1) -------------------------------------

const CHUNK: u64 = 16 * KIB;

fn chunk_of(seed: u64) -> Vec<u8> {
    Xorshift::new(seed).bytes(CHUNK as usize)
}

/// Disk A, 256 KiB: a hole, four random chunks, two chunks of written
/// zeros, the two shared chunks S1 S2, a hole.
/// Disk B, 128 KiB: S1 S2, one unique chunk U, S1 again, a hole.
fn write_disks(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let a = dir.join("a.img");
    let b = dir.join("b.img");
    let mut pieces: Vec<(u64, Vec<u8>)> = (0..4)
        .map(|i| ((4 + i) * CHUNK, chunk_of(10 + i)))
        .collect();
    pieces.push((8 * CHUNK, vec![0; 2 * CHUNK as usize]));
    pieces.push((10 * CHUNK, chunk_of(1)));
    pieces.push((11 * CHUNK, chunk_of(2)));
    common::write_sparse_image(&a, 16 * CHUNK, &pieces);
    common::write_sparse_image(
        &b,
        8 * CHUNK,
        &[
            (0, chunk_of(1)),
            (CHUNK, chunk_of(2)),
            (2 * CHUNK, chunk_of(3)),
            (3 * CHUNK, chunk_of(1)),
        ],
    );
    (a, b)
}

fn region_bytes(path: &Path) -> u64 {
    let src = ImageSource::open(path).unwrap();
    src.data_regions().unwrap().iter().map(|(s, e)| e - s).sum()
}

/// Sealed length and plaintext length of each chunk, as the index has them.
fn added(repo: &Repository, ids: &[ChunkId]) -> (u64, u64, u64) {
    let index = repo.load_index().unwrap();
    let mut plain = 0;
    let mut sealed = 0;
    for id in ids {
        let loc = index.get(id).expect("an added chunk is indexed");
        plain += loc.raw_length as u64;
        sealed += loc.length as u64;
    }
    (ids.len() as u64, plain, sealed)
}

fn figures(d: &DiskRecord) -> (u64, u64, u64) {
    (d.stats.new_chunks, d.stats.new_bytes, d.stats.stored_bytes)
}

#[test]
fn a_disk_record_counts_what_the_spec_says_and_shared_chunks_go_to_the_first_disk() {
    let dir = common::scratch_dir();
    let (a, b) = write_disks(dir.path());
    let repo = common::init_repo(&dir.path().join("vault"));
    let report = common::backup_disks(&repo, &[("a", &a), ("b", &b)]);
    let (da, db) = (&report.body.disks[0], &report.body.disks[1]);
    let sealer = repo.sealer();
    let id = |seed| sealer.chunk_id(&chunk_of(seed));

    // Read: the data regions, written zeros included, holes not.
    assert_eq!(da.stats.bytes_read, region_bytes(&a));
    assert_eq!(db.stats.bytes_read, region_bytes(&b));
    // Zero runs: holes and all-zero chunks = size minus the data extents.
    assert_eq!(da.stats.zero_bytes, da.size - 6 * CHUNK);
    assert_eq!(db.stats.zero_bytes, db.size - 4 * CHUNK);
    // Chunks: data extents, a repeated chunk at each place.
    assert_eq!((da.stats.chunks, db.stats.chunks), (6, 4));

    // Added: a's four chunks, S1, S2 and its manifest leaf (its root); b's
    // U and its root only, although it holds S1 twice and S2 once.
    let a_added = [
        id(10),
        id(11),
        id(12),
        id(13),
        id(1),
        id(2),
        da.manifest_root,
    ];
    let b_added = [id(3), db.manifest_root];
    assert_eq!(figures(da), added(&repo, &a_added));
    assert_eq!(figures(db), added(&repo, &b_added));
    // Summed over the disks: everything the backup added, once.
    assert_eq!(
        repo.load_index().unwrap().len(),
        a_added.len() + b_added.len()
    );

    // In the other order, b comes first and gets the shared chunks.
    let repo = common::init_repo(&dir.path().join("vault2"));
    let report = common::backup_disks(&repo, &[("b", &b), ("a", &a)]);
    let (db, da) = (&report.body.disks[0], &report.body.disks[1]);
    let sealer = repo.sealer();
    let id = |seed| sealer.chunk_id(&chunk_of(seed));
    assert_eq!(
        figures(db),
        added(&repo, &[id(1), id(2), id(3), db.manifest_root])
    );
    assert_eq!(
        figures(da),
        added(&repo, &[id(10), id(11), id(12), id(13), da.manifest_root])
    );

    // A second backup of the same disks adds nothing.
    let again = common::backup_disks(&repo, &[("b", &b), ("a", &a)]);
    for d in &again.body.disks {
        assert_eq!(figures(d), (0, 0, 0), "disk {}", d.name);
        assert!(d.stats.chunks > 0);
    }
}

//! What spec/FORMAT.md says diskvault's writer does, checked against the
//! writer itself: FastCDC as the spec defines it (with the tables read out
//! of the spec's Appendix A), the manifest-building pseudo-code of §9.4,
//! and the figures of a disk record (§10.1). If one of these fails, either
//! the spec or the writer changed; a reimplementation written from the
//! spec would then cut other chunks or build other manifests.

mod common;

use std::path::Path;

use common::{Xorshift, KIB, MIB};
use diskvault::chunker::Chunker;
use diskvault::format::manifest::{ChildRef, Extent, ManifestNode, NodeEntries};
use diskvault::format::ChunkId;
use diskvault::manifest::ManifestBuilder;
use diskvault::source::FileSource;
use diskvault::{ChunkerParams, DiskRecord, Repository};

// ---- FastCDC (§3.2, Appendix A) -------------------------------------------

/// The masks and gear table as spec/FORMAT.md's Appendix A prints them.
struct SpecTables {
    masks: [u64; 26],
    gear: [u64; 256],
}

fn spec_tables() -> SpecTables {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/FORMAT.md"))
        .expect("read spec/FORMAT.md");
    let appendix = &spec[spec.find("## Appendix A").expect("Appendix A")..];
    let mut masks = [0u64; 26];
    let mut found = 0;
    for line in appendix.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() == 5 {
            if let (Ok(k), Some(hex)) = (
                cells[1].parse::<usize>(),
                cells[2]
                    .strip_prefix("`0x")
                    .and_then(|h| h.strip_suffix('`')),
            ) {
                masks[k] = u64::from_str_radix(hex, 16).expect("mask in hex");
                assert_eq!(
                    masks[k].count_ones().to_string(),
                    cells[3],
                    "set bits of MASKS[{k}]"
                );
                found += 1;
            }
        }
    }
    assert_eq!(found, 17, "masks 7 to 23");
    let gear_text = &appendix[appendix.find("### A.2").expect("A.2")..];
    let block = &gear_text[gear_text.find("```text").expect("gear block") + 7..];
    let block = &block[..block.find("```").expect("end of gear block")];
    let values: Vec<u64> = block
        .split_whitespace()
        .map(|h| u64::from_str_radix(h, 16).expect("gear value in hex"))
        .collect();
    assert_eq!(values.len(), 256);
    let mut gear = [0u64; 256];
    gear.copy_from_slice(&values);
    SpecTables { masks, gear }
}

/// Step 1: k is the integer nearest to log2(avg): 2^(2k-1) < avg² < 2^(2k+1).
fn spec_masks(t: &SpecTables, avg: u64) -> (u64, u64) {
    let square = (avg as u128) * (avg as u128);
    let k = (1..64).find(|&k| square < 1u128 << (2 * k + 1)).unwrap();
    (t.masks[k + 1], t.masks[k - 1])
}

/// Step 2, as written in the spec.
fn spec_cut(t: &SpecTables, w: &[u8], a: usize, b: usize, masks: (u64, u64)) -> usize {
    let n = w.len();
    if n <= a {
        return n;
    }
    let center = b.min(n);
    let end = n - n % 2;
    let mut h: u64 = 0;
    for (p, &byte) in w.iter().enumerate().take(end).skip(a) {
        h = (h << 1).wrapping_add(t.gear[byte as usize]);
        let mask = if p < center { masks.0 } else { masks.1 };
        if h & mask == 0 {
            return p;
        }
    }
    n
}

/// Step 3: the chunk lengths of one data region.
fn spec_region(t: &SpecTables, region: &[u8], a: usize, b: usize, c: usize) -> Vec<usize> {
    let masks = spec_masks(t, b as u64);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < region.len() {
        let n = c.min(region.len() - pos);
        let len = spec_cut(t, &region[pos..pos + n], a, b, masks);
        out.push(len);
        pos += len;
    }
    out
}

fn diskvault_region(params: ChunkerParams, region: &[u8], offset: u64) -> Vec<usize> {
    let mut out = Vec::new();
    let consumed = Chunker::new(params).cut(region, offset, true, &mut out);
    assert_eq!(consumed, region.len());
    out
}

/// Regions of several kinds: random, repetitive text, zeros, short, odd.
fn sample_regions() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = Xorshift::new(2020);
    let mut text = Vec::new();
    while text.len() < 700 * KIB as usize {
        let word = rng.below(5000);
        text.extend_from_slice(format!("block {word} of a disk image; ").as_bytes());
    }
    vec![
        ("random", rng.bytes(3 * MIB as usize + 7)),
        ("text", text),
        ("zeros", vec![0; 300 * KIB as usize]),
        ("short", rng.bytes(100)),
        ("one byte", vec![9]),
        ("odd length", rng.bytes(5 * KIB as usize + 1)),
    ]
}

#[test]
fn fastcdc_chunks_are_the_ones_the_spec_pseudo_code_cuts() {
    let tables = spec_tables();
    let params: [(u32, u32, u32); 7] = [
        (4 << 10, 16 << 10, 64 << 10),
        (64, 256, 1024),
        (8 << 10, 32 << 10, 128 << 10),
        // Averages that are not powers of two: k rounds to the nearest.
        (2048, 12288, 40000),
        (512, 1500, 8192),
        (1000, 1100, 4000),
        // Equal sizes: every chunk but a region's last is max_size long.
        (65536, 65536, 65536),
    ];
    let regions = sample_regions();
    for (a, b, c) in params {
        let chunker = ChunkerParams::FastCdc2020 {
            min_size: a,
            avg_size: b,
            max_size: c,
        };
        chunker.validate().expect("valid parameters");
        for (what, region) in &regions {
            let expected = spec_region(&tables, region, a as usize, b as usize, c as usize);
            assert_eq!(expected.iter().sum::<usize>(), region.len());
            // The image offset does not matter to FastCDC: regions restart.
            assert_eq!(
                diskvault_region(chunker, region, 12345),
                expected,
                "{what} region with fastcdc {a}/{b}/{c}"
            );
        }
    }
}

#[test]
fn the_spec_mask_rule_picks_the_crates_masks_for_every_allowed_average() {
    let tables = spec_tables();
    for avg in (256..=(4u64 << 20)).step_by(2) {
        let crate_masks =
            fastcdc::v2020::select_masks(avg as usize, fastcdc::v2020::Normalization::Level1);
        assert_eq!(spec_masks(&tables, avg), crate_masks, "avg_size {avg}");
    }
}

// ---- fixed chunks (§3.2) and CHUNKING.md ------------------------------------

#[test]
fn fixed_chunks_need_not_be_a_power_of_two() {
    let data = Xorshift::new(1).bytes(5000);
    let params = ChunkerParams::Fixed { size: 1000 };
    params.validate().expect("1000 is a valid fixed size");
    // Boundaries at absolute multiples of 1000: a region starting at 2500
    // first gives a 500-byte chunk.
    assert_eq!(
        diskvault_region(params, &data, 2500),
        vec![500, 1000, 1000, 1000, 1000, 500]
    );
}

/// CHUNKING.md: filling holes keeps fixed boundaries, not every chunk.
#[test]
fn filling_holes_keeps_fixed_boundaries_but_changes_the_chunks_at_region_edges() {
    let chunk = 16 * KIB as usize;
    let data = Xorshift::new(7).bytes(36 * KIB as usize);
    let params = ChunkerParams::DEFAULT;
    // Sparse: one data region [4 KiB, 40 KiB) between holes.
    let sparse = diskvault_region(params, &data, 4 * KIB);
    assert_eq!(sparse, vec![12 * KIB as usize, chunk, 8 * KIB as usize]);
    // The same image with its holes filled with zeros: one region [0, 48 KiB).
    let mut filled = vec![0u8; 48 * KIB as usize];
    filled[4 * KIB as usize..40 * KIB as usize].copy_from_slice(&data);
    assert_eq!(diskvault_region(params, &filled, 0), vec![chunk; 3]);
    // The boundary at 16 KiB and 32 KiB is in both; the chunk between them is
    // the same bytes, the two edge chunks are not.
    let sparse_middle = &data[12 * KIB as usize..28 * KIB as usize];
    assert_eq!(&filled[chunk..2 * chunk], sparse_middle);
    assert_ne!(&filled[..chunk], &data[..12 * KIB as usize]);
    assert_ne!(&filled[2 * chunk..], &data[28 * KIB as usize..]);
}

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
        let bytes = node.encode(1);
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
            chaining_value: None,
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
            chaining_value: None,
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
                chaining_value: None,
            }
            .encode(1)
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
    let src = FileSource::open(path).unwrap();
    src.regions().unwrap().iter().map(|(s, e)| e - s).sum()
}

/// Chunks, plaintext length and sealed length of the chunks `ids`, as the
/// index has them: each sealed blob counted once (the chunks of a group
/// share one, §10.1).
fn added(repo: &Repository, ids: &[ChunkId]) -> (u64, u64, u64) {
    let index = repo.load_index().unwrap();
    let mut plain = 0;
    let mut blobs = std::collections::BTreeMap::new();
    for id in ids {
        let loc = index.get(id).expect("an added chunk is indexed");
        plain += loc.raw_length as u64;
        blobs.insert((loc.pack, loc.offset), loc.length as u64);
    }
    (ids.len() as u64, plain, blobs.values().sum())
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

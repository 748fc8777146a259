//! Rot in every kind of object: bit flips, truncation and deletion of data
//! chunks inside packs, pack headers, tables and footers, manifest nodes,
//! index files, recovery points, key files and the config. For each,
//! `check` must pinpoint the damage (a problem whose object names it, and
//! exactly the recovery points it affects), a restore of an affected point
//! must fail naming the object, a restore of any other point must succeed,
//! and no restore that succeeds may produce bytes that differ from the
//! original.
//!
//! `tests/damage.rs` covers single cases through the command line; this
//! file sweeps positions through the library.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use diskvault::format::manifest::Extent;
use diskvault::index::ChunkIndex;
use diskvault::manifest::{walk, ManifestEvent};
use diskvault::{
    check, restore, CheckOptions, CheckReport, ChunkId, Error, ErrorCategory, KdfCost, PackId,
    PointId, Repository,
};

const SECOND_PASSPHRASE: &str = "the other passphrase of this vault";

fn flip(path: &Path, offset: u64, mask: u8) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, offset).unwrap();
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn len_of(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// What a chunk is to the vault: where it is and who uses it.
#[derive(Clone)]
struct ChunkFacts {
    pack: PackId,
    offset: u64,
    length: u64,
    users: BTreeSet<PointId>,
}

/// A pristine vault of three points, and everything needed to predict what
/// a given damage affects:
/// - P1: disk `vda`, 5 MiB (two manifest leaves under a root);
/// - P2: `vda` again with its last MiB changed (it shares P1's first leaf
///   and most data chunks);
/// - P3: disk `vdb`, 256 KiB of its own.
struct Vault {
    dir: tempfile::TempDir,
    pristine: PathBuf,
    points: Vec<(PointId, PathBuf)>,
    chunks: BTreeMap<ChunkId, ChunkFacts>,
    /// Manifest nodes of each point, root first.
    nodes: BTreeMap<PointId, Vec<ChunkId>>,
    /// Pack and index file written by each backup.
    pack_of: BTreeMap<PointId, PackId>,
    index_of: BTreeMap<PointId, PathBuf>,
}

impl Vault {
    fn new() -> Vault {
        let dir = scratch_dir();
        let pristine = dir.path().join("pristine");
        let v1 = dir.path().join("v1.img");
        let v2 = dir.path().join("v2.img");
        let w = dir.path().join("w.img");
        let mut data = write_random_image(&v1, 5 * MIB, 701);
        data[4 * MIB as usize..].copy_from_slice(&Xorshift::new(702).bytes(MIB as usize));
        std::fs::write(&v2, &data).unwrap();
        write_random_image(&w, 256 * KIB, 703);

        let repo = init_repo(&pristine);
        let mut points = Vec::new();
        let mut pack_of = BTreeMap::new();
        let mut index_of = BTreeMap::new();
        for (disk, image) in [("vda", &v1), ("vda", &v2), ("vdb", &w)] {
            let packs_before = objects(&pristine, "packs/");
            let index_before = objects(&pristine, "index/");
            let id = backup_one(&repo, disk, image).point;
            let new_pack = objects(&pristine, "packs/")
                .into_iter()
                .find(|p| !packs_before.contains(p))
                .unwrap();
            let new_index = objects(&pristine, "index/")
                .into_iter()
                .find(|p| !index_before.contains(p))
                .unwrap();
            pack_of.insert(id, file_id(&new_pack).parse().unwrap());
            index_of.insert(id, new_index);
            points.push((id, image.clone()));
        }

        let index = repo.load_index().unwrap();
        let mut chunks = BTreeMap::new();
        for (id, loc) in index.iter() {
            chunks.insert(
                id,
                ChunkFacts {
                    pack: index.pack_id(loc.pack),
                    offset: loc.offset as u64,
                    length: loc.length as u64,
                    users: BTreeSet::new(),
                },
            );
        }
        let mut nodes = BTreeMap::new();
        for (pid, _) in &points {
            let body = repo.read_point(pid).unwrap();
            let mut seen = Vec::new();
            for disk in &body.disks {
                walk_manifest(
                    &repo,
                    &index,
                    &disk.manifest_root,
                    disk.size,
                    |id, is_node| {
                        chunks.get_mut(id).unwrap().users.insert(*pid);
                        if is_node {
                            seen.push(*id);
                        }
                    },
                );
            }
            nodes.insert(*pid, seen);
        }
        Vault {
            dir,
            pristine,
            points,
            chunks,
            nodes,
            pack_of,
            index_of,
        }
    }

    fn point(&self, n: usize) -> PointId {
        self.points[n].0
    }

    /// A fresh copy of the pristine vault.
    fn copy(&self) -> PathBuf {
        let work = self.dir.path().join("work");
        copy_dir(&self.pristine, &work);
        work
    }

    /// The file of an object in the working copy, from its pristine path.
    fn in_copy(&self, work: &Path, pristine_file: &Path) -> PathBuf {
        work.join(pristine_file.strip_prefix(&self.pristine).unwrap())
    }

    fn pack_file(&self, work: &Path, pack: &PackId) -> PathBuf {
        let hex = pack.to_hex();
        work.join("packs").join(&hex[..2]).join(hex)
    }

    fn point_file(&self, work: &Path, point: &PointId) -> PathBuf {
        work.join("points").join(point.to_hex())
    }

    /// Chunks used by exactly the points `users`, excluding manifest
    /// nodes.
    fn data_chunk_used_by(&self, users: &[PointId]) -> ChunkId {
        let users: BTreeSet<PointId> = users.iter().copied().collect();
        let all_nodes: BTreeSet<ChunkId> = self.nodes.values().flatten().copied().collect();
        *self
            .chunks
            .iter()
            .find(|(id, f)| f.users == users && !all_nodes.contains(id))
            .unwrap_or_else(|| panic!("no data chunk used by exactly {users:?}"))
            .0
    }

    /// Points that use any chunk stored in `pack` between `from` and `to`.
    fn users_of_range(&self, pack: &PackId, from: u64, to: u64) -> BTreeSet<PointId> {
        self.chunks
            .values()
            .filter(|f| f.pack == *pack && f.offset < to && f.offset + f.length > from)
            .flat_map(|f| f.users.iter().copied())
            .collect()
    }

    fn chunks_in_range(&self, pack: &PackId, from: u64, to: u64) -> Vec<ChunkId> {
        self.chunks
            .iter()
            .filter(|(_, f)| f.pack == *pack && f.offset < to && f.offset + f.length > from)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Where the chunk area of a pack ends (its sealed table starts).
    fn table_start(&self, pack: &PackId) -> u64 {
        self.chunks
            .values()
            .filter(|f| f.pack == *pack)
            .map(|f| f.offset + f.length)
            .max()
            .unwrap()
    }

    /// Asserts everything this file promises about one damaged copy.
    fn assert_pinpointed(&self, work: &Path, damage: &Damage) {
        let case = &damage.what;
        let repo = Repository::open(work, Some(PASSPHRASE.as_bytes()))
            .unwrap_or_else(|e| panic!("{case}: the vault no longer opens: {e}"));
        let full = check(
            &repo,
            &CheckOptions {
                read_data: true,
                threads: None,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{case}: check --read-data failed instead of reporting: {e}"));
        assert_reports(case, "check --read-data", &full, damage);
        let structure = check(&repo, &CheckOptions::default())
            .unwrap_or_else(|e| panic!("{case}: check failed instead of reporting: {e}"));
        if damage.structural {
            assert_reports(case, "check", &structure, damage);
        }

        for (point, image) in &self.points {
            let out = self.dir.path().join("restored.img");
            let result = restore(&repo, &restore_opts(&point.to_hex(), &out));
            let must_fail = damage.affected.contains(point) || damage.blocks_restores;
            match result {
                Ok(_) => {
                    assert_same_bytes(&out, image);
                    std::fs::remove_file(&out).unwrap();
                    assert!(
                        !must_fail,
                        "{case}: point {point} restored although the damage affects it"
                    );
                }
                Err(e) => {
                    assert!(
                        must_fail,
                        "{case}: point {point} does not depend on the damage, yet: {e}"
                    );
                    assert_names(case, &e, &damage.names);
                    assert!(!out.exists(), "{case}: a failed restore left its output");
                }
            }
        }
    }
}

fn file_id(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Calls `f(id, is_node)` for every manifest node and data chunk of a disk.
fn walk_manifest(
    repo: &Repository,
    index: &ChunkIndex,
    root: &ChunkId,
    size: u64,
    mut f: impl FnMut(&ChunkId, bool),
) {
    let mut load = |id: &ChunkId| {
        let loc = index.get(id).unwrap();
        repo.read_chunk(id, &loc, &index.pack_id(loc.pack))
    };
    walk(root, size, repo.format_major(), &mut load, &mut |ev| {
        match ev {
            ManifestEvent::Node(id) => f(id, true),
            ManifestEvent::Extent {
                extent: Extent::Data { id, .. },
                ..
            } => f(id, false),
            ManifestEvent::Extent { .. } => {}
        }
        Ok(())
    })
    .unwrap();
}

/// One damage and what it must lead to.
struct Damage {
    what: String,
    /// Any of these in a problem's object, or in an error, names the damage.
    names: Vec<String>,
    /// The points that can no longer be restored.
    affected: BTreeSet<PointId>,
    /// Found without reading the data.
    structural: bool,
    /// Every restore fails (the damage is in something every restore reads).
    blocks_restores: bool,
}

fn assert_reports(case: &str, how: &str, report: &CheckReport, damage: &Damage) {
    assert!(!report.is_ok(), "{case}: {how} found nothing");
    assert!(
        report
            .problems
            .iter()
            .any(|p| damage.names.iter().any(|n| p.object.contains(n))),
        "{case}: no problem found by {how} names {} as its object: {:#?}",
        shown(&damage.names),
        report.problems
    );
    let affected: BTreeSet<PointId> = report
        .problems
        .iter()
        .flat_map(|p| p.affected_points.iter().copied())
        .collect();
    assert_eq!(
        affected, damage.affected,
        "{case}: {how} lists the wrong affected points: {:#?}",
        report.problems
    );
}

/// Names for a message: a long list of chunk ids is summarised.
fn shown<S: AsRef<str>>(names: &[S]) -> String {
    match names {
        [one] => format!("{:?}", one.as_ref()),
        [first, ..] => format!("any of {} names such as {:?}", names.len(), first.as_ref()),
        [] => "nothing".into(),
    }
}

fn assert_names<S: AsRef<str>>(case: &str, e: &Error, names: &[S]) {
    let text = e.to_string();
    assert!(
        names.iter().any(|n| text.contains(n.as_ref())),
        "{case}: the error does not name {}: {text}",
        shown(names)
    );
    assert!(
        matches!(
            e.category(),
            ErrorCategory::Damaged | ErrorCategory::NotFound
        ),
        "{case}: {:?} is not how damage is reported: {text}",
        e.category()
    );
}

/// Bit flips at the significant bytes of data chunks: the blob header
/// (compression flag, plaintext length, nonce), the middle of the
/// ciphertext and the last byte of the tag — in a chunk of one point, in
/// one shared by two, and in one of the third point. In format 2 a data
/// chunk is sealed in a group with its neighbours, so a flip damages every
/// chunk of the group: any of them may be named, and the affected points
/// are those that use any of them.
#[test]
fn flipped_bits_in_data_chunks() {
    let v = Vault::new();
    let (p1, p2, p3) = (v.point(0), v.point(1), v.point(2));
    for users in [vec![p1], vec![p1, p2], vec![p2], vec![p3]] {
        let chunk = v.data_chunk_used_by(&users);
        let facts = v.chunks[&chunk].clone();
        for at in [0, 4, 8, facts.length / 2, facts.length - 1] {
            let work = v.copy();
            let pack = v.pack_file(&work, &facts.pack);
            flip(&pack, facts.offset + at, 0x01);
            let end = facts.offset + facts.length;
            let sealed_with: Vec<String> = v
                .chunks_in_range(&facts.pack, facts.offset, end)
                .iter()
                .map(|c| c.short())
                .collect();
            assert!(sealed_with.contains(&chunk.short()));
            v.assert_pinpointed(
                &work,
                &Damage {
                    what: format!("bit flip at byte {at} of chunk {chunk} (used by {users:?})"),
                    names: sealed_with,
                    affected: v.users_of_range(&facts.pack, facts.offset, end),
                    structural: false,
                    blocks_restores: false,
                },
            );
        }
    }
}

/// Bit flips in manifest nodes: each point's root, and a leaf that two
/// points share. `check` finds them without reading the data.
#[test]
fn flipped_bits_in_manifest_nodes() {
    let v = Vault::new();
    let (p1, p2, p3) = (v.point(0), v.point(1), v.point(2));
    let shared_leaf = *v.nodes[&p1]
        .iter()
        .find(|n| v.nodes[&p2].contains(n))
        .expect("P1 and P2 share a manifest leaf");
    let mut targets = vec![
        ("root of P1", v.nodes[&p1][0]),
        ("root of P2", v.nodes[&p2][0]),
        ("root of P3 (its only node)", v.nodes[&p3][0]),
        ("leaf shared by P1 and P2", shared_leaf),
    ];
    targets.push(("leaf of P1 only", *v.nodes[&p1].last().unwrap()));
    for (what, node) in targets {
        let facts = v.chunks[&node].clone();
        for at in [0, facts.length / 2, facts.length - 1] {
            let work = v.copy();
            flip(&v.pack_file(&work, &facts.pack), facts.offset + at, 0x01);
            v.assert_pinpointed(
                &work,
                &Damage {
                    what: format!("bit flip at byte {at} of manifest node {node} ({what})"),
                    names: vec![node.short()],
                    affected: facts.users.clone(),
                    structural: true,
                    blocks_restores: false,
                },
            );
        }
    }
}

/// Bit flips in a pack's header, table and footer: no chunk is harmed, so
/// every point still restores; `check --read-data` names the pack.
#[test]
fn flipped_bits_in_pack_headers_tables_and_footers() {
    let v = Vault::new();
    let pack = v.pack_of[&v.point(0)];
    let len = len_of(&v.pack_file(&v.pristine, &pack));
    let table = v.table_start(&pack);
    let positions = [
        ("header magic", 0),
        ("header kind", 4),
        ("header version", 5),
        ("table blob header", table),
        ("table middle", (table + len - 8) / 2),
        ("table tag", len - 9),
        ("footer table length", len - 8),
        ("footer table length, high byte", len - 5),
        ("footer magic", len - 4),
        ("footer magic, last byte", len - 1),
    ];
    for (what, at) in positions {
        let work = v.copy();
        flip(&v.pack_file(&work, &pack), at, 0x01);
        v.assert_pinpointed(
            &work,
            &Damage {
                what: format!("bit flip in the {what} of pack {pack} (byte {at})"),
                names: vec![pack.to_hex()],
                affected: BTreeSet::new(),
                structural: false,
                blocks_restores: false,
            },
        );
    }
}

/// A strided sweep over every part of the smallest pack: whatever byte
/// flips, a restore either fails naming a chunk or its pack, or gives the
/// original bytes.
#[test]
fn no_flipped_bit_in_a_pack_gives_wrong_bytes() {
    let v = Vault::new();
    let (p3, image) = v.points[2].clone();
    let pack = v.pack_of[&p3];
    let work = v.copy();
    let file = v.pack_file(&work, &pack);
    let repo = open_repo(&work);
    let out = v.dir.path().join("swept.img");
    let mut failures = 0;
    let mut at = 0;
    while at < len_of(&file) {
        flip(&file, at, 0x10);
        let mut names = vec![pack.to_hex()];
        names.extend(
            v.chunks_in_range(&pack, at, at + 1)
                .iter()
                .map(|c| c.short()),
        );
        match restore(&repo, &restore_opts(&p3.to_hex(), &out)) {
            Ok(_) => {
                assert_same_bytes(&out, &image);
                std::fs::remove_file(&out).unwrap();
            }
            Err(e) => {
                assert_names(&format!("flip at byte {at} of {pack}"), &e, &names);
                failures += 1;
            }
        }
        flip(&file, at, 0x10);
        at += 1021;
    }
    assert!(failures > 100, "only {failures} flips were noticed");
}

/// Truncated packs: cut in the footer, at the table, in the middle of the
/// chunks, after the header, and to nothing.
#[test]
fn truncated_packs() {
    let v = Vault::new();
    let pack = v.pack_of[&v.point(0)];
    let len = len_of(&v.pack_file(&v.pristine, &pack));
    let table = v.table_start(&pack);
    for (what, to) in [
        ("one byte short", len - 1),
        ("cut at the table", table),
        ("cut in half", len / 2),
        ("only its header left", 8),
        ("empty", 0),
    ] {
        let work = v.copy();
        truncate(&v.pack_file(&work, &pack), to);
        let affected = v.users_of_range(&pack, to, u64::MAX);
        v.assert_pinpointed(
            &work,
            &Damage {
                what: format!("pack {pack} truncated to {to} bytes ({what})"),
                names: vec![pack.to_hex()],
                structural: !affected.is_empty(),
                affected,
                blocks_restores: false,
            },
        );
    }
}

/// Deleted packs: the points using any chunk in them are named.
#[test]
fn deleted_packs() {
    let v = Vault::new();
    for n in 0..3 {
        let pack = v.pack_of[&v.point(n)];
        let work = v.copy();
        std::fs::remove_file(v.pack_file(&work, &pack)).unwrap();
        v.assert_pinpointed(
            &work,
            &Damage {
                what: format!("pack {pack} of point {} deleted", n + 1),
                names: vec![pack.to_hex()],
                affected: v.users_of_range(&pack, 0, u64::MAX),
                structural: true,
                blocks_restores: false,
            },
        );
    }
}

/// A damaged index file: `check` names it and the points whose chunks only
/// it listed. One bad index file hides only its own chunks: the restores
/// of those points fail naming the file, the others succeed.
#[test]
fn damaged_index_files() {
    let v = Vault::new();
    let p1 = v.point(0);
    let pack = v.pack_of[&p1];
    let pristine_index = &v.index_of[&p1];
    let len = len_of(pristine_index);
    for (what, damage) in [
        ("a flipped bit in its header", (Some(5), None)),
        ("a flipped bit in its body", (Some(len / 2), None)),
        ("a flipped bit in its tag", (Some(len - 1), None)),
        ("truncated by half", (None, Some(len / 2))),
    ] {
        let work = v.copy();
        let file = v.in_copy(&work, pristine_index);
        match damage {
            (Some(at), _) => flip(&file, at, 0x01),
            (_, Some(to)) => truncate(&file, to),
            _ => unreachable!(),
        }
        v.assert_pinpointed(
            &work,
            &Damage {
                what: format!("index file of P1 with {what}"),
                names: vec![file_id(&file)],
                affected: v.users_of_range(&pack, 0, u64::MAX),
                structural: true,
                blocks_restores: false,
            },
        );
    }
}

/// A deleted index file leaves its pack unindexed: `check` names the
/// chunks no index lists and their points, the restores of those points
/// fail naming a missing chunk, the others succeed; and the next backup
/// indexes the pack again, which repairs the vault.
#[test]
fn deleted_index_file_is_repaired_by_the_next_backup() {
    let v = Vault::new();
    let p1 = v.point(0);
    let pack = v.pack_of[&p1];
    let work = v.copy();
    std::fs::remove_file(v.in_copy(&work, &v.index_of[&p1])).unwrap();
    v.assert_pinpointed(
        &work,
        &Damage {
            what: "index file of P1 deleted".into(),
            names: v
                .chunks_in_range(&pack, 0, u64::MAX)
                .iter()
                .map(|c| c.to_hex())
                .collect(),
            affected: v.users_of_range(&pack, 0, u64::MAX),
            structural: true,
            blocks_restores: false,
        },
    );

    let repo = open_repo(&work);
    let report = backup_one(&repo, "vdb", &v.points[2].1);
    assert_eq!(report.recovered_packs, 1);
    let after = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: None,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(after.is_ok(), "{:?}", after.problems);
    for (point, image) in &v.points {
        let out = v.dir.path().join("repaired.img");
        restore_to(&repo, &point.to_hex(), &out);
        assert_same_bytes(&out, image);
        std::fs::remove_file(&out).unwrap();
    }
}

/// Every byte of a recovery point flipped in turn, the point truncated, and
/// deleted. The point is named with itself as the one affected; the others
/// restore.
#[test]
fn damaged_points() {
    let v = Vault::new();
    let p2 = v.point(1);
    let work = v.copy();
    let file = v.point_file(&work, &p2);
    let repo = open_repo(&work);
    let out = v.dir.path().join("restored.img");
    for at in 0..len_of(&file) {
        let case = format!("bit flip at byte {at} of point {p2}");
        flip(&file, at, 0x01);
        let report = check(&repo, &CheckOptions::default()).unwrap();
        let problem = report
            .problems
            .iter()
            .find(|p| p.object == format!("points/{}", p2.to_hex()))
            .unwrap_or_else(|| panic!("{case}: not reported: {:?}", report.problems));
        assert_eq!(problem.affected_points, vec![p2], "{case}");
        assert_eq!(report.problems.len(), 1, "{case}: {:?}", report.problems);
        let e = restore(&repo, &restore_opts(&p2.to_hex(), &out)).unwrap_err();
        assert_names(&case, &e, &[format!("points/{}", p2.to_hex())]);
        flip(&file, at, 0x01);
    }

    let len = len_of(&file);
    truncate(&file, len / 2);
    v.assert_pinpointed(
        &work,
        &Damage {
            what: format!("point {p2} truncated"),
            names: vec![format!("points/{}", p2.to_hex())],
            affected: [p2].into(),
            structural: true,
            blocks_restores: false,
        },
    );

    // A deleted point is simply gone: nothing else refers to it.
    std::fs::remove_file(&file).unwrap();
    let repo = open_repo(&work);
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: None,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let e = restore(&repo, &restore_opts(&p2.to_hex(), &out)).unwrap_err();
    assert_eq!(e.category(), ErrorCategory::NotFound, "{e}");
    for (point, image) in [&v.points[0], &v.points[2]] {
        restore_to(&repo, &point.to_hex(), &out);
        assert_same_bytes(&out, image);
        std::fs::remove_file(&out).unwrap();
    }
}

/// Every byte of the key file flipped in turn, the key file truncated and
/// deleted: opening fails naming the key file, never claiming the
/// passphrase is wrong. With a second key file intact, the vault still
/// opens with that key's passphrase, and `check` names the damaged one.
#[test]
fn damaged_key_files() {
    let v = Vault::new();
    let work = v.copy();
    let key = only_object(&work, "keys/");
    let key_name = format!("keys/{}", file_id(&key));
    let open = |pass: &str| Repository::open(&work, Some(pass.as_bytes()));
    for at in 0..len_of(&key) {
        flip(&key, at, 0x01);
        let e = open(PASSPHRASE).err().expect("a damaged key file opens");
        assert_names(
            &format!("bit flip at byte {at} of the key file"),
            &e,
            &[key_name.as_str()],
        );
        flip(&key, at, 0x01);
    }
    let original = std::fs::read(&key).unwrap();
    truncate(&key, original.len() as u64 / 2);
    let e = open(PASSPHRASE).err().expect("a truncated key file opens");
    assert_names("truncated key file", &e, &[key_name.as_str()]);
    std::fs::remove_file(&key).unwrap();
    let e = open(PASSPHRASE).err().expect("a vault without keys opens");
    assert_names("deleted key file", &e, &["keys/"]);
    std::fs::write(&key, &original).unwrap();

    // Two keys; the one of the other passphrase rots.
    let second = open(PASSPHRASE)
        .unwrap()
        .add_key(SECOND_PASSPHRASE.as_bytes(), KdfCost::insecure_fast())
        .unwrap();
    let second_file = work.join("keys").join(second.to_hex());
    let second_name = format!("keys/{}", second.to_hex());
    for damage in ["flip", "truncate"] {
        let pristine = std::fs::read(&second_file).unwrap();
        if damage == "flip" {
            flip(&second_file, pristine.len() as u64 / 3, 0x01);
        } else {
            truncate(&second_file, 10);
        }
        let case = format!("{damage} of the second key file");
        let repo = open(PASSPHRASE)
            .unwrap_or_else(|e| panic!("{case}: the intact key no longer opens the vault: {e}"));
        let report = check(&repo, &CheckOptions::default()).unwrap();
        assert!(
            report.problems.iter().any(|p| p.object == second_name),
            "{case}: check does not name {second_name}: {:?}",
            report.problems
        );
        let e = open(SECOND_PASSPHRASE).err().expect("a damaged key opens");
        assert_names(&case, &e, &[second_name.as_str()]);
        std::fs::write(&second_file, &pristine).unwrap();
    }
}

/// Every byte of the config flipped in turn (to a neighbouring character,
/// so many flips still parse), the config truncated and deleted: opening
/// fails naming the config, never as a wrong passphrase (and were one to
/// open, no restore may give wrong bytes).
#[test]
fn damaged_config() {
    let v = Vault::new();
    let work = v.copy();
    let config = work.join("config");
    let out = v.dir.path().join("restored.img");
    let mut opened = 0;
    for at in 0..len_of(&config) {
        let case = format!("bit flip at byte {at} of the config");
        flip(&config, at, 0x01);
        match Repository::open(&work, Some(PASSPHRASE.as_bytes())) {
            Err(e) => {
                assert!(
                    e.category() != ErrorCategory::Passphrase,
                    "{case}: a damaged config is reported as a passphrase problem: {e}"
                );
                assert!(
                    e.to_string().contains("config") || e.to_string().contains("newer"),
                    "{case}: the error does not name the config: {e}"
                );
            }
            Ok(repo) => {
                opened += 1;
                for (point, image) in &v.points {
                    if restore(&repo, &restore_opts(&point.to_hex(), &out)).is_ok() {
                        assert_same_bytes(&out, image);
                        std::fs::remove_file(&out).unwrap();
                    }
                }
            }
        }
        flip(&config, at, 0x01);
    }
    // Format 2 binds every key file to the config's bytes: no change to
    // the config opens, and none is mistaken for a wrong passphrase.
    assert_eq!(opened, 0, "a changed config opened the vault");

    let original = std::fs::read(&config).unwrap();
    truncate(&config, original.len() as u64 / 2);
    let e = Repository::open(&work, Some(PASSPHRASE.as_bytes()))
        .err()
        .unwrap();
    assert_names("truncated config", &e, &["config"]);
    std::fs::remove_file(&config).unwrap();
    let e = Repository::open(&work, Some(PASSPHRASE.as_bytes()))
        .err()
        .unwrap();
    assert!(e.to_string().contains("config"), "deleted config: {e}");
}

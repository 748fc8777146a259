//! Format 2 as a user meets it: neighbouring chunks compressed together
//! (smaller first backups), unchanged 4 MiB spans whose hash is not
//! computed again, the config bound to the key files, and format-1 vaults
//! that keep being written in format 1.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use diskvault::format::group::SOLE;
use diskvault::format::manifest::{ManifestNode, NodeEntries};
use diskvault::format::{ObjectHeader, ObjectKind};
use diskvault::ops::backup::GROUP_BYTES;
use diskvault::packer::read_pack_table;
use diskvault::{check, CheckOptions, Error, ErrorCategory, InitOptions, Repository};

/// Near-copies: every 16 KiB chunk is the same random block with its own
/// first 64 bytes and a few bytes changed (as versions of one file, or
/// records of one table, lie side by side on a disk). No two chunks are
/// the same, so dedup finds nothing; alone each chunk is incompressible;
/// compressed beside its neighbours it costs little more than what
/// differs.
fn write_near_copies(path: &Path, len: u64) {
    let mut rng = Xorshift::new(11);
    let base = rng.bytes(DEFAULT_CHUNK as usize);
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let mut chunk = base.clone();
        chunk[..64].copy_from_slice(&rng.bytes(64));
        for _ in 0..8 {
            let at = rng.below(DEFAULT_CHUNK) as usize;
            chunk[at] ^= 0x5a;
        }
        out.extend_from_slice(&chunk);
    }
    std::fs::write(path, &out).unwrap();
}

/// 16 KiB chunks in a group of [`GROUP_BYTES`].
const PER_GROUP: usize = GROUP_BYTES / DEFAULT_CHUNK as usize;

fn init_format(path: &Path, major: u32) -> Repository {
    init_repo_with(
        path,
        &InitOptions {
            format_major: major,
            ..fast_init()
        },
    )
}

/// How many chunks each sealed blob of the vault's packs holds.
fn chunks_per_blob(repo: &Repository) -> Vec<usize> {
    let mut per_blob: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for pack in repo.list_packs().unwrap() {
        for e in read_pack_table(repo, &pack).unwrap() {
            *per_blob.entry((pack.to_hex(), e.offset)).or_default() += 1;
        }
    }
    per_blob.into_values().collect()
}

#[test]
fn neighbouring_chunks_are_sealed_together_and_store_less_than_format_1() {
    let dir = scratch_dir();
    let image = dir.path().join("copies.img");
    write_near_copies(&image, 8 * MIB);
    let mut stored = BTreeMap::new();
    for major in [1, 2] {
        let path = dir.path().join(format!("v{major}"));
        let repo = init_format(&path, major);
        let report = backup_one(&repo, "copies", &image);
        stored.insert(major, report.totals().stored_bytes);
        let blobs = chunks_per_blob(&repo);
        let largest = *blobs.iter().max().unwrap();
        if major == 1 {
            assert_eq!(largest, 1, "format 1 seals every chunk alone");
        } else {
            // 8 MiB of 16 KiB chunks in groups of 2 MiB: 128 chunks each.
            assert_eq!(largest, PER_GROUP, "groups of 2 MiB of 16 KiB chunks");
            assert_eq!(blobs.iter().filter(|&&n| n == PER_GROUP).count(), 4);
        }
        assert_reads_clean(&repo, &format!("format {major}"));
        let out = dir.path().join(format!("restored-{major}.img"));
        restore_to(&repo, "latest", &out);
        assert_same_bytes(&out, &image);
    }
    assert!(
        stored[&2] * 4 < stored[&1],
        "near-copies compressed together should store a quarter or less: format 1 {} bytes, format 2 {}",
        stored[&1],
        stored[&2]
    );
}

#[test]
fn an_unchanged_span_is_not_hashed_again() {
    let dir = scratch_dir();
    let image = dir.path().join("disk.img");
    // 16 whole 4 MiB spans with a hole in the middle, then a 100 KiB tail
    // that no leaf covers whole.
    let size = 64 * MIB + 100 * KIB;
    write_sparse_image(
        &image,
        size,
        &[
            (0, Xorshift::new(1).bytes(20 * MIB as usize)),
            (
                36 * MIB,
                Xorshift::new(2).bytes((28 * MIB + 100 * KIB) as usize),
            ),
        ],
    );
    let repo = init_repo(&dir.path().join("vault"));
    let first = backup_one(&repo, "vda", &image);
    assert_eq!(
        first.image_bytes_hashed, size,
        "the first backup hashes it all"
    );
    assert_eq!(first.body.disks[0].image_hash, b3(&image));

    let again = backup_one(&repo, "vda", &image);
    assert_eq!(
        again.image_bytes_hashed,
        100 * KIB,
        "only the tail is hashed again"
    );
    assert_eq!(again.body.disks[0].image_hash, b3(&image));

    // One 4 KiB block changes in the fourth span, and one in the hole.
    write_at(&image, 13 * MIB + 4096, &[7u8; 4096]);
    write_at(&image, 30 * MIB, &[9u8; 4096]);
    let changed = backup_one(&repo, "vda", &image);
    assert_eq!(changed.image_bytes_hashed, 2 * 4 * MIB + 100 * KIB);
    assert_eq!(changed.body.disks[0].image_hash, b3(&image));

    // Another disk name has no previous point to take values from.
    let other = backup_one(&repo, "vdb", &image);
    assert_eq!(other.image_bytes_hashed, size);

    // Every leaf that covers a whole span records its chaining value.
    let index = repo.load_index().unwrap();
    let root = changed.body.disks[0].manifest_root;
    let loc = index.get(&root).unwrap();
    let bytes = repo
        .read_chunk(&root, &loc, &index.pack_id(loc.pack))
        .unwrap();
    let NodeEntries::Interior(children) = ManifestNode::decode(&bytes, 2).unwrap().entries else {
        panic!("a 64 MiB disk has more than one leaf")
    };
    let with_value = children
        .iter()
        .filter(|c| {
            let loc = index.get(&c.id).unwrap();
            let leaf = repo
                .read_chunk(&c.id, &loc, &index.pack_id(loc.pack))
                .unwrap();
            ManifestNode::decode(&leaf, 2)
                .unwrap()
                .chaining_value
                .is_some()
        })
        .count();
    assert_eq!((children.len(), with_value), (17, 16));

    let out = dir.path().join("restored.img");
    restore_to(&repo, &changed.point.to_hex(), &out);
    assert_same_bytes(&out, &image);
    assert_reads_clean(&repo, "after four backups");
}

fn b3(path: &Path) -> [u8; 32] {
    *blake3::hash(&std::fs::read(path).unwrap()).as_bytes()
}

#[test]
fn a_changed_config_is_named_not_taken_for_a_wrong_passphrase() {
    let dir = scratch_dir();
    let path = dir.path().join("vault");
    init_repo(&path);
    let config = path.join("config");
    let original = std::fs::read_to_string(&config).unwrap();
    for (what, changed) in [
        ("compression", original.replace("zstd:3", "zstd:9")),
        ("encryption off", original.replace("aes-256-gcm", "none")),
        ("a space", original.replacen(' ', "  ", 1)),
    ] {
        assert_ne!(changed, original, "{what}");
        std::fs::write(&config, &changed).unwrap();
        let e = Repository::open(&path, Some(PASSPHRASE.as_bytes()))
            .err()
            .unwrap_or_else(|| panic!("{what}: a changed config opened"));
        assert_ne!(e.category(), ErrorCategory::Passphrase, "{what}: {e}");
        assert!(e.to_string().contains("config"), "{what}: {e}");
    }
    std::fs::write(&config, &original).unwrap();
    assert!(matches!(
        Repository::open(&path, Some(b"not the passphrase")).err(),
        Some(Error::WrongPassphrase)
    ));
    Repository::open(&path, Some(PASSPHRASE.as_bytes())).expect("the original config opens");
}

#[test]
fn a_format_1_vault_keeps_format_1_writes() {
    let dir = scratch_dir();
    let path = dir.path().join("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden-v1.1/repo"),
        &path,
    );
    let config_before = std::fs::read(path.join("config")).unwrap();
    let objects_before = files_under(&path);
    let repo = Repository::open(&path, Some(b"diskvault-golden")).unwrap();
    assert_eq!(repo.format_major(), 1);

    let image = dir.path().join("day4.img");
    let mut bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sample.img")).unwrap();
    bytes[..8 * KIB as usize].copy_from_slice(&Xorshift::new(4).bytes(8 * KIB as usize));
    std::fs::write(&image, &bytes).unwrap();
    let report = backup_one(&repo, "root", &image);
    assert_eq!(
        std::fs::read(path.join("config")).unwrap(),
        config_before,
        "the config is never rewritten"
    );
    // Every object the backup wrote is a format-1 object.
    let new: Vec<_> = files_under(&path)
        .into_iter()
        .filter(|p| !objects_before.contains(p) && !p.starts_with("locks"))
        .collect();
    assert!(new.len() >= 3, "a pack, an index file and a point: {new:?}");
    for p in &new {
        let kind = match p.iter().next().unwrap().to_str() {
            Some("packs") => ObjectKind::Pack,
            Some("index") => ObjectKind::Index,
            Some("points") => ObjectKind::Point,
            other => panic!("unexpected object {other:?}"),
        };
        let header = ObjectHeader::decode(&std::fs::read(path.join(p)).unwrap(), kind).unwrap();
        assert_eq!(header.version, 1, "{}", p.display());
    }
    for pack in repo.list_packs().unwrap() {
        assert!(read_pack_table(&repo, &pack)
            .unwrap()
            .iter()
            .all(|e| e.member == SOLE));
    }
    let out = dir.path().join("restored.img");
    restore_to(&repo, &report.point.to_hex(), &out);
    assert_same_bytes(&out, &image);
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn a_damaged_group_is_mended_from_a_replica_fetching_it_once() {
    use diskvault::{repair, sync, RepairOptions, RepoLocation, SyncOptions};
    let dir = scratch_dir();
    let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));
    init_repo(&primary);
    let local = |p: &Path| RepoLocation::parse(p.to_str().unwrap()).unwrap();
    sync(&local(&primary), &local(&replica), &SyncOptions::default()).unwrap();
    let image = dir.path().join("disk.img");
    write_random_image(&image, 4 * MIB, 9);
    // Both back up the same image: the replica holds the chunks in packs
    // of its own, so the repair moves chunks rather than whole packs.
    let point = backup_one(&open_repo(&primary), "root", &image).point;
    backup_one(&open_repo(&replica), "root", &image);

    let repo = open_repo(&primary);
    let pack = repo.list_packs().unwrap()[0];
    let entries = read_pack_table(&repo, &pack).unwrap();
    let group: Vec<_> = entries.iter().filter(|e| e.offset == 8).collect();
    assert_eq!(group.len(), PER_GROUP, "the first group of 16 KiB chunks");
    let hex = pack.to_hex();
    let pack_file = primary.join("packs").join(&hex[..2]).join(&hex);
    write_at(&pack_file, 8 + 100_000, b"bit rot!");
    let before = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    let named = group
        .iter()
        .filter(|e| {
            before
                .problems
                .iter()
                .any(|p| p.object.contains(&e.id.to_hex()))
        })
        .count();
    assert_eq!(named, PER_GROUP, "every chunk of the group is named");

    let report = repair(&repo, &local(&replica), &RepairOptions::default()).unwrap();
    assert!(report.is_complete(), "{:?}", report.unrepaired);
    assert_eq!(report.chunks_from_replica, PER_GROUP as u64, "{report:?}");
    let group_len = group[0].length as u64;
    assert!(
        report.bytes_fetched <= 2 * group_len,
        "the replica's group is fetched once, not per chunk: {} bytes for a group of {group_len}",
        report.bytes_fetched
    );
    assert_reads_clean(&open_repo(&primary), "after the repair");
    let out = dir.path().join("restored.img");
    restore_to(&open_repo(&primary), &point.to_hex(), &out);
    assert_same_bytes(&out, &image);
}

/// The next day's image draws on groups of two backups: the new chunks sit
/// in a few groups, each serving changes spread over many restore batches.
/// Those groups are opened once and kept, not read and opened again by
/// every batch that needs one of their chunks: restoring the later point
/// reads no more bytes than the vault holds.
#[test]
fn a_later_point_reads_each_new_group_once() {
    use std::os::unix::fs::FileExt;
    let dir = scratch_dir();
    let image = dir.path().join("disk.img");
    write_random_image(&image, 64 << 20, 9);
    let vault = dir.path().join("vault");
    let repo = init_repo_with(&vault, &fast_init());
    backup_one(&repo, "disk", &image);
    // 4 KiB changed in every 512 KiB: 128 new chunks, in one or two
    // groups, needed by each of the restore's eight batches.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    for k in 0..128u64 {
        let changed: Vec<u8> = (0..4096u64).map(|b| (b * 31 + k * 7 + 1) as u8).collect();
        file.write_all_at(&changed, k * (512 << 10) + 8192).unwrap();
    }
    drop(file);
    backup_one(&repo, "disk", &image);
    drop(repo);
    let (read, held) = restore_counting_reads(&vault, &image);
    assert!(
        read <= held,
        "the restore read {read} bytes from a vault of {held}: a group of new chunks was read (and opened) again"
    );
}

/// Restores the latest point of `vault` through a store that counts what
/// is read, checks the result equals `image`, and returns the bytes read
/// and the bytes the vault holds.
fn restore_counting_reads(vault: &Path, image: &Path) -> (u64, u64) {
    use diskvault::store::{FaultyStore, LocalStore, Store};
    use std::sync::Arc;
    let held: u64 = files_under(vault)
        .iter()
        .map(|f| std::fs::metadata(vault.join(f)).unwrap().len())
        .sum();
    let counted = Arc::new(FaultyStore::counting(Arc::new(LocalStore::new(vault))));
    let store: Arc<dyn Store> = counted.clone();
    let repo = Repository::open_in(store, "vault".into(), Some(PASSPHRASE.as_bytes())).unwrap();
    let out = vault.with_file_name("restored.img");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out, image);
    (counted.counts().bytes_read, held)
}

/// A restore reads each chunk group once, though restore batches (8 MiB
/// of chunks) and groups (2 MiB of new chunks) do not line up: a batch
/// that would end inside a group takes the rest of the group. Random data
/// (groups stored raw, so a group read twice shows) cut by FastCDC (whose
/// chunk sizes vary, so groups end anywhere in a batch): the restore reads
/// no more bytes than the vault holds.
#[test]
fn a_restore_reads_each_group_once() {
    use diskvault::format::config::ChunkerParams;
    for seed in [5, 6] {
        let dir = scratch_dir();
        let image = dir.path().join("disk.img");
        write_random_image(&image, 37 << 20, seed);
        let vault = dir.path().join("vault");
        let repo = init_repo_with(
            &vault,
            &InitOptions {
                chunker: ChunkerParams::DEFAULT_FASTCDC,
                ..fast_init()
            },
        );
        backup_one(&repo, "disk", &image);
        drop(repo);
        let (read, held) = restore_counting_reads(&vault, &image);
        assert!(
            read <= held,
            "seed {seed}: the restore read {read} bytes from a vault of {held}: some group was read (and opened) twice"
        );
    }
}

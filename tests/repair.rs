//! Repair from a replica, and restores that fall back on one: damaged and
//! missing packs, chunks, index files and points in the primary.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use diskvault::store::{Fault, FaultyStore, LocalStore, OpKind, WriteEvent};
use diskvault::{
    check, repair, restore, sync, CheckOptions, RepairOptions, RepairReport, RepoLocation,
    Repository, RestoreOptions, SyncOptions,
};

fn local(path: &Path) -> RepoLocation {
    RepoLocation::local(path)
}

fn read_data_check(repo: &Repository) -> diskvault::CheckReport {
    check(
        repo,
        &CheckOptions {
            read_data: true,
            threads: None,
            ..Default::default()
        },
    )
    .expect("check")
}

fn repair_from(repo_path: &Path, replica: &Path) -> RepairReport {
    repair(
        &open_repo(repo_path),
        &local(replica),
        &RepairOptions::default(),
    )
    .expect("repair")
}

/// Restores `point` from `repo` and compares it with `image`.
fn assert_restores(repo: &Path, point: &str, image: &Path) {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("restored.img");
    restore_to(&open_repo(repo), point, &path);
    assert_same_bytes(&path, image);
}

/// A primary with two points (2 MiB each, one pack each) and a replica
/// made by sync: every pack exists in both under the same name.
struct Synced {
    dir: tempfile::TempDir,
    primary: PathBuf,
    replica: PathBuf,
    points: Vec<(String, PathBuf)>,
}

/// These tests damage single sealed chunks at offsets computed for 16 KiB
/// chunks sealed alone: their vaults are format 1. Format 2, where data
/// chunks are sealed in groups, is repaired in tests/format_v2.rs.
fn init_format_1(path: &Path) -> Repository {
    init_repo_with(
        path,
        &diskvault::InitOptions {
            format_major: 1,
            ..fast_init()
        },
    )
}

fn synced_pair() -> Synced {
    let dir = tempfile::tempdir().unwrap();
    let primary = dir.path().join("primary");
    let replica = dir.path().join("replica");
    let repo = init_format_1(&primary);
    let mut points = Vec::new();
    for seed in [1, 2] {
        let image = dir.path().join(format!("disk{seed}.img"));
        write_random_image(&image, 2 * MIB, seed);
        points.push((backup_one(&repo, "root", &image).point.to_hex(), image));
    }
    sync(&local(&primary), &local(&replica), &SyncOptions::default()).unwrap();
    Synced {
        dir,
        primary,
        replica,
        points,
    }
}

/// The pack holding the chunks of `point` (each point here has its own).
fn pack_of(repo: &Path, image: &Path) -> PathBuf {
    let first_block = std::fs::read(image).unwrap()[..DEFAULT_CHUNK as usize].to_vec();
    let r = open_repo(repo);
    let id = r.sealer().chunk_id(&first_block);
    let index = r.load_index().unwrap();
    let loc = index.get(&id).expect("chunk indexed");
    let pack = index.pack_id(loc.pack).to_hex();
    repo.join("packs").join(&pack[..2]).join(pack)
}

#[test]
fn repair_replaces_damaged_and_missing_packs_with_the_replicas_copies() {
    let s = synced_pair();
    let damaged = pack_of(&s.primary, &s.points[0].1);
    let missing = pack_of(&s.primary, &s.points[1].1);
    write_at(&damaged, 40_000, b"bit rot!");
    std::fs::remove_file(&missing).unwrap();
    let before = read_data_check(&open_repo(&s.primary));
    assert!(!before.is_ok());

    let report = repair_from(&s.primary, &s.replica);
    assert!(report.is_complete(), "{:?}", report.unrepaired);
    assert_eq!(report.objects_replaced.len(), 2, "{report:?}");
    assert_eq!(report.packs_written, 0, "whole packs, no chunk moved");
    assert!(damaged.exists() && missing.exists());

    let after = read_data_check(&open_repo(&s.primary));
    assert!(after.is_ok(), "{:?}", after.problems);
    for (point, image) in &s.points {
        assert_restores(&s.primary, point, image);
    }
    assert!(repair_from(&s.primary, &s.replica).found_nothing());
}

/// The replica took its own backup of the same disk: it holds the same
/// chunks in other packs. Two chunks of the primary's pack rot; the repair
/// fetches them, salvages the rest, and retires the damaged pack.
struct OwnPacks {
    dir: tempfile::TempDir,
    primary: PathBuf,
    replica: PathBuf,
    point: String,
    image: PathBuf,
}

fn replica_with_its_own_packs() -> OwnPacks {
    let dir = tempfile::tempdir().unwrap();
    let primary = dir.path().join("primary");
    let replica = dir.path().join("replica");
    init_format_1(&primary);
    sync(&local(&primary), &local(&replica), &SyncOptions::default()).unwrap();
    let image = dir.path().join("disk.img");
    write_random_image(&image, 2 * MIB, 9);
    let point = backup_one(&open_repo(&primary), "root", &image)
        .point
        .to_hex();
    backup_one(&open_repo(&replica), "root", &image);
    OwnPacks {
        dir,
        primary,
        replica,
        point,
        image,
    }
}

/// Overwrites bytes inside two different sealed chunks of a pack of
/// incompressible 16 KiB chunks (16 420 bytes sealed, after an 8-byte
/// header).
fn rot_two_chunks(pack: &Path) {
    write_at(pack, 8 + 6 * 16_420 + 1000, b"bit rot!");
    write_at(pack, 8 + 60 * 16_420 + 5000, b"bit rot!");
}

#[test]
fn repair_moves_chunks_when_the_replica_lacks_the_damaged_pack() {
    let o = replica_with_its_own_packs();
    let pack = only_object(&o.primary, "packs/");
    rot_two_chunks(&pack);
    let before = read_data_check(&open_repo(&o.primary));
    assert!(!before.is_ok());

    let report = repair_from(&o.primary, &o.replica);
    assert!(report.is_complete(), "{:?}", report.unrepaired);
    assert!(report.objects_replaced.is_empty());
    assert_eq!(report.chunks_from_replica, 2, "{report:?}");
    assert!(report.chunks_salvaged > 100, "{report:?}");
    assert_eq!(report.packs_written, 1);
    assert_eq!(report.packs_removed, 1);
    assert_eq!(report.index_files_removed, 1);
    assert!(!pack.exists(), "the damaged pack is gone");

    let after = read_data_check(&open_repo(&o.primary));
    assert!(after.is_ok(), "{:?}", after.problems);
    assert_eq!(after.chunks, before.chunks, "every chunk is still indexed");
    assert_restores(&o.primary, &o.point, &o.image);
    assert!(repair_from(&o.primary, &o.replica).found_nothing());

    // The CLI says what it did.
    let pack = only_object(&o.primary, "packs/");
    rot_two_chunks(&pack);
    Cli::new()
        .run(&[
            "repair".as_ref(),
            o.primary.as_os_str(),
            "--from".as_ref(),
            o.replica.as_os_str(),
        ])
        .expect_ok("repair")
        .expect_mentions("2 read from", "repair")
        .expect_mentions("repaired", "repair");
    Cli::new()
        .run(&[
            "check".as_ref(),
            o.primary.as_os_str(),
            "--read-data".as_ref(),
        ])
        .expect_ok("check after repair");
    drop(o.dir);
}

/// The primary at `path`, opened through a store that injects `faults`.
fn open_faulty(path: &Path, faults: &[Fault]) -> (Arc<FaultyStore>, Repository) {
    let mut store = FaultyStore::new(Arc::new(LocalStore::new(path)));
    for f in faults {
        store = store.with_fault(*f);
    }
    let store = Arc::new(store);
    let repo = Repository::open_in(
        store.clone(),
        path.display().to_string(),
        Some(PASSPHRASE.as_bytes()),
    )
    .unwrap();
    (store, repo)
}

/// Every write, delete and barrier of a chunk-level repair, in turn,
/// fails; the primary keeps every chunk that was readable, and running the
/// repair again finishes the job.
#[test]
fn an_interrupted_repair_can_be_run_again() {
    let o = replica_with_its_own_packs();
    rot_two_chunks(&only_object(&o.primary, "packs/"));
    let pristine = o.dir.path().join("damaged-copy");
    copy_dir(&o.primary, &pristine);

    let (counting, repo) = open_faulty(&o.primary, &[]);
    let report = repair(&repo, &local(&o.replica), &RepairOptions::default()).unwrap();
    assert!(report.is_complete());
    let counts = counting.counts();
    assert!(counts.ops(OpKind::Put) >= 2, "the new pack and its index");
    assert!(
        counts.ops(OpKind::Delete) >= 2,
        "the old index file and the damaged pack"
    );

    // The last delete releases the lock, whose failure nobody needs to
    // hear about (a lock left behind is found stale).
    let deletes = counts
        .without("locks/")
        .writes
        .iter()
        .filter(|w| matches!(w, WriteEvent::Delete(_)))
        .count() as u64;
    let faults: Vec<Fault> = [OpKind::Put, OpKind::Barrier]
        .iter()
        .flat_map(|k| (1..=counts.ops(*k)).map(|n| Fault::Fail(*k, n)))
        .chain((1..=deletes).map(|n| Fault::Fail(OpKind::Delete, n)))
        .collect();
    for (run, fault) in faults.into_iter().enumerate() {
        let primary = o.dir.path().join(format!("primary-{run}"));
        copy_dir(&pristine, &primary);
        let (_, repo) = open_faulty(&primary, &[fault]);
        let err = repair(&repo, &local(&o.replica), &RepairOptions::default())
            .expect_err("the injected fault stops the repair");
        assert!(err.to_string().contains("injected fault"), "{err}");
        // Structure intact at this instant: the index opens and names only
        // packs that exist (the rotten chunks show only with --read-data).
        let now = check(&open_repo(&primary), &CheckOptions::default()).unwrap();
        assert!(
            now.problems.is_empty(),
            "after {fault:?}: {:?}",
            now.problems
        );
        let again = repair_from(&primary, &o.replica);
        assert!(again.is_complete(), "after {fault:?}: {again:?}");
        let after = read_data_check(&open_repo(&primary));
        assert!(after.is_ok(), "after {fault:?}: {:?}", after.problems);
        assert_restores(&primary, &o.point, &o.image);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for rel in files_under(from) {
        let dest = to.join(&rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from.join(&rel), dest).unwrap();
    }
}

#[test]
fn repair_restores_damaged_index_files_and_points() {
    // The replica holds the same objects: they are replaced whole.
    let s = synced_pair();
    let index = objects(&s.primary, "index/").remove(0);
    let point = s.primary.join("points").join(&s.points[0].0);
    write_at(&index, 30, b"rot");
    write_at(&point, 30, b"rot");
    let report = repair_from(&s.primary, &s.replica);
    assert!(report.is_complete(), "{:?}", report.unrepaired);
    assert_eq!(report.objects_replaced.len(), 2, "{report:?}");
    assert!(read_data_check(&open_repo(&s.primary)).is_ok());
    for (point, image) in &s.points {
        assert_restores(&s.primary, point, image);
    }

    // The replica lacks the primary's index file: the packs it named are
    // indexed again from their own tables.
    let o = replica_with_its_own_packs();
    let index = only_object(&o.primary, "index/");
    write_at(&index, 30, b"rot");
    let report = repair_from(&o.primary, &o.replica);
    assert!(report.is_complete(), "{:?}", report.unrepaired);
    assert_eq!(report.index_files_removed, 1);
    assert_eq!(report.chunks_from_replica, 0, "{report:?}");
    assert!(!index.exists());
    let after = read_data_check(&open_repo(&o.primary));
    assert!(after.is_ok(), "{:?}", after.problems);
    assert_eq!(after.unindexed_packs, 0);
    assert_restores(&o.primary, &o.point, &o.image);
}

#[test]
fn damage_the_replica_cannot_mend_is_reported() {
    let s = synced_pair();
    // A point taken after the sync exists only in the primary.
    let image = s.dir.path().join("late.img");
    write_random_image(&image, 2 * MIB, 77);
    backup_one(&open_repo(&s.primary), "root", &image);
    let pack = pack_of(&s.primary, &image);
    write_at(&pack, 8 + 3 * 16_420 + 100, b"bit rot!");

    let report = repair_from(&s.primary, &s.replica);
    assert!(!report.is_complete());
    assert_eq!(report.unrepaired.len(), 1, "{:?}", report.unrepaired);
    assert!(report.unrepaired[0].0.starts_with("chunk "));
    assert!(
        report.unrepaired[0].1.contains("does not have it"),
        "{:?}",
        report.unrepaired
    );
    // What could be saved was: every other chunk moved out of the pack,
    // which stays for the one chunk nobody has.
    assert!(pack.exists());
    for (point, image) in &s.points {
        assert_restores(&s.primary, point, image);
    }
    let run = Cli::new().run(&[
        "repair".as_ref(),
        s.primary.as_os_str(),
        "--from".as_ref(),
        s.replica.as_os_str(),
    ]);
    run.expect_code(4, "repair with damage left")
        .expect_mentions("could not be repaired", "repair")
        .expect_mentions("chunk ", "repair");
}

#[test]
fn restore_falls_back_on_the_replica_for_missing_and_damaged_chunks() {
    let s = synced_pair();
    let (point0, image0) = &s.points[0];
    let (point1, image1) = &s.points[1];
    write_at(
        &pack_of(&s.primary, image0),
        8 + 2 * 16_420 + 100,
        b"bit rot!",
    );
    std::fs::remove_file(pack_of(&s.primary, image1)).unwrap();
    let out = s.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();

    // Without a fallback the restores fail.
    let run = Cli::new().run(&[
        "restore".as_ref(),
        s.primary.as_os_str(),
        point0[..8].as_ref(),
        out.join("a.img").as_os_str(),
    ]);
    run.expect_code(4, "restore of a damaged chunk");
    assert!(!out.join("a.img").exists());

    // With one, they succeed and say so.
    let repo = open_repo(&s.primary);
    let with_fallback = |point: &str, path: &Path| {
        restore(
            &repo,
            &RestoreOptions {
                fallback: Some(local(&s.replica)),
                ..restore_opts(point, path)
            },
        )
        .expect("restore with fallback")
    };
    let report = with_fallback(point0, &out.join("a.img"));
    assert_eq!(report.disks[0].chunks_from_replica, 1);
    assert_same_bytes(&out.join("a.img"), image0);
    let report = with_fallback(point1, &out.join("b.img"));
    assert_eq!(
        report.disks[0].chunks_from_replica,
        report.disks[0].chunks + 1,
        "every data chunk and the manifest node"
    );
    assert_same_bytes(&out.join("b.img"), image1);

    let run = Cli::new().run(&[
        "restore".as_ref(),
        s.primary.as_os_str(),
        point0[..8].as_ref(),
        out.join("c.img").as_os_str(),
        "--fallback".as_ref(),
        s.replica.as_os_str(),
    ]);
    run.expect_ok("restore --fallback")
        .expect_mentions("1 chunks were missing or damaged", "restore --fallback")
        .expect_mentions("diskvault repair", "restore --fallback");
    assert_same_bytes(&out.join("c.img"), image0);

    // Updating an older copy in place falls back too.
    let older = out.join("older.img");
    std::fs::copy(image1, &older).unwrap();
    write_at(&older, 0, &[0u8; 4096]);
    let report = restore(
        &repo,
        &RestoreOptions {
            into_existing: true,
            fallback: Some(local(&s.replica)),
            ..restore_opts(point1, &older)
        },
    )
    .unwrap();
    assert_eq!(report.disks[0].chunks_fetched, 1);
    assert_same_bytes(&older, image1);
}

#[test]
fn restore_falls_back_when_an_index_file_or_point_is_unreadable() {
    let s = synced_pair();
    for index in objects(&s.primary, "index/") {
        write_at(&index, 30, b"rot");
    }
    let (point, image) = &s.points[0];
    write_at(&s.primary.join("points").join(point), 30, b"rot");
    let out = s.dir.path().join("a.img");
    let report = restore(
        &open_repo(&s.primary),
        &RestoreOptions {
            fallback: Some(local(&s.replica)),
            ..restore_opts(point, &out)
        },
    )
    .unwrap();
    assert!(report.disks[0].chunks_from_replica > 0);
    assert_same_bytes(&out, image);
}

#[test]
fn a_fallback_must_be_a_copy_of_the_same_repository() {
    let s = synced_pair();
    let other = s.dir.path().join("other");
    init_repo(&other);
    let out = s.dir.path().join("a.img");
    let run = Cli::new().run(&[
        "restore".as_ref(),
        s.primary.as_os_str(),
        "latest".as_ref(),
        out.as_os_str(),
        "--fallback".as_ref(),
        other.as_os_str(),
    ]);
    run.expect_code(7, "restore with another repository as fallback")
        .expect_mentions("another repository", "refusal");
    let run = Cli::new().run(&[
        "repair".as_ref(),
        s.primary.as_os_str(),
        "--from".as_ref(),
        s.dir.path().join("nowhere").as_os_str(),
    ]);
    run.expect_code(5, "repair from nowhere");
}

//! Replication: `sync` into new, partly filled and interrupted replicas,
//! both ways, by point prefix and by tag, refusals, `--verify`, and
//! `status`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use diskvault::store::{Fault, FaultyStore, LocalStore, OpKind};
use diskvault::{
    backup, check, replica_status, sync, sync_with_key, BackupOptions, CheckOptions, Error,
    InitOptions, RepoLocation, Repository, SyncOptions,
};

/// A recovery point and the image it holds.
struct Saved {
    point: String,
    image: PathBuf,
}

/// Backs up a fresh 2 MiB image (seeded by `seed`) as one point with `tag`.
fn add_point(repo: &Repository, dir: &Path, seed: u64, tag: &str) -> Saved {
    let image = dir.join(format!("disk-{seed}.img"));
    write_random_image(&image, 2 * MIB, seed);
    let report = backup(
        repo,
        &BackupOptions {
            disks: vec![diskvault::BackupDisk::file("root", &image).unwrap()],
            tags: vec![tag.to_string()],
            ..BackupOptions::default()
        },
    )
    .expect("backup");
    Saved {
        point: report.point.to_hex(),
        image,
    }
}

/// A vault with `n` points, tagged `daily` and `weekly` in turn.
fn vault_with_points(dir: &Path, n: u64) -> (Repository, Vec<Saved>) {
    let repo = init_repo(&dir.join("primary"));
    let saved = (0..n)
        .map(|i| {
            add_point(
                &repo,
                dir,
                100 + i,
                if i % 2 == 0 { "daily" } else { "weekly" },
            )
        })
        .collect();
    (repo, saved)
}

fn local(path: &Path) -> RepoLocation {
    RepoLocation::local(path)
}

/// A local repository seen through a store that counts operations and
/// injects `faults`.
fn faulty(path: &Path, faults: &[Fault]) -> (Arc<FaultyStore>, RepoLocation) {
    let mut store = FaultyStore::new(Arc::new(LocalStore::new(path)));
    for f in faults {
        store = store.with_fault(*f);
    }
    let store = Arc::new(store);
    let location = RepoLocation::new(store.clone(), path.display().to_string());
    (store, location)
}

/// Successful puts per key, over several stores.
fn puts_by_key(stores: &[&FaultyStore]) -> std::collections::BTreeMap<String, u32> {
    let mut all = std::collections::BTreeMap::new();
    for s in stores {
        for (k, n) in s.counts().without("locks/").puts_by_key {
            *all.entry(k).or_insert(0) += n;
        }
    }
    all
}

fn sync_all(src: &Path, dst: &Path) -> diskvault::SyncReport {
    sync(&local(src), &local(dst), &SyncOptions::default()).expect("sync")
}

/// The replica opens with the primary's passphrase, passes `check
/// --read-data`, and restores each point byte for byte.
fn assert_replica_serves(replica: &Path, saved: &[Saved]) {
    let repo = open_repo(replica);
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: None,
            ..Default::default()
        },
    )
    .expect("check");
    assert!(report.is_ok(), "replica check: {:?}", report.problems);
    let out = tempfile::tempdir().unwrap();
    for s in saved {
        let path = out.path().join(format!("{}.img", &s.point[..8]));
        restore_to(&repo, &s.point, &path);
        assert_same_bytes(&path, &s.image);
    }
}

fn point_ids(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = objects(repo, "points/")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn sync_into_a_new_directory_creates_a_replica_that_restores_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo, saved) = vault_with_points(dir.path(), 3);
    let primary = dir.path().join("primary");
    let replica = dir.path().join("replica");

    let report = sync_all(&primary, &replica);
    assert!(report.created);
    assert_eq!(report.points_selected, 3);
    assert_eq!(report.copied.points, 3);
    assert_eq!(report.copied.packs, objects(&primary, "packs/").len());
    assert_eq!(report.copied.index_files, objects(&primary, "index/").len());
    assert_eq!(report.copied.key_files, 1);
    assert_eq!(report.skipped.objects(), 0);
    assert!(report.copied.bytes > 6 * MIB, "{report:?}");

    // Same repository: the config is copied byte for byte, the key files
    // too, and the marker says where the replica came from.
    assert_eq!(
        std::fs::read(replica.join("config")).unwrap(),
        std::fs::read(primary.join("config")).unwrap()
    );
    let marker = local(&replica)
        .read_marker()
        .unwrap()
        .expect("replica marker");
    assert_eq!(marker.source, primary.display().to_string());
    assert!(local(&primary).read_marker().unwrap().is_none());
    assert_eq!(point_ids(&replica), point_ids(&primary));
    assert_replica_serves(&replica, &saved);
}

#[test]
fn a_second_sync_copies_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo, _) = vault_with_points(dir.path(), 2);
    let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));
    let first = sync_all(&primary, &replica);

    let (store, at) = faulty(&replica, &[]);
    let again = sync(&local(&primary), &at, &SyncOptions::default()).unwrap();
    assert!(again.copied_nothing(), "{again:?}");
    assert!(!again.created);
    assert_eq!(again.copied.objects(), 0);
    assert_eq!(
        store.counts().without("locks/").puts_by_key.len(),
        0,
        "a no-op sync writes nothing but its lock"
    );
    assert_eq!(again.skipped.objects(), first.copied.objects());
    assert_eq!(again.skipped.bytes, first.copied.bytes);

    let run =
        Cli::without_password().run(&["sync".as_ref(), primary.as_os_str(), replica.as_os_str()]);
    run.expect_ok("no-op sync")
        .expect_mentions("nothing to copy", "no-op sync");
}

#[test]
fn sync_into_a_partly_filled_replica_copies_only_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, mut saved) = vault_with_points(dir.path(), 2);
    let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));
    sync_all(&primary, &replica);
    let packs_before = objects(&primary, "packs/").len();

    saved.push(add_point(&repo, dir.path(), 7, "daily"));
    saved.push(add_point(&repo, dir.path(), 8, "daily"));
    let (store, at) = faulty(&replica, &[]);
    let report = sync(&local(&primary), &at, &SyncOptions::default()).unwrap();
    assert!(!report.created);
    assert_eq!(report.copied.points, 2);
    assert_eq!(
        report.copied.packs,
        objects(&primary, "packs/").len() - packs_before
    );
    assert_eq!(report.skipped.points, 2);
    assert_eq!(report.skipped.packs, packs_before);
    // Every put (but the lock's) is of an object the replica lacked.
    let puts = store.counts().without("locks/").puts_by_key;
    for key in puts.keys() {
        assert!(
            key.starts_with("packs/") || key.starts_with("index/") || key.starts_with("points/"),
            "unexpected write of {key}"
        );
    }
    assert_eq!(puts.len(), report.copied.objects());
    assert_replica_serves(&replica, &saved);
}

/// Every write and every barrier of a sync, in turn, fails; the replica
/// is valid at that instant, and a second sync finishes the job without
/// writing any object twice.
#[test]
fn an_interrupted_sync_resumes_and_copies_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo, saved) = vault_with_points(dir.path(), 3);
    let primary = dir.path().join("primary");

    // What a whole sync does.
    let (clean, at) = faulty(&dir.path().join("clean"), &[]);
    sync(&local(&primary), &at, &SyncOptions::default()).unwrap();
    let puts = clean.counts().ops(OpKind::Put);
    let objects_written = clean.counts().without("locks/").puts_by_key.len();
    let barriers = clean.counts().ops(OpKind::Barrier);
    assert!(
        objects_written >= 12,
        "a sync of 3 points writes at least 12 objects"
    );

    let faults = (1..=puts)
        .map(|n| Fault::Fail(OpKind::Put, n))
        .chain((1..=barriers).map(|n| Fault::Fail(OpKind::Barrier, n)));
    for (run, fault) in faults.enumerate() {
        let replica = dir.path().join(format!("replica-{run}"));
        let (failing, at) = faulty(&replica, &[fault]);
        let err = sync(&local(&primary), &at, &SyncOptions::default())
            .expect_err("the injected fault stops the sync");
        assert_eq!(failing.injected().len(), 1);
        assert!(
            err.to_string().contains("injected fault"),
            "{fault:?}: {err}"
        );
        // Valid at this instant: either not a repository yet, or one that
        // passes check.
        if replica.join("config").exists() {
            let report = check(&open_repo(&replica), &CheckOptions::default()).unwrap();
            assert!(report.is_ok(), "after {fault:?}: {:?}", report.problems);
        }

        let (resumed, at) = faulty(&replica, &[]);
        sync(&local(&primary), &at, &SyncOptions::default())
            .unwrap_or_else(|e| panic!("resuming after {fault:?}: {e}"));
        let written = puts_by_key(&[&failing, &resumed]);
        let twice: Vec<&String> = written
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(k, _)| k)
            .collect();
        assert!(
            twice.is_empty(),
            "after {fault:?}, written twice: {twice:?}"
        );
        assert_eq!(
            written.len(),
            objects_written,
            "after {fault:?}, the two syncs together wrote what one does"
        );
        assert_eq!(point_ids(&replica), point_ids(&primary));
        if run % 5 == 0 {
            assert_replica_serves(&replica, &saved);
        } else {
            let report = check(&open_repo(&replica), &CheckOptions::default()).unwrap();
            assert!(report.is_ok(), "{:?}", report.problems);
        }
    }
}

#[test]
fn vaults_that_sync_both_ways_end_with_the_union_of_their_points() {
    let dir = tempfile::tempdir().unwrap();
    let (primary_repo, mut saved) = vault_with_points(dir.path(), 1);
    let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));
    sync_all(&primary, &replica);

    // Each side takes its own backup: the same data in both, plus its own.
    let replica_repo = open_repo(&replica);
    let shared = dir.path().join("shared.img");
    write_random_image(&shared, 2 * MIB, 55);
    backup_one(&primary_repo, "root", &shared);
    backup_one(&replica_repo, "root", &shared);
    saved.push(add_point(&primary_repo, dir.path(), 56, "daily"));
    saved.push(add_point(&replica_repo, dir.path(), 57, "daily"));

    sync_all(&primary, &replica);
    let back = sync_all(&replica, &primary);
    assert!(!back.created);
    assert_eq!(
        back.copied.points, 2,
        "the replica's own two points go back"
    );
    assert_eq!(point_ids(&primary), point_ids(&replica));
    assert_eq!(point_ids(&primary).len(), 5);
    assert_replica_serves(&primary, &saved);
    assert_replica_serves(&replica, &saved);
    assert!(sync_all(&primary, &replica).copied_nothing());
    assert!(sync_all(&replica, &primary).copied_nothing());
}

#[test]
fn sync_refuses_vaults_whose_chunks_cannot_match() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo, _) = vault_with_points(dir.path(), 1);
    let primary = dir.path().join("primary");

    // Another repository, even with the same passphrase and settings.
    let other = dir.path().join("other");
    init_repo(&other);
    let err = sync_all_err(&primary, &other);
    assert!(
        matches!(err, Error::IncompatibleRepositories { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("another repository"), "{err}");
    assert!(objects(&other, "points/").is_empty(), "nothing was copied");

    // A copy of the same repository whose chunker was changed.
    let replica = dir.path().join("replica");
    sync_all(&primary, &replica);
    let config = std::fs::read_to_string(replica.join("config")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
    v["chunker"] = serde_json::json!({"algorithm": "fixed", "size": 65536});
    std::fs::write(replica.join("config"), v.to_string()).unwrap();
    let err = sync_all_err(&primary, &replica);
    assert!(err.to_string().contains("chunker"), "{err}");

    // A different chunker from init.
    let cdc = dir.path().join("cdc");
    init_repo_with(
        &cdc,
        &InitOptions {
            chunker: "fastcdc".parse().unwrap(),
            ..fast_init()
        },
    );
    let run = Cli::without_password().run(&["sync".as_ref(), primary.as_os_str(), cdc.as_os_str()]);
    run.expect_code(7, "sync into another repository")
        .expect_mentions("cannot hold chunks of", "refusal");

    // A directory that holds something else.
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let err = sync_all_err(&primary, &busy);
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    let run =
        Cli::without_password().run(&["sync".as_ref(), primary.as_os_str(), busy.as_os_str()]);
    run.expect_code(7, "sync into a non-empty directory");

    // No source.
    let run = Cli::without_password().run(&[
        "sync".as_ref(),
        dir.path().join("nothing").as_os_str(),
        busy.as_os_str(),
    ]);
    run.expect_code(5, "sync from nowhere");
}

fn sync_all_err(src: &Path, dst: &Path) -> Error {
    sync(&local(src), &local(dst), &SyncOptions::default()).expect_err("sync is refused")
}

#[test]
fn sync_by_point_prefix_sends_only_those_points() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo, saved) = vault_with_points(dir.path(), 3);
    let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));

    // Without the key, every pack and index file goes, but only the
    // chosen point.
    let chosen = &saved[1];
    let report = sync(
        &local(&primary),
        &local(&replica),
        &SyncOptions {
            points: vec![chosen.point[..10].to_string()],
            ..SyncOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.points_selected, 1);
    assert_eq!(report.copied.points, 1);
    assert!(!report.selective);
    assert_eq!(point_ids(&replica), vec![chosen.point.clone()]);
    assert_replica_serves(&replica, std::slice::from_ref(chosen));

    // An unknown prefix is an error, and so is `latest` without the key.
    let err = sync(
        &local(&primary),
        &local(&replica),
        &SyncOptions {
            points: vec!["zz".into()],
            ..SyncOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnknownPoint(_)), "{err:?}");
    let err = sync(
        &local(&primary),
        &local(&replica),
        &SyncOptions {
            points: vec!["latest".into()],
            ..SyncOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("needs the passphrase"), "{err}");

    // From the CLI, comma-separated.
    let run = Cli::without_password().run(&[
        "sync".as_ref(),
        primary.as_os_str(),
        replica.as_os_str(),
        "--points".as_ref(),
        format!("{},{}", &saved[0].point[..8], &saved[2].point[..8]).as_ref(),
    ]);
    run.expect_ok("sync --points")
        .expect_mentions("copied 2 points", "sync --points");
    assert_eq!(point_ids(&replica), point_ids(&primary));
}

#[test]
fn sync_by_tag_with_the_key_sends_only_the_packs_those_points_need() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, saved) = vault_with_points(dir.path(), 4);
    let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));
    let weekly: Vec<&Saved> = saved.iter().skip(1).step_by(2).collect();

    let report = sync_with_key(
        &repo,
        &local(&replica),
        &SyncOptions {
            tags: vec!["weekly".into()],
            ..SyncOptions::default()
        },
    )
    .unwrap();
    assert!(report.selective);
    assert_eq!(report.points_selected, 2);
    assert_eq!(report.copied.points, 2);
    // Each 2 MiB image is one pack: only the two weekly packs travel, and
    // the source's index files (which name every pack) stay behind.
    assert_eq!(report.copied.packs, 2);
    assert_eq!(report.copied.index_files, 0);
    assert_eq!(report.index_files_written, 1);
    let weekly_owned: Vec<Saved> = weekly
        .iter()
        .map(|s| Saved {
            point: s.point.clone(),
            image: s.image.clone(),
        })
        .collect();
    assert_replica_serves(&replica, &weekly_owned);

    // A full sync afterwards brings the rest, and the replica stays sound.
    let rest = sync_all(&primary, &replica);
    assert_eq!(rest.copied.points, 2);
    assert_eq!(rest.copied.packs, 2);
    assert_replica_serves(&replica, &saved);

    // From the CLI, with the passphrase; without it, a clear refusal.
    let other = dir.path().join("other-replica");
    Cli::new()
        .run(&[
            "sync".as_ref(),
            primary.as_os_str(),
            other.as_os_str(),
            "--tag".as_ref(),
            "daily".as_ref(),
        ])
        .expect_ok("sync --tag")
        .expect_mentions(
            "sent only the packs the 2 selected points need",
            "sync --tag",
        );
    assert_eq!(objects(&other, "points/").len(), 2);
    Cli::without_password()
        .run(&[
            "sync".as_ref(),
            primary.as_os_str(),
            other.as_os_str(),
            "--tag".as_ref(),
            "weekly".as_ref(),
        ])
        .expect_code(3, "sync --tag without a passphrase");
}

/// A selective sync interrupted after its packs resumes by indexing them,
/// not by copying them again.
#[test]
fn an_interrupted_selective_sync_indexes_the_packs_it_already_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, saved) = vault_with_points(dir.path(), 3);
    let replica = dir.path().join("replica");
    let opts = SyncOptions {
        tags: vec!["daily".into()],
        ..SyncOptions::default()
    };
    // Writes: key file, marker, config, the lock, two packs, then the
    // index file, which fails.
    let (_, at) = faulty(&replica, &[Fault::FailUnder(OpKind::Put, "index/")]);
    sync_with_key(&repo, &at, &opts).unwrap_err();
    assert_eq!(objects(&replica, "packs/").len(), 2);
    assert!(objects(&replica, "index/").is_empty());

    let (resumed, at) = faulty(&replica, &[]);
    let report = sync_with_key(&repo, &at, &opts).unwrap();
    assert_eq!(report.copied.packs, 0);
    assert_eq!(report.skipped.packs, 2);
    assert_eq!(report.index_files_written, 1);
    assert!(resumed.counts().keys_written_under("packs/").is_empty());
    let daily: Vec<Saved> = saved
        .iter()
        .step_by(2)
        .map(|s| Saved {
            point: s.point.clone(),
            image: s.image.clone(),
        })
        .collect();
    assert_replica_serves(&replica, &daily);
}

#[test]
fn verify_opens_every_chunk_of_every_copied_pack() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, saved) = vault_with_points(dir.path(), 2);
    let replica = dir.path().join("replica");
    let report = sync_with_key(
        &repo,
        &local(&replica),
        &SyncOptions {
            verify: true,
            ..SyncOptions::default()
        },
    )
    .unwrap();
    let chunks = check(&repo, &CheckOptions::default()).unwrap().chunks as u64;
    assert_eq!(report.chunks_verified, chunks);
    assert_replica_serves(&replica, &saved);

    let err = sync(
        &local(&dir.path().join("primary")),
        &local(&dir.path().join("elsewhere")),
        &SyncOptions {
            verify: true,
            ..SyncOptions::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("needs the passphrase"), "{err}");
}

/// A pack damaged in the source is not copied, and the sync stops before
/// the index files, so the replica never names a pack it lacks.
#[test]
fn a_damaged_source_pack_is_not_copied_and_the_replica_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo, _) = vault_with_points(dir.path(), 2);
    let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));
    let pack = objects(&primary, "packs/").remove(0);
    write_at(&pack, 5000, b"damage");

    let err = sync_all_err(&primary, &replica);
    assert_eq!(err.category(), diskvault::ErrorCategory::Damaged, "{err}");
    assert!(err.to_string().contains("does not match its name"), "{err}");
    assert_eq!(
        objects(&replica, "packs/").len(),
        1,
        "the intact pack is kept"
    );
    assert!(objects(&replica, "index/").is_empty());
    assert!(objects(&replica, "points/").is_empty());
    let report = check(&open_repo(&replica), &CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn status_shows_what_the_replica_lacks_and_the_newest_point_on_each_side() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, mut saved) = vault_with_points(dir.path(), 2);
    let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));

    let before = replica_status(&repo, &local(&replica)).unwrap();
    assert!(!before.replica_exists);
    assert_eq!(before.missing_points.len(), 2);
    assert!(before.replica_newest.is_none());

    sync_all(&primary, &replica);
    let synced = replica_status(&repo, &local(&replica)).unwrap();
    assert!(synced.is_current());
    assert_eq!(synced.bytes_to_send, 0);
    assert_eq!(synced.source_newest, synced.replica_newest);
    assert!(synced.marker.is_some());

    saved.push(add_point(&repo, dir.path(), 9, "daily"));
    let lagging = replica_status(&repo, &local(&replica)).unwrap();
    assert!(!lagging.is_current());
    assert_eq!(lagging.missing_points.len(), 1);
    assert_eq!(lagging.missing_points[0].0.to_hex(), saved[2].point);
    assert!(lagging.bytes_to_send > 2 * MIB);
    assert_eq!(lagging.source_newest.unwrap().0.to_hex(), saved[2].point);
    assert_eq!(lagging.replica_newest.unwrap().0.to_hex(), saved[1].point);

    let run = Cli::new().run(&[
        "status".as_ref(),
        primary.as_os_str(),
        "--replica".as_ref(),
        replica.as_os_str(),
    ]);
    run.expect_ok("status")
        .expect_mentions("the replica lacks 1 point", "status")
        .expect_mentions(&saved[2].point[..8], "status")
        .expect_mentions("to send: ", "status");
    let json = Cli::new()
        .run(&[
            "status".as_ref(),
            primary.as_os_str(),
            "--replica".as_ref(),
            replica.as_os_str(),
            "--json".as_ref(),
        ])
        .json();
    assert_eq!(json["missing_points"].as_array().unwrap().len(), 1);
    assert_eq!(json["up_to_date"], false);
    assert_eq!(json["replica_newest"]["id"], saved[1].point.as_str());

    sync_all(&primary, &replica);
    Cli::new()
        .run(&[
            "status".as_ref(),
            primary.as_os_str(),
            "--replica".as_ref(),
            replica.as_os_str(),
        ])
        .expect_ok("status")
        .expect_mentions("up to date", "status after sync");
}

#[test]
fn the_cli_reports_what_a_sync_copied() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo, _) = vault_with_points(dir.path(), 2);
    let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));
    let run =
        Cli::without_password().run(&["sync".as_ref(), primary.as_os_str(), replica.as_os_str()]);
    run.expect_ok("sync")
        .expect_mentions("as a replica of", "sync")
        .expect_mentions(
            "copied 2 packs, 2 index files, 2 points, 1 key file",
            "sync",
        )
        .expect_mentions("MB/s", "sync");
    let json = Cli::without_password()
        .run(&[
            "sync".as_ref(),
            primary.as_os_str(),
            replica.as_os_str(),
            "--json".as_ref(),
        ])
        .json();
    assert_eq!(json["nothing_copied"], true);
    assert_eq!(json["skipped"]["points"], 2);
    // The replica opens with the same passphrase.
    Cli::new()
        .run(&["points".as_ref(), replica.as_os_str()])
        .expect_ok("points of the replica")
        .expect_mentions("2 recovery points", "points");
}

fn live_points(vault: &Path) -> Vec<String> {
    let mut v: Vec<String> = open_repo(vault)
        .list_points()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.to_hex())
        .collect();
    v.sort();
    v
}

/// How retention reaches a replica: `sync --delete` forgets there what the
/// source forgot (with the source's forget time) or does not have, and
/// unforgets what the source brought back; the replica's own prune then
/// frees the data, never what a live point of the source still needs.
#[test]
fn sync_delete_carries_forgetting_to_the_replica_and_prune_there_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, saved) = vault_with_points(dir.path(), 3);
    let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));
    sync_all(&primary, &replica);
    let delete = SyncOptions {
        delete: true,
        ..SyncOptions::default()
    };
    let e = sync(&local(&primary), &local(&replica), &delete).unwrap_err();
    assert!(e.to_string().contains("passphrase"), "{e}");

    // The source forgets its first point; a backup taken straight into
    // the replica is no point of the source either.
    diskvault::forget(
        &repo,
        &diskvault::ForgetOptions {
            points: vec![saved[0].point.clone()],
            ..Default::default()
        },
    )
    .unwrap();
    let stray = add_point(&open_repo(&replica), dir.path(), 900, "manual");
    let report = sync_with_key(&repo, &local(&replica), &delete).unwrap();
    assert_eq!((report.points_forgotten, report.points_unforgotten), (2, 0));
    assert_eq!(live_points(&replica), live_points(&primary));
    let at_source = repo.forgotten_points().unwrap()[&saved[0].point.parse().unwrap()].time_secs;
    let at_replica = open_repo(&replica).forgotten_points().unwrap();
    assert_eq!(
        at_replica[&saved[0].point.parse().unwrap()].time_secs,
        at_source
    );
    assert!(at_replica.contains_key(&stray.point.parse().unwrap()));

    // Unforgotten at the source: unforgotten in the replica.
    diskvault::unforget(&repo, &[saved[0].point.clone()]).unwrap();
    let report = sync_with_key(&repo, &local(&replica), &delete).unwrap();
    assert_eq!((report.points_forgotten, report.points_unforgotten), (0, 1));
    assert_eq!(live_points(&replica), live_points(&primary));

    // Forgotten and pruned at the source; the replica's prune frees it
    // there too, and everything the source still has restores from the
    // replica.
    diskvault::forget(
        &repo,
        &diskvault::ForgetOptions {
            points: vec![saved[1].point.clone()],
            ..Default::default()
        },
    )
    .unwrap();
    let prune_now = diskvault::PruneOptions {
        ignore_grace: true,
        ..Default::default()
    };
    diskvault::prune(&repo, &prune_now).unwrap();
    sync_with_key(&repo, &local(&replica), &delete).unwrap();
    let freed = diskvault::prune(&open_repo(&replica), &prune_now).unwrap();
    assert_eq!(freed.points_removed.len(), 2, "{freed:?}");
    assert!(freed.bytes_freed > 2 * MIB, "{freed:?}");
    assert_eq!(live_points(&replica), live_points(&primary));
    let kept: Vec<Saved> = saved
        .into_iter()
        .filter(|s| s.point != stray.point && live_points(&primary).contains(&s.point))
        .collect();
    assert_eq!(kept.len(), 2);
    assert_replica_serves(&replica, &kept);
}

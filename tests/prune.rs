//! Retention and reclaiming space: `forget` marks points, `prune` frees
//! exactly what no kept point needs, the grace period keeps forgotten
//! points restorable, and a vault after prune restores byte for byte and
//! passes `check --read-data`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use diskvault::format::manifest::Extent;
use diskvault::manifest::{walk, ManifestEvent};
use diskvault::retention::RetentionPolicy;
use diskvault::store::{Fault, FaultyStore, LocalStore, OpKind};
use diskvault::{
    forget, prune, unforget, BackupReport, ChunkId, ErrorCategory, ForgetOptions, PointId,
    PruneOptions, Repository,
};

const DAY: i64 = 86_400;

/// A vault with four points of one disk whose image changes every day:
/// each day rewrites 4 MiB of a 24 MiB image, so the first point's packs
/// are partly shared with the later ones.
struct Days {
    _dir: tempfile::TempDir,
    vault: PathBuf,
    repo: Repository,
    /// Each point and a copy of the image it was taken from.
    points: Vec<(PointId, PathBuf)>,
}

impl Days {
    fn new(days: usize) -> Days {
        let dir = scratch_dir();
        let vault = dir.path().join("vault");
        let repo = init_repo(&vault);
        let image = dir.path().join("disk.img");
        write_random_image(&image, 24 * MIB, 1);
        let mut points = Vec::new();
        for day in 0..days {
            if day > 0 {
                let at = (day as u64 * 4 * MIB) % (24 * MIB);
                write_at(&image, at, &Xorshift::new(100 + day as u64).bytes(4 << 20));
            }
            let copy = dir.path().join(format!("day{day}.img"));
            std::fs::copy(&image, &copy).unwrap();
            let r: BackupReport = backup_one(&repo, "root", &image);
            points.push((r.point, copy));
        }
        Days {
            _dir: dir,
            vault,
            repo,
            points,
        }
    }

    fn point(&self, day: usize) -> PointId {
        self.points[day].0
    }

    fn forget_days(&self, days: &[usize], now: i64) {
        forget(
            &self.repo,
            &ForgetOptions {
                points: days.iter().map(|d| self.point(*d).to_hex()).collect(),
                now: Some(now),
                ..ForgetOptions::default()
            },
        )
        .expect("forget");
    }

    /// Every point still listed restores to the image it was taken from,
    /// and `check --read-data` finds nothing wrong.
    fn assert_sound(&self) {
        let repo = open_repo(&self.vault);
        let report = assert_reads_clean(&repo, "after prune");
        assert_eq!(report.unindexed_packs, 0);
        let out = self._dir.path().join("restored.img");
        for (id, _) in repo.list_all_points().unwrap() {
            let image = &self.points.iter().find(|(p, _)| *p == id).unwrap().1;
            restore_to(&repo, &id.to_hex(), &out);
            assert_same_bytes(&out, image);
            std::fs::remove_file(&out).unwrap();
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn prune_with(repo: &Repository, opts: PruneOptions) -> diskvault::PruneReport {
    prune(repo, &opts).expect("prune")
}

fn pack_bytes(vault: &Path) -> u64 {
    objects(vault, "packs/")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Every chunk (data and manifest) the listed points reference.
fn referenced(repo: &Repository) -> BTreeSet<ChunkId> {
    let index = repo.load_index().unwrap();
    let mut out = BTreeSet::new();
    for (_, p) in repo.list_all_points().unwrap() {
        for disk in &p.disks {
            let mut load = |id: &ChunkId| {
                let loc = index.get(id).unwrap();
                repo.read_chunk(id, &loc, &index.pack_id(loc.pack))
            };
            let mut visit = |ev: ManifestEvent<'_>| {
                match ev {
                    ManifestEvent::Node(id) => {
                        out.insert(*id);
                    }
                    ManifestEvent::Extent {
                        extent: Extent::Data { id, .. },
                        ..
                    } => {
                        out.insert(*id);
                    }
                    ManifestEvent::Extent { .. } => {}
                }
                Ok(())
            };
            walk(
                &disk.manifest_root,
                disk.size,
                repo.format_major(),
                &mut load,
                &mut visit,
            )
            .unwrap();
        }
    }
    out
}

fn indexed(repo: &Repository) -> BTreeSet<ChunkId> {
    repo.load_index()
        .unwrap()
        .iter()
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn prune_frees_exactly_the_data_no_kept_point_needs() {
    let v = Days::new(4);
    let before = pack_bytes(&v.vault);
    v.forget_days(&[0, 1], now());
    let report = prune_with(
        &v.repo,
        PruneOptions {
            ignore_grace: true,
            max_unused_percent: 0.0,
            ..PruneOptions::default()
        },
    );
    let removed: BTreeSet<PointId> = report.points_removed.iter().copied().collect();
    assert_eq!(removed, [v.point(0), v.point(1)].into_iter().collect());
    assert!(
        report.packs_repacked + report.packs_deleted > 0,
        "{report:?}"
    );

    // With no unused space tolerated, the index holds exactly the chunks
    // the two kept points reference: nothing they need went, nothing else
    // stayed.
    let repo = open_repo(&v.vault);
    assert_eq!(indexed(&repo), referenced(&repo));
    assert_eq!(repo.list_points().unwrap().len(), 2);
    let after = pack_bytes(&v.vault);
    assert_eq!(before - after, report.bytes_freed, "{report:?}");
    assert_eq!(after, report.pack_bytes_after);
    // Day 0's image is 24 MiB; days 1-3 rewrote 4 MiB each at 4, 8 and 12
    // MiB. Days 2 and 3 still hold day 1's 4 MiB, and of day 0's only
    // what no day rewrote plus the 4 MiB at 12 that day 3 rewrote after
    // day 2: day 0's 8 MiB at 4 and 8 go.
    assert!(
        report.bytes_freed > 8 * MIB && report.bytes_freed < 8 * MIB + 256 * KIB,
        "{report:?}"
    );
    v.assert_sound();

    // Nothing left to do.
    let again = prune_with(&repo, PruneOptions::default());
    assert_eq!(
        (again.packs_deleted, again.packs_repacked, again.bytes_freed),
        (0, 0, 0)
    );
}

#[test]
fn forgotten_points_stay_restorable_until_the_grace_period_ends() {
    let v = Days::new(3);
    let t0 = now() - 20 * DAY;
    v.forget_days(&[0], t0);
    // Not listed, not `latest`, but restorable by id.
    let repo = &v.repo;
    assert!(!repo
        .list_points()
        .unwrap()
        .iter()
        .any(|(p, _)| *p == v.point(0)));
    assert_eq!(repo.resolve_point("latest").unwrap(), v.point(2));
    let out = v._dir.path().join("day0.out");
    restore_to(repo, &v.point(0).to_hex(), &out);
    assert_same_bytes(&out, &v.points[0].1);
    std::fs::remove_file(&out).unwrap();

    // Thirteen days later the grace period (14 days) still holds it.
    let early = prune_with(
        repo,
        PruneOptions {
            now: Some(t0 + 13 * DAY),
            max_unused_percent: 0.0,
            ..PruneOptions::default()
        },
    );
    assert!(early.points_removed.is_empty());
    assert_eq!(early.points_in_grace, 1);
    assert_eq!(early.bytes_freed, 0, "{early:?}");
    restore_to(repo, &v.point(0).to_hex(), &out);
    assert_same_bytes(&out, &v.points[0].1);
    std::fs::remove_file(&out).unwrap();

    // After it, prune frees it.
    let late = prune_with(
        repo,
        PruneOptions {
            now: Some(t0 + 15 * DAY),
            ..PruneOptions::default()
        },
    );
    assert_eq!(late.points_removed, vec![v.point(0)]);
    assert!(late.bytes_freed > 0);
    let err = repo.resolve_point(&v.point(0).to_hex()).unwrap_err();
    assert_eq!(err.category(), ErrorCategory::NotFound);
    v.assert_sound();
}

#[test]
fn a_stored_grace_period_applies_and_unforget_brings_a_point_back() {
    let v = Days::new(3);
    let mut policy = v.repo.read_policy().unwrap().unwrap_or_default();
    policy.grace_secs = 2 * DAY as u64;
    v.repo.write_policy(&policy).unwrap();
    let t0 = now() - 3 * DAY;
    v.forget_days(&[0, 1], t0);
    unforget(&v.repo, &[v.point(1).to_hex()[..10].to_string()]).unwrap();
    assert!(
        unforget(&v.repo, &[v.point(2).to_hex()]).is_err(),
        "a live point cannot be unforgotten"
    );
    let report = prune_with(&v.repo, PruneOptions::default());
    assert_eq!(report.points_removed, vec![v.point(0)]);
    let listed: Vec<PointId> = v
        .repo
        .list_points()
        .unwrap()
        .iter()
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(listed, vec![v.point(1), v.point(2)]);
    v.assert_sound();
}

#[test]
fn forget_applies_rules_or_the_stored_policy_and_refuses_to_empty_a_group() {
    let v = Days::new(4);
    let rules = RetentionPolicy {
        keep_last: Some(2),
        ..RetentionPolicy::default()
    };
    // Nothing stored, nothing given: refused.
    let e = forget(&v.repo, &ForgetOptions::default()).unwrap_err();
    assert!(e.to_string().contains("policy set"), "{e}");

    let dry = forget(
        &v.repo,
        &ForgetOptions {
            policy: Some(rules.clone()),
            dry_run: true,
            ..ForgetOptions::default()
        },
    )
    .unwrap();
    assert_eq!((dry.forgotten, dry.kept), (2, 2));
    assert_eq!(
        v.repo.list_points().unwrap().len(),
        4,
        "a dry run changes nothing"
    );

    let zero = RetentionPolicy {
        keep_last: Some(0),
        ..RetentionPolicy::default()
    };
    let e = forget(
        &v.repo,
        &ForgetOptions {
            policy: Some(zero),
            ..ForgetOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("--allow-remove-all"), "{e}");
    assert_eq!(v.repo.list_points().unwrap().len(), 4);

    v.repo
        .write_policy(&diskvault::StoredPolicy {
            rules,
            ..Default::default()
        })
        .unwrap();
    let done = forget(&v.repo, &ForgetOptions::default()).unwrap();
    assert_eq!(done.forgotten, 2);
    let kept: Vec<&diskvault::ForgetDecision> = done.decisions.iter().filter(|d| d.keep).collect();
    assert!(kept.iter().all(|d| d.reasons == vec!["last".to_string()]));
    let live: Vec<PointId> = v
        .repo
        .list_points()
        .unwrap()
        .iter()
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(live, vec![v.point(2), v.point(3)]);
    // Forgetting again forgets nothing more.
    assert_eq!(
        forget(&v.repo, &ForgetOptions::default())
            .unwrap()
            .forgotten,
        0
    );
}

/// Two backups of one image at the same instant store its chunks twice;
/// prune keeps one copy of each.
#[test]
fn duplicates_left_by_concurrent_backups_are_reclaimed() {
    let dir = scratch_dir();
    let vault = dir.path().join("vault");
    init_repo(&vault);
    let image = dir.path().join("disk.img");
    write_random_image(&image, 12 * MIB, 9);
    // Slow puts keep both backups' packs in flight together, so both find
    // the chunks missing from the index and store them.
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (vault, image) = (vault.clone(), image.clone());
            std::thread::spawn(move || {
                let slow = Arc::new(
                    FaultyStore::new(Arc::new(LocalStore::new(&vault))).with_fault(Fault::Slow(
                        OpKind::Put,
                        std::time::Duration::from_millis(300),
                    )),
                );
                let repo = Repository::open_in(
                    slow,
                    vault.display().to_string(),
                    Some(PASSPHRASE.as_bytes()),
                )
                .unwrap();
                backup_one(&repo, "root", &image).point
            })
        })
        .collect();
    let points: Vec<PointId> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let before = pack_bytes(&vault);
    assert!(before > 23 * MIB, "both backups stored the image: {before}");

    let repo = open_repo(&vault);
    let report = prune_with(&repo, PruneOptions::default());
    assert!(report.bytes_freed > 11 * MIB, "{report:?}");
    assert!(pack_bytes(&vault) < 13 * MIB);
    let out = dir.path().join("out.img");
    for p in points {
        restore_to(&repo, &p.to_hex(), &out);
        assert_same_bytes(&out, &image);
        std::fs::remove_file(&out).unwrap();
    }
    assert_reads_clean(&repo, "after reclaiming duplicates");
}

#[test]
fn packs_no_index_names_are_deleted() {
    let v = Days::new(1);
    // A backup that died before writing its index file leaves a pack no
    // index names.
    let store = Arc::new(
        FaultyStore::new(Arc::new(LocalStore::new(&v.vault)))
            .with_fault(Fault::FailUnder(OpKind::Put, "index/")),
    );
    let repo = Repository::open_in(
        store,
        v.vault.display().to_string(),
        Some(PASSPHRASE.as_bytes()),
    )
    .unwrap();
    let other = v._dir.path().join("other.img");
    write_random_image(&other, 2 * MIB, 77);
    diskvault::backup(
        &repo,
        &diskvault::BackupOptions {
            disks: vec![diskvault::BackupDisk::file("other", other).unwrap()],
            ..Default::default()
        },
    )
    .unwrap_err();
    let orphan_bytes = pack_bytes(&v.vault);
    let report = prune_with(&v.repo, PruneOptions::default());
    assert_eq!(report.orphan_packs_deleted, 1);
    assert!(report.bytes_freed > 2 * MIB && report.bytes_freed < orphan_bytes);
    v.assert_sound();
}

#[test]
fn dry_runs_change_nothing_and_100_percent_never_repacks() {
    let v = Days::new(3);
    v.forget_days(&[0], now());
    let files_before = files_under(&v.vault);
    let dry = prune_with(
        &v.repo,
        PruneOptions {
            dry_run: true,
            ignore_grace: true,
            max_unused_percent: 0.0,
            ..PruneOptions::default()
        },
    );
    assert!(dry.dry_run && dry.bytes_freed > 0, "{dry:?}");
    let mut files_after = files_under(&v.vault);
    files_after.retain(|f| !f.starts_with("locks"));
    assert_eq!(files_before, files_after, "a dry run writes nothing");

    let lazy = prune_with(
        &v.repo,
        PruneOptions {
            ignore_grace: true,
            max_unused_percent: 100.0,
            ..PruneOptions::default()
        },
    );
    assert_eq!(lazy.packs_repacked, 0);
    assert!(lazy.unused_bytes_after > 0);
    v.assert_sound();
    // With the estimate of the dry run and the real run alike, bytes freed
    // never exceed the packs deleted.
    assert!(lazy.bytes_freed <= dry.pack_bytes_before);
}

#[test]
fn prune_deletes_nothing_when_a_point_cannot_be_accounted_for() {
    let v = Days::new(2);
    v.forget_days(&[0], now());
    // The index file of day 1's chunks is lost: day 1 needs chunks no
    // index lists.
    let index_files = objects(&v.vault, "index/");
    let newest = index_files
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    std::fs::remove_file(newest).unwrap();
    let before = files_under(&v.vault);
    let e = prune(
        &v.repo,
        &PruneOptions {
            ignore_grace: true,
            ..PruneOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Damaged, "{e}");
    assert!(e.to_string().contains("check"), "{e}");
    let mut after = files_under(&v.vault);
    after.retain(|f| !f.starts_with("locks"));
    assert_eq!(before, after, "nothing was deleted");
}

/// The case prune's exclusive phase exists for: a backup that runs after
/// prune planned to free a forgotten point's chunks, and stores the same
/// data again, reuses those chunks. Prune must see its point and keep
/// them.
#[test]
fn a_backup_during_prune_that_reuses_doomed_chunks_keeps_them() {
    let v = Days::new(2);
    v.forget_days(&[0], now());
    // Another backup holds a shared lock, so prune plans, then waits for
    // its exclusive lock; the moment it starts waiting, a backup of day 0's
    // image runs, and the holder lets go.
    let holder = open_repo(&v.vault)
        .lock(diskvault::LockKind::Shared, "backup")
        .unwrap();
    let waiting = Arc::new(std::sync::Barrier::new(2));
    let mut pruner = open_repo(&v.vault);
    let told = waiting.clone();
    pruner.set_lock_options(diskvault::LockOptions {
        wait: std::time::Duration::from_secs(60),
        notify: Some(Arc::new(move |e| {
            if matches!(e, diskvault::LockEvent::Waiting { .. }) {
                told.wait();
            }
        })),
        ..diskvault::LockOptions::default()
    });
    let prune_thread = std::thread::spawn(move || {
        prune(
            &pruner,
            &PruneOptions {
                ignore_grace: true,
                max_unused_percent: 0.0,
                ..PruneOptions::default()
            },
        )
    });
    waiting.wait();
    let again = backup_one(&v.repo, "root", &v.points[0].1);
    assert_eq!(
        again.totals().stored_bytes,
        0,
        "the backup reused day 0's chunks"
    );
    drop(holder);
    let report = prune_thread.join().unwrap().expect("prune");
    assert_eq!(report.points_removed, vec![v.point(0)]);
    assert!(report.packs_kept_for_new_points > 0, "{report:?}");

    let repo = open_repo(&v.vault);
    let out = v._dir.path().join("again.img");
    restore_to(&repo, &again.point.to_hex(), &out);
    assert_same_bytes(&out, &v.points[0].1);
    assert_reads_clean(&repo, "after a prune beside a backup");
}

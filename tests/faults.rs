//! A failing disk under every operation: the repository is opened over a
//! [`FaultyStore`] that fails the Nth read, lookup, write, delete or
//! barrier, returns a short read, reports a full disk or loses the
//! acknowledgement of a write, and N is swept over every operation the
//! command performs. For each case the user must see a clear error (one
//! that names the object or says the disk is full, never a panic), and
//! afterwards — looking with a plain store — the repository must pass
//! `check --read-data`, every point in it must restore byte for byte, and
//! running the command again without the fault must succeed, reusing what
//! the failed run had already stored.

mod common;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use diskvault::store::{Fault, FaultyStore, LocalStore, OpCounts, OpKind, WriteEvent};
use diskvault::{
    backup, check, restore, BackupOptions, BackupReport, CheckOptions, Error, IndexId, InitOptions,
    KdfCost, PackId, PointId, Repository,
};

const NEW_PASSPHRASE: &str = "a new passphrase for the vault";

/// Every fault kind at operation `n` of the kinds it applies to.
fn faults_at(kind: OpKind, n: u64) -> Vec<Fault> {
    match kind {
        OpKind::Read => vec![Fault::Fail(kind, n), Fault::ShortRead(n)],
        OpKind::Put => vec![
            Fault::Fail(kind, n),
            Fault::NoSpace(n),
            Fault::FailAfterPut(n),
        ],
        _ => vec![Fault::Fail(kind, n)],
    }
}

/// Every fault at every operation a run with `counts` performed.
fn sweep(counts: &OpCounts, kinds: &[OpKind]) -> Vec<Fault> {
    let mut out = Vec::new();
    for &kind in kinds {
        for n in 1..=counts.ops(kind) {
            out.extend(faults_at(kind, n));
        }
    }
    out
}

fn faulty(vault: &Path, fault: Option<Fault>) -> Arc<FaultyStore> {
    let store = FaultyStore::new(Arc::new(LocalStore::new(vault)));
    Arc::new(match fault {
        Some(f) => store.with_fault(f),
        None => store,
    })
}

fn open_over(store: &Arc<FaultyStore>, vault: &Path, pass: &str) -> diskvault::Result<Repository> {
    Repository::open_in(
        store.clone(),
        vault.display().to_string(),
        Some(pass.as_bytes()),
    )
}

/// Runs `op`, turning a panic into a test failure that names the case.
fn no_panic<T>(case: &str, op: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(op)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{case}: diskvault panicked: {msg}")
    })
}

/// The error a user sees must say what failed: the object whose
/// operation failed, and that the disk is full when it is.
fn assert_clear_error(case: &str, err: &Error, store: &FaultyStore) {
    let text = err.to_string();
    assert!(!text.contains("panicked"), "{case}: {text}");
    let injected = store.injected();
    let (_, key) = injected
        .first()
        .unwrap_or_else(|| panic!("{case}: failed although no fault fired: {text}"));
    assert!(
        text.contains(key.as_str()),
        "{case}: the error should name '{key}' (the object the fault hit): {text}"
    );
    if store
        .faults()
        .iter()
        .any(|f| matches!(f, Fault::NoSpace(_)))
    {
        assert!(
            text.contains("no space"),
            "{case}: say the disk is full: {text}"
        );
    }
}

fn pack_ids(vault: &Path) -> BTreeSet<String> {
    objects(vault, "packs/")
        .into_iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn backup_opts(image: &Path) -> BackupOptions {
    BackupOptions {
        disks: vec![diskvault::BackupDisk::file("vda", image).unwrap()],
        ..BackupOptions::default()
    }
}

fn read_data() -> CheckOptions {
    CheckOptions {
        read_data: true,
        threads: None,
        ..Default::default()
    }
}

/// Asserts, with a plain store, that the repository passes
/// `check --read-data` and that every point in it restores to one of the
/// known images.
fn assert_sound(case: &str, vault: &Path, images: &[(&Path, &[u8; 32])], scratch: &Path) {
    assert_sound_with(case, vault, PASSPHRASE, images, scratch)
}

fn assert_sound_with(
    case: &str,
    vault: &Path,
    pass: &str,
    images: &[(&Path, &[u8; 32])],
    scratch: &Path,
) {
    let repo = Repository::open(vault, Some(pass.as_bytes()))
        .unwrap_or_else(|e| panic!("{case}: open: {e}"));
    let report = check(&repo, &read_data()).unwrap_or_else(|e| panic!("{case}: check: {e}"));
    assert!(
        report.is_ok(),
        "{case}: check --read-data found {:?}",
        report.problems
    );
    for (id, body) in repo.list_points().unwrap() {
        let hash = body.disks[0].image_hash;
        let (image, _) = images
            .iter()
            .find(|(_, h)| **h == hash)
            .unwrap_or_else(|| panic!("{case}: point {id} records an unknown image"));
        let out = scratch.join(format!("restored-{}.img", id.short()));
        restore_to(&repo, &id.to_hex(), &out);
        assert_same_bytes(&out, image);
        std::fs::remove_file(&out).unwrap();
    }
}

fn b3(path: &Path) -> [u8; 32] {
    *blake3::hash(&std::fs::read(path).unwrap()).as_bytes()
}

/// A vault holding point A of a 1 MiB image, and a second image B that
/// starts with A's bytes and adds `new_bytes` of new data and 1 MiB of
/// zeros.
struct Scene {
    dir: tempfile::TempDir,
    base: PathBuf,
    image_a: PathBuf,
    image_b: PathBuf,
    hash_a: [u8; 32],
    hash_b: [u8; 32],
    point_a: PointId,
    /// Chunk bytes a fault-free backup of B stores.
    full_stored: u64,
    /// What a fault-free backup of B does to the store.
    counts: OpCounts,
}

impl Scene {
    fn new(new_bytes: u64) -> Scene {
        let dir = scratch_dir();
        let base = dir.path().join("base");
        let image_a = dir.path().join("a.img");
        let image_b = dir.path().join("b.img");
        let a = write_random_image(&image_a, MIB, 501);
        let mut b = a.clone();
        b.extend(Xorshift::new(502).bytes(new_bytes as usize));
        b.extend(vec![0u8; MIB as usize]);
        std::fs::write(&image_b, &b).unwrap();
        let point_a = backup_one(&init_repo(&base), "vda", &image_a).point;

        let probe = dir.path().join("probe");
        copy_dir(&base, &probe);
        let store = faulty(&probe, None);
        let repo = open_over(&store, &probe, PASSPHRASE).unwrap();
        let full = backup(&repo, &backup_opts(&image_b)).unwrap();
        let counts = store.counts();
        assert!(
            counts.keys_written_twice().is_empty(),
            "a backup writes each object once: {:?}",
            counts.puts_by_key
        );
        std::fs::remove_dir_all(&probe).unwrap();
        Scene {
            hash_a: b3(&image_a),
            hash_b: b3(&image_b),
            dir,
            base,
            image_a,
            image_b,
            point_a,
            full_stored: full.totals().stored_bytes,
            counts,
        }
    }

    fn images(&self) -> [(&Path, &[u8; 32]); 2] {
        [
            (self.image_a.as_path(), &self.hash_a),
            (self.image_b.as_path(), &self.hash_b),
        ]
    }

    /// A fresh copy of the base vault for one case.
    fn case_vault(&self, n: usize) -> PathBuf {
        let vault = self.dir.path().join(format!("case-{n}"));
        copy_dir(&self.base, &vault);
        vault
    }

    /// Backs up B with `fault`, then checks everything the module promises.
    fn backup_case(&self, n: usize, fault: Fault) {
        let case = format!("backup with {fault:?}");
        let vault = self.case_vault(n);
        let packs_before = pack_ids(&vault);

        let store = faulty(&vault, Some(fault));
        let outcome = no_panic(&case, || {
            let repo = open_over(&store, &vault, PASSPHRASE)?;
            backup(&repo, &backup_opts(&self.image_b))
        });
        match &outcome {
            Err(e) => assert_clear_error(&case, e, &store),
            Ok(_) => assert!(
                !matches!(fault, Fault::Fail(OpKind::Put, _) | Fault::NoSpace(_)),
                "{case}: a backup whose write failed reported success"
            ),
        }
        assert!(
            !store.injected().is_empty(),
            "{case}: the fault never fired"
        );

        assert_sound(&case, &vault, &self.images(), self.dir.path());
        let repo = open_repo(&vault);
        assert!(
            repo.list_point_ids().unwrap().contains(&self.point_a),
            "{case}: the earlier point is gone"
        );

        // The next run, without the fault, stores only what is missing.
        let landed: BTreeSet<String> = pack_ids(&vault)
            .difference(&packs_before)
            .cloned()
            .collect();
        let landed_chunk_bytes: u64 = landed
            .iter()
            .map(|p| {
                let id: PackId = p.parse().unwrap();
                // Each sealed blob once: the chunks of a group share it.
                diskvault::packer::read_pack_table(&repo, &id)
                    .unwrap()
                    .iter()
                    .map(|e| (e.offset, e.length as u64))
                    .collect::<std::collections::BTreeMap<_, _>>()
                    .values()
                    .sum::<u64>()
            })
            .sum();
        let counter = faulty(&vault, None);
        let rerun: BackupReport = open_over(&counter, &vault, PASSPHRASE)
            .and_then(|repo| backup(&repo, &backup_opts(&self.image_b)))
            .unwrap_or_else(|e| panic!("{case}: the backup after the fault failed: {e}"));
        let stored = rerun.totals().stored_bytes;
        let counts = counter.counts();
        let rewritten: Vec<&str> = counts
            .keys_written_under("packs/")
            .into_iter()
            .filter(|k| landed.contains(k.rsplit('/').next().unwrap()))
            .collect();
        assert!(
            rewritten.is_empty(),
            "{case}: the re-run wrote packs that were already there: {rewritten:?}"
        );
        assert!(
            stored + landed_chunk_bytes <= self.full_stored,
            "{case}: the re-run stored {stored} bytes on top of {landed_chunk_bytes} already \
             landed; a whole backup stores {}",
            self.full_stored
        );
        if landed_chunk_bytes > 0 {
            assert!(
                stored < self.full_stored,
                "{case}: {} packs had landed, yet the re-run stored {stored} bytes, as much as a \
                 whole backup",
                landed.len()
            );
        }
        let out = self.dir.path().join(format!("rerun-{n}.img"));
        restore_to(&repo, &rerun.point.to_hex(), &out);
        assert_same_bytes(&out, &self.image_b);
        std::fs::remove_file(&out).unwrap();
        let after = check(&repo, &CheckOptions::default()).unwrap();
        assert!(after.is_ok(), "{case}: {:?}", after.problems);
        assert_eq!(
            after.unindexed_packs, 0,
            "{case}: the re-run indexes every pack"
        );
        std::fs::remove_dir_all(&vault).unwrap();
    }
}

/// Replays the changes a command made, in order, and asserts the write
/// order of spec/FORMAT.md §11: every pack an index file names is durable
/// (a barrier came between) before the index file is written, every index
/// file before the recovery point, and the point before the command
/// returns. Objects present before the command count as durable, except
/// `not_yet_durable` (packs an interrupted writer may not have synced).
fn assert_write_order(
    vault: &Path,
    before: &BTreeSet<String>,
    not_yet_durable: &BTreeSet<String>,
    writes: &[WriteEvent],
) {
    let repo = open_repo(vault);
    let mut durable: BTreeSet<String> = before.difference(not_yet_durable).cloned().collect();
    let mut pending = BTreeSet::new();
    let mut indexes = Vec::new();
    let mut point = None;
    for (n, event) in writes.iter().enumerate() {
        let step = format!("step {n} of {writes:#?}");
        match event {
            WriteEvent::Put(key) if key.starts_with("index/") => {
                let id: IndexId = key["index/".len()..].parse().unwrap();
                for pack in repo.read_index_file(&id).unwrap().packs {
                    let hex = pack.to_hex();
                    let pack_key = format!("packs/{}/{hex}", &hex[..2]);
                    assert!(
                        durable.contains(&pack_key),
                        "{key} names {pack_key} before it is durable: {step}"
                    );
                }
                indexes.push(key.clone());
                pending.insert(key.clone());
            }
            WriteEvent::Put(key) if key.starts_with("points/") => {
                for index in &indexes {
                    assert!(
                        durable.contains(index),
                        "{key} is written before {index} is durable: {step}"
                    );
                }
                point = Some(key.clone());
                pending.insert(key.clone());
            }
            WriteEvent::Put(key) | WriteEvent::EnsureDurable(key) => {
                pending.insert(key.clone());
            }
            WriteEvent::Delete(_) => {}
            WriteEvent::Barrier => durable.append(&mut pending),
        }
    }
    let point = point.expect("the backup wrote a point");
    assert!(
        durable.contains(&point),
        "the backup returned before {point} was durable: {writes:#?}"
    );
}

fn keys_in(vault: &Path) -> BTreeSet<String> {
    files_under(vault)
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|k| !k.starts_with("tmp/"))
        .collect()
}

/// The write order of a backup that also writes an index file midway (its
/// 512-byte chunks fill four packs with about 98 000 chunks; an index file
/// is written every 64 Ki entries) and indexes an orphan pack an
/// interrupted backup left.
#[test]
fn backup_makes_each_stage_durable_before_the_next() {
    let dir = scratch_dir();
    let vault = dir.path().join("vault");
    let (image, small) = (dir.path().join("vda.img"), dir.path().join("vdb.img"));
    write_random_image(&image, 48 * MIB, 511);
    write_random_image(&small, MIB, 512);
    init_repo_with(
        &vault,
        &InitOptions {
            chunker: "fixed:512".parse().unwrap(),
            ..fast_init()
        },
    );
    // The interrupted backup: its index file could not be written.
    let interrupted = faulty(&vault, Some(Fault::FailUnder(OpKind::Put, "index/")));
    backup(
        &open_over(&interrupted, &vault, PASSPHRASE).unwrap(),
        &backup_opts(&small),
    )
    .unwrap_err();
    let before = keys_in(&vault);
    let orphans: BTreeSet<String> = before
        .iter()
        .filter(|k| k.starts_with("packs/"))
        .cloned()
        .collect();
    assert_eq!(orphans.len(), 1);

    let counting = faulty(&vault, None);
    let report = backup(
        &open_over(&counting, &vault, PASSPHRASE).unwrap(),
        &BackupOptions {
            disks: vec![
                diskvault::BackupDisk::file("vda", &image).unwrap(),
                diskvault::BackupDisk::file("vdb", &small).unwrap(),
            ],
            ..BackupOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.recovered_packs, 1);
    let counts = counting.counts();
    assert!(
        counts.keys_written_under("index/").len() >= 2,
        "the backup should write an index file midway: {:?}",
        counts.puts_by_key.keys()
    );
    assert!(counts.keys_written_twice().is_empty(), "{counts:?}");
    assert_write_order(&vault, &before, &orphans, &counts.writes);
    let report = check(&open_repo(&vault), &CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.unindexed_packs, 0);
}

/// A failed write, a full disk and a lost acknowledgement at each write of
/// a backup that fills two packs: the first pack may have landed when the
/// second fails, and is reused.
#[test]
fn backup_survives_every_failed_write() {
    let scene = Scene::new(16 * MIB + 256 * KIB);
    assert!(
        scene.counts.keys_written_under("packs/").len() >= 2,
        "the scene needs a backup of several packs: {:?}",
        scene.counts.puts_by_key
    );
    for (n, fault) in sweep(&scene.counts, &[OpKind::Put]).into_iter().enumerate() {
        scene.backup_case(n, fault);
    }
}

/// Failed and short reads, failed lookups and failed barriers at each
/// point of a backup.
#[test]
fn backup_survives_every_failed_read_lookup_and_barrier() {
    let scene = Scene::new(2 * MIB);
    let faults = sweep(
        &scene.counts,
        &[OpKind::Read, OpKind::Lookup, OpKind::Barrier],
    );
    assert!(faults.len() >= 10, "{:?}", scene.counts);
    for (n, fault) in faults.into_iter().enumerate() {
        scene.backup_case(n, fault);
    }
}

/// A backup that finds packs an interrupted backup left behind reads
/// their tables; faults while doing so must not lose or corrupt anything.
#[test]
fn backup_recovering_orphan_packs_survives_faults() {
    let scene = Scene::new(2 * MIB);
    // Leave an orphan pack: the write of the index file fails.
    let orphaned = scene.dir.path().join("orphaned");
    copy_dir(&scene.base, &orphaned);
    let store = faulty(&orphaned, Some(Fault::FailUnder(OpKind::Put, "index/")));
    let repo = open_over(&store, &orphaned, PASSPHRASE).unwrap();
    backup(&repo, &backup_opts(&scene.image_b)).unwrap_err();
    assert_eq!(
        check(&open_repo(&orphaned), &read_data())
            .unwrap()
            .unindexed_packs,
        1
    );

    let dry = scene.dir.path().join("dry");
    copy_dir(&orphaned, &dry);
    let counting = faulty(&dry, None);
    let report = backup(
        &open_over(&counting, &dry, PASSPHRASE).unwrap(),
        &backup_opts(&scene.image_b),
    )
    .unwrap();
    assert_eq!(report.recovered_packs, 1);
    assert_eq!(report.totals().stored_bytes, 0);
    std::fs::remove_dir_all(&dry).unwrap();
    let counts = counting.counts();
    let base = Scene {
        base: orphaned,
        ..scene
    };
    for (n, fault) in sweep(&counts, &[OpKind::Read, OpKind::Lookup])
        .into_iter()
        .enumerate()
    {
        base.backup_case(n, fault);
    }
}

/// Restore over a failing store: every read and lookup fails once, or
/// comes back short. The restore fails naming the object and leaves no
/// output, or — never with wrong bytes — succeeds.
#[test]
fn restore_survives_every_failed_and_short_read() {
    let scene = Scene::new(MIB);
    let vault = &scene.base;
    let out = scene.dir.path().join("restored.img");
    let counting = faulty(vault, None);
    restore(
        &open_over(&counting, vault, PASSPHRASE).unwrap(),
        &restore_opts(&scene.point_a.to_hex(), &out),
    )
    .unwrap();
    assert_same_bytes(&out, &scene.image_a);
    std::fs::remove_file(&out).unwrap();
    let counts = counting.counts();
    assert!(counts.ops(OpKind::Read) >= 5, "{counts:?}");

    for fault in sweep(&counts, &[OpKind::Read, OpKind::Lookup]) {
        let case = format!("restore with {fault:?}");
        let store = faulty(vault, Some(fault));
        let outcome = no_panic(&case, || {
            let repo = open_over(&store, vault, PASSPHRASE)?;
            restore(&repo, &restore_opts(&scene.point_a.to_hex(), &out))
        });
        match outcome {
            Ok(_) => {
                assert_same_bytes(&out, &scene.image_a);
                std::fs::remove_file(&out).unwrap();
            }
            Err(e) => {
                assert_clear_error(&case, &e, &store);
                assert!(!out.exists(), "{case}: a failed restore left its output");
                let partial = out.with_file_name("restored.img.partial");
                assert!(!partial.exists(), "{case}: left {}", partial.display());
            }
        }
        assert_eq!(
            store.counts().without("locks/").puts_by_key.len(),
            0,
            "{case}: restore wrote more than its lock"
        );
    }
    // Nothing was harmed: the next restore succeeds.
    restore_to(&open_repo(vault), &scene.point_a.to_hex(), &out);
    assert_same_bytes(&out, &scene.image_a);
}

/// Check over a failing store either fails naming the object or reports
/// a problem naming it; it never passes silently over a read it could not
/// do, and writes nothing.
#[test]
fn check_survives_every_failed_and_short_read() {
    let scene = Scene::new(MIB);
    let vault = &scene.base;
    for opts in [CheckOptions::default(), read_data()] {
        let counting = faulty(vault, None);
        let clean = check(&open_over(&counting, vault, PASSPHRASE).unwrap(), &opts).unwrap();
        assert!(clean.is_ok(), "{:?}", clean.problems);
        for fault in sweep(&counting.counts(), &[OpKind::Read, OpKind::Lookup]) {
            let case = format!("check (read_data: {}) with {fault:?}", opts.read_data);
            let store = faulty(vault, Some(fault));
            let outcome = no_panic(&case, || {
                let repo = open_over(&store, vault, PASSPHRASE)?;
                check(&repo, &opts)
            });
            let (_, key) = store.injected().first().cloned().unwrap_or_else(|| {
                panic!("{case}: the fault never fired");
            });
            match outcome {
                Err(e) => assert_clear_error(&case, &e, &store),
                // Its own lock, read back while taking it: a bad read of it
                // changes nothing check relies on.
                Ok(_) if key.starts_with("locks/") => {}
                Ok(report) => {
                    let named = report
                        .problems
                        .iter()
                        .any(|p| p.object.contains(&key) || p.reason.contains(&key));
                    // A short read of a whole pack is caught by its hash;
                    // a short read of a chunk by its tag. Only a fault that
                    // hit nothing check relies on may go unreported.
                    assert!(
                        named,
                        "{case}: check passed over a failed read of '{key}': {:?}",
                        report.problems
                    );
                }
            }
            assert_eq!(
                store.counts().without("locks/").puts_by_key.len(),
                0,
                "{case}: check wrote more than its lock"
            );
        }
    }
}

/// `key add` and `key passwd` over a failing store: whatever fails, the
/// vault opens with the old passphrase or the new one, never with neither.
#[test]
fn key_changes_survive_every_fault() {
    let scene = Scene::new(MIB);
    for passwd in [false, true] {
        let what = if passwd { "key passwd" } else { "key add" };
        let change = |store: &Arc<FaultyStore>, vault: &Path| -> diskvault::Result<()> {
            let mut repo = open_over(store, vault, PASSPHRASE)?;
            if passwd {
                repo.change_passphrase(NEW_PASSPHRASE.as_bytes(), KdfCost::insecure_fast())?;
            } else {
                repo.add_key(NEW_PASSPHRASE.as_bytes(), KdfCost::insecure_fast())?;
            }
            Ok(())
        };
        let probe = scene.case_vault(0);
        let old_key = keys_in(&probe)
            .into_iter()
            .find(|k| k.starts_with("keys/"))
            .unwrap();
        let counting = faulty(&probe, None);
        change(&counting, &probe).unwrap();
        // The new key is durable before the old one goes.
        let new_key = keys_in(&probe)
            .into_iter()
            .find(|k| k.starts_with("keys/") && *k != old_key)
            .unwrap();
        let mut expected = vec![WriteEvent::Put(new_key), WriteEvent::Barrier];
        if passwd {
            expected.extend([WriteEvent::Delete(old_key), WriteEvent::Barrier]);
        }
        assert_eq!(
            counting.counts().without("locks/").writes,
            expected,
            "{what}"
        );
        std::fs::remove_dir_all(&probe).unwrap();

        for (n, fault) in sweep(&counting.counts(), &OpKind::ALL)
            .into_iter()
            .enumerate()
        {
            let case = format!("{what} with {fault:?}");
            let vault = scene.case_vault(n + 1);
            let store = faulty(&vault, Some(fault));
            let outcome = no_panic(&case, || change(&store, &vault));
            if let Err(e) = &outcome {
                assert_clear_error(&case, e, &store);
            }
            let old = Repository::open(&vault, Some(PASSPHRASE.as_bytes()));
            let new = Repository::open(&vault, Some(NEW_PASSPHRASE.as_bytes()));
            assert!(
                old.is_ok() || new.is_ok(),
                "{case}: the vault opens with neither passphrase: {:?} / {:?}",
                old.err(),
                new.err()
            );
            if !passwd || outcome.is_err() {
                // Adding never removes; a failed change keeps the old key
                // unless the new one is in place.
                assert!(
                    old.is_ok() || (passwd && new.is_ok()),
                    "{case}: the old passphrase no longer opens the vault: {:?}",
                    old.err()
                );
            }
            if outcome.is_ok() {
                assert!(
                    new.is_ok(),
                    "{case}: the new passphrase does not open the vault"
                );
            }
            // The next run succeeds, and the data is intact.
            let pass = if old.is_ok() {
                PASSPHRASE
            } else {
                NEW_PASSPHRASE
            };
            drop((old, new));
            let mut again = open_over(&faulty(&vault, None), &vault, pass).unwrap();
            let result = if passwd {
                again.change_passphrase(b"third passphrase", KdfCost::insecure_fast())
            } else {
                again.add_key(b"third passphrase", KdfCost::insecure_fast())
            };
            result.unwrap_or_else(|e| panic!("{case}: the next {what} failed: {e}"));
            assert_sound_with(
                &case,
                &vault,
                "third passphrase",
                &[(scene.image_a.as_path(), &scene.hash_a)],
                scene.dir.path(),
            );
            std::fs::remove_dir_all(&vault).unwrap();
        }
    }
}

/// `init` over a failing store: the directory is afterwards either no
/// repository at all, or a whole one that opens with the passphrase; and
/// `init` run again succeeds.
#[test]
fn init_survives_every_fault() {
    let dir = scratch_dir();
    let opts = InitOptions {
        kdf: KdfCost::insecure_fast(),
        ..InitOptions::default()
    };
    let init_over = |store: &Arc<FaultyStore>, vault: &Path| {
        Repository::init_in(
            store.clone(),
            vault.display().to_string(),
            Some(PASSPHRASE.as_bytes()),
            &opts,
        )
    };
    let probe = dir.path().join("probe");
    let counting = faulty(&probe, None);
    init_over(&counting, &probe).unwrap();
    // The key file is durable before the config that makes the repository.
    let key = only_object(&probe, "keys/");
    let key = format!("keys/{}", key.file_name().unwrap().to_string_lossy());
    assert_eq!(
        counting.counts().writes,
        vec![
            WriteEvent::Put(key),
            WriteEvent::Barrier,
            WriteEvent::Put("config".into()),
            WriteEvent::Barrier,
        ]
    );

    for (n, fault) in sweep(&counting.counts(), &OpKind::ALL)
        .into_iter()
        .enumerate()
    {
        let case = format!("init with {fault:?}");
        let vault = dir.path().join(format!("vault-{n}"));
        let store = faulty(&vault, Some(fault));
        let outcome = no_panic(&case, || init_over(&store, &vault));
        match &outcome {
            Err(e) => assert_clear_error(&case, e, &store),
            Ok(_) => assert!(
                !matches!(fault, Fault::Fail(OpKind::Put, _) | Fault::NoSpace(_)),
                "{case}: an init whose write failed reported success"
            ),
        }
        match Repository::open(&vault, Some(PASSPHRASE.as_bytes())) {
            Ok(_) => {}
            Err(Error::NotARepository(_)) => {
                // Half an init is no repository, and init may run again.
                Repository::init(&vault, Some(PASSPHRASE.as_bytes()), &opts)
                    .unwrap_or_else(|e| panic!("{case}: init after the fault failed: {e}"));
                Repository::open(&vault, Some(PASSPHRASE.as_bytes())).unwrap();
            }
            Err(e) => panic!("{case}: after a failed init, opening says: {e}"),
        }
    }
}

/// Packs go up several at once (on an object store each put waits for the
/// network), never more than the request limit, and the write order still
/// holds: an index file only after every pack it names returned and a
/// barrier made them durable.
#[test]
fn backup_stores_packs_several_at_once_in_order() {
    let dir = scratch_dir();
    let vault = dir.path().join("vault");
    let image = dir.path().join("vda.img");
    write_random_image(&image, 80 * MIB, 77);
    init_repo_with(&vault, &fast_init());
    let before = keys_in(&vault);
    // Every put waits as a network round trip would.
    let slow = Arc::new(
        FaultyStore::new(Arc::new(LocalStore::new(&vault))).with_fault(Fault::Slow(
            OpKind::Put,
            std::time::Duration::from_millis(40),
        )),
    );
    backup(
        &open_over(&slow, &vault, PASSPHRASE).unwrap(),
        &backup_opts(&image),
    )
    .unwrap();
    let counts = slow.counts();
    let packs = counts.keys_written_under("packs/").len();
    assert!(packs >= 4, "{packs} packs");
    assert!(
        counts.puts_in_flight_peak >= 2,
        "packs were stored one at a time ({} at most)",
        counts.puts_in_flight_peak
    );
    assert!(counts.puts_in_flight_peak <= diskvault::exec::requests_in_flight());
    assert_write_order(&vault, &before, &BTreeSet::new(), &counts.writes);
    let restored = dir.path().join("restored.img");
    restore_to(&open_repo(&vault), "latest", &restored);
    assert_eq!(b3(&restored), b3(&image));
}

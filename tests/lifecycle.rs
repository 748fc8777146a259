//! The vault's life over time with commands overlapping, as a backup
//! product runs them: nightly backups, a retention policy, prune and check,
//! all at once, many times, with varied timing. Nothing may be lost: every
//! point that was not forgotten restores byte for byte, and `check
//! --read-data` passes after every round.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use diskvault::retention::RetentionPolicy;
use diskvault::store::{Fault, FaultyStore, LocalStore, OpKind, Store};
use diskvault::{
    backup, forget, prune, BackupOptions, ForgetOptions, LockOptions, PointId, PruneOptions,
    Repository,
};

/// Opens the vault on its own handle (as another process would), with
/// every store operation of `kind` slowed by `delay` to shift the timing,
/// and a lock wait long enough that commands queue instead of failing.
fn handle(vault: &PathBuf, kind: OpKind, delay: Duration) -> Repository {
    let store: Arc<dyn Store> = Arc::new(
        FaultyStore::new(Arc::new(LocalStore::new(vault))).with_fault(Fault::Slow(kind, delay)),
    );
    let mut repo = Repository::open_in(
        store,
        vault.display().to_string(),
        Some(PASSPHRASE.as_bytes()),
    )
    .unwrap();
    repo.set_lock_options(LockOptions {
        wait: Duration::from_secs(120),
        ..LockOptions::default()
    });
    repo
}

#[test]
fn backup_forget_prune_and_check_at_once_lose_nothing() {
    let dir = scratch_dir();
    let vault = dir.path().join("vault");
    init_repo(&vault);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut rng = Xorshift::new(seed);
    // The images each point was taken from, by point.
    let images: Arc<Mutex<HashMap<PointId, PathBuf>>> = Arc::new(Mutex::new(HashMap::new()));
    let base = dir.path().join("base.img");
    write_random_image(&base, 6 * MIB, 1);

    const ROUNDS: usize = 12;
    for round in 0..ROUNDS {
        // This round's image: the base with 1 MiB rewritten somewhere,
        // with one of a few contents, so that a backup often stores again
        // what a forgotten point held: the chunks prune is about to free.
        let image = dir.path().join(format!("round-{round}.img"));
        std::fs::copy(&base, &image).unwrap();
        write_at(
            &image,
            rng.below(5) * MIB,
            &Xorshift::new(seed ^ rng.below(3)).bytes(MIB as usize),
        );
        let kinds = [OpKind::Put, OpKind::Read, OpKind::Lookup, OpKind::Delete];
        let pick = |rng: &mut Xorshift| {
            (
                kinds[rng.below(4) as usize],
                Duration::from_millis(rng.below(25)),
                Duration::from_millis(rng.below(150)),
            )
        };
        let (b_kind, b_delay, b_start) = pick(&mut rng);
        let (p_kind, p_delay, p_start) = pick(&mut rng);
        let (c_kind, c_delay, c_start) = pick(&mut rng);

        let backup_thread = {
            let (vault, image, images) = (vault.clone(), image.clone(), images.clone());
            std::thread::spawn(move || {
                std::thread::sleep(b_start);
                let repo = handle(&vault, b_kind, b_delay);
                let r = backup(
                    &repo,
                    &BackupOptions {
                        disks: vec![diskvault::BackupDisk::file("root", &image).unwrap()],
                        ..BackupOptions::default()
                    },
                )
                .unwrap_or_else(|e| panic!("round {round}: backup: {e}"));
                images.lock().unwrap().insert(r.point, image);
            })
        };
        let prune_thread = {
            let vault = vault.clone();
            std::thread::spawn(move || {
                std::thread::sleep(p_start);
                let repo = handle(&vault, p_kind, p_delay);
                forget(
                    &repo,
                    &ForgetOptions {
                        policy: Some(RetentionPolicy {
                            keep_last: Some(3),
                            ..RetentionPolicy::default()
                        }),
                        ..ForgetOptions::default()
                    },
                )
                .unwrap_or_else(|e| panic!("round {round}: forget: {e}"));
                prune(
                    &repo,
                    &PruneOptions {
                        ignore_grace: true,
                        max_unused_percent: 0.0,
                        ..PruneOptions::default()
                    },
                )
                .unwrap_or_else(|e| panic!("round {round}: prune: {e}"))
            })
        };
        let check_thread = {
            let vault = vault.clone();
            std::thread::spawn(move || {
                std::thread::sleep(c_start);
                let repo = handle(&vault, c_kind, c_delay);
                assert_reads_clean(
                    &repo,
                    &format!("round {round}: check beside backup and prune"),
                );
            })
        };
        backup_thread.join().unwrap();
        let pruned = prune_thread.join().unwrap();
        check_thread.join().unwrap();

        // Every point still in the vault restores to its image; the
        // forgotten ones that prune removed are gone from the map.
        let repo = open_repo(&vault);
        let listed = repo.list_all_points().unwrap();
        let mut images = images.lock().unwrap();
        images.retain(|p, _| listed.iter().any(|(id, _)| id == p));
        assert_eq!(
            images.len(),
            listed.len(),
            "round {round}: a point nobody made"
        );
        let out = dir.path().join("out.img");
        for (point, image) in images.iter() {
            diskvault::restore(&repo, &restore_opts(&point.to_hex(), &out))
                .unwrap_or_else(|e| panic!("round {round} ({pruned:?}): restore {point:?}: {e}"));
            assert_same_bytes(&out, image);
            std::fs::remove_file(&out).unwrap();
        }
        assert_reads_clean(&repo, &format!("round {round}"));
        assert!(
            repo.list_points().unwrap().len() <= 4,
            "retention keeps the vault small"
        );
        assert!(
            objects(&vault, "locks/").is_empty(),
            "round {round}: a lock was left behind"
        );
    }
}

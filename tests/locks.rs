//! Locks and create races: who holds a lock is named, stale locks are
//! recognised and removed, `--wait` waits, a read-only vault is still
//! readable, and concurrent `init`s, replica creations and key removals
//! each have exactly one winner. Races are made certain with slow store
//! operations, not left to luck.

mod common;

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use diskvault::format::lock::{LockMode, LockRecord, LOCK_VERSION};
use diskvault::repo::lock::{list_locks, remove_locks};
use diskvault::store::{Fault, FaultyStore, LocalStore, MemoryStore, OpKind, PutMode, Store};
use diskvault::{
    backup, restore, sync, Error, ErrorCategory, KdfCost, LockKind, LockOptions, RepoLocation,
    Repository, SyncOptions,
};

const EXIT_LOCKED: i32 = 8;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Writes a lock object as another command would have, last written at
/// its refresh time (a stale lock is neither refreshed nor touched).
fn plant_lock(vault: &Path, id: &str, record: &LockRecord) {
    LocalStore::new(vault)
        .put(&format!("locks/{id}"), &record.encode(), PutMode::Create)
        .unwrap();
    let at = std::time::UNIX_EPOCH + Duration::from_secs(record.refreshed as u64);
    std::fs::File::options()
        .write(true)
        .open(vault.join("locks").join(id))
        .unwrap()
        .set_modified(at)
        .unwrap();
}

fn record(mode: LockMode, host: &str, pid: u32, refreshed: i64) -> LockRecord {
    LockRecord {
        version: LOCK_VERSION,
        mode,
        command: "prune".into(),
        host: host.into(),
        user: "alice".into(),
        pid,
        process_start: 0,
        boot_id: String::new(),
        created: refreshed,
        refreshed,
    }
}

/// A pid that no process has: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn this_machine(pid: u32) -> LockRecord {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let host = {
        let out = std::process::Command::new("hostname").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    LockRecord {
        boot_id: boot.trim().into(),
        ..record(LockMode::Exclusive, &host, pid, now())
    }
}

fn vault_with_point(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let vault = dir.join("vault");
    let repo = init_repo(&vault);
    let image = dir.join("disk.img");
    write_random_image(&image, MIB, 3);
    backup_one(&repo, "root", &image);
    (vault, image)
}

#[test]
fn a_held_lock_names_its_holder_and_blocks_what_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, image) = vault_with_point(dir.path());
    // A prune on another machine, refreshed a minute ago.
    plant_lock(
        &vault,
        "feedc0de",
        &record(LockMode::Exclusive, "backup-server-7", 4242, now() - 60),
    );
    let run = Cli::new().run(&[
        "backup".as_ref(),
        vault.as_os_str(),
        image.as_os_str(),
        "--disk".as_ref(),
        "root".as_ref(),
    ]);
    run.expect_code(EXIT_LOCKED, "backup beside an exclusive lock")
        .expect_mentions("'prune'", "names the command")
        .expect_mentions("pid 4242 on backup-server-7", "names the holder")
        .expect_mentions("user alice", "names the user")
        .expect_mentions("--wait", "says how to wait")
        .expect_mentions("diskvault unlock", "says how to clear a stale one");
    // It is not stale, so unlock keeps it; --all removes it, with a warning.
    Cli::without_password()
        .run(&["unlock".as_ref(), vault.as_os_str()])
        .expect_ok("unlock")
        .expect_mentions("no stale locks", "unlock")
        .expect_mentions("still held: exclusive lock of 'prune'", "unlock");
    Cli::without_password()
        .run(&["unlock".as_ref(), vault.as_os_str(), "--all".as_ref()])
        .expect_ok("unlock --all")
        .expect_mentions("warning", "unlock --all warns");
    assert!(objects(&vault, "locks/").is_empty());
    Cli::new()
        .run(&[
            "backup".as_ref(),
            vault.as_os_str(),
            image.as_os_str(),
            "--disk".as_ref(),
            "root".as_ref(),
        ])
        .expect_ok("backup once the lock is gone");
    assert!(
        objects(&vault, "locks/").is_empty(),
        "the backup released its lock"
    );
}

#[test]
fn shared_locks_coexist_and_exclusive_ones_exclude() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let opts = LockOptions::default();
    let a = RepoLocation::new(store.clone(), "mem")
        .lock(LockKind::Shared, "backup", &opts)
        .unwrap();
    let b = RepoLocation::new(store.clone(), "mem")
        .lock(LockKind::Shared, "check", &opts)
        .unwrap();
    let e = RepoLocation::new(store.clone(), "mem")
        .lock(LockKind::Exclusive, "prune", &opts)
        .unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Locked);
    assert!(
        e.to_string().contains("'backup'") && e.to_string().contains("'check'"),
        "{e}"
    );
    drop((a, b));
    let x = RepoLocation::new(store.clone(), "mem")
        .lock(LockKind::Exclusive, "prune", &opts)
        .unwrap();
    let e = RepoLocation::new(store.clone(), "mem")
        .lock(LockKind::Shared, "backup", &opts)
        .unwrap_err();
    assert!(e.to_string().contains("exclusive lock of 'prune'"), "{e}");
    drop(x);
    assert!(
        store.list("locks/").unwrap().is_empty(),
        "released locks are gone"
    );
}

#[test]
fn stale_locks_are_ignored_and_unlock_removes_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, image) = vault_with_point(dir.path());
    // On this machine, by a process that is gone.
    plant_lock(&vault, "aaaa", &this_machine(dead_pid()));
    // On another machine, not refreshed for two hours.
    plant_lock(
        &vault,
        "bbbb",
        &record(LockMode::Exclusive, "elsewhere", 77, now() - 7200),
    );
    // Unreadable, and old.
    let junk = vault.join("locks/cccc");
    std::fs::write(&junk, b"\x00garbage").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&junk)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // A live one on another machine.
    plant_lock(
        &vault,
        "dddd",
        &record(LockMode::Shared, "elsewhere", 78, now()),
    );

    let locks = list_locks(&LocalStore::new(&vault), &LockOptions::default()).unwrap();
    let stale: Vec<(&str, bool)> = locks
        .iter()
        .map(|l| (l.id.as_str(), l.stale.is_some()))
        .collect();
    let mut stale = stale;
    stale.sort();
    assert_eq!(
        stale,
        vec![
            ("aaaa", true),
            ("bbbb", true),
            ("cccc", true),
            ("dddd", false)
        ]
    );
    let why = |id: &str| {
        locks
            .iter()
            .find(|l| l.id == id)
            .unwrap()
            .stale
            .clone()
            .unwrap()
    };
    assert!(why("aaaa").contains("is gone"), "{}", why("aaaa"));
    assert!(
        why("bbbb").contains("not refreshed for 2h"),
        "{}",
        why("bbbb")
    );

    // Stale exclusive locks do not block; the live shared one does not
    // block a backup either.
    let repo = open_repo(&vault);
    backup_one(&repo, "root", &image);

    let removed = remove_locks(&LocalStore::new(&vault), false, &LockOptions::default()).unwrap();
    assert_eq!(removed.len(), 3);
    let left: Vec<String> = objects(&vault, "locks/")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["dddd".to_string()]);
}

#[test]
fn wait_waits_for_the_holder_to_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, image) = vault_with_point(dir.path());
    let holder = open_repo(&vault)
        .lock(LockKind::Exclusive, "prune")
        .unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(holder);
    });
    let args = [
        "backup".as_ref(),
        vault.as_os_str(),
        image.as_os_str(),
        "--disk".as_ref(),
        "root".as_ref(),
        "--wait".as_ref(),
        "30s".as_ref(),
    ];
    let run = Cli::new().run(&args);
    run.expect_ok("backup --wait")
        .expect_mentions("waiting for the repository lock", "says it waits");
    release.join().unwrap();
}

#[test]
fn a_read_only_vault_is_read_without_a_lock_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, image) = vault_with_point(dir.path());
    let ro: Arc<dyn Store> =
        Arc::new(FaultyStore::new(Arc::new(LocalStore::new(&vault))).with_fault(Fault::ReadOnly));
    let notes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut repo =
        Repository::open_in(ro, vault.display().to_string(), Some(PASSPHRASE.as_bytes())).unwrap();
    let seen = notes.clone();
    repo.set_lock_options(LockOptions {
        notify: Some(Arc::new(move |e| {
            seen.lock().unwrap().push(format!("{e:?}"))
        })),
        ..LockOptions::default()
    });
    let out = dir.path().join("out.img");
    restore(&repo, &restore_opts("latest", &out)).expect("restore from a read-only vault");
    assert_same_bytes(&out, &image);
    assert!(
        diskvault::check(&repo, &Default::default())
            .unwrap()
            .is_ok(),
        "check of a read-only vault"
    );
    assert!(
        notes
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.contains("without a lock")),
        "{:?}",
        notes.lock().unwrap()
    );
    let e = backup(
        &repo,
        &diskvault::BackupOptions {
            disks: vec![diskvault::BackupDisk::file("root", &image).unwrap()],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
}

/// A backup whose lock is removed while it runs (`unlock --all` from
/// another shell) stops before writing its point: a prune may have run.
#[test]
fn a_command_that_loses_its_lock_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = vault_with_point(dir.path());
    let image = dir.path().join("big.img");
    write_random_image(&image, 8 * MIB, 5);
    let slow: Arc<dyn Store> = Arc::new(
        FaultyStore::new(Arc::new(LocalStore::new(&vault)))
            .with_fault(Fault::Slow(OpKind::Put, Duration::from_millis(400))),
    );
    let mut repo = Repository::open_in(
        slow,
        vault.display().to_string(),
        Some(PASSPHRASE.as_bytes()),
    )
    .unwrap();
    repo.set_lock_options(LockOptions {
        refresh_every: Duration::from_millis(100),
        ..LockOptions::default()
    });
    let points_before = objects(&vault, "points/").len();
    let remover = {
        let vault = vault.clone();
        std::thread::spawn(move || {
            // Once the backup's lock is there, remove every lock.
            for _ in 0..200 {
                if !objects(&vault, "locks/").is_empty() {
                    std::thread::sleep(Duration::from_millis(150));
                    remove_locks(&LocalStore::new(&vault), true, &LockOptions::default()).unwrap();
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let e = backup(
        &repo,
        &diskvault::BackupOptions {
            disks: vec![diskvault::BackupDisk::file("big", image).unwrap()],
            ..Default::default()
        },
    )
    .unwrap_err();
    remover.join().unwrap();
    assert!(matches!(e, Error::LockLost { .. }), "{e}");
    assert_eq!(objects(&vault, "points/").len(), points_before);
    assert!(diskvault::check(&open_repo(&vault), &Default::default())
        .unwrap()
        .is_ok());
}

/// Runs `f` on `n` threads released at the same instant.
fn race<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let start = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (start, f) = (start.clone(), f.clone());
            std::thread::spawn(move || {
                start.wait();
                f(i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn slow_puts(store: Arc<dyn Store>) -> Arc<dyn Store> {
    Arc::new(
        FaultyStore::new(store).with_fault(Fault::Slow(OpKind::Put, Duration::from_millis(200))),
    )
}

#[test]
fn of_two_inits_of_one_vault_exactly_one_wins() {
    for round in 0..3 {
        let shared: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let results = race(2, {
            let shared = shared.clone();
            move |i| {
                // Both find no config before either writes one: their key
                // files take 200 ms to land.
                Repository::init_in(
                    slow_puts(shared.clone()),
                    "mem".into(),
                    Some(format!("passphrase {i}").as_bytes()),
                    &fast_init(),
                )
                .map(|r| r.config().id.clone())
            }
        });
        let winners: Vec<usize> = (0..2).filter(|i| results[*i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = 1 - winners[0];
        assert!(
            matches!(results[loser], Err(Error::AlreadyExists(_))),
            "{:?}",
            results[loser]
        );
        // The vault opens with the winner's passphrase, has the winner's id,
        // and keeps only the winner's key file.
        let opened = Repository::open_in(
            shared.clone(),
            "mem".into(),
            Some(format!("passphrase {}", winners[0]).as_bytes()),
        )
        .unwrap();
        assert_eq!(&opened.config().id, results[winners[0]].as_ref().unwrap());
        assert_eq!(opened.list_keys().unwrap().len(), 1);
        assert!(Repository::open_in(
            shared.clone(),
            "mem".into(),
            Some(format!("passphrase {loser}").as_bytes())
        )
        .is_err());
    }
}

#[test]
fn two_inits_of_one_path_from_the_command_line_never_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let vault = dir.path().join(format!("vault-{round}"));
        let runs = race(2, {
            let vault = vault.clone();
            move |i| {
                Cli::with_password(&format!("pass {i}")).run(&["init".as_ref(), vault.as_os_str()])
            }
        });
        let ok = runs.iter().filter(|r| r.code == 0).count();
        assert_eq!(
            ok,
            1,
            "round {round}: {:?}",
            runs.iter().map(|r| r.text()).collect::<Vec<_>>()
        );
        let winner = runs.iter().position(|r| r.code == 0).unwrap();
        let loser = &runs[1 - winner];
        assert_eq!(loser.code, 7, "{}", loser.text());
        let keys = Cli::with_password(&format!("pass {winner}")).run(&[
            "key".as_ref(),
            "list".as_ref(),
            vault.as_os_str(),
        ]);
        keys.expect_ok("the vault opens");
        assert_eq!(
            keys.stdout
                .lines()
                .filter(|l| l.starts_with('*') || l.starts_with(' '))
                .count(),
            1,
            "only the winner's key file: {}",
            keys.stdout
        );
    }
}

#[test]
fn of_two_syncs_creating_one_replica_from_different_vaults_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let sources: Vec<std::path::PathBuf> = (0..2)
        .map(|i| {
            let v = dir.path().join(format!("source-{i}"));
            let repo = init_repo(&v);
            let image = dir.path().join(format!("img-{i}"));
            write_random_image(&image, MIB, 40 + i as u64);
            backup_one(&repo, "root", &image);
            v
        })
        .collect();
    let replica: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let results = race(2, {
        let (sources, replica) = (sources.clone(), replica.clone());
        move |i| {
            sync(
                &RepoLocation::local(&sources[i]),
                &RepoLocation::new(slow_puts(replica.clone()), "replica"),
                &SyncOptions::default(),
            )
        }
    });
    let winners: Vec<usize> = (0..2).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let loser = &results[1 - winners[0]];
    assert!(
        matches!(
            loser,
            Err(Error::IncompatibleRepositories { .. }) | Err(Error::AlreadyExists(_))
        ),
        "{loser:?}"
    );
    // The replica is a copy of the winner alone: it opens, holds the
    // winner's point, and only the winner's key file.
    let r = Repository::open_in(
        replica.clone(),
        "replica".into(),
        Some(PASSPHRASE.as_bytes()),
    )
    .unwrap();
    let winner = open_repo(&sources[winners[0]]);
    assert_eq!(r.config().id, winner.config().id);
    assert_eq!(
        r.list_point_ids().unwrap(),
        winner.list_point_ids().unwrap()
    );
    assert_eq!(r.list_keys().unwrap().len(), 1);
    assert!(diskvault::check(&r, &Default::default()).unwrap().is_ok());
}

#[test]
fn two_syncs_creating_one_replica_of_the_same_vault_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = vault_with_point(dir.path());
    let replica: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let results = race(2, {
        let (vault, replica) = (vault.clone(), replica.clone());
        move |_| {
            sync(
                &RepoLocation::local(&vault),
                &RepoLocation::new(slow_puts(replica.clone()), "replica"),
                &SyncOptions::default(),
            )
        }
    });
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let r = Repository::open_in(replica, "replica".into(), Some(PASSPHRASE.as_bytes())).unwrap();
    assert_eq!(r.list_points().unwrap().len(), 1);
    assert!(diskvault::check(&r, &Default::default()).unwrap().is_ok());
}

/// The original bug: `key remove A` and `key remove B` at once removed
/// both, and the vault could never be opened again.
#[test]
fn of_two_key_removals_at_once_exactly_one_wins() {
    for round in 0..3 {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let repo =
            Repository::init_in(store.clone(), "mem".into(), Some(b"first"), &fast_init()).unwrap();
        let second = repo.add_key(b"second", KdfCost::insecure_fast()).unwrap();
        let first = repo
            .list_keys()
            .unwrap()
            .into_iter()
            .find(|k| k.current)
            .unwrap()
            .id;
        // Each removes the other's key, opened with its own.
        let results = race(2, {
            let store = store.clone();
            move |i| {
                let (pass, victim) = if i == 0 {
                    ("first", second)
                } else {
                    ("second", first)
                };
                let mut r = Repository::open_in(
                    slow_puts(store.clone()),
                    "mem".into(),
                    Some(pass.as_bytes()),
                )
                .unwrap();
                r.set_lock_options(LockOptions {
                    wait: Duration::from_secs(20),
                    ..LockOptions::default()
                });
                r.remove_key(&victim.to_hex())
            }
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {results:?}");
        let keys = Repository::open_in(store.clone(), "mem".into(), Some(b"first"))
            .or_else(|_| Repository::open_in(store.clone(), "mem".into(), Some(b"second")))
            .expect("the vault still opens")
            .list_keys()
            .unwrap();
        assert_eq!(keys.len(), 1);
    }
}

#[test]
fn a_second_prune_is_refused_while_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = vault_with_point(dir.path());
    let running = open_repo(&vault).lock(LockKind::Shared, "prune").unwrap();
    let e = diskvault::prune(&open_repo(&vault), &Default::default()).unwrap_err();
    assert_eq!(e.category(), ErrorCategory::Locked);
    assert!(e.to_string().contains("second 'prune'"), "{e}");
    drop(running);
    diskvault::prune(&open_repo(&vault), &Default::default()).expect("once the first is done");
}

/// Planted objects far larger than any lock, forget record or policy are
/// refused by their size, never read into memory: 8 GiB sparse files.
#[test]
fn huge_planted_locks_forget_records_and_policies_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, image) = vault_with_point(dir.path());
    let huge = |path: std::path::PathBuf| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path)
            .unwrap()
            .set_len(8 << 30)
            .unwrap();
    };
    huge(vault.join("locks/0123456789abcdef0123456789abcdef"));
    let started = std::time::Instant::now();
    Cli::new()
        .run(&[
            "backup".as_ref(),
            vault.as_os_str(),
            image.as_os_str(),
            "--disk".as_ref(),
            "root".as_ref(),
        ])
        .expect_code(EXIT_LOCKED, "an unreadable lock counts as held")
        .expect_mentions("unreadable lock object locks/0123", "names it");
    Cli::without_password()
        .run(&["unlock".as_ref(), vault.as_os_str(), "--all".as_ref()])
        .expect_ok("unlock --all removes it");

    let record = vault.join(format!("forgotten/{}", "ab".repeat(32)));
    huge(record.clone());
    Cli::new()
        .run(&["points".as_ref(), vault.as_os_str()])
        .expect_code(4, "a huge forget record is damage")
        .expect_mentions("more than the", "says why");
    std::fs::remove_file(&record).unwrap();

    huge(vault.join("policy"));
    Cli::new()
        .run(&["policy".as_ref(), "show".as_ref(), vault.as_os_str()])
        .expect_code(4, "a huge policy is damage")
        .expect_mentions("policy", "names it");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "nothing read the 8 GiB files"
    );
}

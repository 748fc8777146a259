//! Pulling the plug: a real `diskvault backup` (and `key add`, `key
//! passwd`, `prune`) process is killed with SIGKILL after a random number
//! of milliseconds, many times, and the vault it leaves must be sound: it
//! passes `check --read-data`, every point in it restores byte for byte,
//! and the next backup (or prune) completes the job.
//!
//! Kill times are drawn from a seeded generator. The seed is printed and
//! named in every assertion message; set `DISKVAULT_CRASH_SEED` to replay a
//! failure. Run with `--nocapture` to see where each kill landed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use diskvault::{backup, check, BackupOptions, CheckOptions, PackId, Repository};

/// Backups killed per test run (at least 20 by the measure).
const BACKUP_KILLS: usize = 20;
/// Each of `key add` and `key passwd` is killed this many times.
const KEY_KILLS: usize = 6;
/// Prunes killed per test run.
const PRUNE_KILLS: usize = 20;

const NEW_PASSPHRASE: &str = "the passphrase after the change";

fn seed() -> u64 {
    match std::env::var("DISKVAULT_CRASH_SEED") {
        Ok(s) => s.parse().expect("DISKVAULT_CRASH_SEED must be a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// `diskvault ARGS` with the vault's passphrase in the environment, as a
/// process the test can kill.
fn spawn(args: &[&std::ffi::OsStr], new_password: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_diskvault"));
    cmd.args(args)
        .env("DISKVAULT_PASSWORD", PASSPHRASE)
        .env_remove("DISKVAULT_NEW_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = new_password {
        cmd.env("DISKVAULT_NEW_PASSWORD", p);
    }
    cmd.spawn().expect("start diskvault")
}

/// How a process the test meant to kill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Killed,
    /// It completed (successfully) this long after it started.
    Finished(Duration),
}

/// Kills `child` `delay` after `started` unless it finished first, and
/// fails the test if it finished with an error.
fn kill_after(mut child: Child, started: Instant, delay: Duration, what: &str) -> Ending {
    let deadline = started + delay;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let took = started.elapsed();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            assert!(
                status.success(),
                "{what} failed by itself ({status}): {err}"
            );
            return Ending::Finished(took);
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(1)));
    }
    child.kill().expect("SIGKILL diskvault");
    let status = child.wait().unwrap();
    // It may have exited on its own between the last look and the kill.
    if status.success() {
        Ending::Finished(started.elapsed())
    } else {
        Ending::Killed
    }
}

/// Runs `spawn` to completion `runs` times, killing it at stratified
/// fractions of its duration: first at 0 ms, then once in each of
/// `runs - 2` equal slices of 110 % of the duration, last at three times
/// the duration. The duration is the median of the runs that completed so
/// far, starting with one that is not killed, so the kills follow the
/// machine's load. `after_each` gets the run number, the delay and how the
/// process ended.
fn kill_repeatedly(
    rng: &mut Xorshift,
    runs: usize,
    mut spawn: impl FnMut(usize) -> (Child, Instant),
    mut after_each: impl FnMut(usize, Duration, Ending),
) {
    let mut completions = Vec::new();
    let (child, started) = spawn(usize::MAX);
    match kill_after(child, started, Duration::from_secs(600), "the timing run") {
        Ending::Finished(took) => completions.push(took),
        Ending::Killed => unreachable!("a ten-minute run"),
    }
    let slices = (runs - 2) as u64;
    for run in 0..runs {
        completions.sort();
        let duration = completions[completions.len() / 2];
        let fraction_micros = if run == 0 {
            0
        } else if run == runs - 1 {
            3_000_000
        } else {
            let slice = 1_100_000 / slices;
            (run as u64 - 1) * slice + rng.below(slice)
        };
        let delay = duration.mul_f64(fraction_micros as f64 / 1e6);
        let (child, started) = spawn(run);
        let ending = kill_after(child, started, delay, &format!("run {run}"));
        if let Ending::Finished(took) = ending {
            completions.push(took);
        }
        after_each(run, delay, ending);
    }
}

/// The crash tests measure time: running them one at a time keeps one
/// from slowing the other down between its timing run and its kills.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn names(vault: &Path, prefix: &str) -> BTreeSet<String> {
    objects(vault, prefix)
        .into_iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn b3(path: &Path) -> [u8; 32] {
    *blake3::hash(&std::fs::read(path).unwrap()).as_bytes()
}

/// Where in the backup the kill landed, judged by what it left.
fn stage(new_packs: usize, new_index: usize, new_points: usize, temporary: usize) -> String {
    let stage = match (new_packs, new_index, new_points) {
        (0, 0, 0) => "nothing stored".to_string(),
        (n, 0, 0) => format!("{n} pack(s), no index"),
        (_, _, 0) => "index, no point".into(),
        _ => "point written".into(),
    };
    if temporary > 0 {
        format!("{stage}, writing")
    } else {
        stage
    }
}

#[test]
fn killed_backups_leave_a_sound_vault_and_are_resumed() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    eprintln!("crash seed {seed} (set DISKVAULT_CRASH_SEED={seed} to replay)");
    let mut rng = Xorshift::new(seed);
    let dir = scratch_dir();

    // A vault with point A of an 8 MiB disk; then disk B of 64 MiB: A's
    // bytes, a 12 MiB hole, and 44 MiB of new data (three packs).
    let base = dir.path().join("base");
    let image_a = dir.path().join("a.img");
    let image_b = dir.path().join("b.img");
    let a = write_random_image(&image_a, 8 * MIB, 601);
    write_sparse_image(
        &image_b,
        64 * MIB,
        &[
            (0, a),
            (20 * MIB, Xorshift::new(602).bytes(44 * MIB as usize)),
        ],
    );
    let hash_b = b3(&image_b);
    let point_a = backup_one(&init_repo(&base), "vda", &image_a).point;
    let backup_b = |repo: &Repository| {
        backup(
            repo,
            &BackupOptions {
                disks: vec![diskvault::BackupDisk::file("vda", &image_b).unwrap()],
                ..BackupOptions::default()
            },
        )
    };
    let full_stored = {
        let probe = dir.path().join("probe");
        copy_dir(&base, &probe);
        let report = backup_b(&open_repo(&probe)).unwrap();
        std::fs::remove_dir_all(&probe).unwrap();
        report.totals().stored_bytes
    };
    let vault_of = |run: usize| dir.path().join(format!("vault-{run}"));

    let mut landed_at: BTreeMap<String, Vec<u128>> = BTreeMap::new();
    let mut leftover_bytes = 0u64;
    let spawn_backup = |run: usize| {
        let vault = vault_of(run);
        copy_dir(&base, &vault);
        let started = Instant::now();
        let child = spawn(
            &[
                "backup".as_ref(),
                vault.as_os_str(),
                image_b.as_os_str(),
                "--disk".as_ref(),
                "vda".as_ref(),
            ],
            None,
        );
        (child, started)
    };
    let after_kill = |run: usize, delay: Duration, ending: Ending| {
        let case = format!("seed {seed}, run {run}, kill after {delay:?}");
        let vault = vault_of(run);
        let new_packs: BTreeSet<String> = names(&vault, "packs/")
            .difference(&names(&base, "packs/"))
            .cloned()
            .collect();
        let new_index = names(&vault, "index/").len() - names(&base, "index/").len();
        let new_points = names(&vault, "points/").len() - names(&base, "points/").len();
        let temporary = objects(&vault, "tmp/");
        leftover_bytes += temporary
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum::<u64>();
        let where_ = match ending {
            Ending::Killed => stage(new_packs.len(), new_index, new_points, temporary.len()),
            Ending::Finished(_) => "finished before the kill".into(),
        };
        landed_at
            .entry(where_.clone())
            .or_default()
            .push(delay.as_millis());
        let case = format!("{case} ({where_})");

        // The vault is sound.
        let repo = open_repo(&vault);
        let report = check(
            &repo,
            &CheckOptions {
                read_data: true,
                threads: None,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{case}: check --read-data: {e}"));
        assert!(report.is_ok(), "{case}: {:?}", report.problems);
        // Every point restores: A always; the killed run's own point, if
        // it was written, in every fourth run (check has verified its
        // chunks, and its image hash is B's).
        for (id, body) in repo.list_points().unwrap() {
            let original = if id == point_a {
                &image_a
            } else if run % 4 == 0 {
                &image_b
            } else {
                assert_eq!(body.disks[0].image_hash, hash_b, "{case}");
                continue;
            };
            let out = dir.path().join("restored.img");
            restore_to(&repo, &id.to_hex(), &out);
            assert_same_bytes(&out, original);
            std::fs::remove_file(&out).unwrap();
        }

        // The next backup completes and stores only what is missing.
        let landed_bytes: u64 = new_packs
            .iter()
            .map(|p| {
                let id: PackId = p.parse().unwrap();
                // Each sealed blob once: the chunks of a group share it.
                diskvault::packer::read_pack_table(&repo, &id)
                    .unwrap_or_else(|e| panic!("{case}: landed pack {p}: {e}"))
                    .iter()
                    .map(|e| (e.offset, e.length as u64))
                    .collect::<BTreeMap<_, _>>()
                    .values()
                    .sum::<u64>()
            })
            .sum();
        let rerun = backup_b(&repo)
            .unwrap_or_else(|e| panic!("{case}: the backup after the kill failed: {e}"));
        let stored = rerun.totals().stored_bytes;
        assert!(
            stored + landed_bytes <= full_stored,
            "{case}: the re-run stored {stored} bytes on top of {landed_bytes} the killed run \
             had stored; one backup stores {full_stored}"
        );
        if landed_bytes > 0 {
            assert!(
                stored < full_stored,
                "{case}: {} pack(s) had landed, yet the re-run stored a whole backup",
                new_packs.len()
            );
        }
        assert_eq!(rerun.body.disks[0].image_hash, hash_b, "{case}");
        let after = check(&repo, &CheckOptions::default()).unwrap();
        assert!(after.is_ok(), "{case}: {:?}", after.problems);
        assert_eq!(
            after.unindexed_packs, 0,
            "{case}: the re-run indexes every pack"
        );
        if run % 4 == 0 {
            let out = dir.path().join("rerun.img");
            restore_to(&repo, &rerun.point.to_hex(), &out);
            assert_same_bytes(&out, &image_b);
            std::fs::remove_file(&out).unwrap();
        }
        std::fs::remove_dir_all(&vault).unwrap();
    };
    kill_repeatedly(&mut rng, BACKUP_KILLS, spawn_backup, after_kill);

    eprintln!("seed {seed}: where the kills landed (ms): {landed_at:?}");
    eprintln!("temporary files left by the killed runs: {leftover_bytes} bytes");
    let packs_only = landed_at.keys().filter(|k| k.contains("pack(s)")).count();
    assert!(
        landed_at.contains_key("nothing stored")
            && landed_at.contains_key("finished before the kill")
            && packs_only > 0,
        "seed {seed}: the kills should land before, during and after the backup: {landed_at:?}"
    );
}

/// Kills `key add` or `key passwd` at random points; the vault must open
/// with the old passphrase or the new one afterwards, never with neither.
fn kill_key_change(action: &str) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    eprintln!("crash seed {seed} for key {action}");
    let mut rng = Xorshift::new(seed);
    let dir = scratch_dir();
    let base = dir.path().join("base");
    init_repo(&base);
    let vault_of = |run: usize| dir.path().join(format!("vault-{run}"));

    let mut outcomes = BTreeMap::new();
    let spawn_change = |run: usize| {
        let vault = vault_of(run);
        copy_dir(&base, &vault);
        let started = Instant::now();
        let child = spawn(
            &["key".as_ref(), action.as_ref(), vault.as_os_str()],
            Some(NEW_PASSPHRASE),
        );
        (child, started)
    };
    let after_kill = |run: usize, delay: Duration, ending: Ending| {
        let case = format!("seed {seed}, key {action} run {run} killed after {delay:?}");
        let vault = vault_of(run);
        let old = Repository::open(&vault, Some(PASSPHRASE.as_bytes()));
        let new = Repository::open(&vault, Some(NEW_PASSPHRASE.as_bytes()));
        let opened = (old.is_ok(), new.is_ok());
        assert!(
            opened.0 || opened.1,
            "{case}: the vault opens with neither passphrase: {:?} / {:?}",
            old.err(),
            new.err()
        );
        if action == "add" {
            assert!(opened.0, "{case}: adding a key lost the old one");
        }
        if let Ending::Finished(_) = ending {
            assert!(
                opened.1,
                "{case}: the change finished, the new passphrase fails"
            );
        }
        let keys = old.or(new).unwrap().list_keys().unwrap().len();
        assert!((1..=2).contains(&keys), "{case}: {keys} key files");
        *outcomes.entry(opened).or_insert(0) += 1;
        std::fs::remove_dir_all(&vault).unwrap();
    };
    kill_repeatedly(&mut rng, KEY_KILLS, spawn_change, after_kill);
    eprintln!("seed {seed}: key {action} (old opens, new opens): {outcomes:?}");
}

#[test]
fn killed_key_add_keeps_the_old_passphrase() {
    kill_key_change("add");
}

#[test]
fn killed_key_passwd_keeps_one_passphrase() {
    kill_key_change("passwd");
}

/// A prune killed at any instant leaves a vault that passes `check
/// --read-data` and restores every point it still lists; the next prune
/// (taking over the dead one's stale lock) finishes the job, leaving
/// exactly the chunks the kept points need.
#[test]
fn killed_prunes_leave_a_sound_vault_and_the_next_one_finishes() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed();
    eprintln!("crash seed {seed} (set DISKVAULT_CRASH_SEED={seed} to replay)");
    let mut rng = Xorshift::new(seed);
    let dir = scratch_dir();

    // Four days of a 24 MiB disk, each day rewriting 4 MiB; days 0 and 1
    // forgotten. Pruning them deletes packs and repacks partly used ones.
    let base = dir.path().join("base");
    let repo = init_repo(&base);
    let image = dir.path().join("disk.img");
    write_random_image(&image, 24 * MIB, 700);
    let mut days = Vec::new();
    for day in 0..4u64 {
        if day > 0 {
            write_at(
                &image,
                day * 4 * MIB,
                &Xorshift::new(700 + day).bytes(4 << 20),
            );
        }
        let copy = dir.path().join(format!("day{day}.img"));
        std::fs::copy(&image, &copy).unwrap();
        days.push((backup_one(&repo, "root", &image).point, copy));
    }
    diskvault::forget(
        &repo,
        &diskvault::ForgetOptions {
            points: vec![days[0].0.to_hex(), days[1].0.to_hex()],
            ..Default::default()
        },
    )
    .unwrap();
    let vault_of = |run: usize| dir.path().join(format!("vault-{run}"));
    let spawn_prune = |run: usize| {
        let vault = vault_of(run);
        copy_dir(&base, &vault);
        let started = Instant::now();
        let child = spawn(
            &[
                "prune".as_ref(),
                vault.as_os_str(),
                "--now".as_ref(),
                "--max-unused".as_ref(),
                "0".as_ref(),
            ],
            None,
        );
        (child, started)
    };
    let mut endings: BTreeMap<String, usize> = BTreeMap::new();
    let after_kill = |run: usize, delay: Duration, ending: Ending| {
        let vault = vault_of(run);
        let left = format!(
            "{} points, {} packs, {} index files",
            names(&vault, "points/").len(),
            names(&vault, "packs/").len(),
            names(&vault, "index/").len()
        );
        let case = format!("seed {seed}, run {run}, kill after {delay:?} ({ending:?}; {left})");
        *endings.entry(left).or_default() += 1;
        let repo = open_repo(&vault);
        assert_reads_clean(&repo, &case);
        // Every point still there restores; the kept days always are.
        let listed: Vec<_> = repo.list_all_points().unwrap();
        for keep in &days[2..] {
            assert!(
                listed.iter().any(|(id, _)| *id == keep.0),
                "{case}: lost a kept point"
            );
        }
        for (id, _) in &listed {
            let original = &days.iter().find(|(p, _)| p == id).unwrap().1;
            let out = dir.path().join("restored.img");
            restore_to(&repo, &id.to_hex(), &out);
            assert_same_bytes(&out, original);
            std::fs::remove_file(&out).unwrap();
        }
        // The next prune finishes the job, though the killed one's lock
        // is still there.
        let done = diskvault::prune(
            &repo,
            &diskvault::PruneOptions {
                ignore_grace: true,
                max_unused_percent: 0.0,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{case}: the prune after the kill: {e}"));
        let ids: BTreeSet<_> = repo
            .list_all_points()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, days[2..].iter().map(|(id, _)| *id).collect(), "{case}");
        let report = check(
            &repo,
            &CheckOptions {
                read_data: true,
                threads: None,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            report.is_ok(),
            "{case}: after the second prune {done:?}: {:?}",
            report.problems
        );
        assert_eq!(report.unindexed_packs, 0, "{case}");
        let again = diskvault::prune(&repo, &Default::default()).unwrap();
        assert_eq!(
            (
                again.packs_deleted,
                again.packs_repacked,
                again.orphan_packs_deleted
            ),
            (0, 0, 0),
            "{case}: the second prune left work"
        );
        let out = dir.path().join("restored.img");
        restore_to(&repo, &days[3].0.to_hex(), &out);
        assert_same_bytes(&out, &days[3].1);
        std::fs::remove_file(&out).unwrap();
        std::fs::remove_dir_all(&vault).unwrap();
    };
    kill_repeatedly(&mut rng, PRUNE_KILLS, spawn_prune, after_kill);
    eprintln!("prune kills left: {endings:#?}");
}

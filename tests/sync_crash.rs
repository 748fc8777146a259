//! A real `diskvault sync` killed with SIGKILL at random moments (seeded):
//! the replica is valid whenever it exists, and a second sync copies
//! exactly what is missing and leaves a replica that passes `check
//! --read-data` and restores every point.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use diskvault::{check, CheckOptions};

const RUNS: u64 = 12;

fn start_sync(src: &Path, dst: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_diskvault"))
        .args([
            "sync".as_ref(),
            src.as_os_str(),
            dst.as_os_str(),
            "--json".as_ref(),
        ])
        .env_remove("DISKVAULT_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start diskvault sync")
}

/// Objects a sync copies (packs, index files, points, key files).
fn object_count(repo: &Path) -> usize {
    ["packs/", "index/", "points/", "keys/"]
        .iter()
        .map(|p| objects(repo, p).len())
        .sum()
}

#[test]
fn a_sync_killed_at_any_moment_resumes_to_a_sound_replica() {
    let dir = tempfile::tempdir().unwrap();
    let primary = dir.path().join("primary");
    let repo = init_repo(&primary);
    let mut saved = Vec::new();
    for seed in 0..6u64 {
        let image = dir.path().join(format!("disk{seed}.img"));
        // Sizes vary so that packs finish at different moments.
        write_random_image(&image, (2 + seed % 3) * MIB, seed);
        saved.push((backup_one(&repo, "root", &image).point.to_hex(), image));
    }
    let total = object_count(&primary);

    // How long an undisturbed sync takes here.
    let clean = dir.path().join("clean");
    let started = Instant::now();
    let out = start_sync(&primary, &clean).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let span = started.elapsed().max(Duration::from_millis(20));

    let mut rng = Xorshift::new(0x5eed_5a1c);
    let mut killed_midway = 0;
    for run in 0..RUNS {
        let replica = dir.path().join(format!("replica-{run}"));
        // From just after the start to a little past the clean run's end.
        let delay = span.mul_f64(rng.below(1200) as f64 / 1000.0);
        let mut child = start_sync(&primary, &replica);
        std::thread::sleep(delay);
        let was_running = child.try_wait().unwrap().is_none();
        child.kill().expect("SIGKILL");
        child.wait().unwrap();

        let present = object_count(&replica);
        if was_running && present < total {
            killed_midway += 1;
        }
        if replica.join("config").exists() {
            let report = check(&open_repo(&replica), &CheckOptions::default()).unwrap();
            assert!(
                report.is_ok(),
                "run {run}, killed after {delay:?}: {:?}",
                report.problems
            );
        }

        let resumed = Cli::without_password().run(&[
            "sync".as_ref(),
            primary.as_os_str(),
            replica.as_os_str(),
            "--json".as_ref(),
        ]);
        resumed.expect_ok("resumed sync");
        let json = resumed.json();
        // The resumed sync copies exactly what the killed one had not:
        // nothing twice. (A key file copied at creation is counted once.)
        let copied = json["copied"]["objects"].as_u64().unwrap() as usize;
        assert_eq!(
            present + copied,
            total,
            "run {run}, killed after {delay:?}: {present} objects were there, the resumed sync copied {copied}"
        );
        let repo = open_repo(&replica);
        let report = check(
            &repo,
            &CheckOptions {
                read_data: true,
                threads: None,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(report.is_ok(), "run {run}: {:?}", report.problems);
        let (point, image) = &saved[run as usize % saved.len()];
        let out = dir.path().join(format!("restored-{run}.img"));
        restore_to(&repo, point, &out);
        assert_same_bytes(&out, image);
    }
    assert!(
        killed_midway >= 3,
        "only {killed_midway} of {RUNS} kills landed in the middle of a sync"
    );
}

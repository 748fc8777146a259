//! A product embedding diskvault draws its own progress: it hands each
//! long operation a `ProgressSink` of its own and hears the phase and the
//! bytes done, up to the total.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use diskvault::{
    check, forget, prune, repair, sync, CheckOptions, ForgetOptions, Progress, ProgressSink,
    PruneOptions, RepairOptions, RepoLocation, SyncOptions,
};

/// What a product's progress view was told.
#[derive(Default)]
struct Recorder {
    phases: Mutex<Vec<(String, u64)>>,
    /// Every update, in order.
    updates: Mutex<Vec<(u64, u64)>>,
}

impl ProgressSink for Recorder {
    fn phase(&self, name: &str, total: u64) {
        self.phases.lock().unwrap().push((name.to_string(), total));
    }

    fn update(&self, done: u64, total: u64) {
        self.updates.lock().unwrap().push((done, total));
    }
}

impl Recorder {
    /// Asserts one phase `name` that counted up to its total, never
    /// backwards, and returns the total.
    fn assert_one_phase(&self, name: &str) -> u64 {
        let phases = self.phases.lock().unwrap().clone();
        assert_eq!(phases.len(), 1, "{phases:?}");
        let (phase, total) = &phases[0];
        assert_eq!(phase, name);
        let updates = self.updates.lock().unwrap().clone();
        assert!(
            updates.windows(2).all(|w| w[0].0 <= w[1].0),
            "{name}: done went backwards: {updates:?}"
        );
        assert_eq!(
            updates.last(),
            Some(&(*total, *total)),
            "{name}: ends at the total"
        );
        *total
    }
}

fn sink() -> (Arc<Recorder>, Option<Progress>) {
    let recorder = Arc::new(Recorder::default());
    let progress = Progress::from_sink(recorder.clone());
    (recorder, Some(progress))
}

#[test]
fn check_repair_and_prune_report_their_bytes_to_a_sink_of_ones_own() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let image = dir.path().join("disk.img");
    write_random_image(&image, 24 * MIB, 7);
    let repo = init_repo(&vault);
    let first = backup_one(&repo, "sda", &image);
    write_at(&image, 0, &vec![9u8; 4 * MIB as usize]);
    backup_one(&repo, "sda", &image);

    // check --read-data: every byte of every pack.
    let (seen, progress) = sink();
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            progress,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(seen.assert_one_phase("check"), report.bytes_read);

    // A structure-only check reads no pack data and reports nothing.
    let (quiet, progress) = sink();
    check(
        &repo,
        &CheckOptions {
            progress,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(quiet.phases.lock().unwrap().is_empty());

    // repair from a replica: every pack the index names, read and hashed.
    let replica = dir.path().join("replica");
    sync(
        &RepoLocation::local(&vault),
        &RepoLocation::local(&replica),
        &SyncOptions::default(),
    )
    .unwrap();
    let (seen, progress) = sink();
    let repaired = repair(
        &repo,
        &RepoLocation::local(&replica),
        &RepairOptions {
            threads: None,
            progress,
        },
    )
    .unwrap();
    assert!(repaired.found_nothing(), "{repaired:?}");
    assert!(seen.assert_one_phase("repair") > 20 * MIB);

    // prune: the first point's pack, partly unused now, is repacked.
    forget(
        &repo,
        &ForgetOptions {
            policy: None,
            points: vec![first.point.to_hex()],
            dry_run: false,
            allow_remove_all: true,
            now: None,
        },
    )
    .unwrap();
    let (seen, progress) = sink();
    let pruned = prune(
        &repo,
        &PruneOptions {
            ignore_grace: true,
            max_unused_percent: 0.0,
            progress,
            ..PruneOptions::default()
        },
    )
    .unwrap();
    assert!(pruned.packs_repacked > 0, "{pruned:?}");
    assert!(seen.assert_one_phase("repack") > 0);
}

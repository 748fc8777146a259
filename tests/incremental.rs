//! Backups after the first store only what changed: a user backing up the
//! same disk every day pays for the day's writes, not for the disk.

mod common;
#[allow(dead_code)]
#[path = "../examples/mkimages.rs"]
mod mkimages;

use std::collections::BTreeSet;

use common::*;
use diskvault::{check, stats, CheckOptions};

/// A 32 MiB disk, then the same disk after ~1 MiB of scattered 4 KiB writes.
#[test]
fn scattered_block_writes_store_little() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let size = 32 * MIB;
    let v1 = write_random_image(&image, size, 100);
    let v1_path = dir.path().join("v1.img");
    std::fs::write(&v1_path, &v1).unwrap();
    let repo = init_repo(&dir.path().join("vault"));
    let first = backup_one(&repo, "vda", &image);
    assert!(
        first.totals().stored_bytes > size,
        "the first backup stores the whole (incompressible) disk: {}",
        first.totals().stored_bytes
    );

    // 256 x 4 KiB = 1 MiB of page writes at random aligned places, as a file
    // system or database would do. Pages close together often share a
    // 16 KiB chunk, so count the chunks they touch.
    let mut rng = Xorshift::new(101);
    let mut touched = BTreeSet::new();
    for _ in 0..256 {
        let page = rng.below(size / 4096);
        write_at(&image, page * 4096, &rng.bytes(4096));
        touched.insert(page * 4096 / DEFAULT_CHUNK);
    }
    let second = backup_one(&repo, "vda", &image);

    let t = second.totals();
    let changed_chunks = touched.len() as u64;
    eprintln!(
        "1 MiB of scattered pages: {changed_chunks} chunks changed, {} new chunks, {} bytes stored",
        t.new_chunks, t.stored_bytes
    );
    assert!(
        t.new_chunks >= changed_chunks,
        "every changed chunk is new: {} new chunks, {changed_chunks} changed",
        t.new_chunks
    );
    // The changed chunks, plus the manifest leaves that list them (8 leaves
    // of ~10 KiB for 32 MiB) and the root.
    let bound = changed_chunks * DEFAULT_CHUNK + 160 * KIB;
    assert!(
        t.stored_bytes < bound,
        "second backup stored {} bytes for {changed_chunks} changed 16 KiB chunks (bound {bound})",
        t.stored_bytes
    );
    assert!(
        t.stored_bytes < 5 * MIB,
        "1 MiB of writes stored {} bytes",
        t.stored_bytes
    );

    let out1 = dir.path().join("restored-v1.img");
    let out2 = dir.path().join("restored-v2.img");
    restore_to(&repo, &first.point.to_hex(), &out1);
    restore_to(&repo, &second.point.to_hex(), &out2);
    assert_same_bytes(&out1, &v1_path);
    assert_same_bytes(&out2, &image);
}

/// Clustered writes (a file rewritten in place) cost about what they wrote.
#[test]
fn clustered_writes_store_about_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    write_random_image(&image, 32 * MIB, 102);
    let repo = init_repo(&dir.path().join("vault"));
    backup_one(&repo, "vda", &image);

    // 16 runs of 64 KiB: 1 MiB changed.
    let mut rng = Xorshift::new(103);
    for _ in 0..16 {
        let at = rng.below(32 * MIB / (64 * KIB)) * 64 * KIB;
        write_at(&image, at, &rng.bytes(64 * KIB as usize));
    }
    let second = backup_one(&repo, "vda", &image);

    let stored = second.totals().stored_bytes;
    assert!(
        stored < 3 * MIB / 2,
        "1 MiB of clustered writes stored {stored} bytes"
    );
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out, &image);
}

#[test]
fn unchanged_disk_stores_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    write_random_image(&image, 8 * MIB, 104);
    let repo = init_repo(&dir.path().join("vault"));
    let first = backup_one(&repo, "vda", &image);

    let again = backup_one(&repo, "vda", &image);

    assert_ne!(first.point, again.point, "each backup is its own point");
    let t = again.totals();
    assert_eq!(t.new_chunks, 0, "no new chunks for an unchanged disk");
    assert_eq!(t.stored_bytes, 0, "no new bytes for an unchanged disk");
    let s = stats(&repo).unwrap();
    assert_eq!(s.points, 2);
    assert!(
        s.dedup_ratio > 1.9,
        "two identical backups dedup about 2x: {}",
        s.dedup_ratio
    );
    let out = dir.path().join("restored.img");
    restore_to(&repo, &first.point.to_hex(), &out);
    assert_same_bytes(&out, &image);
}

/// A second disk that shares content with the first is deduplicated
/// across disks, within one point.
#[test]
fn identical_disks_in_one_point_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let data = write_random_image(&a, 4 * MIB, 105);
    std::fs::write(&b, &data).unwrap();
    let repo = init_repo(&dir.path().join("vault"));

    let report = backup_disks(&repo, &[("a", &a), ("b", &b)]);

    let stored = report.totals().stored_bytes;
    assert!(
        stored < 4 * MIB + 256 * KIB,
        "two copies of 4 MiB stored {stored} bytes"
    );
    let out = dir.path().join("out");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out.join("a.img"), &a);
    assert_same_bytes(&out.join("b.img"), &b);
}

/// Real ext4 images: v2 is v1 after a day of file churn and in-place page
/// writes, made offline with debugfs by the project's generator
/// (`examples/mkimages.rs`; needs e2fsprogs, which `.ci/run` installs).
#[test]
fn ext4_day_of_churn() {
    if let Some(why) = mkimages::missing_tool() {
        eprintln!("skipping ext4_day_of_churn: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut opts = mkimages::Options::new(dir.path().join("images"), 256);
    opts.versions = 2;
    let made = mkimages::generate(&opts).unwrap();
    let (v1, v2) = (made.images[0].clone(), made.images[1].clone());
    let changed = made.changed[0].blocks * 4096;
    let repo = init_repo(&dir.path().join("vault"));

    let first = backup_one(&repo, "root", &v1);
    let second = backup_one(&repo, "root", &v2);

    let stored = second.totals().stored_bytes;
    eprintln!(
        "ext4 256 MiB: v1 stored {} bytes, v2 stored {stored} bytes",
        first.totals().stored_bytes
    );
    assert!(
        stored < 8 * MIB,
        "a day of churn ({changed} bytes of changed blocks) stored {stored} bytes"
    );
    assert!(
        stored < changed + MIB,
        "v2 stored {stored} bytes for {changed} bytes of changed blocks"
    );
    assert!(
        stored * 10 < first.totals().stored_bytes,
        "v2 ({stored}) should store far less than v1 ({})",
        first.totals().stored_bytes
    );
    let out1 = dir.path().join("v1-restored.img");
    let out2 = dir.path().join("v2-restored.img");
    restore_to(&repo, &first.point.to_hex(), &out1);
    restore_to(&repo, &second.point.to_hex(), &out2);
    assert_same_bytes(&out1, &v1);
    assert_same_bytes(&out2, &v2);
    assert!(
        allocated_bytes(&out2) <= allocated_bytes(&v2) + 4 * MIB,
        "the restored image keeps the free space as holes: {} bytes allocated, the original {}",
        allocated_bytes(&out2),
        allocated_bytes(&v2)
    );
}

/// A backup killed after writing its packs but before its index and point
/// (the state a crash leaves): the next backup reuses those packs instead of
/// storing the data again.
#[test]
fn interrupted_backup_is_reused_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let image = dir.path().join("disk.img");
    write_random_image(&image, 6 * MIB, 106);
    let repo = init_repo(&vault);
    backup_one(&repo, "vda", &image);
    for object in objects(&vault, "index/")
        .into_iter()
        .chain(objects(&vault, "points/"))
    {
        std::fs::remove_file(object).unwrap();
    }
    let repo = open_repo(&vault);
    let before = check(&repo, &CheckOptions::default()).unwrap();
    assert!(before.is_ok(), "{:?}", before.problems);
    assert_eq!(before.unindexed_packs, 1);

    let report = backup_one(&repo, "vda", &image);

    assert_eq!(report.recovered_packs, 1);
    assert_eq!(
        report.totals().stored_bytes,
        0,
        "the data was already in the reused pack"
    );
    let after = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: None,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(after.is_ok(), "{:?}", after.problems);
    assert_eq!(after.unindexed_packs, 0);
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out, &image);
}

/// Two machines back up into one vault at the same time; their disks share
/// most of their content.
#[test]
fn backups_running_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    init_repo(&vault);
    let base = Xorshift::new(107).bytes(8 * MIB as usize);
    let mut images = Vec::new();
    for host in 0..2u64 {
        let path = dir.path().join(format!("host{host}.img"));
        let mut data = base.clone();
        let mut rng = Xorshift::new(108 + host);
        for _ in 0..32 {
            let at = rng.below(data.len() as u64 - 4096) as usize;
            rng.fill(&mut data[at..at + 4096]);
        }
        std::fs::write(&path, &data).unwrap();
        images.push(path);
    }

    let points: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = images
            .iter()
            .map(|image| {
                let vault = &vault;
                s.spawn(move || {
                    let repo = open_repo(vault);
                    (0..3)
                        .map(|_| backup_one(&repo, "vda", image).point)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });

    let repo = open_repo(&vault);
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: None,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.points, 6);
    for (image, ids) in images.iter().zip(&points) {
        for id in ids {
            let out = dir.path().join(format!("restored-{}.img", id.short()));
            restore_to(&repo, &id.to_hex(), &out);
            assert_same_bytes(&out, image);
        }
    }
    // Unique chunks: the shared content once, and each host's changes.
    // (Two backups racing may both seal a chunk neither had: format 2
    // seals chunks in groups, so such copies stay in packs until a prune
    // regroups them; the index still lists each chunk once.)
    let s = stats(&repo).unwrap();
    assert!(
        s.unique_bytes < 10 * MIB,
        "two 8 MiB disks sharing most content hold {} bytes of unique chunks",
        s.unique_bytes
    );
}

#[test]
fn a_backup_clears_temporary_files_left_by_a_dead_writer() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let repo = init_repo(&vault);
    let image = dir.path().join("disk.img");
    write_random_image(&image, MIB, 21);
    // A writer killed mid-put leaves its temporary file behind.
    let stale = vault.join("tmp/0123456789abcdef.tmp");
    std::fs::write(&stale, vec![1u8; 4096]).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // A fresh one may belong to a writer still running: it stays.
    let fresh = vault.join("tmp/fedcba9876543210.tmp");
    std::fs::write(&fresh, b"in flight").unwrap();
    backup_one(&repo, "root", &image);
    assert!(!stale.exists(), "an hour-old temporary file is removed");
    assert!(fresh.exists(), "a recent temporary file is left alone");
}

/// Restoring the next day's point reads the first day's packs across the
/// chunks the day superseded, instead of one request per stretch between
/// them: on object storage every read is a billed request with a round
/// trip. One 4 KiB page changed in every third 16 KiB chunk leaves a gap
/// of one chunk after every two still needed.
#[test]
fn a_restore_reads_across_superseded_chunks_in_few_requests() {
    use diskvault::store::{FaultyStore, LocalStore, OpKind};
    use std::sync::Arc;
    let dir = scratch_dir();
    let image = dir.path().join("disk.img");
    let size = 16 * MIB;
    write_random_image(&image, size, 7);
    let vault = dir.path().join("vault");
    let repo = init_repo(&vault);
    backup_one(&repo, "vda", &image);
    let mut rng = Xorshift::new(8);
    let chunks = size / DEFAULT_CHUNK;
    for chunk in (0..chunks).step_by(3) {
        write_at(&image, chunk * DEFAULT_CHUNK + 4096, &rng.bytes(4096));
    }
    backup_one(&repo, "vda", &image);

    let counting = Arc::new(FaultyStore::new(Arc::new(LocalStore::new(&vault))));
    let repo = diskvault::Repository::open_in(
        counting.clone(),
        vault.display().to_string(),
        Some(PASSPHRASE.as_bytes()),
    )
    .unwrap();
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out, &image);
    let reads = counting.counts().ops(OpKind::Read);
    // 1024 chunks, 683 of them from the first day's packs in 342 stretches:
    // a read per stretch would be over 340; reads of up to 1 MiB across
    // the gaps need about 25 MiB / 1 MiB, plus the index, point, key and
    // manifest.
    assert!(reads < 80, "{reads} reads to restore {chunks} chunks");
}

//! Backing up a running machine through the library: two disks, hooks
//! that freeze and thaw its applications, a progress sink of our own, and
//! the next day's backup from a changed-block list; then a restore into an
//! in-memory writer and a check.
//!
//! Run it with `cargo run --release --example machine_backup`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use diskvault::format::changes::ChangedRanges;
use diskvault::ops::hooks::{ConsistencyHooks, HookContext};
use diskvault::{
    backup, check, restore_to_writer, BackupDisk, BackupOptions, CheckOptions, InitOptions,
    KdfCost, Progress, ProgressSink, Repository, RestoreOptions,
};

/// Freezes and thaws through the product's own API (here: it prints).
#[derive(Debug)]
struct Freezer;

impl ConsistencyHooks for Freezer {
    fn before_read(&self, ctx: &HookContext) -> Result<(), String> {
        println!("  freeze {} ({})", ctx.host, ctx.disks.join(", "));
        Ok(())
    }
    fn after_read(&self, ctx: &HookContext) -> Result<(), String> {
        println!(
            "  thaw {} after a read that ended {}",
            ctx.host, ctx.outcome
        );
        Ok(())
    }
}

/// Remembers how far the backup got, as a product's UI would.
#[derive(Default)]
struct Percent(AtomicU64);

impl ProgressSink for Percent {
    fn update(&self, done: u64, total: u64) {
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        self.0.store(pct, Ordering::Relaxed);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/machine_backup");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let (root, data) = (work.join("root.img"), work.join("data.img"));
    let mut bytes: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&root, &bytes)?;
    std::fs::write(&data, vec![7u8; 4 << 20])?;

    let repo = Repository::init(
        &work.join("vault"),
        Some(b"example passphrase"),
        &InitOptions {
            kdf: KdfCost::default(),
            ..InitOptions::default()
        },
    )?;
    let disks = |changed: Option<ChangedRanges>| -> diskvault::Result<Vec<BackupDisk>> {
        let (root, data) = (
            BackupDisk::file("root", &root)?,
            BackupDisk::file("data", &data)?,
        );
        Ok(match changed {
            // The data disk did not change: an empty list.
            Some(c) => vec![
                root.with_changes(c),
                data.with_changes(ChangedRanges::default()),
            ],
            None => vec![root, data],
        })
    };
    let percent = Arc::new(Percent::default());
    let options = |changed: Option<ChangedRanges>, parent: Option<String>| BackupOptions {
        disks: disks(changed).expect("the images were just written"),
        host: Some("db1".into()),
        hooks: Some(Arc::new(Freezer)),
        progress: Some(Progress::from_sink(percent.clone())),
        parent,
        ..Default::default()
    };

    println!("day 1: full backup");
    let day1 = backup(&repo, &options(None, None))?;
    let consistency = day1.body.consistency.as_ref().map(|c| c.level.name());
    println!(
        "  point {} ({:?}), progress {} %",
        day1.point.short(),
        consistency,
        percent.0.load(Ordering::Relaxed)
    );

    // The hypervisor reports that one 4 KiB block of root changed.
    bytes[1 << 20..(1 << 20) + 4096].fill(0xAB);
    std::fs::write(&root, &bytes)?;
    let changed = ChangedRanges::from_pairs([(1 << 20, 4096)], bytes.len() as u64)?;
    println!("day 2: changed blocks only");
    let day2 = backup(&repo, &options(Some(changed), Some(day1.point.to_hex())))?;
    println!(
        "  point {}: read {} bytes of {}",
        day2.point.short(),
        day2.totals().bytes_read,
        day2.logical_bytes()
    );

    let mut image = Vec::new();
    restore_to_writer(
        &repo,
        &RestoreOptions {
            point: "latest".into(),
            disk: Some("root".into()),
            output: "memory".into(),
            ..Default::default()
        },
        &mut image,
    )?;
    assert_eq!(image, bytes, "the restore is the day-2 image");
    println!("restored root into memory: {} bytes, verified", image.len());

    let report = check(&repo, &CheckOptions::default())?;
    println!("check: {} problems", report.problems.len());
    Ok(())
}

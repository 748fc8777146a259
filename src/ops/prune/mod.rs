//! `prune`: free the space of forgotten points and of data no point needs.
//!
//! Plan, then execute (spec/FORMAT.md §18 states the safety rule):
//!
//! 1. **Plan, under a shared lock** (backups go on meanwhile). List points
//!    and forget records, then index files, then packs. Points forgotten
//!    longer ago than the grace period (or all forgotten points, with
//!    `now`) are to be deleted; every other point is kept. Mark every chunk
//!    the kept points reach (one manifest walk that reads each node once).
//!    For each live chunk choose one copy to keep; every other copy, and
//!    every chunk no point reaches, is unused. Packs with no chosen copy
//!    are deleted; packs with some unused space are repacked, most wasteful
//!    first, until what stays unused is at most `max_unused_percent` of
//!    the live bytes.
//! 2. **Repack, still shared**: the chosen copies in packs to repack are
//!    copied verbatim, still sealed, into new packs (no decryption); the
//!    packs, then their index files, are made durable. Adding only.
//! 3. **Delete, under an exclusive lock**, which waits for running backups
//!    to finish and keeps new ones out. List again: points written or
//!    unforgotten since the plan are walked, and a pack holding the only
//!    copy of a chunk they need is kept after all; packs no index names
//!    (left by killed writers) are deleted. Then, each step durable before
//!    the next: expired points; their forget records; index files rewritten
//!    without the deleted packs, then the old ones; the packs.
//!
//! At every instant the repository passes `check`: a kill leaves at worst
//! duplicate copies, unindexed packs or unreferenced data, which the next
//! prune removes. The cost grows with the number of chunks (index and
//! manifests are read, never data) and with the bytes repacked.

mod execute;
mod plan;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Result;
use crate::format::PointId;
use crate::progress::Progress;
use crate::repo::Repository;

/// How to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Plan and report, change nothing.
    pub dry_run: bool,
    /// Unused space tolerated in packs that are kept, as a percentage of
    /// the live bytes: packs are repacked, most wasteful first, until what
    /// stays unused is at most this. 100 never repacks (only packs with no
    /// live chunk are deleted); 0 repacks every pack with unused space.
    pub max_unused_percent: f64,
    /// Free forgotten points now instead of after their grace period.
    pub ignore_grace: bool,
    /// The current time in Unix seconds; the clock when `None` (tests fix it).
    pub now: Option<i64>,
    /// Told the bytes of packs read for repacking so far, and the bytes of
    /// every pack to repack (phase `"repack"`; planning reads manifests
    /// and the index, and is not counted).
    pub progress: Option<Progress>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused_percent: DEFAULT_MAX_UNUSED_PERCENT,
            ignore_grace: false,
            now: None,
            progress: None,
        }
    }
}

/// Unused space tolerated by default: 5 % of the live bytes.
pub const DEFAULT_MAX_UNUSED_PERCENT: f64 = 5.0;

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// True when nothing was deleted or written (`--dry-run`).
    pub dry_run: bool,
    /// Recovery points kept (live, and forgotten ones still in their grace
    /// period).
    pub points_kept: usize,
    /// Forgotten points whose grace period has not ended: kept for now.
    pub points_in_grace: usize,
    /// Forgotten points deleted.
    pub points_removed: Vec<PointId>,
    /// Forget records deleted (of deleted points, or naming no point).
    pub forget_records_removed: usize,
    /// Chunks the kept points reach.
    pub chunks_live: u64,
    /// Index entries dropped with the packs deleted or repacked: chunks no
    /// kept point reaches, and duplicate copies.
    pub chunks_removed: u64,
    /// Bytes of packs before the prune.
    pub pack_bytes_before: u64,
    /// Bytes of packs after it.
    pub pack_bytes_after: u64,
    /// Sealed bytes of live chunks in packs (after the prune).
    pub live_bytes: u64,
    /// Unused bytes left in kept packs (below the tolerance).
    pub unused_bytes_after: u64,
    /// Packs deleted whole (no live chunk).
    pub packs_deleted: usize,
    /// Packs whose live chunks were copied into new packs, then deleted.
    pub packs_repacked: usize,
    /// Packs no index named (left by killed writers), deleted.
    pub orphan_packs_deleted: usize,
    /// Their bytes.
    pub orphan_bytes: u64,
    /// Packs planned for deletion but kept, because a backup that ran
    /// meanwhile reuses chunks only they hold.
    pub packs_kept_for_new_points: usize,
    /// New packs written by repacking.
    pub packs_written: usize,
    /// Sealed bytes copied into new packs.
    pub bytes_repacked: u64,
    /// Bytes of packs deleted (including orphans) minus bytes of packs
    /// written.
    pub bytes_freed: u64,
    /// Index files written (for new packs, and rewritten ones).
    pub index_files_written: usize,
    /// Index files deleted.
    pub index_files_removed: usize,
    /// Packs that could not be repacked because their bytes do not match
    /// their name (damaged): kept as they are; `check` and `repair` say more.
    pub damaged_packs: Vec<String>,
    /// Marking and planning time (reading points, index and manifests).
    #[serde(serialize_with = "crate::ops::millis")]
    pub plan_duration: Duration,
    /// Wall-clock time of the whole prune.
    #[serde(serialize_with = "crate::ops::millis")]
    pub duration: Duration,
}

/// Two prunes would each wait, at their exclusive phase, for the other's
/// shared lock: the second one to come is refused at once instead.
fn refuse_a_second_prune(repo: &Repository, mine: &crate::repo::RepoLock) -> Result<()> {
    let me = mine.id();
    let locks = crate::repo::lock::list_locks(repo.store().as_ref(), repo.lock_options())?;
    let other: Vec<String> = locks
        .iter()
        .filter(|l| l.stale.is_none() && Some(&l.id) != me.as_ref())
        .filter(|l| l.record.as_ref().is_some_and(|r| r.command == "prune"))
        .map(|l| l.describe())
        .collect();
    if other.is_empty() {
        return Ok(());
    }
    Err(crate::Error::Locked {
        location: repo.location().to_string(),
        wanted: "a lock for a second 'prune'".into(),
        holders: other.join("; "),
    })
}

/// Prunes the repository (see the module documentation).
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    let started = Instant::now();
    if !(0.0..=100.0).contains(&opts.max_unused_percent) {
        return Err(crate::Error::InvalidArgument(format!(
            "--max-unused must be a percentage from 0 to 100, not {}",
            opts.max_unused_percent
        )));
    }
    let shared = if opts.dry_run {
        repo.lock_for_reading("prune")?
    } else {
        repo.lock(crate::repo::LockKind::Shared, "prune")?
    };
    if !opts.dry_run {
        refuse_a_second_prune(repo, &shared)?;
    }
    let mut plan = plan::Plan::make(repo, opts)?;
    let mut report = plan.report(opts.dry_run);
    report.plan_duration = started.elapsed();
    if !opts.dry_run {
        execute::execute(
            repo,
            &shared,
            &mut plan,
            &mut report,
            opts.progress.as_ref(),
        )?;
    }
    report.duration = started.elapsed();
    Ok(report)
}

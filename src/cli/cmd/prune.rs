//! `diskvault prune`: free the space of forgotten points and unused data.

use std::path::PathBuf;

use clap::Args;
use diskvault::{PruneOptions, PruneReport};

use crate::cli::human::{plural, size};
use crate::cli::output::print_json;
use crate::cli::{exit, Globals, PassArgs};

/// Free the space of forgotten points past their grace period and of
/// data no point needs: delete unused packs, repack partly used ones.
#[derive(Args, Debug)]
pub struct PruneArgs {
    repo: PathBuf,
    /// Plan and report, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Unused space tolerated in kept packs, in percent of the live
    /// data (default 5); 100 never repacks.
    #[arg(long, value_name = "PERCENT")]
    max_unused: Option<f64>,
    /// Free forgotten points now, without waiting for their grace period.
    #[arg(long)]
    now: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// Prunes (or plans, with --dry-run) and reports.
pub fn run(a: PruneArgs, g: &Globals) -> anyhow::Result<i32> {
    let r = g.open(&a.repo, &a.pass)?;
    let bar = g.bar("prune");
    let report = diskvault::prune(
        &r,
        &PruneOptions {
            dry_run: a.dry_run,
            max_unused_percent: a
                .max_unused
                .unwrap_or(diskvault::ops::prune::DEFAULT_MAX_UNUSED_PERCENT),
            ignore_grace: a.now,
            now: None,
            progress: bar.progress(),
        },
    );
    bar.finish();
    let report = report?;
    if a.json {
        print_json(&report);
    } else {
        render(&report);
    }
    Ok(exit::OK)
}

fn render(r: &PruneReport) {
    // "deleted" or, in a dry run, "would be deleted".
    let done = |what: &str| {
        if r.dry_run {
            format!("would be {what}")
        } else {
            what.to_string()
        }
    };
    out!(
        "points: {} kept ({} of them forgotten, in their grace period), {} {}",
        r.points_kept,
        r.points_in_grace,
        r.points_removed.len(),
        done("removed")
    );
    for p in &r.points_removed {
        out!("  {} point {}", done("removed"), p.short());
    }
    out!(
        "chunks: {} live; {} unused chunks or duplicate copies {}",
        r.chunks_live,
        r.chunks_removed,
        done("dropped")
    );
    let written = if r.dry_run {
        String::new()
    } else {
        format!(" into {}", plural(r.packs_written, "new pack", "new packs"))
    };
    out!(
        "packs: {} {}; {} {}{written} ({} copied); {} left by killed commands {}{}",
        r.packs_deleted,
        done("deleted"),
        r.packs_repacked,
        done("repacked"),
        size(r.bytes_repacked),
        r.orphan_packs_deleted,
        done("deleted"),
        if r.packs_kept_for_new_points > 0 {
            format!(
                "; {} kept for points written meanwhile",
                r.packs_kept_for_new_points
            )
        } else {
            String::new()
        }
    );
    out!(
        "space: {} {}; packs {} -> {}; {} unused left in kept packs (within --max-unused)",
        size(r.bytes_freed),
        done("freed"),
        size(r.pack_bytes_before),
        size(r.pack_bytes_after),
        size(r.unused_bytes_after)
    );
    for d in &r.damaged_packs {
        out!(
            "warning: {d} does not match its name and was left alone; run 'diskvault check --read-data'"
        );
    }
    out!(
        "took {:.2} s (mark and plan {:.2} s)",
        r.duration.as_secs_f64(),
        r.plan_duration.as_secs_f64()
    );
    if r.dry_run {
        out!("dry run: nothing was changed");
    }
}

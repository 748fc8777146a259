//! `diskvault repair`: mend a repository from a replica, or rebuild its
//! index from its packs.

use std::path::{Path, PathBuf};

use clap::Args;
use diskvault::{ReindexReport, RepairOptions, RepairReport};
use serde::Serialize;

use crate::cli::args::parse_threads;
use crate::cli::human::{plural, size};
use crate::cli::output::print_json;
use crate::cli::{exit, location, Globals, PassArgs};

/// Put back missing or damaged packs, chunks, index files and points
/// from a replica.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["from", "index"])))]
pub struct RepairArgs {
    repo: PathBuf,
    /// The replica to take good copies from.
    #[arg(long = "from", value_name = "REPLICA")]
    from: Option<PathBuf>,
    /// Rebuild the index from the packs alone (no replica needed): index
    /// every pack no readable index file names, then delete the index
    /// files that do not open.
    #[arg(long, conflicts_with = "from")]
    index: bool,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// `repair --from --json`: the library's report and whether it is
/// complete.
#[derive(Serialize)]
struct RepairJson<'a> {
    /// True when nothing is left damaged.
    complete: bool,
    #[serde(flatten)]
    report: &'a RepairReport,
}

/// Repairs; exits 4 when something could not be mended.
pub fn run(a: RepairArgs, g: &Globals) -> anyhow::Result<i32> {
    let r = g.open(&a.repo, &a.pass)?;
    let Some(from) = a.from.filter(|_| !a.index) else {
        let report = diskvault::rebuild_index(&r)?;
        if a.json {
            print_json(&report);
        } else {
            render_reindex(&report);
        }
        return Ok(if report.damaged_packs.is_empty() {
            exit::OK
        } else {
            exit::DAMAGED
        });
    };
    let bar = g.bar("repair");
    let report = diskvault::repair(
        &r,
        &location(&from)?,
        &RepairOptions {
            threads: a.threads,
            progress: bar.progress(),
        },
    );
    bar.finish();
    let report = report?;
    if a.json {
        print_json(&RepairJson {
            complete: report.is_complete(),
            report: &report,
        });
    } else {
        render(&report, &a.repo, &from);
    }
    Ok(if report.is_complete() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

fn render(rep: &RepairReport, repo: &Path, replica: &Path) {
    out!(
        "read {} in {:.2} s",
        plural(rep.packs_checked, "pack", "packs"),
        rep.duration.as_secs_f64()
    );
    if rep.found_nothing() {
        out!("nothing to repair");
        return;
    }
    for key in &rep.objects_replaced {
        out!("  replaced {key} with the copy from {}", replica.display());
    }
    let moved = rep.chunks_salvaged + rep.chunks_from_replica;
    if moved > 0 {
        out!(
            "  moved {moved} chunks into {} ({} intact ones out of damaged packs, {} read from {})",
            plural(rep.packs_written, "new pack", "new packs"),
            rep.chunks_salvaged,
            rep.chunks_from_replica,
            replica.display()
        );
    }
    if rep.chunks_dropped > 0 {
        out!(
            "  dropped {} damaged chunks that no point needs",
            rep.chunks_dropped
        );
    }
    if rep.index_files_written + rep.index_files_removed + rep.packs_removed > 0 {
        out!(
            "  wrote {}, removed {} and {}",
            plural(rep.index_files_written, "index file", "index files"),
            plural(rep.index_files_removed, "old index file", "old index files"),
            plural(rep.packs_removed, "damaged pack", "damaged packs")
        );
    }
    out!("  read {} from the replica", size(rep.bytes_fetched));
    if rep.is_complete() {
        out!(
            "repaired; 'diskvault check {} --read-data' verifies every chunk",
            repo.display()
        );
        return;
    }
    out!(
        "{} could not be repaired:",
        plural(rep.unrepaired.len(), "problem", "problems")
    );
    for (object, reason) in &rep.unrepaired {
        out!("  {object}: {reason}");
    }
}

fn render_reindex(r: &ReindexReport) {
    out!(
        "indexed {} from their tables ({} chunks) in {}; kept {}",
        plural(r.packs_indexed, "pack", "packs"),
        r.chunks_indexed,
        plural(r.index_files_written, "new index file", "new index files"),
        plural(
            r.index_files_kept,
            "readable index file",
            "readable index files"
        )
    );
    for d in &r.index_files_removed {
        out!("removed {} ({})", d.object, d.reason);
    }
    for d in &r.damaged_packs {
        out!(
            "could not index {}: {}; 'diskvault repair REPO --from REPLICA' can replace it",
            d.object,
            d.reason
        );
    }
    if r.packs_indexed == 0 && r.index_files_removed.is_empty() && r.damaged_packs.is_empty() {
        out!("the index was complete: nothing to rebuild");
    }
}

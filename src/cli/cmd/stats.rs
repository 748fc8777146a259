//! `diskvault stats`: what the repository protects and what it costs.

use std::path::PathBuf;

use clap::Args;
use diskvault::RepoStats;

use crate::cli::human::size;
use crate::cli::output::{damaged_warnings, print_json};
use crate::cli::{exit, Globals, PassArgs};

/// Show what the repository protects and what it costs.
#[derive(Args, Debug)]
pub struct StatsArgs {
    repo: PathBuf,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// Computes the figures; exits 4 when some objects could not be read.
pub fn run(a: StatsArgs, g: &Globals) -> anyhow::Result<i32> {
    let r = g.open(&a.repo, &a.pass)?;
    let stats = diskvault::stats(&r)?;
    damaged_warnings(
        &stats.unreadable,
        "the figures",
        "'diskvault check REPO' says what it affects",
    );
    if a.json {
        print_json(&stats);
    } else {
        render(&stats);
    }
    Ok(if stats.unreadable.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

fn render(s: &RepoStats) {
    out!("recovery points        {} ({} disks)", s.points, s.disks);
    if s.forgotten_points > 0 {
        out!(
            "forgotten points       {} (restorable until 'diskvault prune' frees them)",
            s.forgotten_points
        );
    }
    out!(
        "logical bytes          {} ({} not zero)",
        size(s.logical_bytes),
        size(s.logical_data_bytes)
    );
    out!(
        "unique bytes           {} in {} chunks",
        size(s.unique_bytes),
        s.unique_chunks
    );
    out!("stored chunk bytes     {}", size(s.chunk_stored_bytes));
    out!(
        "repository size        {} in {} objects ({} packs, {} index files)",
        size(s.repository_bytes),
        s.objects,
        s.packs,
        s.index_files
    );
    out!("dedup ratio            {:.2}x", s.dedup_ratio);
    out!("compression ratio      {:.2}x", s.compression_ratio);
    out!(
        "index memory           {} per chunk",
        size(s.index_bytes_per_chunk as u64)
    );
}

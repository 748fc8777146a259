//! `diskvault show`: one recovery point, its disks and backup figures.

use std::path::PathBuf;

use clap::Args;
use diskvault::{PointBody, PointId};

use super::points::PointJson;
use crate::cli::human::{size, time};
use crate::cli::output::print_json;
use crate::cli::{exit, Globals, PassArgs};

/// Show one recovery point: its disks, sizes and backup figures.
#[derive(Args, Debug)]
pub struct ShowArgs {
    repo: PathBuf,
    /// Point id, unique id prefix, `latest`, or `latest~N` (the Nth point before the newest).
    point: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// Reads the point and shows it.
pub fn run(a: ShowArgs, g: &Globals) -> anyhow::Result<i32> {
    let r = g.open(&a.repo, &a.pass)?;
    let _lock = r.lock_for_reading("show")?;
    let id = r.resolve_point(&a.point)?;
    let body = r.read_point(&id)?;
    if a.json {
        print_json(&PointJson::new(&id, &body));
    } else {
        render(&id, &body);
    }
    Ok(exit::OK)
}

/// How a disk was read, when not whole from a file: for reports.
pub fn origin(d: &diskvault::DiskRecord) -> String {
    let o = &d.origin;
    match (o.kind, o.parent) {
        (diskvault::SourceKind::File, None) => String::new(),
        (diskvault::SourceKind::File, Some(p)) => format!(
            " (read whole; verified unchanged outside its list against {})",
            p.short()
        ),
        (diskvault::SourceKind::ChangedBlocks, Some(p)) => format!(
            " (changed blocks since {}: {} taken from it unread)",
            p.short(),
            size(o.bytes_from_parent)
        ),
        (kind, _) => format!(" ({})", kind.name()),
    }
}

fn render(id: &PointId, p: &PointBody) {
    out!("recovery point {id}");
    out!("  time      {} UTC", time(p.time_secs));
    out!("  host      {}", p.host);
    out!("  source    {}", p.source);
    out!(
        "  tags      {}",
        if p.tags.is_empty() {
            "-".into()
        } else {
            p.tags.join(", ")
        }
    );
    out!("  duration  {:.2} s", p.duration_millis as f64 / 1000.0);
    match &p.consistency {
        Some(c) => out!("  consistency {} ({})", c.level.name(), c.reason),
        None => out!("  consistency crash (no consistency scripts)"),
    }
    for d in &p.disks {
        out!("  disk {}{}", d.name, origin(d));
        out!("    size        {} ({} bytes)", size(d.size), d.size);
        out!("    blake3      {}", hex::encode(d.image_hash));
        out!("    read        {}", size(d.stats.bytes_read));
        out!("    zero runs   {}", size(d.stats.zero_bytes));
        out!(
            "    chunks      {} ({} new)",
            d.stats.chunks,
            d.stats.new_chunks
        );
        out!("    new bytes   {}", size(d.stats.new_bytes));
        out!("    stored      {}", size(d.stats.stored_bytes));
    }
}

//! `diskvault points`: list the recovery points (or the forgotten ones).

use std::path::PathBuf;

use clap::Args;
use diskvault::{ForgottenPoint, PointBody, PointId};
use serde::Serialize;

use crate::cli::human::{plural, size, time};
use crate::cli::output::{damaged_warnings, print_json};
use crate::cli::{exit, Globals, PassArgs};

/// List recovery points, oldest first.
#[derive(Args, Debug)]
pub struct PointsArgs {
    repo: PathBuf,
    /// List the forgotten points instead (restorable by id until
    /// prune frees them), with when prune may.
    #[arg(long)]
    forgotten: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// A recovery point in `points --json` and `show --json`: its id, its
/// body, and its time in UTC for people.
#[derive(Serialize)]
pub struct PointJson<'a> {
    id: &'a PointId,
    #[serde(flatten)]
    body: &'a PointBody,
    time_utc: String,
}

impl<'a> PointJson<'a> {
    /// The JSON of point `id`.
    pub fn new(id: &'a PointId, body: &'a PointBody) -> Self {
        PointJson {
            id,
            body,
            time_utc: time(body.time_secs),
        }
    }
}

/// Lists the points; exits 4 when some could not be read (they are named
/// on standard error, the others listed).
pub fn run(a: PointsArgs, g: &Globals) -> anyhow::Result<i32> {
    let r = g.open(&a.repo, &a.pass)?;
    if a.forgotten {
        let points = diskvault::list_forgotten(&r)?;
        if a.json {
            print_json(&points);
        } else {
            render_forgotten(&points);
        }
        return Ok(exit::OK);
    }
    let _lock = r.lock_for_reading("points")?;
    let (points, damaged) = r.list_points_lenient()?;
    damaged_warnings(
        &damaged,
        "the listing",
        "'diskvault check REPO' says what it affects",
    );
    if a.json {
        let list: Vec<PointJson> = points.iter().map(|(id, p)| PointJson::new(id, p)).collect();
        print_json(&list);
    } else {
        render(&points);
    }
    // The listing is complete but for what is named above; scripts learn
    // of the damage from the status.
    Ok(if damaged.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

fn render(points: &[(PointId, PointBody)]) {
    if points.is_empty() {
        out!("no recovery points yet");
        return;
    }
    out!(
        "{:<10} {:<19}  {:<14} {:>10} {:>10}  tags",
        "id",
        "time (UTC)",
        "host",
        "size",
        "added"
    );
    for (id, p) in points {
        let size_total: u64 = p.disks.iter().map(|d| d.size).sum();
        let added: u64 = p.disks.iter().map(|d| d.stats.stored_bytes).sum();
        out!(
            "{:<10} {:<19}  {:<14} {:>10} {:>10}  {}",
            id.short(),
            time(p.time_secs),
            p.host,
            size(size_total),
            size(added),
            p.tags.join(",")
        );
    }
    out!("{} recovery points", points.len());
}

fn render_forgotten(points: &[ForgottenPoint]) {
    if points.is_empty() {
        out!("no forgotten points");
        return;
    }
    out!(
        "{:<10} {:<19}  {:<14} {:<19}  {:<19}  reason",
        "id",
        "time (UTC)",
        "host",
        "forgotten (UTC)",
        "prunable after (UTC)"
    );
    for p in points {
        out!(
            "{:<10} {:<19}  {:<14} {:<19}  {:<19}  {}",
            p.point.id.short(),
            time(p.point.time),
            p.point.host,
            time(p.forgotten_at),
            time(p.prunable_after),
            p.reason
        );
    }
    out!(
        "{}; 'diskvault unforget REPO ID' brings one back",
        plural(points.len(), "forgotten point", "forgotten points")
    );
}

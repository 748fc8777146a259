//! `diskvault status --replica`: how far a replica lags behind.

use std::path::PathBuf;

use clap::Args;
use diskvault::{PointId, ReplicaStatus};
use serde::Serialize;

use crate::cli::human::{age, now, plural, size, time};
use crate::cli::output::print_json;
use crate::cli::{exit, location, Globals, PassArgs};

/// Show how far a replica lags behind: points it lacks, bytes to send,
/// newest point on each side.
#[derive(Args, Debug)]
pub struct StatusArgs {
    repo: PathBuf,
    /// The replica to compare with.
    #[arg(long, value_name = "REPLICA")]
    replica: PathBuf,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// `status --json`: the library's status, whether a sync would copy
/// nothing, and how old the newest points are now.
#[derive(Serialize)]
struct StatusJson<'a> {
    #[serde(flatten)]
    status: &'a ReplicaStatus,
    up_to_date: bool,
    /// Seconds since the source's newest point started (null: no point).
    source_newest_age_seconds: Option<i64>,
    /// Seconds since the replica's newest point started.
    replica_newest_age_seconds: Option<i64>,
}

/// Compares the repository with its replica.
pub fn run(a: StatusArgs, g: &Globals) -> anyhow::Result<i32> {
    let r = g.open(&a.repo, &a.pass)?;
    let st = diskvault::replica_status(&r, &location(&a.replica)?)?;
    let now = now();
    if a.json {
        let age_of = |n: &Option<(PointId, i64)>| n.map(|(_, t)| now - t);
        print_json(&StatusJson {
            status: &st,
            up_to_date: st.is_current(),
            source_newest_age_seconds: age_of(&st.source_newest),
            replica_newest_age_seconds: age_of(&st.replica_newest),
        });
    } else {
        render(&st, now);
    }
    Ok(exit::OK)
}

fn render(st: &ReplicaStatus, now: i64) {
    if !st.replica_exists {
        out!(
            "{} does not exist yet: 'diskvault sync {} {}' creates it",
            st.replica,
            st.source,
            st.replica
        );
    } else if let Some(m) = &st.marker {
        out!(
            "replica {} (created {} UTC from {} on {})",
            st.replica,
            time(m.created),
            m.source,
            m.host
        );
    } else {
        out!("replica {} (a copy of the same repository)", st.replica);
    }
    let newest = |n: &Option<(PointId, i64)>| match n {
        Some((id, t)) => format!("{}  {} UTC ({} ago)", id.short(), time(*t), age(now - t)),
        None => "none".into(),
    };
    out!("  newest point in source   {}", newest(&st.source_newest));
    out!("  newest point in replica  {}", newest(&st.replica_newest));
    if st.missing_points.is_empty() {
        out!("  the replica holds every point of the source");
    } else {
        out!(
            "  the replica lacks {}:",
            plural(st.missing_points.len(), "point", "points")
        );
        for (id, t) in &st.missing_points {
            out!("    {}  {} UTC", id.short(), time(*t));
        }
    }
    if st.extra_points > 0 {
        out!(
            "  the replica has {} the source lacks",
            plural(st.extra_points, "point", "points")
        );
    }
    if st.is_current() {
        out!("up to date: a sync would copy nothing");
    } else {
        out!(
            "to send: {} ({})",
            plural(st.objects_to_send, "object", "objects"),
            size(st.bytes_to_send)
        );
    }
}

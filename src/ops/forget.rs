//! `forget` and `unforget`: mark recovery points forgotten by a retention
//! policy (or by id), and take the mark back.
//!
//! Forgetting is a soft delete: each forgotten point gets a forget record
//! (`forgotten/<id>`), and nothing else changes. The point is no longer
//! listed or `latest`, but stays restorable by id, and `prune` frees its
//! data only once the grace period of the stored policy (14 days unless
//! set) has passed since it was forgotten. `unforget` deletes the records.
//! Both take a shared lock: they add or remove only forget records, and
//! prune reads those again under its exclusive lock before deleting.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::forget::ForgetRecord;
use crate::format::point::PointBody;
use crate::format::policy::DEFAULT_GRACE_SECS;
use crate::format::PointId;
use crate::repo::{host_name, now_unix, LockKind, Repository};
use crate::retention::{self, Decision, PointSummary, RetentionPolicy};

/// What to forget.
#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    /// The rules to apply. `None`: the policy stored in the repository
    /// (see [`Repository::read_policy`]); it is an error if there is none.
    /// Ignored when `points` is not empty.
    pub policy: Option<RetentionPolicy>,
    /// Forget exactly these points (ids or unique prefixes) instead of
    /// applying a policy.
    pub points: Vec<String>,
    /// Decide and report, but write nothing.
    pub dry_run: bool,
    /// Allow a decision that forgets every point of a group (a policy of
    /// zero counts, or tags no point has). Refused otherwise, because it
    /// is far more often a mistake than a wish.
    pub allow_remove_all: bool,
    /// The current time in Unix seconds; the clock when `None` (tests fix it).
    pub now: Option<i64>,
}

/// A recovery point as retention reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct PointLine {
    /// The point's id.
    pub id: PointId,
    /// Start time of the backup, Unix seconds.
    pub time: i64,
    /// Host recorded in the point.
    pub host: String,
    /// Names of its disks.
    pub disks: Vec<String>,
    /// Its tags.
    pub tags: Vec<String>,
}

impl PointLine {
    fn of(id: PointId, p: &PointBody) -> Self {
        PointLine {
            id,
            time: p.time_secs,
            host: p.host.clone(),
            disks: p.disks.iter().map(|d| d.name.clone()).collect(),
            tags: p.tags.clone(),
        }
    }
}

/// One point as `forget` decided about it.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetDecision {
    /// The point decided about.
    #[serde(flatten)]
    pub point: PointLine,
    /// Whether it stays.
    pub keep: bool,
    /// The rules that keep it (empty when it is forgotten).
    pub reasons: Vec<String>,
    /// The group the rules were applied in.
    pub group: String,
}

/// The outcome of a forget.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    /// Every point that was live, newest first within each group.
    pub decisions: Vec<ForgetDecision>,
    /// The rules applied, as command-line flags (`forget` of explicit ids:
    /// empty).
    pub policy: String,
    /// Points forgotten now (or that would be, with `dry_run`).
    pub forgotten: usize,
    /// Points kept.
    pub kept: usize,
    /// Seconds the forgotten points stay restorable before prune may free
    /// their data.
    pub grace_secs: u64,
    /// True when nothing was written (`--dry-run`).
    pub dry_run: bool,
}

/// Applies a retention policy (or forgets the points named) and records a
/// forget record for every point it removes.
pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    let _lock = if opts.dry_run {
        repo.lock_for_reading("forget")?
    } else {
        repo.lock(LockKind::Shared, "forget")?
    };
    let now = opts.now.unwrap_or_else(|| now_unix().0);
    let stored = repo.read_policy()?;
    let grace_secs = stored
        .as_ref()
        .map(|p| p.grace_secs)
        .unwrap_or(DEFAULT_GRACE_SECS);
    let live = repo.list_points()?;
    let (decisions, policy_text) = if opts.points.is_empty() {
        let policy = match (&opts.policy, &stored) {
            (Some(p), _) => p.clone(),
            (None, Some(s)) if !s.rules.is_empty() => s.rules.clone(),
            _ => {
                return Err(Error::InvalidArgument(
                    "no retention rules given and none stored; pass --keep-last, --keep-daily, ... or store a policy with 'diskvault policy set'".into(),
                ))
            }
        };
        let summaries: Vec<PointSummary> = live.iter().map(|(id, p)| summary(id, p)).collect();
        let decisions = retention::apply(&policy, &summaries)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        (decisions, policy.to_string())
    } else {
        (by_id(repo, &live, &opts.points)?, String::new())
    };
    if !opts.allow_remove_all && opts.points.is_empty() {
        refuse_emptying_a_group(&decisions)?;
    }

    let bodies: HashMap<PointId, &PointBody> = live.iter().map(|(id, p)| (*id, p)).collect();
    let mut out: Vec<ForgetDecision> = decisions
        .iter()
        .map(|d| ForgetDecision {
            point: PointLine::of(d.id, bodies[&d.id]),
            keep: d.keep,
            reasons: d.reasons.clone(),
            group: d.group.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.group.cmp(&b.group).then(b.point.time.cmp(&a.point.time)));

    let reason = if policy_text.is_empty() {
        "forget by id".to_string()
    } else {
        format!("forget {policy_text}")
    };
    let mut forgotten = 0;
    for d in out.iter().filter(|d| !d.keep) {
        forgotten += 1;
        if !opts.dry_run {
            repo.write_forget_record(&ForgetRecord::new(d.point.id, now, &host_name(), &reason))?;
        }
    }
    Ok(ForgetReport {
        kept: out.len() - forgotten,
        decisions: out,
        policy: policy_text,
        forgotten,
        grace_secs,
        dry_run: opts.dry_run,
    })
}

fn summary(id: &PointId, p: &PointBody) -> PointSummary {
    PointSummary {
        id: *id,
        time_secs: p.time_secs,
        time_nanos: p.time_nanos,
        host: p.host.clone(),
        disks: p.disks.iter().map(|d| d.name.clone()).collect(),
        tags: p.tags.clone(),
    }
}

/// Decisions for `forget POINT...`: the named points go, the rest stay.
fn by_id(
    repo: &Repository,
    live: &[(PointId, PointBody)],
    specs: &[String],
) -> Result<Vec<Decision>> {
    let mut named = Vec::new();
    for spec in specs {
        let id = repo.resolve_point(spec)?;
        if !live.iter().any(|(l, _)| *l == id) {
            return Err(Error::InvalidArgument(format!(
                "point {} is already forgotten; 'diskvault points --forgotten' lists forgotten points",
                id.short()
            )));
        }
        named.push(id);
    }
    Ok(live
        .iter()
        .map(|(id, _)| {
            let keep = !named.contains(id);
            Decision {
                id: *id,
                keep,
                reasons: if keep {
                    vec!["not named".into()]
                } else {
                    Vec::new()
                },
                group: String::new(),
            }
        })
        .collect())
}

/// Refuses a decision that leaves a group with no point at all.
fn refuse_emptying_a_group(decisions: &[Decision]) -> Result<()> {
    let mut groups: HashMap<&str, bool> = HashMap::new();
    for d in decisions {
        *groups.entry(d.group.as_str()).or_insert(false) |= d.keep;
    }
    if let Some((group, _)) = groups.iter().find(|(_, kept)| !**kept) {
        let which = if group.is_empty() {
            "every point".to_string()
        } else {
            format!("every point of the group '{group}'")
        };
        return Err(Error::InvalidArgument(format!(
            "this policy would forget {which}; check the rules (a count of 0 keeps nothing), or pass --allow-remove-all if that is what you want"
        )));
    }
    Ok(())
}

/// A forgotten point, as `points --forgotten` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ForgottenPoint {
    /// The forgotten point.
    #[serde(flatten)]
    pub point: PointLine,
    /// When it was (first) forgotten, Unix seconds.
    pub forgotten_at: i64,
    /// Who forgot it and why.
    pub reason: String,
    /// From when `prune` may free its data, Unix seconds.
    pub prunable_after: i64,
}

/// The forgotten points that `prune` has not removed yet, oldest first.
pub fn list_forgotten(repo: &Repository) -> Result<Vec<ForgottenPoint>> {
    let _lock = repo.lock_for_reading("points")?;
    let grace = repo
        .read_policy()?
        .map(|p| p.grace_secs)
        .unwrap_or(DEFAULT_GRACE_SECS);
    let forgotten = repo.forgotten_points()?;
    let mut out = Vec::new();
    for (id, p) in repo.list_all_points()? {
        let Some(r) = forgotten.get(&id) else {
            continue;
        };
        out.push(ForgottenPoint {
            point: PointLine::of(id, &p),
            forgotten_at: r.time_secs,
            reason: r.reason.clone(),
            prunable_after: r.time_secs.saturating_add(grace as i64),
        });
    }
    Ok(out)
}

/// Brings forgotten points back: deletes their forget records. Returns the
/// points unforgotten. A point already pruned cannot come back.
pub fn unforget(repo: &Repository, points: &[String]) -> Result<Vec<PointId>> {
    let _lock = repo.lock(LockKind::Shared, "unforget")?;
    let records = repo.list_forget_records()?;
    let mut done = Vec::new();
    for spec in points {
        let id = repo.resolve_point(spec)?;
        let mine: Vec<_> = records.iter().filter(|(_, r)| r.point == id).collect();
        if mine.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "point {} is not forgotten",
                id.short()
            )));
        }
        for (rid, _) in mine {
            repo.delete_forget_record(rid)?;
        }
        done.push(id);
    }
    repo.store().barrier()?;
    Ok(done)
}

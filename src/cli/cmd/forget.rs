//! `diskvault forget`: mark recovery points forgotten by retention rules
//! or by id.

use std::path::PathBuf;

use clap::Args;
use diskvault::{ForgetOptions, ForgetReport};

use crate::cli::args::RuleArgs;
use crate::cli::human::{duration, plural, time};
use crate::cli::output::print_json;
use crate::cli::{exit, Globals, PassArgs};

/// Mark recovery points forgotten by retention rules (or the stored
/// policy, or by id). Forgotten points stay restorable by id until
/// prune frees them after the grace period.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    repo: PathBuf,
    /// Forget exactly these points (ids or unique prefixes) instead of
    /// applying rules.
    #[arg(value_name = "POINT")]
    points: Vec<String>,
    #[command(flatten)]
    rules: RuleArgs,
    /// Show what would be forgotten, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Allow rules that forget every point of a group.
    #[arg(long)]
    allow_remove_all: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// Applies the rules (or forgets the points named) and reports every
/// decision.
pub fn run(a: ForgetArgs, g: &Globals) -> anyhow::Result<i32> {
    let r = g.open(&a.repo, &a.pass)?;
    let given = a.rules.policy();
    let report = diskvault::forget(
        &r,
        &ForgetOptions {
            policy: (!given.is_empty()).then_some(given),
            points: a.points,
            dry_run: a.dry_run,
            allow_remove_all: a.allow_remove_all,
            now: None,
        },
    )?;
    if a.json {
        print_json(&report);
    } else {
        render(&report);
    }
    Ok(exit::OK)
}

fn render(rep: &ForgetReport) {
    if !rep.policy.is_empty() {
        out!("policy: {}", rep.policy);
    }
    let mut group = None;
    for d in &rep.decisions {
        if group != Some(&d.group) {
            group = Some(&d.group);
            if !d.group.is_empty() {
                out!("\n{}", d.group);
            }
            out!(
                "  {:<10} {:<19}  {:<8} {:<24} reasons",
                "id",
                "time (UTC)",
                "action",
                "tags"
            );
        }
        out!(
            "  {:<10} {:<19}  {:<8} {:<24} {}",
            d.point.id.short(),
            time(d.point.time),
            if d.keep { "keep" } else { "forget" },
            d.point.tags.join(","),
            d.reasons.join(", ")
        );
    }
    let verb = if rep.dry_run {
        "would forget"
    } else {
        "forgot"
    };
    out!(
        "{verb} {}, kept {}; forgotten points stay restorable by id for {}, then 'diskvault prune' frees their data",
        plural(rep.forgotten, "point", "points"),
        rep.kept,
        duration(rep.grace_secs)
    );
    if rep.dry_run {
        out!("dry run: nothing was changed");
    }
}

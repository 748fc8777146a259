//! `diskvault policy`: store or show the retention policy.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use diskvault::{Error, StoredPolicy};

use crate::cli::args::{parse_duration, RuleArgs};
use crate::cli::human::duration;
use crate::cli::output::print_json;
use crate::cli::{exit, Globals, PassArgs};

/// What to do with the policy.
#[derive(Subcommand, Debug)]
pub enum PolicyAction {
    /// Store retention rules and the grace period of forgotten points.
    Set {
        repo: PathBuf,
        #[command(flatten)]
        rules: RuleArgs,
        /// How long forgotten points stay restorable before prune frees
        /// them, e.g. 14d (the default), 0 for at once.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Option<Duration>,
        /// Print the policy now stored as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Show the stored policy.
    Show {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
}

/// Runs the policy action.
pub fn run(action: PolicyAction, g: &Globals) -> anyhow::Result<i32> {
    match action {
        PolicyAction::Set {
            repo,
            rules,
            grace,
            json,
            pass,
        } => {
            let r = g.open(&repo, &pass)?;
            let mut stored = r.read_policy()?.unwrap_or_default();
            let given = rules.policy();
            if given.is_empty() && grace.is_none() {
                bail!(Error::InvalidArgument(
                    "nothing to set: give rules (--keep-daily 7 ...) and/or --grace DURATION"
                        .into()
                ));
            }
            if !given.is_empty() {
                stored.rules = given;
            }
            if let Some(grace) = grace {
                stored.grace_secs = grace.as_secs();
            }
            r.write_policy(&stored)?;
            if json {
                print_json(&stored);
            } else {
                render(&stored);
            }
        }
        PolicyAction::Show { repo, json, pass } => {
            let r = g.open(&repo, &pass)?;
            match r.read_policy()? {
                Some(p) if json => print_json(&p),
                Some(p) => render(&p),
                None if json => out!("null"),
                None => out!(
                    "no policy stored (forgotten points are kept {} before prune frees them); set one with 'diskvault policy set'",
                    duration(StoredPolicy::default().grace_secs)
                ),
            }
        }
    }
    Ok(exit::OK)
}

fn render(p: &StoredPolicy) {
    if p.rules.is_empty() {
        out!("rules: none (forget needs rules on its command line)");
    } else {
        out!("rules: {}", p.rules);
    }
    out!(
        "grace: forgotten points stay restorable for {} before prune frees them",
        duration(p.grace_secs)
    );
}

//! Command-line definitions.

use std::path::PathBuf;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use diskvault::retention::{parse_count, CalendarSpan, GroupBy, RetentionPolicy};

use super::cmd;

/// A content-addressed, deduplicating, encrypted vault for disk images.
#[derive(Parser, Debug)]
#[command(name = "diskvault", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub lock: LockArgs,
    /// Storage requests in flight at once: ranged reads of a restore, pack
    /// uploads of a backup, packs read by check --read-data (default: 8).
    /// More hides an object store's latency; each pack upload in flight
    /// holds its pack (16 MiB) in memory.
    #[arg(long, value_name = "N", value_parser = parse_threads, global = true)]
    pub connections: Option<usize>,
    /// Show no progress bars (they are shown only on a terminal anyway).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

/// How the passphrase is supplied (besides `DISKVAULT_PASSWORD` and the prompt).
#[derive(Args, Debug, Clone, Default)]
pub struct PassArgs {
    /// Read the passphrase from the first line of this file.
    #[arg(long, value_name = "FILE", global = true)]
    pub password_file: Option<PathBuf>,
}

/// How long to wait for a lock another command holds.
#[derive(Args, Debug, Clone, Default)]
pub struct LockArgs {
    /// Wait up to DURATION (e.g. 30s, 10m, 2h) for a conflicting lock held
    /// by another command to be released, instead of failing at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub wait: Option<Duration>,
}

/// A duration such as `90s`, `10m`, `2h`, `14d` or `1h30m`; a bare number
/// is seconds. (`m` is minutes here; in --keep-within it is months.)
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("'{text}' is not a duration; write for example 30s, 10m, 2h, 14d or 1h30m");
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= 100 * 366 * 86_400)
            .ok_or_else(|| format!("'{text}' is longer than a hundred years"))?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A number of worker threads or requests: 1 to
/// `diskvault::exec::MAX_THREADS`.
pub fn parse_threads(text: &str) -> Result<usize, String> {
    let max = diskvault::exec::MAX_THREADS;
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{text}' is not a whole number from 1 to {max}")),
    }
}

/// Retention rules, as `forget` and `policy set` take them.
#[derive(Args, Debug, Clone, Default)]
pub struct RuleArgs {
    /// Keep the N newest points (`unlimited` or -1: all).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_last: Option<i64>,
    /// Keep the newest point of each of the N latest hours (UTC) with a point.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest point of each of the N latest days (UTC) with a point.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_daily: Option<i64>,
    /// Keep the newest point of each of the N latest ISO weeks with a point.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest point of each of the N latest months with a point.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest point of each of the N latest years with a point.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_yearly: Option<i64>,
    /// Keep every point within SPAN of the group's newest point, e.g. 30d,
    /// 2w, 6m (months), 1y6m, 12h.
    #[arg(long, value_name = "SPAN")]
    pub keep_within: Option<CalendarSpan>,
    /// Keep every point with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Apply the rules per group of points: host, disks, tags, a
    /// comma-separated mix, or none (default: host,disks).
    #[arg(long, value_name = "FIELDS")]
    pub group_by: Option<GroupBy>,
}

impl RuleArgs {
    /// The rules given on the command line.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            keep_tags: self.keep_tags.clone(),
            group_by: self.group_by.unwrap_or_default(),
        }
    }
}

/// The commands; each one's arguments and help live in its file under
/// `cmd/`.
#[derive(Subcommand, Debug)]
pub enum Command {
    Init(cmd::init::InitArgs),
    Backup(cmd::backup::BackupArgs),
    Analyze(cmd::analyze::AnalyzeArgs),
    Points(cmd::points::PointsArgs),
    Show(cmd::show::ShowArgs),
    Restore(cmd::restore::RestoreArgs),
    Partitions(cmd::partitions::PartitionsArgs),
    Ls(cmd::ls::LsArgs),
    Cat(cmd::cat::CatArgs),
    Extract(cmd::extract::ExtractArgs),
    ServeNbd(cmd::serve_nbd::ServeNbdArgs),
    Sync(cmd::sync::SyncArgs),
    Status(cmd::status::StatusArgs),
    Repair(cmd::repair::RepairArgs),
    Check(cmd::check::CheckArgs),
    Stats(cmd::stats::StatsArgs),
    /// Manage the passphrases (key files) that open the repository.
    Key {
        #[command(subcommand)]
        action: cmd::key::KeyAction,
    },
    Forget(cmd::forget::ForgetArgs),
    Unforget(cmd::unforget::UnforgetArgs),
    /// Store or show the retention policy that `forget` applies by default.
    Policy {
        #[command(subcommand)]
        action: cmd::policy::PolicyAction,
    },
    Prune(cmd::prune::PruneArgs),
    Unlock(cmd::unlock::UnlockArgs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_how_to_write_them() {
        let d = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("0"), Ok(0));
        assert_eq!(d("45"), Ok(45));
        assert_eq!(d("30s"), Ok(30));
        assert_eq!(d("10m"), Ok(600));
        assert_eq!(d("1h30m"), Ok(5400));
        assert_eq!(d("14d"), Ok(14 * 86_400));
        assert_eq!(d("2w"), Ok(14 * 86_400));
        for bad in ["", "m", "1x", "10m5", "-3s", "1.5h"] {
            let e = d(bad).unwrap_err();
            assert!(e.contains("30s"), "{bad}: {e}");
        }
        assert!(d("999999999999d").unwrap_err().contains("hundred years"));
    }
}

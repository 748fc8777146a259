//! Command-line definitions.

use std::path::PathBuf;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use diskvault::retention::{parse_count, CalendarSpan, GroupBy};
use diskvault::{ChunkerParams, CompressionSetting};

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
fn parse_threads(text: &str) -> Result<usize, String> {
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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionArg {
    /// AES-256-GCM, with keyed chunk ids (the default).
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    /// No encryption: anyone who can read the repository can read the disks.
    None,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init {
        /// Directory for the repository (must not exist or be empty).
        repo: PathBuf,
        #[arg(long, value_enum, default_value = "aes-256-gcm")]
        encryption: EncryptionArg,
        /// Chunking: fixed (16K, the default), fixed:SIZE, fastcdc (4K/16K/64K) or fastcdc:MIN/AVG/MAX.
        #[arg(long, default_value = "fixed")]
        chunker: ChunkerParams,
        /// Default compression of new chunks: zstd:LEVEL (-7..=22) or none.
        #[arg(long, default_value = "zstd:3")]
        compression: CompressionSetting,
        /// Repository format: 2 (the default) or 1, for readers that know only format 1.
        #[arg(long = "format", value_name = "MAJOR", default_value_t = diskvault::format::FORMAT_MAJOR, value_parser = clap::value_parser!(u32).range(1..=diskvault::format::FORMAT_MAJOR as i64))]
        format_major: u32,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Back up one or more disk images (raw files or block devices) as a new recovery point.
    Backup {
        repo: PathBuf,
        /// Raw image files or block devices, one per disk.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Disk name for each image, in order (default: the image's file name).
        #[arg(long = "disk", value_name = "NAME")]
        disks: Vec<String>,
        /// Tag the recovery point (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Host name to record (default: this machine's).
        #[arg(long)]
        host: Option<String>,
        /// Compression of new chunks, overriding the repository default.
        #[arg(long)]
        compression: Option<CompressionSetting>,
        /// Worker threads (default: all cores).
        #[arg(long, value_name = "N", value_parser = parse_threads)]
        threads: Option<usize>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// List recovery points, oldest first.
    Points {
        repo: PathBuf,
        /// List the forgotten points instead (restorable by id until
        /// prune frees them), with when prune may.
        #[arg(long)]
        forgotten: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Show one recovery point: its disks, sizes and backup figures.
    Show {
        repo: PathBuf,
        /// Point id, unique id prefix, or `latest`.
        point: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Restore disks of a recovery point, verified byte for byte.
    Restore {
        repo: PathBuf,
        /// Point id, unique id prefix, or `latest`.
        point: String,
        /// Output file or block device (a directory when restoring several disks).
        #[arg(required_unless_present = "into")]
        output: Option<PathBuf>,
        /// Update an existing older copy of the disk in place instead: only
        /// the chunks that differ are fetched and written, after all of them
        /// were read and verified. A file whose size differs from the
        /// disk's needs --force.
        #[arg(long, value_name = "EXISTING", conflicts_with = "output")]
        into: Option<PathBuf>,
        /// Restore only this disk.
        #[arg(long)]
        disk: Option<String>,
        /// Replace an existing file or write an existing block device (and,
        /// with --into, update a copy whose size differs from the disk's).
        #[arg(long)]
        force: bool,
        /// Worker threads (default: all cores).
        #[arg(long, value_name = "N", value_parser = parse_threads)]
        threads: Option<usize>,
        /// A replica of the repository to read chunks from when they are
        /// missing or damaged in REPO.
        #[arg(long, value_name = "REPLICA")]
        fallback: Option<PathBuf>,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Copy recovery points to a replica, sending only the objects it lacks
    /// (verbatim and still encrypted: no passphrase needed).
    Sync {
        /// The repository to copy from.
        src: PathBuf,
        /// A replica of SRC, or a new or empty directory to create one in.
        dst: PathBuf,
        /// Send only points whose id starts with PREFIX (repeatable, or
        /// comma-separated); `latest` needs the passphrase.
        #[arg(long = "points", value_name = "PREFIX", value_delimiter = ',')]
        points: Vec<String>,
        /// Send only points with this tag (repeatable; needs the passphrase).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Open and verify every chunk of every copied pack (needs the passphrase).
        #[arg(long)]
        verify: bool,
        /// Objects copied at once (default: --connections, 8).
        #[arg(long, value_name = "N", value_parser = parse_threads)]
        threads: Option<usize>,
        /// Make DST's live points exactly SRC's live (selected) points:
        /// forget in DST what SRC forgot or no longer has, unforget what
        /// SRC has live. Deletes nothing; DST's own prune frees the space
        /// after its grace period (needs the passphrase).
        #[arg(long)]
        delete: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Show how far a replica lags behind: points it lacks, bytes to send,
    /// newest point on each side.
    Status {
        repo: PathBuf,
        /// The replica to compare with.
        #[arg(long, value_name = "REPLICA")]
        replica: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Put back missing or damaged packs, chunks, index files and points
    /// from a replica.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["from", "index"])))]
    Repair {
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
    },
    /// Verify the repository: structure, and with --read-data every chunk.
    Check {
        repo: PathBuf,
        /// Read, decrypt and verify every chunk.
        #[arg(long)]
        read_data: bool,
        /// Worker threads (default: all cores).
        #[arg(long, value_name = "N", value_parser = parse_threads)]
        threads: Option<usize>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Show what the repository protects and what it costs.
    Stats {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Manage the passphrases (key files) that open the repository.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Mark recovery points forgotten by retention rules (or the stored
    /// policy, or by id). Forgotten points stay restorable by id until
    /// prune frees them after the grace period.
    Forget {
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
    },
    /// Bring forgotten points back (before prune has freed them).
    Unforget {
        repo: PathBuf,
        #[arg(value_name = "POINT", required = true)]
        points: Vec<String>,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Store or show the retention policy that `forget` applies by default.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Free the space of forgotten points past their grace period and of
    /// data no point needs: delete unused packs, repack partly used ones.
    Prune {
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
    },
    /// Remove stale locks (left by commands that died), or with --all every
    /// lock. Needs no passphrase.
    Unlock {
        repo: PathBuf,
        /// Remove every lock, also those of commands still running: only
        /// when you know they are gone (on another machine, say).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Predict what backups of some images would store with each chunker and compression; writes nothing.
    Analyze(crate::cli::cmd::analyze::AnalyzeArgs),
}

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

#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// Add a passphrase. The new one comes from DISKVAULT_NEW_PASSWORD, --new-password-file or a prompt.
    Add {
        repo: PathBuf,
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// List key files.
    List {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Remove a key file (not the one used to open the repository).
    Remove {
        repo: PathBuf,
        /// Key id or unique prefix (see `key list`).
        key: String,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Change the passphrase in use (adds a new key file, removes the old one).
    Passwd {
        repo: PathBuf,
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        pass: PassArgs,
    },
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

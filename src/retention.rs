//! Retention policies: which recovery points a `--keep-*` policy keeps, and why.
//!
//! This module is pure: it reads no clock and touches no storage. Given a
//! [`RetentionPolicy`] and a [`PointSummary`] per recovery point, [`apply`]
//! returns a [`Decision`] per point, naming every rule that keeps it. The
//! `forget` command removes the points whose decision says `keep: false`.
//!
//! The rules mean what they mean in `restic forget`, which many users know:
//!
//! * Points are first split into groups ([`GroupBy`], by default host and
//!   disks); every rule applies within each group on its own.
//! * Within a group, points are ordered newest first. Equal times are ordered
//!   by `time_nanos`, then by id (the larger id counts as newer), so the
//!   result never depends on the order of the input.
//! * `keep_last N` keeps the N newest points.
//! * `keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly` and
//!   `keep_yearly N` each keep the newest point of each of the N most recent
//!   calendar hours, days, ISO-8601 weeks, months or years *that contain a
//!   point*. Buckets without a point are skipped, not counted: a vault whose
//!   backups paused for a month still keeps N daily points.
//! * `keep_within SPAN` keeps every point strictly newer than the group's
//!   newest point minus SPAN (calendar arithmetic, see [`CalendarSpan`]).
//!   It is relative to the newest point, not to the wall clock, so a vault
//!   whose backups stopped does not age out entirely.
//! * `keep_tags` keeps every point carrying any of the tags.
//! * A count of -1 means unlimited; 0 keeps nothing.
//!
//! [`apply`] returns the decisions in the order of its input.
//!
//! All calendar arithmetic is UTC on the proleptic Gregorian calendar and is
//! done here by hand, so the decisions do not depend on the local time zone
//! of the machine that runs `forget`.
//!
//! Where this differs from restic: buckets are always UTC (restic uses the
//! time zone recorded in each snapshot's timestamp); `keep_within` clamps to
//! the end of a shorter month (March 31 minus one month is the end of
//! February, where restic rolls over into March); a keep-tag is one tag, not
//! a comma-separated list that must all match; and when a group has fewer
//! buckets than a rule's count, the oldest point is not kept in addition, as
//! restic 0.17 and later do.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::format::PointId;

/// The largest number a [`CalendarSpan`] part may hold, and the largest
/// number of days after weeks are folded in. About 270 years of days: far
/// more than any retention needs, and small enough that no arithmetic on a
/// span can overflow.
pub const MAX_SPAN_PART: u32 = 100_000;

/// The most tags a policy may keep by.
pub const MAX_KEEP_TAGS: usize = 256;

/// The longest tag, in bytes, a policy may keep by.
pub const MAX_TAG_LEN: usize = 1024;

/// Everything that can be wrong with a retention policy or its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// The policy sets no rule. Applying it would remove every point, which
    /// is never what forgetting to pass a flag should do.
    #[error("the retention policy has no rule, so it would remove every recovery point; give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within or --keep-tag")]
    EmptyPolicy,
    /// A `--keep-*` count below -1.
    #[error("--keep-{rule} {count} is not a valid count; give 0 or more, or -1 (unlimited)")]
    InvalidCount {
        /// The rule: "last", "hourly", "daily", "weekly", "monthly" or "yearly".
        rule: &'static str,
        /// The count given.
        count: i64,
    },
    /// Text that is not a count.
    #[error("'{input}' is not a count; give a whole number of 0 or more, or 'unlimited' (or -1) to keep all")]
    CountSyntax {
        /// The text given (at most 64 characters of it).
        input: String,
    },
    /// Text that is not a calendar span, or a span out of bounds.
    #[error("invalid span '{input}': {reason}; write a number and a unit for each part, in the order y (years), m (months), w (weeks), d (days), h (hours), e.g. '30d', '2w', '1y6m' or '1y2m3d4h'")]
    InvalidSpan {
        /// The text given (at most 64 characters of it).
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Text that is not a list of grouping fields.
    #[error("invalid group-by '{input}': {reason}; give a comma-separated list of host, disks and tags (e.g. 'host,disks'), or 'none' for a single group")]
    InvalidGroupBy {
        /// The text given (at most 64 characters of it).
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A keep-tag longer than [`MAX_TAG_LEN`] bytes.
    #[error("keep-tag '{tag_start}...' is {len} bytes long; a tag may be at most 1024 bytes")]
    TagTooLong {
        /// The first characters of the tag.
        tag_start: String,
        /// Its length in bytes.
        len: usize,
    },
    /// More than [`MAX_KEEP_TAGS`] keep-tags.
    #[error("the policy keeps by {count} tags; at most 256 are allowed")]
    TooManyTags {
        /// How many tags the policy lists.
        count: usize,
    },
    /// A keep-tag that cannot be a tag: empty, or with control characters.
    #[error("keep-tag '{tag}' is not a usable tag: {reason}")]
    InvalidTag {
        /// The tag (at most 64 characters of it).
        tag: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same point appears twice in the input, so a decision per point
    /// would be ambiguous.
    #[error("recovery point {id} is listed twice; list each point once")]
    DuplicatePoint {
        /// The point's id, in hex.
        id: String,
    },
}

/// What the policy needs to know of one recovery point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointSummary {
    /// The point's id.
    pub id: PointId,
    /// When the backup started: Unix seconds, UTC.
    pub time_secs: i64,
    /// The sub-second part of the start time. Only breaks ties between
    /// points of the same second.
    pub time_nanos: u32,
    /// The host the backup was taken on.
    pub host: String,
    /// The names of the point's disks. Their order does not matter.
    pub disks: Vec<String>,
    /// The point's tags. Their order does not matter.
    pub tags: Vec<String>,
}

/// How points are grouped before the rules apply; each group gets the whole
/// policy on its own, so one host's frequent backups never push out another
/// host's only backup.
///
/// Its text form is a comma-separated list of `host`, `disks` and `tags`
/// (canonically in that order), or `none` (also the empty string) for a
/// single group of all points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupBy {
    /// Points of different hosts are in different groups.
    pub host: bool,
    /// Points with different sets of disk names are in different groups.
    pub disks: bool,
    /// Points with different sets of tags are in different groups.
    pub tags: bool,
}

impl GroupBy {
    /// A single group holding every point.
    pub const NONE: GroupBy = GroupBy {
        host: false,
        disks: false,
        tags: false,
    };
}

impl Default for GroupBy {
    /// Host and disks: the backups of one machine's disk set age together.
    fn default() -> Self {
        GroupBy {
            host: true,
            disks: true,
            tags: false,
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<&str> = [
            (self.host, "host"),
            (self.disks, "disks"),
            (self.tags, "tags"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        if fields.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&fields.join(","))
        }
    }
}

impl FromStr for GroupBy {
    type Err = RetentionError;

    fn from_str(text: &str) -> Result<Self, RetentionError> {
        let fail = |reason: String| RetentionError::InvalidGroupBy {
            input: clip(text),
            reason,
        };
        let text_trimmed = text.trim();
        if text_trimmed.is_empty() || text_trimmed == "none" {
            return Ok(GroupBy::NONE);
        }
        let mut group = GroupBy::NONE;
        for word in text_trimmed.split(',') {
            match word.trim() {
                "host" => group.host = true,
                "disks" => group.disks = true,
                "tags" => group.tags = true,
                "" => return Err(fail("it has an empty item".into())),
                "none" => return Err(fail("'none' cannot be combined with other fields".into())),
                other => return Err(fail(format!("'{}' is not a field", clip(other)))),
            }
        }
        Ok(group)
    }
}

impl Serialize for GroupBy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GroupBy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A span of calendar time, for `keep_within`: years, months, days and hours.
///
/// Its text form is parts like `30d`, `2w`, `1y6m` or `1y2m3d4h`: a number
/// and a unit, with the units `y` (years), `m` (months, not minutes), `w`
/// (weeks of 7 days), `d` (days) and `h` (hours), each at most once and in
/// that order. Weeks are folded into days, so `2w` displays as `14d`. Each
/// number, and the days after folding, is at most [`MAX_SPAN_PART`]; a span
/// of nothing (`0d`) is refused, since it would keep no point at all.
///
/// A span is subtracted from a UTC date-time as the calendar does it, not as
/// a fixed number of seconds: years and months together as one count of
/// months, with the day clamped to the end of a shorter month (March 31
/// minus `1m` is February 29 in a leap year, February 28 otherwise; February
/// 29, 2024 minus `1y1m` is January 29, 2023), then the days, then the hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CalendarSpan {
    /// Whole years.
    pub years: u32,
    /// Whole months.
    pub months: u32,
    /// Whole days (weeks are stored as 7 days each).
    pub days: u32,
    /// Whole hours.
    pub hours: u32,
}

impl CalendarSpan {
    /// Checks the bounds that parsing enforces, for a span built field by field.
    pub fn validate(&self) -> Result<(), RetentionError> {
        let fail = |reason: String| RetentionError::InvalidSpan {
            input: self.to_string(),
            reason,
        };
        for (value, unit) in [
            (self.years, "years"),
            (self.months, "months"),
            (self.days, "days"),
            (self.hours, "hours"),
        ] {
            if value > MAX_SPAN_PART {
                return Err(fail(format!(
                    "{value} {unit} is too many; each part is at most {MAX_SPAN_PART}"
                )));
            }
        }
        if self.is_zero() {
            return Err(fail("the span is zero, so it would keep nothing".into()));
        }
        Ok(())
    }

    fn is_zero(&self) -> bool {
        self.years == 0 && self.months == 0 && self.days == 0 && self.hours == 0
    }
}

impl fmt::Display for CalendarSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            // Not a valid span, but Display must show something parse rejects.
            return f.write_str("0d");
        }
        for (value, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for CalendarSpan {
    type Err = RetentionError;

    fn from_str(text: &str) -> Result<Self, RetentionError> {
        let fail = |reason: String| RetentionError::InvalidSpan {
            input: clip(text),
            reason,
        };
        if text.is_empty() {
            return Err(fail("it is empty".into()));
        }
        const UNITS: [char; 5] = ['y', 'm', 'w', 'd', 'h'];
        let mut values = [0u32; 5];
        let mut seen = [false; 5];
        // Index into UNITS of the first unit the next part may use: parts
        // come largest first, so a repeated or misplaced unit is caught.
        let mut next_unit = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (digits, after) = rest.split_at(digits_len);
            let Some(unit) = after.chars().next() else {
                return Err(fail(format!("'{digits}' has no unit")));
            };
            if digits.is_empty() {
                return Err(fail(format!("expected a number before '{unit}'")));
            }
            let Some(index) = UNITS.iter().position(|u| *u == unit) else {
                return Err(fail(format!("'{unit}' is not a unit")));
            };
            if seen[index] {
                return Err(fail(format!("the unit '{unit}' appears twice")));
            }
            if index < next_unit {
                return Err(fail(format!(
                    "'{unit}' comes after '{}'",
                    UNITS[next_unit - 1]
                )));
            }
            // Parsing fails past u32, so a long run of digits cannot overflow.
            let value = digits
                .parse::<u32>()
                .ok()
                .filter(|v| *v <= MAX_SPAN_PART)
                .ok_or_else(|| {
                    fail(format!(
                        "{}{unit} is too large; each number is at most {MAX_SPAN_PART}",
                        clip(digits)
                    ))
                })?;
            values[index] = value;
            seen[index] = true;
            next_unit = index + 1;
            rest = &after[unit.len_utf8()..];
        }
        let [years, months, weeks, days, hours] = values;
        // Both are at most MAX_SPAN_PART, so this cannot overflow a u32.
        let days = weeks * 7 + days;
        if days > MAX_SPAN_PART {
            return Err(fail(format!(
                "it comes to {days} days; at most {MAX_SPAN_PART} days are allowed"
            )));
        }
        let span = CalendarSpan {
            years,
            months,
            days,
            hours,
        };
        if span.is_zero() {
            return Err(fail("the span is zero, so it would keep nothing".into()));
        }
        Ok(span)
    }
}

impl Serialize for CalendarSpan {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CalendarSpan {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which recovery points to keep. A point is kept if any rule keeps it.
///
/// Counts are `None` when the rule is not set, `Some(n)` with `n >= 0` to
/// keep `n`, or `Some(-1)` for no limit. Stored in the vault as JSON, with
/// the span and the grouping in their text forms:
///
/// ```json
/// {"keep_last":null,"keep_hourly":null,"keep_daily":7,"keep_weekly":4,
///  "keep_monthly":null,"keep_yearly":null,"keep_within":"1m",
///  "keep_tags":["important"],"group_by":"host,disks"}
/// ```
///
/// Unknown fields are refused: a policy written by a newer diskvault may
/// hold a rule this build does not know, and ignoring that rule would remove
/// points the policy means to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the newest n points.
    #[serde(default)]
    pub keep_last: Option<i64>,
    /// Keep the newest point of each of the n latest UTC hours with a point.
    #[serde(default)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest point of each of the n latest UTC days with a point.
    #[serde(default)]
    pub keep_daily: Option<i64>,
    /// Keep the newest point of each of the n latest ISO-8601 weeks with a point.
    #[serde(default)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest point of each of the n latest UTC months with a point.
    #[serde(default)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest point of each of the n latest UTC years with a point.
    #[serde(default)]
    pub keep_yearly: Option<i64>,
    /// Keep every point newer than the group's newest point minus this span.
    #[serde(default)]
    pub keep_within: Option<CalendarSpan>,
    /// Keep every point that has any of these tags.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// How points are grouped; the rules apply within each group.
    #[serde(default)]
    pub group_by: GroupBy,
}

impl RetentionPolicy {
    /// True when no rule is set at all. [`apply`] refuses such a policy.
    /// A rule with count 0 is set: it was asked for, even if it keeps nothing.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, count)| count.is_none())
            && self.keep_within.is_none()
            && self.keep_tags.is_empty()
    }

    /// Checks every bound: counts of -1 or more, a valid span, at most
    /// [`MAX_KEEP_TAGS`] tags, each non-empty, at most [`MAX_TAG_LEN`]
    /// bytes and free of control characters. An empty policy is valid here;
    /// [`apply`] refuses it separately.
    pub fn validate(&self) -> Result<(), RetentionError> {
        for (rule, count) in self.counts() {
            if let Some(count) = count {
                if count < -1 {
                    return Err(RetentionError::InvalidCount { rule, count });
                }
            }
        }
        if let Some(span) = &self.keep_within {
            span.validate()?;
        }
        if self.keep_tags.len() > MAX_KEEP_TAGS {
            return Err(RetentionError::TooManyTags {
                count: self.keep_tags.len(),
            });
        }
        for tag in &self.keep_tags {
            if tag.len() > MAX_TAG_LEN {
                return Err(RetentionError::TagTooLong {
                    tag_start: tag.chars().take(32).collect(),
                    len: tag.len(),
                });
            }
            if tag.is_empty() {
                return Err(RetentionError::InvalidTag {
                    tag: String::new(),
                    reason: "it is empty",
                });
            }
            if tag.chars().any(char::is_control) {
                return Err(RetentionError::InvalidTag {
                    tag: clip(&tag.escape_debug().to_string()),
                    reason: "it contains control characters",
                });
            }
        }
        Ok(())
    }

    /// The count rules in the order their reasons are listed.
    fn counts(&self) -> [(&'static str, Option<i64>); 6] {
        [
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ]
    }
}

impl fmt::Display for RetentionPolicy {
    /// The command-line flags that give this policy, e.g.
    /// `--keep-daily 7 --keep-within 1m --keep-tag important --group-by host,disks`.
    /// Unlimited counts are written `unlimited` (see [`parse_count`]); the
    /// grouping is always written, so the text does not depend on defaults.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (rule, count) in self.counts() {
            if let Some(count) = count {
                write!(f, "--keep-{rule} {} ", count_text(count))?;
            }
        }
        if let Some(span) = &self.keep_within {
            write!(f, "--keep-within {span} ")?;
        }
        for tag in &self.keep_tags {
            write!(f, "--keep-tag {} ", shell_word(tag))?;
        }
        write!(f, "--group-by {}", self.group_by)
    }
}

/// Parses a `--keep-*` count: a whole number of 0 or more, or `unlimited`
/// (also `-1`) for no limit, returned as -1.
pub fn parse_count(text: &str) -> Result<i64, RetentionError> {
    if text == "unlimited" || text == "-1" {
        return Ok(-1);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RetentionError::CountSyntax { input: clip(text) });
    }
    text.parse()
        .map_err(|_| RetentionError::CountSyntax { input: clip(text) })
}

fn count_text(count: i64) -> String {
    if count == -1 {
        "unlimited".into()
    } else {
        count.to_string()
    }
}

/// Quotes a word for a POSIX shell when it needs it, so the flags shown by
/// Display can be pasted back into a command line.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/@%+=".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// At most 64 characters of user input, for error messages: enough to
/// recognise it, without echoing megabytes of a hostile policy file.
fn clip(text: &str) -> String {
    let mut clipped: String = text.chars().take(64).collect();
    if clipped.len() < text.len() {
        clipped.push_str("...");
    }
    clipped
}

/// What the policy decided for one recovery point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The point.
    #[serde(serialize_with = "serialize_hex")]
    pub id: PointId,
    /// Whether any rule keeps it.
    pub keep: bool,
    /// Why it is kept: e.g. `["last", "daily", "weekly"]`, `["within 30d"]`
    /// or `["tag important"]`, in the order last, hourly, daily, weekly,
    /// monthly, yearly, within, tag (tags in the policy's order). Empty when
    /// the point is removed.
    pub reasons: Vec<String>,
    /// The point's group as text, naming only the grouped fields, e.g.
    /// `host=web1 disks=data,root` (disks and tags sorted). Empty when the
    /// policy groups nothing.
    pub group: String,
}

fn serialize_hex<S: serde::Serializer>(id: &PointId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&id.to_hex())
}

/// Decides, for every point, whether `policy` keeps it and why.
///
/// Returns one decision per input point, in the order of the input, so
/// `decisions[i]` is about `points[i]`. Fails if the policy is invalid or
/// sets no rule (so that forgetting a flag can never remove everything), or
/// if a point is listed twice. The result does not depend on the order of
/// the input.
pub fn apply(
    policy: &RetentionPolicy,
    points: &[PointSummary],
) -> Result<Vec<Decision>, RetentionError> {
    policy.validate()?;
    if policy.is_empty() {
        return Err(RetentionError::EmptyPolicy);
    }
    let mut seen = HashSet::with_capacity(points.len());
    for point in points {
        if !seen.insert(point.id) {
            return Err(RetentionError::DuplicatePoint {
                id: point.id.to_hex(),
            });
        }
    }

    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (index, point) in points.iter().enumerate() {
        groups
            .entry(GroupKey::of(point, policy.group_by))
            .or_default()
            .push(index);
    }

    let mut decisions: Vec<Decision> = points
        .iter()
        .map(|point| Decision {
            id: point.id,
            keep: false,
            reasons: Vec::new(),
            group: String::new(),
        })
        .collect();
    for (key, mut members) in groups {
        members.sort_by(|&a, &b| newest_first(&points[a], &points[b]));
        let ordered: Vec<&PointSummary> = members.iter().map(|&i| &points[i]).collect();
        let reasons = decide_group(policy, &ordered);
        let group = key.to_string();
        for (index, reasons) in members.into_iter().zip(reasons) {
            let decision = &mut decisions[index];
            decision.keep = !reasons.is_empty();
            decision.reasons = reasons;
            decision.group.clone_from(&group);
        }
    }
    Ok(decisions)
}

/// Orders points newest first, with ties broken so the order is total.
fn newest_first(a: &PointSummary, b: &PointSummary) -> std::cmp::Ordering {
    (b.time_secs, b.time_nanos, b.id).cmp(&(a.time_secs, a.time_nanos, a.id))
}

/// The fields a point is grouped by; `None` for fields not grouped.
/// Grouping compares these, never the display text, so a host name with a
/// space in it cannot make two groups look alike.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    host: Option<String>,
    disks: Option<Vec<String>>,
    tags: Option<Vec<String>>,
}

impl GroupKey {
    fn of(point: &PointSummary, by: GroupBy) -> GroupKey {
        // Sorted and deduplicated: a point of disks [root, data] belongs with
        // one of [data, root].
        let set = |names: &[String]| {
            let mut names = names.to_vec();
            names.sort();
            names.dedup();
            names
        };
        GroupKey {
            host: by.host.then(|| point.host.clone()),
            disks: by.disks.then(|| set(&point.disks)),
            tags: by.tags.then(|| set(&point.tags)),
        }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host={host}"));
        }
        if let Some(disks) = &self.disks {
            parts.push(format!("disks={}", disks.join(",")));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags={}", tags.join(",")));
        }
        f.write_str(&parts.join(" "))
    }
}

/// The calendar buckets of the bucket rules.
#[derive(Clone, Copy)]
enum Bucket {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Bucket {
    /// A number naming the bucket that holds `time_secs`: equal for two
    /// times in the same bucket, different otherwise.
    fn of(self, time_secs: i64) -> i64 {
        // Unix time has no leap seconds and UTC no daylight saving, so UTC
        // hours and days are exact multiples of the epoch.
        let days = time_secs.div_euclid(SECS_PER_DAY);
        match self {
            Bucket::Hour => time_secs.div_euclid(3600),
            Bucket::Day => days,
            Bucket::Week => {
                let (year, week) = iso_week(days);
                year * 100 + i64::from(week)
            }
            Bucket::Month => {
                let (year, month, _) = civil_from_days(days);
                year * 12 + i64::from(month)
            }
            Bucket::Year => civil_from_days(days).0,
        }
    }
}

/// The reasons each point of one group is kept; `ordered` is newest first.
fn decide_group(policy: &RetentionPolicy, ordered: &[&PointSummary]) -> Vec<Vec<String>> {
    let mut reasons = vec![Vec::new(); ordered.len()];

    if let Some(count) = policy.keep_last {
        for (position, point_reasons) in reasons.iter_mut().enumerate() {
            if count == -1 || (position as u64) < count as u64 {
                point_reasons.push("last".to_string());
            }
        }
    }

    let bucket_rules = [
        ("hourly", policy.keep_hourly, Bucket::Hour),
        ("daily", policy.keep_daily, Bucket::Day),
        ("weekly", policy.keep_weekly, Bucket::Week),
        ("monthly", policy.keep_monthly, Bucket::Month),
        ("yearly", policy.keep_yearly, Bucket::Year),
    ];
    for (name, count, bucket) in bucket_rules {
        let Some(mut left) = count else { continue };
        let mut last_kept = None;
        for (point, point_reasons) in ordered.iter().zip(reasons.iter_mut()) {
            if left == 0 {
                break;
            }
            let this = bucket.of(point.time_secs);
            if last_kept != Some(this) {
                point_reasons.push(name.to_string());
                last_kept = Some(this);
                if left > 0 {
                    left -= 1;
                }
            }
        }
    }

    if let (Some(span), Some(newest)) = (&policy.keep_within, ordered.first()) {
        let cutoff = (subtract_span(newest.time_secs, span), newest.time_nanos);
        let reason = format!("within {span}");
        for (point, point_reasons) in ordered.iter().zip(reasons.iter_mut()) {
            if (i128::from(point.time_secs), point.time_nanos) > cutoff {
                point_reasons.push(reason.clone());
            }
        }
    }

    for (point, point_reasons) in ordered.iter().zip(reasons.iter_mut()) {
        for (i, tag) in policy.keep_tags.iter().enumerate() {
            // A tag listed twice in the policy is one reason, not two.
            if point.tags.contains(tag) && !policy.keep_tags[..i].contains(tag) {
                point_reasons.push(format!("tag {tag}"));
            }
        }
    }

    reasons
}

const SECS_PER_DAY: i64 = 86_400;

/// `time_secs` minus `span`, in calendar arithmetic on the UTC date-time.
/// In i128 because a span back from a time near `i64::MIN` leaves i64.
fn subtract_span(time_secs: i64, span: &CalendarSpan) -> i128 {
    let days = time_secs.div_euclid(SECS_PER_DAY);
    let second_of_day = time_secs.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    // Years are whole months; subtracting them with the months, and clamping
    // the day once, gives Feb 29 - 1y1m = Jan 29, not the Jan 28 that
    // clamping after the years would. |year| < 3e11, so no overflow.
    let months =
        year * 12 + i64::from(month - 1) - (i64::from(span.years) * 12 + i64::from(span.months));
    let year = months.div_euclid(12);
    // rem_euclid(12) is in 0..12, so the month fits a u32 and is 1..=12.
    let month = months.rem_euclid(12) as u32 + 1;
    let day = day.min(days_in_month(year, month));
    let days = days_from_civil(year, month, day) - i64::from(span.days);
    i128::from(days) * i128::from(SECS_PER_DAY) + i128::from(second_of_day)
        - i128::from(span.hours) * 3600
}

fn is_leap_year(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// The two conversions below count in 400-year eras of 146097 days that start
// on March 1, so the leap day is the last day of its year and needs no
// special case (the method of Howard Hinnant's "chrono-Compatible Low-Level
// Date Algorithms"). They are exact for every day an i64 of seconds can name.

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix seconds: how diskvault shows times.
pub fn format_utc(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date; year 0 is 1 BC.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date (year, month 1-12, day 1-31) of a count of
/// days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468; // from 0000-03-01
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    // Both are small and non-negative: day 1..=31, month 1..=12.
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = ((month_from_march + 2) % 12 + 1) as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The ISO-8601 week (week-year, week 1-53) of a count of days since
/// 1970-01-01. Weeks start on Monday; a week belongs to the year of its
/// Thursday, so 2021-01-03 is in 2020-W53 and 2024-12-30 in 2025-W01.
fn iso_week(days: i64) -> (i64, u32) {
    // 1970-01-01 was a Thursday: weekday 0 is Monday.
    let weekday = (days + 3).rem_euclid(7);
    let thursday = days - weekday + 3;
    let (year, _, _) = civil_from_days(thursday);
    let day_of_year = thursday - days_from_civil(year, 1, 1);
    // day_of_year is 0..=365, so the week is 1..=53.
    (year, (day_of_year / 7 + 1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- helpers -------------------------------------------------------

    /// Seconds of a "YYYY-MM-DD HH:MM" UTC time.
    fn at(text: &str) -> i64 {
        let number = |range: std::ops::Range<usize>| -> i64 {
            text.get(range)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad test time {text:?}"))
        };
        assert_eq!(
            text.len(),
            16,
            "test times are 'YYYY-MM-DD HH:MM': {text:?}"
        );
        let days = days_from_civil(number(0..4), number(5..7) as u32, number(8..10) as u32);
        days * SECS_PER_DAY + number(11..13) * 3600 + number(14..16) * 60
    }

    /// A point of host "web1" with disk "root", from "YYYY-MM-DD HH:MM",
    /// optionally followed by " #tag1,tag2". Its id is derived from the
    /// whole spec, so every spec names one point.
    fn point(spec: &str) -> PointSummary {
        point_on("web1", &["root"], spec)
    }

    fn point_on(host: &str, disks: &[&str], spec: &str) -> PointSummary {
        let (time, tags) = match spec.split_once(" #") {
            Some((time, tags)) => (time, tags.split(',').map(String::from).collect()),
            None => (spec, Vec::new()),
        };
        PointSummary {
            id: PointId::hash_of(format!("{host} {disks:?} {spec}").as_bytes()),
            time_secs: at(time),
            time_nanos: 0,
            host: host.to_string(),
            disks: disks.iter().map(|d| d.to_string()).collect(),
            tags,
        }
    }

    /// One point per day at 03:00, for `count` days from `first` ("YYYY-MM-DD").
    fn daily_points(first: &str, count: i64) -> Vec<String> {
        let start = at(&format!("{first} 03:00")).div_euclid(SECS_PER_DAY);
        (0..count)
            .map(|offset| {
                let (y, m, d) = civil_from_days(start + offset);
                format!("{y:04}-{m:02}-{d:02} 03:00")
            })
            .collect()
    }

    fn span(text: &str) -> CalendarSpan {
        text.parse().expect("test spans are valid")
    }

    /// What a user reads off `forget --dry-run`: the kept points by their
    /// spec, each with its reasons.
    fn kept(
        points: &[PointSummary],
        specs: &[String],
        decisions: &[Decision],
    ) -> Vec<(String, Vec<String>)> {
        assert_eq!(decisions.len(), points.len(), "one decision per point");
        specs
            .iter()
            .zip(decisions)
            .filter(|(_, d)| d.keep)
            .map(|(spec, d)| (spec.clone(), d.reasons.clone()))
            .collect()
    }

    // ---- the table -----------------------------------------------------

    struct Case {
        name: &'static str,
        points: Vec<String>,
        policy: RetentionPolicy,
        /// Every kept point with its reasons, newest first; all others removed.
        kept: Vec<(&'static str, Vec<&'static str>)>,
    }

    fn case(
        name: &'static str,
        points: &[&str],
        policy: RetentionPolicy,
        kept: Vec<(&'static str, Vec<&'static str>)>,
    ) -> Case {
        Case {
            name,
            points: points.iter().map(|p| p.to_string()).collect(),
            policy,
            kept,
        }
    }

    fn cases() -> Vec<Case> {
        let month_points = [
            "2024-02-10 12:00",
            "2024-01-20 12:00",
            "2024-01-01 00:30",
            "2023-12-31 23:00",
            "2023-12-01 10:00",
            "2023-11-15 10:00",
        ];
        let mut april = daily_points("2024-04-01", 30);
        april.reverse();
        vec![
            case(
                "keep-last 3 keeps the three newest",
                &[
                    "2024-05-01 10:00",
                    "2024-05-03 10:00",
                    "2024-05-02 10:00",
                    "2024-04-30 10:00",
                    "2024-05-04 10:00",
                ],
                RetentionPolicy {
                    keep_last: Some(3),
                    ..Default::default()
                },
                vec![
                    ("2024-05-04 10:00", vec!["last"]),
                    ("2024-05-03 10:00", vec!["last"]),
                    ("2024-05-02 10:00", vec!["last"]),
                ],
            ),
            case(
                "keep-daily keeps the newest of two points in one day",
                &["2024-05-01 08:00", "2024-05-01 20:00", "2024-04-30 20:00"],
                RetentionPolicy {
                    keep_daily: Some(2),
                    ..Default::default()
                },
                vec![
                    ("2024-05-01 20:00", vec!["daily"]),
                    ("2024-04-30 20:00", vec!["daily"]),
                ],
            ),
            Case {
                name: "keep-daily 7 over 30 daily backups keeps the last week",
                points: april,
                policy: RetentionPolicy {
                    keep_daily: Some(7),
                    ..Default::default()
                },
                kept: vec![
                    ("2024-04-30 03:00", vec!["daily"]),
                    ("2024-04-29 03:00", vec!["daily"]),
                    ("2024-04-28 03:00", vec!["daily"]),
                    ("2024-04-27 03:00", vec!["daily"]),
                    ("2024-04-26 03:00", vec!["daily"]),
                    ("2024-04-25 03:00", vec!["daily"]),
                    ("2024-04-24 03:00", vec!["daily"]),
                ],
            },
            case(
                "keep-daily counts days that have a point, not calendar days",
                &[
                    "2024-05-20 10:00",
                    "2024-05-11 10:00",
                    "2024-05-01 10:00",
                    "2024-04-01 10:00",
                ],
                RetentionPolicy {
                    keep_daily: Some(3),
                    ..Default::default()
                },
                vec![
                    ("2024-05-20 10:00", vec!["daily"]),
                    ("2024-05-11 10:00", vec!["daily"]),
                    ("2024-05-01 10:00", vec!["daily"]),
                ],
            ),
            case(
                "keep-hourly keeps the newest point of each hour",
                &[
                    "2024-05-01 13:00",
                    "2024-05-01 11:50",
                    "2024-05-01 11:10",
                    "2024-05-01 10:55",
                    "2024-05-01 10:05",
                ],
                RetentionPolicy {
                    keep_hourly: Some(2),
                    ..Default::default()
                },
                vec![
                    ("2024-05-01 13:00", vec!["hourly"]),
                    ("2024-05-01 11:50", vec!["hourly"]),
                ],
            ),
            case(
                // 2020-12-31 (Thu) and 2021-01-03 (Sun) are both in 2020-W53.
                "keep-weekly uses the ISO week-year across new year",
                &[
                    "2021-01-05 10:00",
                    "2021-01-04 10:00",
                    "2021-01-03 10:00",
                    "2020-12-31 10:00",
                    "2020-12-27 10:00",
                ],
                RetentionPolicy {
                    keep_weekly: Some(3),
                    ..Default::default()
                },
                vec![
                    ("2021-01-05 10:00", vec!["weekly"]),
                    ("2021-01-03 10:00", vec!["weekly"]),
                    ("2020-12-27 10:00", vec!["weekly"]),
                ],
            ),
            case(
                // 2024-12-30 (Mon) is in 2025-W01, with 2025-01-02.
                "keep-weekly puts the last days of December in next year's week 1",
                &["2025-01-02 10:00", "2024-12-30 10:00", "2024-12-29 10:00"],
                RetentionPolicy {
                    keep_weekly: Some(2),
                    ..Default::default()
                },
                vec![
                    ("2025-01-02 10:00", vec!["weekly"]),
                    ("2024-12-29 10:00", vec!["weekly"]),
                ],
            ),
            case(
                "keep-monthly and keep-yearly keep the newest of each month and year",
                &month_points,
                RetentionPolicy {
                    keep_monthly: Some(3),
                    keep_yearly: Some(2),
                    ..Default::default()
                },
                vec![
                    ("2024-02-10 12:00", vec!["monthly", "yearly"]),
                    ("2024-01-20 12:00", vec!["monthly"]),
                    ("2023-12-31 23:00", vec!["monthly", "yearly"]),
                ],
            ),
            case(
                "keep-monthly -1 keeps the newest of every month",
                &month_points,
                RetentionPolicy {
                    keep_monthly: Some(-1),
                    ..Default::default()
                },
                vec![
                    ("2024-02-10 12:00", vec!["monthly"]),
                    ("2024-01-20 12:00", vec!["monthly"]),
                    ("2023-12-31 23:00", vec!["monthly"]),
                    ("2023-11-15 10:00", vec!["monthly"]),
                ],
            ),
            case(
                // Both are Wednesdays of ISO week 10, in March.
                "the same week and month of consecutive years are different buckets",
                &["2024-03-06 10:00", "2023-03-08 10:00"],
                RetentionPolicy {
                    keep_weekly: Some(2),
                    keep_monthly: Some(2),
                    ..Default::default()
                },
                vec![
                    ("2024-03-06 10:00", vec!["weekly", "monthly"]),
                    ("2023-03-08 10:00", vec!["weekly", "monthly"]),
                ],
            ),
            case(
                "keep-last -1 keeps everything",
                &["2024-05-02 10:00", "2024-05-01 10:00", "2000-01-01 00:00"],
                RetentionPolicy {
                    keep_last: Some(-1),
                    ..Default::default()
                },
                vec![
                    ("2024-05-02 10:00", vec!["last"]),
                    ("2024-05-01 10:00", vec!["last"]),
                    ("2000-01-01 00:00", vec!["last"]),
                ],
            ),
            case(
                // Cut-off 2024-02-29 12:00 (leap year); a point exactly on it is out.
                "keep-within 1m from March 31 clamps to February 29",
                &[
                    "2024-03-31 12:00",
                    "2024-03-01 00:00",
                    "2024-02-29 12:01",
                    "2024-02-29 12:00",
                    "2024-02-28 23:00",
                ],
                RetentionPolicy {
                    keep_within: Some(span("1m")),
                    ..Default::default()
                },
                vec![
                    ("2024-03-31 12:00", vec!["within 1m"]),
                    ("2024-03-01 00:00", vec!["within 1m"]),
                    ("2024-02-29 12:01", vec!["within 1m"]),
                ],
            ),
            case(
                // Cut-off 2023-02-28 10:00, not March 3 as overflowing days would give.
                "keep-within 1m from March 31 clamps to February 28",
                &[
                    "2023-03-31 10:00",
                    "2023-03-02 09:00",
                    "2023-02-28 10:30",
                    "2023-02-28 09:30",
                ],
                RetentionPolicy {
                    keep_within: Some(span("1m")),
                    ..Default::default()
                },
                vec![
                    ("2023-03-31 10:00", vec!["within 1m"]),
                    ("2023-03-02 09:00", vec!["within 1m"]),
                    ("2023-02-28 10:30", vec!["within 1m"]),
                ],
            ),
            case(
                // Cut-off 2023-01-29 00:00: years and months go together.
                "keep-within 1y1m from February 29",
                &["2024-02-29 00:00", "2023-01-29 00:01", "2023-01-28 12:00"],
                RetentionPolicy {
                    keep_within: Some(span("1y1m")),
                    ..Default::default()
                },
                vec![
                    ("2024-02-29 00:00", vec!["within 1y1m"]),
                    ("2023-01-29 00:01", vec!["within 1y1m"]),
                ],
            ),
            case(
                // Cut-off 2024-01-01 00:00.
                "keep-within 1d12h counts days then hours",
                &[
                    "2024-01-02 12:00",
                    "2024-01-01 00:01",
                    "2024-01-01 00:00",
                    "2023-12-31 23:59",
                ],
                RetentionPolicy {
                    keep_within: Some(span("1d12h")),
                    ..Default::default()
                },
                vec![
                    ("2024-01-02 12:00", vec!["within 1d12h"]),
                    ("2024-01-01 00:01", vec!["within 1d12h"]),
                ],
            ),
            case(
                // 2024-06-10 starts ISO week 24; 06-09 and 05-31 are in weeks 23 and 22.
                "rules combine, and each reason that keeps a point is listed",
                &[
                    "2024-06-12 18:00",
                    "2024-06-12 09:00",
                    "2024-06-11 18:00",
                    "2024-06-10 18:00",
                    "2024-06-09 18:00",
                    "2024-06-08 18:00",
                    "2024-05-31 18:00",
                ],
                RetentionPolicy {
                    keep_last: Some(2),
                    keep_daily: Some(3),
                    keep_weekly: Some(2),
                    keep_monthly: Some(2),
                    keep_within: Some(span("1d")),
                    ..Default::default()
                },
                vec![
                    (
                        "2024-06-12 18:00",
                        vec!["last", "daily", "weekly", "monthly", "within 1d"],
                    ),
                    ("2024-06-12 09:00", vec!["last", "within 1d"]),
                    ("2024-06-11 18:00", vec!["daily"]),
                    ("2024-06-10 18:00", vec!["daily"]),
                    ("2024-06-09 18:00", vec!["weekly"]),
                    ("2024-05-31 18:00", vec!["monthly"]),
                ],
            ),
            case(
                "keep-tag keeps tagged points however old",
                &[
                    "2024-06-12 18:00",
                    "2024-06-11 18:00 #important",
                    "2020-01-01 00:00 #audit,important",
                    "2024-06-10 18:00 #other",
                ],
                RetentionPolicy {
                    keep_last: Some(1),
                    keep_tags: vec!["important".into(), "audit".into()],
                    ..Default::default()
                },
                vec![
                    ("2024-06-12 18:00", vec!["last"]),
                    ("2024-06-11 18:00 #important", vec!["tag important"]),
                    (
                        "2020-01-01 00:00 #audit,important",
                        vec!["tag important", "tag audit"],
                    ),
                ],
            ),
            case(
                "a count of 0 keeps nothing by that rule",
                &["2024-05-02 10:00", "2024-05-01 10:00"],
                RetentionPolicy {
                    keep_last: Some(1),
                    keep_daily: Some(0),
                    ..Default::default()
                },
                vec![("2024-05-02 10:00", vec!["last"])],
            ),
            case(
                "keep-last 0 alone is a rule that keeps nothing",
                &["2024-05-02 10:00", "2024-05-01 10:00"],
                RetentionPolicy {
                    keep_last: Some(0),
                    ..Default::default()
                },
                vec![],
            ),
        ]
    }

    #[test]
    fn each_policy_keeps_exactly_the_expected_points_for_the_expected_reasons() {
        for case in cases() {
            let points: Vec<PointSummary> = case.points.iter().map(|p| point(p)).collect();
            let decisions = apply(&case.policy, &points)
                .unwrap_or_else(|e| panic!("{}: apply failed: {e}", case.name));
            let mut got = kept(&points, &case.points, &decisions);
            // Compare newest first, whatever the order of the table's points.
            got.sort_by_key(|(spec, _)| std::cmp::Reverse(at(&spec[..16])));
            let want: Vec<(String, Vec<String>)> = case
                .kept
                .iter()
                .map(|(spec, reasons)| {
                    (
                        spec.to_string(),
                        reasons.iter().map(|r| r.to_string()).collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "case: {}", case.name);
            for decision in decisions.iter().filter(|d| !d.keep) {
                assert!(
                    decision.reasons.is_empty(),
                    "{}: removed points have no reasons",
                    case.name
                );
            }
        }
    }

    // ---- groups, order, errors ------------------------------------------

    #[test]
    fn two_hosts_each_keep_their_own_newest_point() {
        let points = vec![
            point_on("web1", &["root", "data"], "2024-05-01 10:00"),
            point_on("web1", &["root", "data"], "2024-05-02 10:00"),
            point_on("db1", &["root", "data"], "2024-04-01 10:00"),
            point_on("db1", &["root", "data"], "2024-03-01 10:00"),
        ];
        let keep_last_1 = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let decisions = apply(&keep_last_1, &points).expect("valid policy");

        let keeps: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
        assert_eq!(keeps, [false, true, true, false]);
        assert_eq!(decisions[1].group, "host=web1 disks=data,root");
        assert_eq!(decisions[2].group, "host=db1 disks=data,root");
    }

    #[test]
    fn the_order_of_disk_names_does_not_split_a_group_but_other_disks_do() {
        let points = vec![
            point_on("web1", &["root", "data"], "2024-05-02 10:00"),
            point_on("web1", &["data", "root"], "2024-05-01 10:00"),
            point_on("web1", &["root"], "2024-04-01 10:00"),
        ];
        let keep_last_1 = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let decisions = apply(&keep_last_1, &points).expect("valid policy");

        let keeps: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
        assert_eq!(keeps, [true, false, true], "root alone is its own group");
        assert_eq!(decisions[0].group, decisions[1].group);
    }

    #[test]
    fn grouping_by_nothing_keeps_only_the_overall_newest() {
        let points = vec![
            point_on("web1", &["root"], "2024-05-02 10:00"),
            point_on("db1", &["data"], "2024-05-03 10:00"),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            group_by: GroupBy::NONE,
            ..Default::default()
        };
        let decisions = apply(&policy, &points).expect("valid policy");

        assert_eq!(
            decisions.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [false, true]
        );
        assert_eq!(decisions[1].group, "");
    }

    #[test]
    fn grouping_by_tags_separates_differently_tagged_points() {
        let points = vec![
            point("2024-05-03 10:00 #nightly"),
            point("2024-05-02 10:00 #monthly"),
            point("2024-05-01 10:00 #nightly"),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            group_by: "host,tags".parse().expect("valid"),
            ..Default::default()
        };
        let decisions = apply(&policy, &points).expect("valid policy");

        assert_eq!(
            decisions.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert_eq!(decisions[0].group, "host=web1 tags=nightly");
    }

    #[test]
    fn keep_within_counts_from_each_groups_own_newest_point() {
        // db1 stopped backing up a year ago; its last points must survive.
        let points = vec![
            point_on("web1", &["root"], "2024-05-02 10:00"),
            point_on("web1", &["root"], "2024-04-01 10:00"),
            point_on("db1", &["root"], "2023-05-02 10:00"),
            point_on("db1", &["root"], "2023-04-30 10:00"),
        ];
        let policy = RetentionPolicy {
            keep_within: Some(span("7d")),
            ..Default::default()
        };
        let decisions = apply(&policy, &points).expect("valid policy");

        assert_eq!(
            decisions.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [true, false, true, true]
        );
    }

    #[test]
    fn decisions_come_in_input_order() {
        let points: Vec<PointSummary> =
            ["2024-05-01 10:00", "2024-05-03 10:00", "2024-05-02 10:00"]
                .iter()
                .map(|p| point(p))
                .collect();
        let decisions = apply(
            &RetentionPolicy {
                keep_last: Some(1),
                ..Default::default()
            },
            &points,
        )
        .expect("valid policy");

        let ids: Vec<PointId> = decisions.iter().map(|d| d.id).collect();
        let input: Vec<PointId> = points.iter().map(|p| p.id).collect();
        assert_eq!(ids, input);
        assert!(decisions[1].keep);
    }

    #[test]
    fn shuffling_the_input_does_not_change_any_decision() {
        let mut specs = daily_points("2023-11-20", 120);
        // Points in the same second and same nanosecond: only the id orders them.
        specs.push("2024-03-18 03:00 #twin".into());
        specs.push("2024-03-18 03:00 #twin2".into());
        let mut points: Vec<PointSummary> = specs.iter().map(|p| point(p)).collect();
        points.extend(specs.iter().map(|p| point_on("db1", &["data"], p)));
        let policy = RetentionPolicy {
            keep_last: Some(3),
            keep_daily: Some(5),
            keep_weekly: Some(4),
            keep_monthly: Some(2),
            keep_within: Some(span("10d")),
            keep_tags: vec!["twin".into()],
            ..Default::default()
        };
        let by_id = |decisions: Vec<Decision>| {
            let mut decisions = decisions;
            decisions.sort_by_key(|d| d.id);
            decisions
        };
        let reference = by_id(apply(&policy, &points).expect("valid policy"));

        // A fixed linear congruential generator: reproducible shuffles
        // without a dependency.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20 {
            for i in (1..points.len()).rev() {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let j = (state >> 33) as usize % (i + 1);
                points.swap(i, j);
            }
            assert_eq!(
                by_id(apply(&policy, &points).expect("valid policy")),
                reference
            );
        }
    }

    #[test]
    fn points_in_the_same_second_are_ordered_by_nanoseconds_then_id() {
        let mut early = point("2024-05-01 10:00");
        let mut late = point("2024-05-01 10:00 #b");
        early.time_nanos = 5;
        late.time_nanos = 6;
        let keep_last_1 = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let decisions = apply(&keep_last_1, &[late.clone(), early.clone()]).expect("valid");
        assert_eq!(
            decisions.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [true, false]
        );

        early.time_nanos = 6;
        let larger_id = early.id.max(late.id);
        for input in [[late.clone(), early.clone()], [early.clone(), late.clone()]] {
            let decisions = apply(&keep_last_1, &input).expect("valid");
            let kept: Vec<PointId> = decisions.iter().filter(|d| d.keep).map(|d| d.id).collect();
            assert_eq!(kept, [larger_id]);
        }
    }

    #[test]
    fn a_tag_listed_twice_in_the_policy_is_one_reason() {
        let policy = RetentionPolicy {
            keep_tags: vec!["important".into(), "important".into()],
            ..Default::default()
        };
        let decisions = apply(&policy, &[point("2024-05-01 10:00 #important")]).expect("valid");
        assert_eq!(decisions[0].reasons, ["tag important"]);
    }

    #[test]
    fn an_empty_policy_is_refused_rather_than_removing_everything() {
        let points = vec![point("2024-05-01 10:00")];
        let policy = RetentionPolicy {
            group_by: GroupBy::NONE,
            ..Default::default()
        };
        assert!(policy.is_empty());

        let err = apply(&policy, &points).expect_err("an empty policy must not apply");
        assert_eq!(err, RetentionError::EmptyPolicy);
        assert!(err.to_string().contains("--keep-last"), "{err}");
        assert_eq!(apply(&policy, &[]), Err(RetentionError::EmptyPolicy));
    }

    #[test]
    fn a_rule_with_count_zero_makes_the_policy_non_empty() {
        assert!(!RetentionPolicy {
            keep_yearly: Some(0),
            ..Default::default()
        }
        .is_empty());
        assert!(!RetentionPolicy {
            keep_tags: vec!["x".into()],
            ..Default::default()
        }
        .is_empty());
        assert!(!RetentionPolicy {
            keep_within: Some(span("1h")),
            ..Default::default()
        }
        .is_empty());
    }

    #[test]
    fn no_points_give_no_decisions() {
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        assert_eq!(apply(&policy, &[]), Ok(vec![]));
    }

    #[test]
    fn a_point_listed_twice_is_refused() {
        let p = point("2024-05-01 10:00");
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let err = apply(&policy, &[p.clone(), p.clone()]).expect_err("duplicate");
        assert!(err.to_string().contains(&p.id.to_hex()), "{err}");
    }

    #[test]
    fn invalid_policies_are_refused_by_apply_with_a_message_naming_the_problem() {
        let points = vec![point("2024-05-01 10:00")];
        let bad = [
            (
                RetentionPolicy {
                    keep_daily: Some(-2),
                    ..Default::default()
                },
                "--keep-daily -2",
            ),
            (
                RetentionPolicy {
                    keep_tags: vec!["x".repeat(1025)],
                    ..Default::default()
                },
                "1025 bytes",
            ),
            (
                RetentionPolicy {
                    keep_tags: vec!["t".into(); 257],
                    ..Default::default()
                },
                "257 tags",
            ),
            (
                RetentionPolicy {
                    keep_tags: vec![String::new()],
                    ..Default::default()
                },
                "empty",
            ),
            (
                RetentionPolicy {
                    keep_tags: vec!["a\nb".into()],
                    ..Default::default()
                },
                "control",
            ),
            (
                RetentionPolicy {
                    keep_within: Some(CalendarSpan {
                        years: 0,
                        months: 0,
                        days: 0,
                        hours: 0,
                    }),
                    ..Default::default()
                },
                "zero",
            ),
            (
                RetentionPolicy {
                    keep_within: Some(CalendarSpan {
                        years: 100_001,
                        months: 0,
                        days: 0,
                        hours: 0,
                    }),
                    ..Default::default()
                },
                "100001 years",
            ),
        ];
        for (policy, needle) in bad {
            let err = apply(&policy, &points).expect_err(needle);
            assert!(err.to_string().contains(needle), "{needle:?} not in: {err}");
        }
        let fine = RetentionPolicy {
            keep_daily: Some(-1),
            keep_tags: vec!["x".repeat(1024); 256],
            ..Default::default()
        };
        assert_eq!(fine.validate(), Ok(()));
    }

    #[test]
    fn times_at_the_ends_of_i64_do_not_overflow() {
        let mut first = point("2024-05-01 10:00");
        let mut last = point("2024-05-02 10:00");
        first.time_secs = i64::MIN;
        last.time_secs = i64::MAX;
        let policy = RetentionPolicy {
            keep_last: Some(-1),
            keep_hourly: Some(-1),
            keep_daily: Some(-1),
            keep_weekly: Some(-1),
            keep_monthly: Some(-1),
            keep_yearly: Some(-1),
            keep_within: Some(CalendarSpan {
                years: MAX_SPAN_PART,
                months: MAX_SPAN_PART,
                days: MAX_SPAN_PART,
                hours: MAX_SPAN_PART,
            }),
            keep_tags: vec![],
            group_by: GroupBy::NONE,
        };
        for points in [
            vec![first.clone(), last.clone()],
            vec![first.clone()],
            vec![last.clone()],
        ] {
            let decisions = apply(&policy, &points).expect("valid policy");
            assert!(decisions.iter().all(|d| d.keep));
        }
    }

    // ---- parsing and text forms -----------------------------------------

    #[test]
    fn calendar_spans_parse_and_print_canonically() {
        let good = [
            ("30d", (0, 0, 30, 0), "30d"),
            ("1y6m", (1, 6, 0, 0), "1y6m"),
            ("2w", (0, 0, 14, 0), "14d"),
            ("2w3d", (0, 0, 17, 0), "17d"),
            ("12h", (0, 0, 0, 12), "12h"),
            ("1y2m3d4h", (1, 2, 3, 4), "1y2m3d4h"),
            ("0y1d", (0, 0, 1, 0), "1d"),
            ("100000h", (0, 0, 0, 100_000), "100000h"),
        ];
        for (text, (years, months, days, hours), canonical) in good {
            let parsed: CalendarSpan = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                parsed,
                CalendarSpan {
                    years,
                    months,
                    days,
                    hours
                },
                "{text}"
            );
            assert_eq!(parsed.to_string(), canonical, "{text}");
            assert_eq!(
                canonical.parse::<CalendarSpan>(),
                Ok(parsed),
                "{canonical} round trip"
            );
        }
    }

    #[test]
    fn bad_calendar_spans_are_refused_with_the_input_and_an_example() {
        let bad = [
            ("", "empty"),
            ("5", "no unit"),
            ("5x", "'x' is not a unit"),
            ("5M", "'M' is not a unit"),
            ("d", "number before 'd'"),
            ("1d1y", "'y' comes after 'd'"),
            ("1d2d", "appears twice"),
            ("0d", "zero"),
            ("0y0h", "zero"),
            ("-1d", "number before '-'"),
            ("1 d", "' ' is not a unit"),
            ("100001d", "too large"),
            ("99999999999999999999y", "too large"),
            ("14286w", "100002 days"),
            ("1.5d", "'.' is not a unit"),
        ];
        for (text, reason) in bad {
            let err = text.parse::<CalendarSpan>().expect_err(text).to_string();
            assert!(err.contains(&format!("'{text}'")), "input not named: {err}");
            assert!(err.contains(reason), "{reason:?} not in: {err}");
            assert!(err.contains("e.g. '30d'"), "no example: {err}");
        }
    }

    #[test]
    fn group_by_parses_and_prints_canonically() {
        let good = [
            ("host,disks", GroupBy::default(), "host,disks"),
            (
                "host",
                GroupBy {
                    host: true,
                    disks: false,
                    tags: false,
                },
                "host",
            ),
            (
                "disks,tags",
                GroupBy {
                    host: false,
                    disks: true,
                    tags: true,
                },
                "disks,tags",
            ),
            (
                "tags,host",
                GroupBy {
                    host: true,
                    disks: false,
                    tags: true,
                },
                "host,tags",
            ),
            (" host , disks ", GroupBy::default(), "host,disks"),
            ("", GroupBy::NONE, "none"),
            ("none", GroupBy::NONE, "none"),
        ];
        for (text, want, canonical) in good {
            let parsed: GroupBy = text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(parsed, want, "{text:?}");
            assert_eq!(parsed.to_string(), canonical);
            assert_eq!(canonical.parse::<GroupBy>(), Ok(parsed));
        }
    }

    #[test]
    fn bad_group_by_is_refused_naming_the_bad_word() {
        let bad = [
            ("hosts", "'hosts' is not a field"),
            ("host,paths", "'paths' is not a field"),
            ("host,,disks", "empty item"),
            ("none,host", "'none' cannot be combined"),
        ];
        for (text, reason) in bad {
            let err = text.parse::<GroupBy>().expect_err(text).to_string();
            assert!(err.contains(&format!("'{text}'")), "input not named: {err}");
            assert!(err.contains(reason), "{reason:?} not in: {err}");
        }
    }

    #[test]
    fn counts_parse_as_numbers_or_unlimited() {
        assert_eq!(parse_count("7"), Ok(7));
        assert_eq!(parse_count("0"), Ok(0));
        assert_eq!(parse_count("unlimited"), Ok(-1));
        assert_eq!(parse_count("-1"), Ok(-1));
        for bad in ["", "-2", "+3", "seven", "1e3", "99999999999999999999"] {
            let err = parse_count(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("'{bad}'")), "{err}");
        }
    }

    fn full_policy() -> RetentionPolicy {
        RetentionPolicy {
            keep_last: Some(3),
            keep_hourly: Some(24),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(-1),
            keep_yearly: Some(0),
            keep_within: Some(span("1y2m3d4h")),
            keep_tags: vec!["important".into(), "before upgrade".into()],
            group_by: "host,disks,tags".parse().expect("valid"),
        }
    }

    #[test]
    fn a_policy_survives_a_json_round_trip_in_readable_form() {
        let policy = full_policy();
        let json = serde_json::to_string(&policy).expect("serialises");
        assert!(json.contains(r#""keep_within":"1y2m3d4h""#), "{json}");
        assert!(json.contains(r#""group_by":"host,disks,tags""#), "{json}");
        assert!(json.contains(r#""keep_monthly":-1"#), "{json}");
        let back: RetentionPolicy = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, policy);
    }

    #[test]
    fn stored_policies_with_missing_fields_default_and_unknown_fields_are_refused() {
        let sparse: RetentionPolicy = serde_json::from_str(r#"{"keep_daily":7}"#).expect("valid");
        assert_eq!(
            sparse,
            RetentionPolicy {
                keep_daily: Some(7),
                ..Default::default()
            }
        );
        assert_eq!(sparse.group_by, GroupBy::default());

        let newer = r#"{"keep_daily":7,"keep_within_daily":"1y"}"#;
        let err = serde_json::from_str::<RetentionPolicy>(newer).expect_err("unknown rule");
        assert!(err.to_string().contains("keep_within_daily"), "{err}");

        let bad_span = r#"{"keep_within":"3x"}"#;
        let err = serde_json::from_str::<RetentionPolicy>(bad_span).expect_err("bad span");
        assert!(err.to_string().contains("'3x'"), "{err}");
    }

    #[test]
    fn a_policy_displays_as_the_flags_that_give_it() {
        let policy = RetentionPolicy {
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_within: Some(span("1m")),
            keep_tags: vec!["important".into()],
            ..Default::default()
        };
        assert_eq!(
            policy.to_string(),
            "--keep-daily 7 --keep-weekly 4 --keep-within 1m --keep-tag important --group-by host,disks"
        );
        assert_eq!(
            full_policy().to_string(),
            "--keep-last 3 --keep-hourly 24 --keep-daily 7 --keep-weekly 4 --keep-monthly unlimited \
             --keep-yearly 0 --keep-within 1y2m3d4h --keep-tag important --keep-tag 'before upgrade' \
             --group-by host,disks,tags"
        );
        let quote = RetentionPolicy {
            keep_tags: vec!["it's".into()],
            ..Default::default()
        };
        assert_eq!(
            quote.to_string(),
            r"--keep-tag 'it'\''s' --group-by host,disks"
        );
    }

    #[test]
    fn decisions_serialise_with_hex_ids() {
        let p = point("2024-05-01 10:00");
        let decisions = apply(
            &RetentionPolicy {
                keep_last: Some(1),
                ..Default::default()
            },
            std::slice::from_ref(&p),
        )
        .expect("valid policy");
        let json = serde_json::to_string(&decisions[0]).expect("serialises");
        assert_eq!(
            json,
            format!(
                r#"{{"id":"{}","keep":true,"reasons":["last"],"group":"host=web1 disks=root"}}"#,
                p.id
            )
        );
    }

    // ---- the calendar ---------------------------------------------------

    #[test]
    fn known_dates_convert_both_ways() {
        let known = [
            ((1970, 1, 1), 0),
            ((1969, 12, 31), -1),
            ((2000, 2, 29), 11_016),
            ((2000, 3, 1), 11_017),
            ((2020, 12, 31), 18_627),
            ((2021, 1, 4), 18_631),
            ((2024, 12, 30), 20_087),
            ((0, 3, 1), -719_468),
            ((0, 1, 1), -719_528),
            ((-1, 12, 31), -719_529),
        ];
        for ((y, m, d), days) in known {
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
        }
    }

    #[test]
    fn leap_years_follow_the_gregorian_rule() {
        for (year, february) in [
            (1900, 28),
            (2000, 29),
            (2100, 28),
            (2023, 28),
            (2024, 29),
            (0, 29),
            (-4, 29),
            (-100, 28),
        ] {
            assert_eq!(days_in_month(year, 2), february, "{year}");
            let last_of_february = civil_from_days(days_from_civil(year, 3, 1) - 1);
            assert_eq!(last_of_february, (year, 2, february), "{year}");
        }
    }

    #[test]
    fn iso_weeks_of_known_dates() {
        let known = [
            ((1970, 1, 1), (1970, 1)),
            ((1969, 12, 29), (1970, 1)),
            ((2000, 2, 29), (2000, 9)),
            ((2020, 12, 31), (2020, 53)),
            ((2021, 1, 3), (2020, 53)),
            ((2021, 1, 4), (2021, 1)),
            ((2024, 12, 30), (2025, 1)),
            ((2005, 1, 1), (2004, 53)),
            ((2008, 12, 29), (2009, 1)),
            ((2010, 1, 3), (2009, 53)),
            ((2024, 6, 10), (2024, 24)),
        ];
        for ((y, m, d), week) in known {
            assert_eq!(iso_week(days_from_civil(y, m, d)), week, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn every_day_for_nine_thousand_years_follows_the_one_before() {
        // From 3507 BC to AD 6077: each day is the date after the one
        // before, and the ISO week moves on exactly on Mondays.
        let (mut date, mut week) = (civil_from_days(-2_000_001), iso_week(-2_000_001));
        for days in -2_000_000..=1_500_000_i64 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = date;
            let expected = if pd < days_in_month(py, pm) {
                (py, pm, pd + 1)
            } else if pm < 12 {
                (py, pm + 1, 1)
            } else {
                (py + 1, 1, 1)
            };
            assert_eq!((y, m, d), expected, "day {days}");
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");

            let this_week = iso_week(days);
            let monday = (days + 3).rem_euclid(7) == 0;
            if monday {
                let next = if this_week.0 == week.0 {
                    (week.0, week.1 + 1)
                } else {
                    (week.0 + 1, 1)
                };
                assert_eq!(this_week, next, "Monday {y}-{m}-{d}");
                assert!(this_week.1 <= 53);
            } else {
                assert_eq!(this_week, week, "{y}-{m}-{d} is not a Monday");
            }
            date = (y, m, d);
            week = this_week;
        }
    }

    #[test]
    fn subtracting_spans_is_calendar_arithmetic() {
        let cases = [
            ("2024-03-31 12:00", "1m", "2024-02-29 12:00"),
            ("2023-03-31 12:00", "1m", "2023-02-28 12:00"),
            ("2024-02-29 06:00", "1y", "2023-02-28 06:00"),
            ("2024-02-29 00:00", "1y1m", "2023-01-29 00:00"),
            ("2024-01-15 10:00", "2m", "2023-11-15 10:00"),
            ("2024-01-02 12:00", "1d12h", "2024-01-01 00:00"),
            ("2024-03-10 01:00", "2w", "2024-02-25 01:00"),
            ("2024-05-31 00:00", "1y2m3d4h", "2023-03-27 20:00"),
        ];
        for (from, span_text, want) in cases {
            assert_eq!(
                subtract_span(at(from), &span(span_text)),
                i128::from(at(want)),
                "{from} - {span_text}"
            );
        }
    }
}

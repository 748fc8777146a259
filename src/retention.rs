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

#[cfg(test)]
mod tests {
    use super::*;

    fn span(text: &str) -> CalendarSpan {
        text.parse().expect("test spans are valid")
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
}

//! Changed-block lists: the byte ranges of a disk that changed since a
//! parent point, as a hypervisor or storage system reports them
//! (`backup --changed-blocks FILE`). Three spellings are read, all
//! documented in `spec/CHANGED-BLOCKS.md`:
//!
//! - text: one `OFFSET LENGTH` pair per line (decimal, or hex with `0x`),
//!   `#` comments and blank lines allowed;
//! - JSON: an array of `{"offset": N, "length": N}` objects;
//! - the JSON of `qemu-img map --output=json` over an NBD export of a dirty
//!   bitmap (`x-dirty-bitmap=qemu:dirty-bitmap:NAME`): objects with
//!   `start`, `length` and `data`, where QEMU reports the *dirty* ranges
//!   as `"data": false` (the bitmap's bit takes the place of the hole bit).
//!
//! Pure parsing with bounds: the list is untrusted input.

use serde::Deserialize;

/// The largest list file read, in bytes.
pub const MAX_LIST_BYTES: usize = 256 << 20;
/// The most ranges a list may hold (before merging).
pub const MAX_RANGES: usize = 16 << 20;

/// Sorted, non-overlapping, non-adjacent byte ranges `[start, end)` of a
/// disk, all within its size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedRanges {
    ranges: Vec<(u64, u64)>,
}

/// Why a list was refused, with the line or entry it concerns.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ListError(pub String);

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonEntry {
    /// `qemu-img map --output=json`. Tried first: its entries also carry
    /// an `offset` (in the image file), which is not a changed range.
    QemuMap { start: u64, length: u64, data: bool },
    /// Our own spelling.
    Range { offset: u64, length: u64 },
}

impl ChangedRanges {
    /// Ranges from `(offset, length)` pairs in any order, overlapping or
    /// not; empty ranges are dropped. Fails if a range ends past `size`
    /// or past the largest offset.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (u64, u64)>,
        size: u64,
    ) -> Result<Self, ListError> {
        let mut ranges = Vec::new();
        for (offset, length) in pairs {
            if ranges.len() >= MAX_RANGES {
                return Err(ListError(format!(
                    "more than {MAX_RANGES} ranges; merge them into fewer, larger ranges"
                )));
            }
            let end = offset.checked_add(length).ok_or_else(|| {
                ListError(format!(
                    "the range at offset {offset} of {length} bytes ends past 2^64"
                ))
            })?;
            if end > size {
                return Err(ListError(format!(
                    "the range at offset {offset} of {length} bytes ends at {end}, past the disk's end ({size} bytes): is this the list of another disk?"
                )));
            }
            if length > 0 {
                ranges.push((offset, end));
            }
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ok(ChangedRanges { ranges: merged })
    }

    /// Parses a list in any of the three spellings (JSON when its first
    /// non-blank byte is `[`) for a disk of `size` bytes.
    pub fn parse(bytes: &[u8], size: u64) -> Result<Self, ListError> {
        if bytes.len() > MAX_LIST_BYTES {
            return Err(ListError(format!(
                "the list is {} bytes; at most {MAX_LIST_BYTES} are read",
                bytes.len()
            )));
        }
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            Self::parse_json(bytes, size)
        } else {
            Self::parse_text(bytes, size)
        }
    }

    fn parse_json(bytes: &[u8], size: u64) -> Result<Self, ListError> {
        let entries: Vec<JsonEntry> = serde_json::from_slice(bytes).map_err(|e| {
            ListError(format!(
                "not a list of {{\"offset\", \"length\"}} objects nor qemu-img map JSON: {e}"
            ))
        })?;
        let pairs = entries.into_iter().filter_map(|e| match e {
            JsonEntry::Range { offset, length } => Some((offset, length)),
            // Dirty ranges of a dirty-bitmap export read as "data": false.
            JsonEntry::QemuMap {
                start,
                length,
                data,
            } => (!data).then_some((start, length)),
        });
        Self::from_pairs(pairs, size)
    }

    fn parse_text(bytes: &[u8], size: u64) -> Result<Self, ListError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ListError("the list is neither JSON nor UTF-8 text".into()))?;
        let mut pairs = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| ListError(format!("line {}: {why}: {line:?}", n + 1));
            let mut fields = line.split_whitespace();
            let (Some(o), Some(l), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(bad("expected OFFSET LENGTH"));
            };
            let offset = parse_number(o).ok_or_else(|| bad("the offset is not a number"))?;
            let length = parse_number(l).ok_or_else(|| bad("the length is not a number"))?;
            if pairs.len() >= MAX_RANGES {
                return Err(bad("too many ranges"));
            }
            pairs.push((offset, length));
        }
        Self::from_pairs(pairs, size)
    }

    /// The ranges, sorted and merged.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Total bytes listed.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| b - a).sum()
    }

    /// True if `[start, end)` overlaps a listed range.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, b)| b <= start);
        self.ranges.get(i).is_some_and(|&(a, _)| a < end)
    }
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_spellings_give_the_same_ranges() {
        let text = b"# changed\n4096 4096\n0x0 0x1000\n\n65536 100 # tail\n";
        let ours = br#"[{"offset": 65536, "length": 100}, {"offset": 0, "length": 8192}]"#;
        let qemu = br#"[{ "start": 0, "length": 8192, "depth": 0, "present": true, "zero": false, "data": false, "offset": 0},
{ "start": 8192, "length": 57344, "depth": 0, "present": true, "zero": false, "data": true, "offset": 8192},
{ "start": 65536, "length": 100, "depth": 0, "present": true, "zero": false, "data": false}]"#;
        let want = vec![(0, 8192), (65536, 65636)];
        for list in [&text[..], &ours[..], &qemu[..]] {
            assert_eq!(ChangedRanges::parse(list, 1 << 20).unwrap().ranges(), want);
        }
    }

    #[test]
    fn hostile_lists_are_refused_with_the_line() {
        for (list, says) in [
            (&b"12"[..], "line 1"),
            (b"1 2 3", "line 1"),
            (b"0 1\nx 2", "line 2"),
            (b"1 18446744073709551615", "2^64"),
            (b"1048576 1", "past the disk's end"),
            (b"[{\"offset\": -1, \"length\": 1}]", "JSON"),
            (b"\xff\xfe", "UTF-8"),
        ] {
            let e = ChangedRanges::parse(list, 1 << 20).unwrap_err();
            assert!(e.0.contains(says), "{e} lacks {says}");
        }
    }

    #[test]
    fn overlaps_finds_ranges_on_both_sides() {
        let r = ChangedRanges::from_pairs([(10, 10), (100, 1)], 1000).unwrap();
        assert!(r.overlaps(0, 11));
        assert!(r.overlaps(19, 20));
        assert!(!r.overlaps(20, 100));
        assert!(r.overlaps(50, 101));
        assert!(!r.overlaps(101, 1000));
        assert_eq!(r.bytes(), 11);
    }
}

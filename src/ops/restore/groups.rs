//! Chunk groups a restore opened lately, kept for the batches after.
//!
//! A batch ends where a group ends, so the groups of one backup's new
//! chunks are read in the batch that reaches them. A later point's image
//! draws on groups written on different days: the next day's new chunks sit
//! in a few groups, each serving changes scattered over several batches,
//! and a chunk that repeats within the disk points back at an older group.
//! Without a cache each batch read, decrypted and decompressed such a group
//! again: on the 2 GiB bench image's next-day restore, 130 of 783 group
//! openings (113 MB of 897 MB read), most of them within 8 groups of the
//! previous opening.

use std::sync::Arc;

/// Plaintext bytes of opened groups kept (four 2 MiB groups a batch, so
/// about the last two batches' worth).
pub(super) const KEPT_BYTES: usize = 16 << 20;

/// A chunk group opened whole: where it is (pack number and offset) and
/// its plaintext.
pub(super) type OpenedGroup = ((u32, u32), Arc<Vec<u8>>);

/// Opened chunk groups by `(pack, offset)`, least recently used first;
/// at most `max_bytes` of plaintext.
pub(super) struct OpenedGroups {
    max_bytes: usize,
    bytes: usize,
    groups: Vec<OpenedGroup>,
}

impl OpenedGroups {
    pub fn new(max_bytes: usize) -> Self {
        OpenedGroups {
            max_bytes,
            bytes: 0,
            groups: Vec::new(),
        }
    }

    /// The opened group at `key`, now the most recently used.
    pub fn get(&mut self, key: (u32, u32)) -> Option<Arc<Vec<u8>>> {
        let at = self.groups.iter().position(|(k, _)| *k == key)?;
        let entry = self.groups.remove(at);
        let plain = Arc::clone(&entry.1);
        self.groups.push(entry);
        Some(plain)
    }

    /// Keeps `plain` as the most recently used group, dropping the least
    /// recently used ones beyond the limit. A group larger than the limit
    /// is not kept.
    pub fn put(&mut self, key: (u32, u32), plain: Arc<Vec<u8>>) {
        if let Some(at) = self.groups.iter().position(|(k, _)| *k == key) {
            let (_, old) = self.groups.remove(at);
            self.bytes -= old.len();
        }
        if plain.len() > self.max_bytes {
            return;
        }
        self.bytes += plain.len();
        self.groups.push((key, plain));
        while self.bytes > self.max_bytes {
            let (_, old) = self.groups.remove(0);
            self.bytes -= old.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(len: usize) -> Arc<Vec<u8>> {
        Arc::new(vec![7; len])
    }

    #[test]
    fn keeps_the_most_recently_used_groups_within_the_limit() {
        let mut kept = OpenedGroups::new(10);
        kept.put((0, 0), group(4));
        kept.put((0, 4), group(4));
        assert!(kept.get((0, 0)).is_some(), "now the most recent");
        kept.put((1, 0), group(4));
        assert!(kept.get((0, 4)).is_none(), "the least recent went first");
        assert!(kept.get((0, 0)).is_some());
        assert!(kept.get((1, 0)).is_some());
        assert_eq!(kept.bytes, 8);
    }

    #[test]
    fn a_group_larger_than_the_limit_is_not_kept_and_a_key_is_kept_once() {
        let mut kept = OpenedGroups::new(10);
        kept.put((0, 0), group(11));
        assert!(kept.get((0, 0)).is_none());
        assert_eq!(kept.bytes, 0);
        kept.put((0, 0), group(6));
        kept.put((0, 0), group(6));
        assert_eq!((kept.groups.len(), kept.bytes), (1, 6));
    }
}

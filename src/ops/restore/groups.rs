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

use std::ops::{Deref, Range};
use std::sync::Arc;

/// A chunk's plaintext: its own bytes, or where it lies in an opened
/// group's plaintext, which it then shares. A batch's chunks point into
/// their groups rather than copying out of them, so batches in flight and
/// the groups kept for later hold the same memory once.
#[derive(Debug, Clone)]
pub(crate) enum ChunkBytes {
    Own(Vec<u8>),
    InGroup(Arc<Vec<u8>>, Range<usize>),
}

impl ChunkBytes {
    /// The chunk `member`, a slice of `group` (as taken out of it by
    /// [`crate::crypto::Sealer::group_member`]).
    pub fn in_group(group: &Arc<Vec<u8>>, member: &[u8]) -> Self {
        let start = (member.as_ptr() as usize).wrapping_sub(group.as_ptr() as usize);
        assert!(
            start <= group.len() && member.len() <= group.len() - start,
            "a member lies inside its group"
        );
        ChunkBytes::InGroup(Arc::clone(group), start..start + member.len())
    }
}

impl Deref for ChunkBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ChunkBytes::Own(bytes) => bytes,
            ChunkBytes::InGroup(group, range) => &group[range.clone()],
        }
    }
}

impl From<Vec<u8>> for ChunkBytes {
    fn from(bytes: Vec<u8>) -> Self {
        ChunkBytes::Own(bytes)
    }
}

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
    fn a_member_shares_its_group_and_reads_its_own_bytes() {
        let group = Arc::new((0..100u8).collect::<Vec<u8>>());
        let member = ChunkBytes::in_group(&group, &group[10..30]);
        assert_eq!(&*member, &group[10..30]);
        assert_eq!(Arc::strong_count(&group), 2);
        let own = ChunkBytes::from(vec![1, 2, 3]);
        assert_eq!(&*own, &[1, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "a member lies inside its group")]
    fn bytes_outside_the_group_are_refused() {
        let group = Arc::new(vec![0u8; 10]);
        let other = [0u8; 4];
        ChunkBytes::in_group(&group, &other);
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

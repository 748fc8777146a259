//! [`NbdSource`]: a disk read from an NBD export, such as the point-in-time
//! view of a running VM's disk that QEMU exports for backups.
//!
//! Block status `base:allocation` tells which ranges read as zeros: they
//! are recorded as holes without being read. With a dirty bitmap
//! (`qemu:dirty-bitmap:NAME`), [`DiskSource::changed_ranges`] reports the
//! ranges the bitmap marks dirty, so an incremental backup reads only
//! those.

use std::io;

use super::DiskSource;
use crate::error::{Error, Result};
use crate::format::changes::ChangedRanges;
use crate::format::point::SourceKind;
use crate::nbd::{NbdClient, NbdUrl};

/// The meta context of allocation and zero ranges.
const ALLOCATION: &str = "base:allocation";
/// `base:allocation` flag: the range reads as zeros.
const STATE_ZERO: u32 = 2;
/// Dirty-bitmap flag: the range changed since the bitmap was cleared.
const STATE_DIRTY: u32 = 1;

/// A disk exported over NBD (`nbd://HOST[:PORT]/EXPORT` or
/// `nbd+unix:///EXPORT?socket=PATH`), read-only.
pub struct NbdSource {
    client: NbdClient,
    url: NbdUrl,
    /// The meta context of the dirty bitmap, when one was asked for.
    bitmap: Option<String>,
}

impl NbdSource {
    /// Connects to the export at `url`.
    pub fn connect(url: &str) -> Result<NbdSource> {
        Self::open(url, None)
    }

    /// Connects to the export at `url`, asking for the QEMU dirty bitmap
    /// `bitmap`: the ranges it marks are the source's changed ranges,
    /// relative to the point the backup names as its parent. The bitmap
    /// must record every write since that point was taken (see the
    /// README: a bitmap that was cleared, recreated or lost in between
    /// would hide changes; `--verify-unchanged` checks).
    pub fn with_dirty_bitmap(url: &str, bitmap: &str) -> Result<NbdSource> {
        Self::open(url, Some(bitmap))
    }

    fn open(url: &str, bitmap: Option<&str>) -> Result<NbdSource> {
        let parsed = NbdUrl::parse(url).map_err(Error::InvalidArgument)?;
        let bitmap = bitmap.map(|b| format!("qemu:dirty-bitmap:{b}"));
        let mut contexts = vec![ALLOCATION];
        contexts.extend(bitmap.as_deref());
        let client = NbdClient::connect(&parsed, &contexts).map_err(|source| Error::Source {
            path: url.into(),
            source,
        })?;
        Ok(NbdSource {
            client,
            url: parsed,
            bitmap,
        })
    }

    /// The export's name (empty for the default export).
    pub fn export_name(&self) -> &str {
        self.url.export()
    }

    /// The ranges of `context` whose flags have any bit of `mask`, merged.
    fn ranges_with(&self, context: &str, mask: u32) -> io::Result<Vec<(u64, u64)>> {
        let size = self.client.size();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (start, end, flags) in self.client.block_status(context, 0, size)? {
            if flags & mask == 0 {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => out.push((start, end)),
            }
        }
        Ok(out)
    }
}

impl std::fmt::Debug for NbdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdSource")
            .field("url", &self.url.to_string())
            .field("size", &self.client.size())
            .field("bitmap", &self.bitmap)
            .finish()
    }
}

impl DiskSource for NbdSource {
    fn size(&self) -> Option<u64> {
        Some(self.client.size())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let size = self.client.size();
        if offset >= size {
            return Ok(0);
        }
        let n = buf
            .len()
            .min((size - offset).min(usize::MAX as u64) as usize);
        self.client.read_at(&mut buf[..n], offset)?;
        Ok(n)
    }

    fn data_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        // Data is what does not read as zeros: a hole of a qcow2 with a
        // backing file reads the backing file's bytes, so only the zero
        // flag lets a range go unread.
        let size = self.client.size();
        let zeros = self.ranges_with(ALLOCATION, STATE_ZERO)?;
        let mut data = Vec::with_capacity(zeros.len() + 1);
        let mut at = 0;
        for (a, b) in zeros {
            if a > at {
                data.push((at, a));
            }
            at = b;
        }
        if at < size {
            data.push((at, size));
        }
        Ok(data)
    }

    fn changed_ranges(&self) -> io::Result<Option<ChangedRanges>> {
        let Some(context) = &self.bitmap else {
            return Ok(None);
        };
        let dirty = self.ranges_with(context, STATE_DIRTY)?;
        ChangedRanges::from_pairs(dirty.iter().map(|&(a, b)| (a, b - a)), self.client.size())
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Nbd
    }

    fn describe(&self) -> String {
        self.url.to_string()
    }
}

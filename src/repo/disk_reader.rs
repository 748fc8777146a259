//! Random access to a disk of a recovery point: positional reads and
//! `Read + Seek`, fetching and opening only the chunks a read touches.
//!
//! What file-level restore (`ls`, `cat`, `extract`) and `serve-nbd` read
//! through. The manifest's interior nodes are read when the disk is
//! opened (one node per 1 GiB of disk); leaves are read when a read first
//! touches their 4 MiB of image, and kept in a small cache. Data comes in
//! sealed blobs (a chunk alone, or in format 2 a group of up to 2 MiB of
//! neighbouring chunks): each blob is fetched and opened once and kept in
//! a cache bounded in bytes, least recently used first out. A read that
//! continues the previous one also fetches the blobs of the next
//! [`DiskReaderOptions::readahead`] bytes, in parallel with its own.
//!
//! No read returns a byte that was not verified: manifest nodes and chunks
//! are checked against their ids (keyed BLAKE3) before use, since a read
//! of part of a disk cannot be checked against the whole image's hash as a
//! restore is.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::layout::pack_key;
use super::reader::{blame_damaged_index, read_indexed_chunk};
use super::{Damaged, RepoLock, Repository};
use crate::error::{Error, Result};
use crate::format::manifest::Extent;
use crate::format::point::{DiskRecord, PointBody};
use crate::format::{ChunkId, PointId};
use crate::image::{check_bounds, ImageRead};
use crate::index::{ChunkIndex, ChunkLocation};
use crate::manifest::{leaf_extents, leaf_refs, LeafRef};

/// How a [`DiskReader`] caches and reads ahead.
#[derive(Debug, Clone)]
pub struct DiskReaderOptions {
    /// Bytes of opened blobs (chunk groups, chunks) kept for later reads.
    /// At least a few groups (2 MiB each) are needed for reads that jump
    /// between file system metadata and file data not to fetch the same
    /// group again and again. Default 64 MiB.
    pub cache_bytes: usize,
    /// Bytes of image fetched ahead of a read that continues the previous
    /// one, in parallel with it. 0 turns read-ahead off. Default 8 MiB.
    pub readahead: u64,
}

impl Default for DiskReaderOptions {
    fn default() -> Self {
        DiskReaderOptions {
            cache_bytes: 64 << 20,
            readahead: 8 << 20,
        }
    }
}

/// What a [`DiskReader`] has read from the repository so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Bytes fetched from the store: sealed blobs and manifest nodes.
    pub bytes_fetched: u64,
    /// Sealed blobs (chunks and chunk groups) fetched and opened.
    pub blobs_fetched: u64,
    /// Manifest leaves read.
    pub leaves_read: u64,
}

/// A disk of a recovery point, read at random: see the module docs.
///
/// Holds a shared lock on the repository while it lives, so that `prune`
/// cannot remove the chunks it reads. Positional reads
/// ([`ImageRead::read_exact_at`]) take `&self` and may run on many
/// threads at once; [`Read`] and [`Seek`] keep a position of their own.
pub struct DiskReader {
    repo: Arc<Repository>,
    index: Arc<ChunkIndex>,
    damaged_index: Vec<Damaged>,
    point: PointId,
    disk: DiskRecord,
    leaves: Vec<LeafRef>,
    leaf_cache: Mutex<LeafCache>,
    blobs: BlobCache,
    readahead: u64,
    /// End of the last read, to tell a sequential reader.
    last_end: AtomicU64,
    bytes_fetched: AtomicU64,
    blobs_fetched: AtomicU64,
    leaves_read: AtomicU64,
    /// Position for [`Read`] and [`Seek`].
    pos: u64,
    _lock: RepoLock,
}

/// Leaves kept decoded: enough for the leaves of a read-ahead window and
/// the metadata areas a file system walk comes back to.
const LEAF_CACHE_ENTRIES: usize = 64;

#[derive(Default)]
struct LeafCache {
    by_leaf: HashMap<usize, (Arc<Vec<Extent>>, u64)>,
    clock: u64,
}

/// Where a sealed blob lies: (pack number, offset in the pack).
type Place = (u32, u32);

/// An opened blob: a group's plaintext, or a chunk's when it is sealed
/// alone, and which of its chunks were checked against their ids.
struct Opened {
    plain: Arc<Vec<u8>>,
    verified: HashSet<u32>,
}

/// A blob's cache slot. Its mutex is held while the blob is fetched, so
/// that readers of one blob on several threads fetch it once.
#[derive(Default)]
struct Slot {
    opened: Mutex<Option<Opened>>,
    last_used: AtomicU64,
}

struct BlobCache {
    slots: Mutex<BlobSlots>,
    budget: usize,
    clock: AtomicU64,
}

#[derive(Default)]
struct BlobSlots {
    by_place: HashMap<Place, Arc<Slot>>,
    /// Plaintext bytes held by each filled slot.
    sizes: HashMap<Place, usize>,
    bytes: usize,
}

impl DiskReader {
    /// Opens disk `disk` (the only one when `None`) of the recovery point
    /// `point` (an id, a unique prefix of one, or `latest`), with default
    /// options.
    pub fn open(repo: Arc<Repository>, point: &str, disk: Option<&str>) -> Result<Self> {
        Self::open_with(repo, point, disk, DiskReaderOptions::default())
    }

    /// [`DiskReader::open`] with options.
    pub fn open_with(
        repo: Arc<Repository>,
        point: &str,
        disk: Option<&str>,
        opts: DiskReaderOptions,
    ) -> Result<Self> {
        let lock = repo.lock_for_reading("read")?;
        let point_id = repo.resolve_point(point)?;
        let body = repo.read_point(&point_id)?;
        let record = choose_disk(&body, &point_id, disk)?.clone();
        let (index, damaged_index) = repo.load_index_lenient()?;
        let index = Arc::new(index);
        let fetched = AtomicU64::new(0);
        let mut load = |id: &ChunkId| {
            let node = read_indexed_chunk(&repo, &index, id)?;
            fetched.fetch_add(node.len() as u64, Ordering::Relaxed);
            Ok(node)
        };
        let leaves = leaf_refs(
            &record.manifest_root,
            record.size,
            repo.format_major(),
            &mut load,
        )
        .map_err(|e| blame_damaged_index(e, &damaged_index))?;
        Ok(DiskReader {
            index,
            damaged_index,
            point: point_id,
            disk: record,
            leaves,
            leaf_cache: Mutex::new(LeafCache::default()),
            blobs: BlobCache {
                slots: Mutex::new(BlobSlots::default()),
                budget: opts.cache_bytes,
                clock: AtomicU64::new(0),
            },
            readahead: opts.readahead,
            last_end: AtomicU64::new(u64::MAX),
            bytes_fetched: fetched,
            blobs_fetched: AtomicU64::new(0),
            leaves_read: AtomicU64::new(0),
            pos: 0,
            _lock: lock,
            repo,
        })
    }

    /// The recovery point read.
    pub fn point(&self) -> PointId {
        self.point
    }

    /// The disk read, as the point records it.
    pub fn disk(&self) -> &DiskRecord {
        &self.disk
    }

    /// What has been read from the repository so far.
    pub fn stats(&self) -> ReadStats {
        ReadStats {
            bytes_fetched: self.bytes_fetched.load(Ordering::Relaxed),
            blobs_fetched: self.blobs_fetched.load(Ordering::Relaxed),
            leaves_read: self.leaves_read.load(Ordering::Relaxed),
        }
    }

    /// The extents overlapping `range`, each with its image offset.
    fn extents_in(&self, range: Range<u64>) -> Result<Vec<(u64, Extent)>> {
        let mut out = Vec::new();
        let first = self
            .leaves
            .partition_point(|l| l.start + l.covered <= range.start);
        for (n, leaf) in self.leaves.iter().enumerate().skip(first) {
            if leaf.start >= range.end {
                break;
            }
            let extents = self.leaf(n, leaf)?;
            let mut offset = leaf.start;
            for e in extents.iter() {
                let end = offset + e.len();
                if end > range.start && offset < range.end {
                    out.push((offset, *e));
                }
                if offset >= range.end {
                    break;
                }
                offset = end;
            }
        }
        Ok(out)
    }

    fn leaf(&self, n: usize, leaf: &LeafRef) -> Result<Arc<Vec<Extent>>> {
        {
            let mut cache = self.leaf_cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.clock += 1;
            let clock = cache.clock;
            if let Some((extents, used)) = cache.by_leaf.get_mut(&n) {
                *used = clock;
                return Ok(extents.clone());
            }
        }
        let bytes = read_indexed_chunk(&self.repo, &self.index, &leaf.id)
            .map_err(|e| blame_damaged_index(e, &self.damaged_index))?;
        self.bytes_fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.leaves_read.fetch_add(1, Ordering::Relaxed);
        let extents = Arc::new(leaf_extents(leaf, &bytes, self.repo.format_major())?);
        let mut cache = self.leaf_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.by_leaf.len() >= LEAF_CACHE_ENTRIES {
            if let Some(oldest) = cache
                .by_leaf
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            {
                cache.by_leaf.remove(&oldest);
            }
        }
        let clock = cache.clock;
        cache.by_leaf.insert(n, (extents.clone(), clock));
        Ok(extents)
    }

    fn locate(&self, id: &ChunkId) -> Result<ChunkLocation> {
        self.index.get(id).ok_or_else(|| {
            blame_damaged_index(
                Error::MissingChunk { chunk: id.to_hex() },
                &self.damaged_index,
            )
        })
    }

    /// The plaintext of chunk `id` of `length` bytes, verified: from the
    /// cache, or fetched and opened.
    fn chunk(&self, id: &ChunkId, length: u32) -> Result<(Arc<Vec<u8>>, Range<usize>)> {
        let loc = self.locate(id)?;
        let key = || pack_key(&self.index.pack_id(loc.pack));
        let what = || {
            format!(
                "chunk {} in {} (disk '{}')",
                id.short(),
                key(),
                self.disk.name
            )
        };
        let slot = self.blobs.slot((loc.pack, loc.offset));
        let mut opened = slot.opened.lock().unwrap_or_else(|e| e.into_inner());
        if opened.is_none() {
            *opened = Some(self.open_blob(id, &loc)?);
            let size = opened.as_ref().map_or(0, |o| o.plain.len());
            self.blobs.filled((loc.pack, loc.offset), &slot, size);
        }
        let Some(o) = opened.as_mut() else {
            unreachable!("filled just above")
        };
        let range = if loc.is_grouped() {
            let start = loc.member as usize;
            if !o.verified.contains(&loc.member) {
                self.repo
                    .sealer()
                    .group_member(&o.plain, id, loc.member, loc.raw_length, true)
                    .map_err(|e| Error::damaged(what(), e))?;
                o.verified.insert(loc.member);
            }
            start..start + loc.raw_length as usize
        } else {
            0..o.plain.len()
        };
        if range.len() != length as usize {
            return Err(Error::damaged(
                format!("chunk {}", id.to_hex()),
                "its length differs from the manifest",
            ));
        }
        Ok((o.plain.clone(), range))
    }

    /// Fetches and opens the blob holding `id`: a group's plaintext, or
    /// the chunk's own (then verified against its id).
    fn open_blob(&self, id: &ChunkId, loc: &ChunkLocation) -> Result<Opened> {
        let key = pack_key(&self.index.pack_id(loc.pack));
        let sealed = self
            .repo
            .store()
            .get_range(&key, loc.offset as u64, loc.length as usize)?;
        self.bytes_fetched
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        self.blobs_fetched.fetch_add(1, Ordering::Relaxed);
        let what = || {
            format!(
                "chunk {} in {} (disk '{}')",
                id.short(),
                key,
                self.disk.name
            )
        };
        if loc.is_grouped() {
            let plain = self
                .repo
                .sealer()
                .open_group(&sealed)
                .map_err(|e| Error::damaged(what(), e))?;
            Ok(Opened {
                plain: Arc::new(plain),
                verified: HashSet::new(),
            })
        } else {
            let plain = self
                .repo
                .open_located(&sealed, id, loc, true)
                .map_err(|e| Error::damaged(what(), e))?;
            Ok(Opened {
                plain: Arc::new(plain),
                verified: HashSet::from([loc.member]),
            })
        }
    }

    /// Fetches the blobs of the data extents in `extents` that are not
    /// cached, in parallel, one request per blob.
    fn fetch_ahead(&self, extents: &[(u64, Extent)]) -> Result<()> {
        let mut wanted: Vec<(ChunkId, u32)> = Vec::new();
        let mut seen: HashSet<Place> = HashSet::new();
        for (_, e) in extents {
            if let Extent::Data { id, length } = e {
                let loc = self.locate(id)?;
                let place = (loc.pack, loc.offset);
                if seen.insert(place) && !self.blobs.holds(place) {
                    wanted.push((*id, *length));
                }
            }
        }
        if wanted.len() <= 1 {
            return Ok(());
        }
        crate::exec::request_pool().install(|| {
            wanted
                .par_iter()
                .try_for_each(|(id, length)| self.chunk(id, *length).map(|_| ()))
        })
    }
}

fn choose_disk<'a>(
    body: &'a PointBody,
    point: &PointId,
    name: Option<&str>,
) -> Result<&'a DiskRecord> {
    match name {
        Some(name) => {
            body.disks
                .iter()
                .find(|d| d.name == name)
                .ok_or_else(|| Error::UnknownDisk {
                    point: point.short(),
                    disk: name.to_string(),
                    available: body
                        .disks
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        }
        None if body.disks.len() == 1 => Ok(&body.disks[0]),
        None => Err(Error::DiskRequired {
            point: point.short(),
            count: body.disks.len(),
        }),
    }
}

impl BlobCache {
    /// The slot of `place`, made if need be, marked as just used.
    fn slot(&self, place: Place) -> Arc<Slot> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.by_place.entry(place).or_default().clone();
        slot.last_used.store(now, Ordering::Relaxed);
        slot
    }

    fn holds(&self, place: Place) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.sizes.contains_key(&place)
    }

    /// Accounts for `slot`, just filled with `size` bytes, and drops the
    /// least recently used filled slots beyond the budget (never `slot`:
    /// its reader is about to use it).
    fn filled(&self, place: Place, slot: &Arc<Slot>, size: usize) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // The slot may have been dropped from the map while it was being
        // filled; it is put back, since it holds the freshest blob.
        slots.by_place.insert(place, slot.clone());
        if let Some(old) = slots.sizes.insert(place, size) {
            slots.bytes -= old;
        }
        slots.bytes += size;
        while slots.bytes > self.budget {
            let victim = slots
                .sizes
                .keys()
                .filter(|p| **p != place)
                .min_by_key(|p| {
                    slots
                        .by_place
                        .get(p)
                        .map_or(0, |s| s.last_used.load(Ordering::Relaxed))
                })
                .copied();
            let Some(victim) = victim else { break };
            slots.by_place.remove(&victim);
            if let Some(size) = slots.sizes.remove(&victim) {
                slots.bytes -= size;
            }
        }
    }
}

impl ImageRead for DiskReader {
    fn size(&self) -> u64 {
        self.disk.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_bounds(&|| self.describe(), offset, buf.len(), self.disk.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let sequential = self.last_end.swap(end, Ordering::Relaxed) == offset;
        let mut extents = self.extents_in(offset..end)?;
        let own = extents.len();
        if sequential && self.readahead > 0 && end < self.disk.size {
            let ahead_end = end.saturating_add(self.readahead).min(self.disk.size);
            extents.extend(
                self.extents_in(end..ahead_end)?
                    .into_iter()
                    .filter(|(o, _)| *o >= end),
            );
        }
        self.fetch_ahead(&extents)?;
        for (at, e) in &extents[..own] {
            // The part of the extent inside the read, in image offsets.
            let from = (*at).max(offset);
            let to = (at + e.len()).min(end);
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            match e {
                Extent::Zero { .. } => dst.fill(0),
                Extent::Data { id, length } => {
                    let (plain, range) = self.chunk(id, *length)?;
                    let chunk = &plain[range];
                    let skip = (from - at) as usize;
                    dst.copy_from_slice(&chunk[skip..skip + dst.len()]);
                }
            }
        }
        Ok(())
    }

    fn zero_ranges(&self, range: Range<u64>) -> Result<Vec<Range<u64>>> {
        let range = range.start..range.end.min(self.disk.size);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let mut out: Vec<Range<u64>> = Vec::new();
        for (at, e) in self.extents_in(range.clone())? {
            if let Extent::Zero { length } = e {
                let r = at.max(range.start)..(at + length).min(range.end);
                match out.last_mut() {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ => out.push(r),
                }
            }
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("disk '{}' of point {}", self.disk.name, self.point.short())
    }
}

impl Read for DiskReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.disk.size.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.read_exact_at(&mut buf[..n], self.pos)
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for DiskReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.disk.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let p = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the disk",
            )
        })?;
        self.pos = p;
        Ok(p)
    }
}

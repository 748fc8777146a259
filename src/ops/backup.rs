//! `backup`: read disk images, store their new chunks, record a recovery
//! point.
//!
//! Pipeline per disk: a reader thread reads the image's data regions in
//! segments, cuts them into chunks and hashes the whole image; the calling
//! thread hands each segment's chunks to a thread pool that detects zero
//! chunks, computes ids, looks them up and seals only the new ones; results
//! come back in order and are appended to packs and to the manifest; a
//! writer thread stores finished packs. Queues between stages are bounded,
//! so memory does not grow with the image.
//!
//! Write order: packs; every 64K new chunks and at the end a barrier and an
//! index file for them; then a barrier, the recovery point, a barrier. A
//! crash leaves only packs no index lists yet (the next backup finds these
//! "orphan packs", indexes them and reuses their chunks) and index files no
//! point uses yet (reused through the index).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::chunker::{is_all_zero, Chunker};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::format::config::CompressionSetting;
use crate::format::pack::PackEntry;
use crate::format::point::{DiskRecord, DiskStats, PointBody};
use crate::format::{ChunkId, PackId, PointId};
use crate::imagehash::{subtree_cv, ImageHasher, Span};
use crate::index::ChunkIndex;
use crate::manifest::{leaf_digest, LeafValues, ManifestBuilder};
use crate::packer::{
    read_pack_table_sized, ChunkGroup as Group, FinishedPack, Member, PackBuilder, PackWriter,
    DEFAULT_PACK_TARGET,
};
use crate::progress::{Progress, Tracker};
use crate::repo::{host_name, now_unix, Damaged, LockKind, Repository};
use crate::source::ImageSource;

/// Bytes read from the image per segment.
const SEGMENT_BYTES: usize = 4 << 20;
/// Where the group size now lives (kept here for callers of this path).
pub use crate::packer::GROUP_BYTES;
/// Segments queued between the reader and the sealing stage.
const SEGMENT_QUEUE: usize = 2;

/// One disk to back up.
#[derive(Debug, Clone)]
pub struct DiskSource {
    /// Name of the disk inside the recovery point (e.g. `sda`, `root`).
    pub name: String,
    /// Raw image file or block device.
    pub path: PathBuf,
}

/// What to back up and how.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub disks: Vec<DiskSource>,
    pub tags: Vec<String>,
    /// Host recorded in the point; this machine's name when `None`.
    pub host: Option<String>,
    /// Compression of new chunks; the repository default when `None`.
    pub compression: Option<CompressionSetting>,
    /// Worker threads; all cores when `None`.
    pub threads: Option<usize>,
    /// Told the bytes of image processed so far, across all disks.
    pub progress: Option<Progress>,
}

/// The outcome of a backup.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub point: PointId,
    pub body: PointBody,
    /// Packs left by an interrupted backup that this one indexed and reused.
    pub recovered_packs: usize,
    /// Index files that could not be read: their chunks were treated as
    /// unknown (and their packs indexed again from the packs' tables).
    pub damaged_index_files: Vec<Damaged>,
    /// Image bytes hashed for the points' image hashes. Unchanged 4 MiB
    /// spans whose hash the previous point's manifest recorded (format 2)
    /// are not hashed again, so after the first backup this is about the
    /// bytes that changed.
    pub image_bytes_hashed: u64,
    pub duration: Duration,
}

impl BackupReport {
    /// Sum of the per-disk counters.
    pub fn totals(&self) -> DiskStats {
        sum_stats(self.body.disks.iter().map(|d| &d.stats))
    }

    /// Logical bytes of all disks.
    pub fn logical_bytes(&self) -> u64 {
        self.body.disks.iter().map(|d| d.size).sum()
    }
}

pub(crate) fn sum_stats<'a>(it: impl Iterator<Item = &'a DiskStats>) -> DiskStats {
    let mut t = DiskStats::default();
    for s in it {
        t.bytes_read += s.bytes_read;
        t.zero_bytes += s.zero_bytes;
        t.chunks += s.chunks;
        t.new_chunks += s.new_chunks;
        t.new_bytes += s.new_bytes;
        t.stored_bytes += s.stored_bytes;
    }
    t
}

/// Backs up the disks in `opts` into `repo` as one new recovery point.
pub fn backup(repo: &Repository, opts: &BackupOptions) -> Result<BackupReport> {
    let started = Instant::now();
    let (time_secs, time_nanos) = now_unix();
    if opts.disks.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to back up: no disk given".into(),
        ));
    }
    let mut names = HashSet::new();
    for d in &opts.disks {
        if d.name.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "the disk from {} has an empty name; name it with --disk",
                d.path.display()
            )));
        }
        // Checked before anything is stored (the point would refuse it at
        // the end, after every pack was written).
        crate::format::point::check_disk_name(&d.name).map_err(|e| {
            Error::InvalidArgument(format!(
                "the disk from {} cannot be named '{}': {e}; name it with --disk (a plain name such as root or data)",
                d.path.display(),
                d.name
            ))
        })?;
        if !names.insert(d.name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "two disks are named '{}' (disk names default to the image's file name); give each image its own name with --disk, in order",
                d.name
            )));
        }
    }
    // Open every source first, so a typo fails before anything is written.
    let sources = opts
        .disks
        .iter()
        .map(|d| {
            ImageSource::open(&d.path).map_err(|source| Error::Source {
                path: d.path.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let pool = crate::exec::worker_pool(opts.threads, "seal")?;

    let lock = repo.lock(LockKind::Shared, "backup")?;
    // Temporary files of writers that died (a crash mid-put) are litter;
    // an hour is far longer than any live writer keeps one.
    repo.store()
        .remove_stale_temporaries(crate::repo::layout::STALE_TEMPORARY)?;
    // A damaged index file hides only its own chunks: they count as
    // unknown, and its packs, which no readable index names, are indexed
    // again from their tables below.
    let (mut index, damaged_index_files) = repo.load_index_lenient()?;
    let mut recovered: Vec<(PackId, Vec<PackEntry>)> = Vec::new();
    let recovered_packs = recover_orphan_packs(repo, &mut index, &mut recovered)?;
    index.finish();
    let parents: Vec<LeafValues> = opts
        .disks
        .iter()
        .zip(&sources)
        .map(|(d, src)| parent_leaf_values(repo, &index, &d.name, src.size()))
        .collect();

    let mut session = Session {
        sealer: repo.sealer().clone(),
        index: Arc::new(index),
        claimed: Arc::new(Mutex::new(HashSet::new())),
        compression: opts.compression.unwrap_or(repo.config().compression),
        chunker: Chunker::new(repo.config().chunker),
        pack: PackBuilder::new(DEFAULT_PACK_TARGET, repo.format_major()),
        version: repo.format_major(),
        group: Group::default(),
        ready: Vec::new(),
        hashed: 0,
        pool,
        tracker: Tracker::new(
            opts.progress.clone(),
            sources.iter().map(ImageSource::size).sum(),
        ),
    };

    let mut hashed_bytes = 0;
    let disks = thread::scope(|scope| -> Result<Vec<DiskRecord>> {
        let (pack_tx, pack_rx) = sync_channel::<FinishedPack>(1);
        let writer = thread::Builder::new()
            .name("diskvault-packs".into())
            .spawn_scoped(scope, || store_packs(repo, pack_rx, recovered))
            .map_err(|e| Error::InvalidArgument(format!("cannot start a thread: {e}")))?;
        let mut disks = Vec::new();
        let mut result = Ok(());
        for ((src, d), parent) in sources.into_iter().zip(&opts.disks).zip(&parents) {
            match session.backup_disk(src, d, parent, &pack_tx) {
                Ok(rec) => disks.push(rec),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        hashed_bytes = session.hashed;
        if result.is_ok() && !session.pack.is_empty() {
            let pack = session.new_pack();
            let pack = std::mem::replace(&mut session.pack, pack);
            result = session.send_pack(pack, &pack_tx);
        }
        drop(pack_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::InvalidArgument("pack writer thread panicked".into())));
        // A writer failure explains a send failure, so report it first.
        written?;
        result?;
        Ok(disks)
    })?;

    let body = PointBody {
        time_secs,
        time_nanos,
        duration_millis: started.elapsed().as_millis() as u64,
        host: opts.host.clone().unwrap_or_else(host_name),
        source: opts
            .disks
            .iter()
            .map(|d| d.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
            .chars()
            .take(crate::format::point::MAX_STRING)
            .collect(),
        tags: opts.tags.clone(),
        disks,
    };
    // The chunks this point reuses were protected by the lock: if it was
    // lost (removed by `unlock --all`), a prune may have deleted some.
    lock.check()?;
    let point = repo.write_point(&body)?;
    Ok(BackupReport {
        point,
        body,
        recovered_packs,
        damaged_index_files,
        image_bytes_hashed: hashed_bytes,
        duration: started.elapsed(),
    })
}

/// The chaining values the leaves of the newest point's disk of this name
/// and size recorded (format 2): where this backup's leaves are the same,
/// their bytes need no hashing. Empty when there is no such disk, or its
/// manifest cannot be read: then every byte is hashed, which is slower but
/// gives the same point.
fn parent_leaf_values(repo: &Repository, index: &ChunkIndex, name: &str, size: u64) -> LeafValues {
    if repo.format_major() < 2 {
        return LeafValues::new();
    }
    let Ok((points, _)) = repo.list_points_lenient() else {
        return LeafValues::new();
    };
    let parent = points
        .iter()
        .rev()
        .flat_map(|(_, p)| p.disks.iter())
        .find(|d| d.name == name && d.size == size);
    let Some(disk) = parent else {
        return LeafValues::new();
    };
    let mut load = |id: &ChunkId| crate::repo::reader::read_indexed_chunk(repo, index, id);
    crate::manifest::leaf_values(&disk.manifest_root, repo.format_major(), &mut load)
        .unwrap_or_default()
}

/// Indexes packs that exist in the store but in no index file: the work of
/// a backup that was interrupted before it wrote its index.
fn recover_orphan_packs(
    repo: &Repository,
    index: &mut ChunkIndex,
    recovered: &mut Vec<(PackId, Vec<PackEntry>)>,
) -> Result<usize> {
    for (pack, size) in repo.list_packs_sized()? {
        if index.has_pack(&pack) {
            continue;
        }
        // A damaged orphan is not fatal: it is simply not reused, and
        // `check` reports it. But one sealed otherwise than the vault is
        // evidence of tampering (a config switched to `none`, or a pack
        // planted): writing on would store plaintext, so stop.
        let entries = match read_pack_table_sized(repo, &pack, size) {
            Ok(e) => e,
            Err(e @ Error::CipherMismatch { .. }) => return Err(e),
            Err(_) => continue,
        };
        for e in &entries {
            index.add(pack, e);
        }
        recovered.push((pack, entries));
    }
    Ok(recovered.len())
}

/// The pack writer thread: stores finished packs and indexes them, and the
/// recovered orphan packs. Returns after the last index file is durable.
fn store_packs(
    repo: &Repository,
    packs: Receiver<FinishedPack>,
    recovered: Vec<(PackId, Vec<PackEntry>)>,
) -> Result<()> {
    let mut writer = PackWriter::new(repo);
    for (pack, entries) in &recovered {
        writer.index_existing(*pack, entries)?;
    }
    for p in packs {
        writer.store(p)?;
    }
    writer.finish()?;
    Ok(())
}

/// What the reader sends to the sealing stage.
enum ReadItem {
    /// A hole of this many bytes.
    Hole(u64),
    /// Image bytes (the first `len` of `buf`) and the lengths of the chunks
    /// cut from them.
    Data {
        buf: Vec<u8>,
        len: usize,
        cuts: Vec<usize>,
    },
}

/// A chunk after the parallel stage.
enum Sealed {
    Zero(usize),
    Known(ChunkId, usize),
    /// A new chunk, sealed alone (format 1), or to be sealed with its
    /// neighbours in a group (format 2: `None`).
    New(ChunkId, usize, Option<Vec<u8>>),
}

/// Seals groups in parallel on the current pool, in order.
fn seal_all(
    groups: &[Group],
    sealer: &Sealer,
    compression: CompressionSetting,
) -> Vec<(Vec<u8>, Vec<Member>)> {
    groups
        .par_iter()
        .map(|g| g.seal(sealer, compression))
        .collect()
}

struct Session {
    sealer: Arc<Sealer>,
    index: Arc<ChunkIndex>,
    /// Chunks sealed by this backup (so a repeated chunk is sealed once).
    claimed: Arc<Mutex<HashSet<ChunkId>>>,
    compression: CompressionSetting,
    chunker: Chunker,
    pack: PackBuilder,
    /// The repository's format: 2 and later group new data chunks.
    version: u8,
    /// New chunks of the group being filled, and full groups to seal.
    group: Group,
    ready: Vec<Group>,
    /// Image bytes hashed so far (see [`BackupReport::image_bytes_hashed`]).
    hashed: u64,
    pool: rayon::ThreadPool,
    tracker: Tracker,
}

impl Session {
    fn send_pack(&mut self, pack: PackBuilder, tx: &SyncSender<FinishedPack>) -> Result<()> {
        let finished = pack.finish(&self.sealer);
        tx.send(finished)
            .map_err(|_| Error::InvalidArgument("pack writer stopped".into()))
    }

    fn new_pack(&self) -> PackBuilder {
        PackBuilder::new(DEFAULT_PACK_TARGET, self.version)
    }

    fn add_to_pack(
        &mut self,
        sealed: &[u8],
        members: &[Member],
        tx: &SyncSender<FinishedPack>,
    ) -> Result<()> {
        self.pack.add(sealed, members);
        if self.pack.is_full() {
            let fresh = self.new_pack();
            let pack = std::mem::replace(&mut self.pack, fresh);
            self.send_pack(pack, tx)?;
        }
        Ok(())
    }

    /// Seals the full groups (and with `all` the one being filled) on the
    /// pool and adds them to packs in order.
    fn seal_groups(
        &mut self,
        all: bool,
        stats: &mut DiskStats,
        tx: &SyncSender<FinishedPack>,
    ) -> Result<()> {
        if all && !self.group.is_empty() {
            let last = std::mem::take(&mut self.group);
            self.ready.push(last);
        }
        if self.ready.is_empty() {
            return Ok(());
        }
        let ready = std::mem::take(&mut self.ready);
        let (sealer, compression) = (&self.sealer, self.compression);
        let sealed = self.pool.install(|| seal_all(&ready, sealer, compression));
        self.add_groups(sealed, stats, tx)
    }

    /// Adds sealed groups to packs, in order, counting their bytes.
    fn add_groups(
        &mut self,
        sealed: Vec<(Vec<u8>, Vec<Member>)>,
        stats: &mut DiskStats,
        tx: &SyncSender<FinishedPack>,
    ) -> Result<()> {
        for (bytes, members) in sealed {
            stats.stored_bytes += bytes.len() as u64;
            self.add_to_pack(&bytes, &members, tx)?;
        }
        Ok(())
    }

    /// Claims `id` for this backup; false if it is already stored or claimed.
    fn claim(index: &ChunkIndex, claimed: &Mutex<HashSet<ChunkId>>, id: &ChunkId) -> bool {
        !index.contains(id)
            && claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*id)
    }

    fn backup_disk(
        &mut self,
        src: ImageSource,
        disk: &DiskSource,
        parent: &LeafValues,
        tx: &SyncSender<FinishedPack>,
    ) -> Result<DiskRecord> {
        let size = src.size();
        let regions = src.data_regions().map_err(|source| Error::Source {
            path: disk.path.clone(),
            source,
        })?;
        let (item_tx, item_rx) = sync_channel::<ReadItem>(SEGMENT_QUEUE);
        let (recycle_tx, recycle_rx) = sync_channel::<Vec<u8>>(SEGMENT_QUEUE + 2);
        let chunker = self.chunker.clone();
        let path = disk.path.clone();
        let reader = thread::Builder::new()
            .name("diskvault-read".into())
            .spawn(move || read_image(src, regions, chunker, item_tx, recycle_rx))
            .map_err(|source| Error::Source {
                path: path.clone(),
                source,
            })?;

        let consumed = self.consume(size, parent, item_rx, recycle_tx, tx);
        let read = reader.join();
        let bytes_read = match read {
            Ok(Ok(v)) => v,
            Ok(Err(source)) => {
                return Err(Error::Source {
                    path: disk.path.clone(),
                    source,
                })
            }
            Err(_) => return Err(Error::InvalidArgument("reader thread panicked".into())),
        };
        let (root, mut stats, covered, image_hash) = consumed?;
        let Some(image_hash) = image_hash.filter(|_| covered == size) else {
            return Err(Error::Source {
                path: disk.path.clone(),
                source: std::io::Error::other("the image changed size while it was read"),
            });
        };
        stats.bytes_read = bytes_read;
        Ok(DiskRecord {
            name: disk.name.clone(),
            size,
            manifest_root: root,
            image_hash,
            stats,
        })
    }

    fn consume(
        &mut self,
        size: u64,
        parent: &LeafValues,
        items: Receiver<ReadItem>,
        recycle: SyncSender<Vec<u8>>,
        tx: &SyncSender<FinishedPack>,
    ) -> Result<(ChunkId, DiskStats, u64, Option<[u8; 32]>)> {
        let sealer = self.sealer.clone();
        let mut manifest = ManifestBuilder::new(move |bytes: &[u8]| sealer.chunk_id(bytes))
            .with_format(self.version)
            .holding_leaves();
        let mut hasher = ImageHasher::new(size);
        let mut window = Window::default();
        let mut stats = DiskStats::default();
        for item in items {
            match item {
                ReadItem::Hole(len) => {
                    self.tracker.advance(len);
                    stats.zero_bytes += len;
                    manifest.push_zero(len)?;
                    window.push(Pending::Zero(len));
                }
                ReadItem::Data { buf, len, cuts } => {
                    self.tracker.advance(len as u64);
                    let data = &buf[..len];
                    // Three jobs at once on the pool, none waiting for
                    // another: this segment's chunk ids, the groups the
                    // last segments filled, and the leaves they closed.
                    let ready = std::mem::take(&mut self.ready);
                    let (sealer, compression, version) =
                        (&self.sealer, self.compression, self.version);
                    let this = &*self;
                    let pool = &self.pool;
                    let (results, (sealed, hashed)) = pool.install(|| {
                        rayon::join(
                            || this.seal_segment(data, &cuts),
                            || {
                                rayon::join(
                                    || seal_all(&ready, sealer, compression),
                                    || {
                                        hash_leaves(
                                            &mut manifest,
                                            &mut hasher,
                                            &mut window,
                                            parent,
                                            size,
                                            &recycle,
                                            version,
                                            pool,
                                        )
                                    },
                                )
                            },
                        )
                    });
                    drop(ready);
                    self.add_groups(sealed, &mut stats, tx)?;
                    self.hashed += hashed?;
                    let mut at = 0;
                    for r in results {
                        let here = at;
                        match &r {
                            Sealed::Zero(len) | Sealed::Known(_, len) | Sealed::New(_, len, _) => {
                                at += len
                            }
                        }
                        match r {
                            Sealed::Zero(len) => {
                                stats.zero_bytes += len as u64;
                                manifest.push_zero(len as u64)?;
                            }
                            Sealed::Known(id, len) => {
                                stats.chunks += 1;
                                manifest.push_data(id, len as u32)?;
                            }
                            Sealed::New(id, len, sealed) => {
                                stats.chunks += 1;
                                stats.new_chunks += 1;
                                stats.new_bytes += len as u64;
                                match sealed {
                                    Some(sealed) => {
                                        stats.stored_bytes += sealed.len() as u64;
                                        self.add_to_pack(
                                            &sealed,
                                            &[Member::sole(id, len as u32)],
                                            tx,
                                        )?;
                                    }
                                    None => {
                                        self.group.push(id, &data[here..here + len]);
                                        if self.group.is_full() {
                                            let full = std::mem::take(&mut self.group);
                                            self.ready.push(full);
                                        }
                                    }
                                }
                                manifest.push_data(id, len as u32)?;
                            }
                        }
                    }
                    window.push(Pending::Data(buf, len));
                }
            }
            self.store_nodes(&mut manifest, &mut stats, tx)?;
        }
        // A disk's groups end with it, so its figures count its own.
        self.seal_groups(true, &mut stats, tx)?;
        manifest.close()?;
        self.hashed += hash_leaves(
            &mut manifest,
            &mut hasher,
            &mut window,
            parent,
            size,
            &recycle,
            self.version,
            &self.pool,
        )?;
        let covered = manifest.position();
        let root = manifest.finish()?;
        self.store_nodes(&mut manifest, &mut stats, tx)?;
        // Short input (the image shrank) is reported by the caller.
        let image_hash = (hasher.position() == size).then(|| hasher.finalize());
        Ok((root, stats, covered, image_hash))
    }

    fn store_nodes<F: Fn(&[u8]) -> ChunkId>(
        &mut self,
        manifest: &mut ManifestBuilder<F>,
        stats: &mut DiskStats,
        tx: &SyncSender<FinishedPack>,
    ) -> Result<()> {
        let nodes: Vec<_> = manifest.drain_nodes().collect();
        for (id, bytes) in nodes {
            if !Self::claim(&self.index, &self.claimed, &id) {
                continue;
            }
            let sealed = self.sealer.seal(&bytes, &id.0, CompressionSetting::Zstd(3));
            stats.new_chunks += 1;
            stats.new_bytes += bytes.len() as u64;
            stats.stored_bytes += sealed.len() as u64;
            self.add_to_pack(&sealed, &[Member::sole(id, bytes.len() as u32)], tx)?;
        }
        Ok(())
    }

    fn seal_segment(&self, buf: &[u8], cuts: &[usize]) -> Vec<Sealed> {
        let mut spans = Vec::with_capacity(cuts.len());
        let mut off = 0;
        for &len in cuts {
            spans.push((off, len));
            off += len;
        }
        let sealer = &self.sealer;
        let index = &self.index;
        let claimed = &self.claimed;
        let compression = self.compression;
        let grouped = self.version >= 2;
        spans
            .par_iter()
            .map(|&(off, len)| {
                let data = &buf[off..off + len];
                if is_all_zero(data) {
                    return Sealed::Zero(len);
                }
                let id = sealer.chunk_id(data);
                if !Self::claim(index, claimed, &id) {
                    return Sealed::Known(id, len);
                }
                if grouped {
                    return Sealed::New(id, len, None);
                }
                Sealed::New(id, len, Some(sealer.seal(data, &id.0, compression)))
            })
            .collect()
    }
}

/// Hashes the image bytes of the leaves the manifest closed, in order,
/// and stores the leaves. A leaf that covers one whole aligned span is
/// hashed as a subtree whose chaining value it records (format 2); when
/// the parent point has the same leaf at the same offset, its value is
/// taken without hashing anything.
#[allow(clippy::too_many_arguments)]
fn hash_leaves<F: Fn(&[u8]) -> ChunkId>(
    manifest: &mut ManifestBuilder<F>,
    hasher: &mut ImageHasher,
    window: &mut Window,
    parent: &LeafValues,
    size: u64,
    recycle: &SyncSender<Vec<u8>>,
    version: u8,
    pool: &rayon::ThreadPool,
) -> Result<u64> {
    let mut hashed = 0;
    while let Some(leaf) = manifest.take_closed() {
        let (start, covered) = (leaf.start, leaf.covered());
        if hasher.position() != start {
            return Err(Error::InvalidArgument(
                "the image hash fell behind the manifest".into(),
            ));
        }
        let cv = if leaf.takes_chaining_value(size) {
            let known = parent
                .get(&start)
                .filter(|(digest, _)| *digest == leaf_digest(&leaf))
                .map(|(_, cv)| *cv);
            let cv = match known {
                Some(cv) => cv,
                None => {
                    let spans = window.spans(start, start + covered);
                    hashed += covered;
                    pool.install(|| subtree_cv(&spans, start, covered))
                }
            };
            hasher.push_subtree(cv, covered);
            Some(cv)
        } else {
            let spans = window.spans(start, start + covered);
            hashed += covered;
            pool.install(|| hasher.update(&spans));
            None
        };
        window.release(start + covered, recycle);
        manifest.store_leaf(leaf, cv.filter(|_| version >= 2))?;
    }
    Ok(hashed)
}

/// Image content read but not hashed yet, from the start of the oldest
/// leaf still open: the bytes its leaf needs once it closes.
#[derive(Default)]
struct Window {
    /// Image offset of the first piece.
    start: u64,
    pieces: std::collections::VecDeque<Pending>,
}

enum Pending {
    Zero(u64),
    /// A segment buffer and how many of its bytes are image.
    Data(Vec<u8>, usize),
}

impl Pending {
    fn len(&self) -> u64 {
        match self {
            Pending::Zero(n) => *n,
            Pending::Data(_, n) => *n as u64,
        }
    }
}

impl Window {
    fn push(&mut self, p: Pending) {
        self.pieces.push_back(p);
    }

    /// The content of image range [from, to), which the window holds.
    fn spans(&self, from: u64, to: u64) -> Vec<Span<'_>> {
        let mut out = Vec::new();
        let mut at = self.start;
        for p in &self.pieces {
            let len = p.len();
            let (a, b) = (at.max(from), (at + len).min(to));
            if a < b {
                out.push(match p {
                    Pending::Zero(_) => Span::Zero(b - a),
                    Pending::Data(buf, _) => Span::Data(&buf[(a - at) as usize..(b - at) as usize]),
                });
            }
            at += len;
            if at >= to {
                break;
            }
        }
        out
    }

    /// Drops the pieces that end at or before `upto`, handing their
    /// buffers back to the reader.
    fn release(&mut self, upto: u64, recycle: &SyncSender<Vec<u8>>) {
        while let Some(p) = self.pieces.front() {
            if self.start + p.len() > upto {
                break;
            }
            self.start += p.len();
            if let Some(Pending::Data(buf, _)) = self.pieces.pop_front() {
                let _ = recycle.try_send(buf);
            }
        }
    }
}

/// The reader thread: walks the data regions in segments and cuts chunks.
/// Returns the bytes read.
fn read_image(
    src: ImageSource,
    regions: Vec<(u64, u64)>,
    chunker: Chunker,
    out: SyncSender<ReadItem>,
    recycled: Receiver<Vec<u8>>,
) -> std::io::Result<u64> {
    let stopped = || std::io::Error::other("backup stopped");
    let mut pos = 0u64;
    let mut bytes_read = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    let regions_with_end = regions
        .into_iter()
        .chain(std::iter::once((src.size(), src.size())));
    for (start, end) in regions_with_end {
        if start > pos {
            out.send(ReadItem::Hole(start - pos))
                .map_err(|_| stopped())?;
            pos = start;
        }
        // `pos` is the image offset of carry[0] from here on.
        let mut next_read = start;
        while next_read < end || !carry.is_empty() {
            let want = (SEGMENT_BYTES as u64).min(end - next_read) as usize;
            // Recycled buffers keep their length, so only growth is zeroed.
            let mut buf = recycled.try_recv().unwrap_or_default();
            let filled = carry.len();
            if buf.len() < filled + want {
                buf.resize(filled + want, 0);
            }
            buf[..filled].copy_from_slice(&carry);
            src.read_at(&mut buf[filled..filled + want], next_read)?;
            next_read += want as u64;
            bytes_read += want as u64;
            let at_end = next_read == end;
            let mut cuts = Vec::new();
            let valid = filled + want;
            let consumed = chunker.cut(&buf[..valid], pos, at_end, &mut cuts);
            carry.clear();
            carry.extend_from_slice(&buf[consumed..valid]);
            pos += consumed as u64;
            if !cuts.is_empty() {
                out.send(ReadItem::Data {
                    buf,
                    len: consumed,
                    cuts,
                })
                .map_err(|_| stopped())?;
            }
        }
    }
    Ok(bytes_read)
}

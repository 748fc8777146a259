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

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::chunker::{is_all_zero, Chunker};
use crate::crypto::Sealer;
use crate::error::{Error, Result};
use crate::format::changes::ChangedRanges;
use crate::format::config::CompressionSetting;
use crate::format::manifest::{Extent, ManifestNode, NodeEntries, CV_SPAN};
use crate::format::pack::PackEntry;
use crate::format::point::{
    Consistency, ConsistencyLevel, DiskOrigin, DiskRecord, DiskStats, PointBody, SourceKind,
};
use crate::format::{ChunkId, PackId, PointId};
use crate::imagehash::{subtree_cv, ImageHasher, Span};
use crate::index::ChunkIndex;
use crate::manifest::{leaf_digest, LeafValues, ManifestBuilder, ManifestEvent};
use crate::ops::hooks::{ConsistencyHooks, HookContext};
use crate::packer::{read_pack_table_sized, ChunkGroup as Group, Member, PackWriter};
use crate::progress::{Progress, Tracker};
use crate::repo::{host_name, now_unix, Damaged, LockKind, Repository};
use crate::source::{read_full, shrank, DiskSource, FileSource, StreamSource};

/// Bytes read from the image per segment.
const SEGMENT_BYTES: usize = 4 << 20;
/// Where the group size now lives (kept here for callers of this path).
pub use crate::packer::GROUP_BYTES;
/// Segments queued between the reader and the sealing stage: one keeps
/// the reader a segment ahead (2 was no faster on the 2 GiB image, and
/// each costs 4 MiB).
const SEGMENT_QUEUE: usize = 1;

/// One disk to back up: its name in the point and where its bytes come
/// from.
#[derive(Clone)]
pub struct BackupDisk {
    /// Name of the disk inside the recovery point (e.g. `sda`, `root`).
    pub name: String,
    /// Where the bytes come from: a [`FileSource`], a [`StreamSource`], an
    /// [`crate::NbdSource`], or the program's own [`DiskSource`].
    pub source: Arc<dyn DiskSource>,
    /// The ranges that changed since [`BackupOptions::parent`], when the
    /// caller knows them (a changed-block list): only they are read, and
    /// the rest of the disk is taken from the parent point's manifest.
    /// When `None`, the source's own [`DiskSource::changed_ranges`] are
    /// used, if it reports any and a parent is named.
    pub changed: Option<ChangedRanges>,
}

impl BackupDisk {
    /// The disk `name`, read from `source`.
    pub fn new(name: impl Into<String>, source: impl DiskSource + 'static) -> Self {
        BackupDisk {
            name: name.into(),
            source: Arc::new(source),
            changed: None,
        }
    }

    /// The disk `name`, read from the image file or block device at
    /// `path` (opened now, so a wrong path fails before anything else).
    pub fn file(name: impl Into<String>, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let source = FileSource::open(path).map_err(|source| Error::Source {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(BackupDisk::new(name, source))
    }

    /// The disk `name`, read from this process's standard input to its end.
    pub fn stdin(name: impl Into<String>) -> Self {
        BackupDisk::new(name, StreamSource::stdin())
    }

    /// The same disk, with the ranges changed since the parent point.
    pub fn with_changes(mut self, changed: ChangedRanges) -> Self {
        self.changed = Some(changed);
        self
    }
}

impl std::fmt::Debug for BackupDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupDisk")
            .field("name", &self.name)
            .field("source", &self.source.describe())
            .field("changed", &self.changed.as_ref().map(|c| c.ranges().len()))
            .finish()
    }
}

/// What to back up and how.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// The disks to read; each becomes one disk record of the point.
    pub disks: Vec<BackupDisk>,
    /// Tags recorded in the point.
    pub tags: Vec<String>,
    /// Host recorded in the point; this machine's name when `None`.
    pub host: Option<String>,
    /// Compression of new chunks; the repository default when `None`.
    pub compression: Option<CompressionSetting>,
    /// Worker threads; all cores when `None`.
    pub threads: Option<usize>,
    /// Told the bytes of image processed so far, across all disks.
    pub progress: Option<Progress>,
    /// The point (`latest`, an id or a prefix) whose manifests supply the
    /// ranges that [`BackupDisk::changed`] (or the source's own
    /// [`DiskSource::changed_ranges`]) leaves out.
    pub parent: Option<String>,
    /// With changed-block input: read and hash every byte anyway, and fail
    /// if one outside the lists differs from the parent point.
    pub verify_unchanged: bool,
    /// Called before the reads (freeze) and after them (thaw); the point
    /// records the consistency they give.
    pub hooks: Option<Arc<dyn ConsistencyHooks>>,
    /// Fail, writing no point, unless the hooks made the point
    /// application-consistent.
    pub require_app_consistent: bool,
    /// Set to stop the backup (from a signal handler, say): it fails with
    /// [`Error::BackupInterrupted`] after the post-read hook ran.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// The outcome of a backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    /// Id of the recovery point written.
    pub point: PointId,
    /// The recovery point as written.
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
    /// Bytes of image chunks read back from the repository to hash the
    /// parts of changed 4 MiB spans that the changed-block lists left out.
    pub bytes_from_repository: u64,
    /// A post-read hook that failed (the point is still written).
    pub hook_warning: Option<String>,
    /// Wall-clock time the backup took.
    #[serde(rename = "duration_seconds", serialize_with = "crate::ops::seconds")]
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
                d.source.describe()
            )));
        }
        // Checked before anything is stored (the point would refuse it at
        // the end, after every pack was written).
        crate::format::point::check_disk_name(&d.name).map_err(|e| {
            Error::InvalidArgument(format!(
                "the disk from {} cannot be named '{}': {e}; name it with --disk (a plain name such as root or data)",
                d.source.describe(),
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
    // A stream read for two disks would give each a part of it.
    for (i, d) in opts.disks.iter().enumerate() {
        if let Some(other) = opts.disks[..i]
            .iter()
            .find(|o| Arc::ptr_eq(&o.source, &d.source) && d.source.size().is_none())
        {
            return Err(Error::InvalidArgument(format!(
                "disks '{}' and '{}' are both read from {}, a stream that can be read only once",
                other.name,
                d.name,
                d.source.describe()
            )));
        }
    }
    let changed_input = opts.disks.iter().any(|d| d.changed.is_some());
    if changed_input && opts.parent.is_none() {
        return Err(Error::InvalidArgument(
            "a changed-block list needs the point it is relative to: give --parent POINT".into(),
        ));
    }
    // Open every source first, so a typo fails before anything is written.
    let mut sources = opts
        .disks
        .iter()
        .map(|d| {
            Input::open(d, &Stop(opts.cancel.clone())).map_err(|source| source_error(d, source))
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
    let index = Arc::new(index);
    let parent_point = match &opts.parent {
        Some(p) => {
            let id = repo.resolve_point(p)?;
            Some((id, repo.read_point(&id)?))
        }
        None => None,
    };
    let parents: Vec<LeafValues> = opts
        .disks
        .iter()
        .zip(&sources)
        .map(|(d, src)| parent_leaf_values(repo, &index, &d.name, src.size()))
        .collect();
    // Plans of what to read and what to take from the parent, per disk.
    let mut plans = Vec::with_capacity(sources.len());
    for (d, src) in opts.disks.iter().zip(&mut sources) {
        plans.push(plan_disk(
            repo,
            &index,
            d,
            src,
            parent_point.as_ref(),
            opts,
        )?);
    }

    let mut session = Session {
        sealer: repo.sealer().clone(),
        index: index.clone(),
        claimed: Arc::new(Mutex::new(HashSet::new())),
        compression: opts.compression.unwrap_or(repo.config().compression),
        chunker: Chunker::new(repo.config().chunker),
        version: repo.format_major(),
        group: Group::default(),
        sealing: Mutex::default(),
        hashed: 0,
        pool: Arc::new(pool),
        tracker: Tracker::open_ended(
            opts.progress.clone(),
            sources
                .iter()
                .map(Input::size)
                .filter(|&s| s != UNKNOWN_SIZE)
                .sum(),
        ),
        cancel: opts.cancel.clone(),
    };
    let reader = CachedChunks::new(repo, &index);

    // The consistency hooks bracket the reads: the pre hook runs before
    // the first byte is read, the post hook once the reads end, however.
    let host = opts.host.clone().unwrap_or_else(host_name);
    let mut hook_ctx = HookContext {
        host: host.clone(),
        disks: opts.disks.iter().map(|d| d.name.clone()).collect(),
        sources: opts.disks.iter().map(describe_source).collect(),
        tags: opts.tags.clone(),
        outcome: String::new(),
    };
    let pre = opts.hooks.as_ref().map(|h| h.before_read(&hook_ctx));
    if let (Some(Err(reason)), true) = (&pre, opts.require_app_consistent) {
        hook_ctx.outcome = "failed".into();
        let post = opts.hooks.as_ref().map(|h| h.after_read(&hook_ctx));
        let mut reason = reason.clone();
        if let Some(Err(p)) = post {
            reason = format!("{reason}; {p}");
        }
        return Err(Error::NotApplicationConsistent { reason });
    }

    let mut hashed_bytes = 0;
    let read = thread::scope(|scope| -> Result<Vec<DiskRecord>> {
        // Sealed blobs go to the pack writer through a short queue: where
        // the store takes puts in pieces, no pack is ever held whole, and
        // this queue is all the sealed data in memory.
        let (pack_tx, pack_rx) = sync_channel::<Blob>(BLOB_QUEUE);
        let writer = thread::Builder::new()
            .name("diskvault-packs".into())
            .spawn_scoped(scope, || store_packs(repo, pack_rx, recovered))
            .map_err(|e| Error::InvalidArgument(format!("cannot start a thread: {e}")))?;
        let mut disks = Vec::new();
        let mut result = Ok(());
        for (((src, d), parent), plan) in sources
            .into_iter()
            .zip(&opts.disks)
            .zip(&parents)
            .zip(plans)
        {
            match session.backup_disk(src, d, parent, plan, &reader, &pack_tx) {
                Ok(rec) => disks.push(rec),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        hashed_bytes = session.hashed;
        drop(pack_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::InvalidArgument("pack writer thread panicked".into())));
        // A writer failure explains a send failure, so report it first.
        written?;
        result?;
        Ok(disks)
    });

    let (consistency, hook_warning) = match &opts.hooks {
        None => (None, None),
        Some(hooks) => {
            hook_ctx.outcome = match &read {
                Ok(_) => "ok",
                Err(Error::BackupInterrupted) => "interrupted",
                Err(_) => "failed",
            }
            .into();
            let post = hooks.after_read(&hook_ctx);
            let consistency = match (&pre, &post) {
                (Some(Ok(())), Ok(())) => Consistency {
                    level: ConsistencyLevel::Application,
                    reason: "pre-backup script succeeded; post-backup script succeeded".into(),
                },
                (Some(Ok(())), Err(p)) => Consistency {
                    level: ConsistencyLevel::Application,
                    reason: format!("pre-backup script succeeded; {p}"),
                },
                (Some(Err(r)), _) => Consistency {
                    level: ConsistencyLevel::Crash,
                    reason: r.clone(),
                },
                (None, _) => Consistency {
                    level: ConsistencyLevel::Crash,
                    reason: "the pre-backup hook did not run".into(),
                },
            };
            (Some(consistency), post.err())
        }
    };
    let disks = read?;

    let body = PointBody {
        time_secs,
        time_nanos,
        duration_millis: started.elapsed().as_millis() as u64,
        host,
        source: opts
            .disks
            .iter()
            .map(describe_source)
            .collect::<Vec<_>>()
            .join(", ")
            .chars()
            .take(crate::format::point::MAX_STRING)
            .collect(),
        tags: opts.tags.clone(),
        disks,
        consistency: consistency.map(|mut c| {
            c.reason = c
                .reason
                .chars()
                .take(crate::format::point::MAX_STRING / 4)
                .collect();
            c
        }),
        unknown_extensions: Vec::new(),
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
        bytes_from_repository: reader.bytes.load(Ordering::Relaxed),
        hook_warning,
        duration: started.elapsed(),
    })
}

fn describe_source(d: &BackupDisk) -> String {
    d.source.describe()
}

fn source_error(d: &BackupDisk, source: std::io::Error) -> Error {
    Error::Source {
        path: PathBuf::from(d.source.describe()),
        source,
    }
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
        .find(|d| d.name == name && (d.size == size || size == UNKNOWN_SIZE));
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

/// Sealed blobs waiting for the pack writer: a few groups (about 1.5 MiB
/// each), enough to keep it busy while the next are sealed.
const BLOB_QUEUE: usize = 4;

/// A sealed chunk or group and the chunks it holds, on its way to a pack.
struct Blob {
    sealed: Vec<u8>,
    members: Vec<Member>,
}

/// The pack writer thread: packs the sealed blobs, stores and indexes the
/// packs, and indexes the recovered orphan packs. Returns after the last
/// index file is durable.
fn store_packs(
    repo: &Repository,
    blobs: Receiver<Blob>,
    recovered: Vec<(PackId, Vec<PackEntry>)>,
) -> Result<()> {
    let mut writer = PackWriter::new(repo);
    for (pack, entries) in &recovered {
        writer.index_existing(*pack, entries)?;
    }
    // A full pack is stored once the store has room for another put
    // (`PackWriter::add` waits), and the backup thread waits for this
    // queue, so no more is in memory than the store can take.
    for blob in blobs {
        writer.add(&blob.sealed, &blob.members)?;
    }
    writer.finish()?;
    Ok(())
}

/// What the consuming stage of one disk works with besides the reads.
struct DiskContext<'p, 'c> {
    /// Chaining values of the previous point's leaves of this disk.
    parent_values: &'p LeafValues,
    plan: &'p mut DiskPlan,
    chunks: &'p CachedChunks<'c>,
    disk_name: &'p str,
}

/// What consuming one disk's reads gave.
struct Consumed {
    root: ChunkId,
    stats: DiskStats,
    /// Image bytes the manifest covers.
    covered: u64,
    /// `None` when fewer bytes than the size were read.
    image_hash: Option<[u8; 32]>,
    /// Image bytes taken from the parent point unread.
    from_parent: u64,
}

/// The reader's view of the cancel flag.
struct Stop(Option<Arc<AtomicBool>>);

impl Stop {
    fn check(&self) -> std::io::Result<()> {
        match &self.0 {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "backup interrupted",
            )),
            _ => Ok(()),
        }
    }
}

/// With `--verify-unchanged`: fails if the image bytes at `[at, at + len)`
/// lie outside the changed ranges and differ from the parent point's.
#[allow(clippy::too_many_arguments)]
fn verify_unchanged(
    parent: &mut ParentExtents,
    changed: &ChangedRanges,
    at: u64,
    id: Option<ChunkId>,
    len: u64,
    data: Option<&[u8]>,
    chunks: &CachedChunks<'_>,
    disk: &str,
) -> Result<()> {
    if changed.overlaps(at, at + len) || parent.same_as(at, id, len, data, chunks)? {
        return Ok(());
    }
    Err(Error::ChangedOutsideList {
        disk: disk.to_string(),
        what: format!("bytes {at}..{}", at + len),
        detail: "they differ from the parent point's".into(),
    })
}

/// What the reader sends to the sealing stage.
enum ReadItem {
    /// A hole of this many bytes.
    Hole(u64),
    /// This many bytes unchanged since the parent point: its extents.
    Reuse(u64),
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

/// Groups being sealed at once in the background: enough to keep every
/// core compressing while the next segment is chunked, few enough that
/// their bytes (2 MiB in, about 1.5 MiB out each) stay small.
const GROUPS_IN_FLIGHT: usize = 3;

/// A group's sealed blob and members, or a panic's message.
type SealedGroup = std::result::Result<(Vec<u8>, Vec<Member>), String>;

struct Session {
    sealer: Arc<Sealer>,
    index: Arc<ChunkIndex>,
    /// Chunks sealed by this backup (so a repeated chunk is sealed once).
    claimed: Arc<Mutex<HashSet<ChunkId>>>,
    compression: CompressionSetting,
    chunker: Chunker,
    /// The repository's format: 2 and later group new data chunks.
    version: u8,
    /// New chunks of the group being filled.
    group: Group,
    /// Full groups being sealed on the pool, oldest first: each reports
    /// on its own channel, so they reach the packs in image order.
    /// (In a mutex only to make the session `Sync`: it is reached through
    /// `&mut self`.)
    sealing: Mutex<std::collections::VecDeque<Receiver<SealedGroup>>>,
    /// Image bytes hashed so far (see [`BackupReport::image_bytes_hashed`]).
    hashed: u64,
    pool: Arc<rayon::ThreadPool>,
    tracker: Tracker,
    cancel: Option<Arc<AtomicBool>>,
}

impl Session {
    /// Sends a sealed blob to the pack writer.
    fn add_to_pack(
        &mut self,
        sealed: Vec<u8>,
        members: Vec<Member>,
        tx: &SyncSender<Blob>,
    ) -> Result<()> {
        tx.send(Blob { sealed, members })
            .map_err(|_| Error::InvalidArgument("pack writer stopped".into()))
    }

    /// Starts sealing a full group on the pool, beside whatever else runs
    /// there (the next segment's chunk ids, the leaves' hashes).
    fn start_sealing(&mut self, group: Group) {
        let (done, report) = sync_channel::<SealedGroup>(1);
        let (sealer, compression) = (self.sealer.clone(), self.compression);
        self.pool.spawn(move || {
            let sealed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                group.seal(&sealer, compression)
            }))
            .map_err(|p| crate::exec::panic_message(&*p));
            // The receiver is gone only when the backup already failed.
            let _ = done.send(sealed);
        });
        self.sealing_mut().push_back(report);
    }

    /// Hands the groups whose sealing finished to the pack writer, oldest
    /// first and in order, waiting for the oldest while more than `keep`
    /// are in flight (`keep` 0: waits for all).
    fn collect_sealed(
        &mut self,
        keep: usize,
        stats: &mut DiskStats,
        tx: &SyncSender<Blob>,
    ) -> Result<()> {
        loop {
            let sealing = self.sealing_mut();
            let Some(oldest) = sealing.front() else {
                break;
            };
            let sealed = if sealing.len() > keep {
                oldest.recv().ok()
            } else {
                match oldest.try_recv() {
                    Ok(s) => Some(s),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
                }
            };
            sealing.pop_front();
            let (bytes, members) = match sealed {
                Some(Ok(s)) => s,
                Some(Err(panic)) => {
                    return Err(Error::InvalidArgument(format!(
                        "sealing a chunk group panicked: {panic}"
                    )))
                }
                None => {
                    return Err(Error::InvalidArgument(
                        "sealing a chunk group stopped without a result".into(),
                    ))
                }
            };
            stats.stored_bytes += bytes.len() as u64;
            self.add_to_pack(bytes, members, tx)?;
        }
        Ok(())
    }

    fn sealing_mut(&mut self) -> &mut std::collections::VecDeque<Receiver<SealedGroup>> {
        self.sealing.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Seals the group being filled and waits for every group in flight.
    fn seal_groups(&mut self, stats: &mut DiskStats, tx: &SyncSender<Blob>) -> Result<()> {
        if !self.group.is_empty() {
            let last = std::mem::take(&mut self.group);
            self.start_sealing(last);
        }
        self.collect_sealed(0, stats, tx)
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
        src: Input,
        disk: &BackupDisk,
        parent_values: &LeafValues,
        mut plan: DiskPlan,
        chunks: &CachedChunks<'_>,
        tx: &SyncSender<Blob>,
    ) -> Result<DiskRecord> {
        let size = src.size();
        let (item_tx, item_rx) = sync_channel::<ReadItem>(SEGMENT_QUEUE);
        let (recycle_tx, recycle_rx) = sync_channel::<Vec<u8>>(SEGMENT_QUEUE + 2);
        let chunker = self.chunker.clone();
        let cancel = self.cancel.clone();
        let pieces = std::mem::take(&mut plan.pieces);
        let reader = thread::Builder::new()
            .name("diskvault-read".into())
            .spawn(move || {
                let stop = Stop(cancel);
                match src {
                    Input::Sized { source, .. } => {
                        read_image(&*source, pieces, chunker, item_tx, recycle_rx, stop)
                    }
                    Input::Stream { head, rest } => {
                        read_stream(head, rest, chunker, item_tx, recycle_rx, stop)
                    }
                }
            })
            .map_err(|e| source_error(disk, e))?;

        let mut ctx = DiskContext {
            parent_values,
            plan: &mut plan,
            chunks,
            disk_name: &disk.name,
        };
        let consumed = self.consume(size, &mut ctx, item_rx, recycle_tx, tx);
        let read = reader.join();
        // A failure to consume stops the reader ("backup stopped"): report
        // the cause, not that consequence.
        let consumed = match consumed {
            Err(e) if !matches!(read, Ok(Err(ref r)) if r.kind() == std::io::ErrorKind::Interrupted) => {
                return Err(e)
            }
            other => other,
        };
        let bytes_read = match read {
            Ok(Ok(v)) => v,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                return Err(Error::BackupInterrupted)
            }
            Ok(Err(source)) => return Err(source_error(disk, source)),
            Err(_) => return Err(Error::InvalidArgument("reader thread panicked".into())),
        };
        let Consumed {
            root,
            mut stats,
            covered,
            image_hash,
            from_parent,
        } = consumed?;
        // A stream's size is what it held.
        let size = if size == UNKNOWN_SIZE { covered } else { size };
        let Some(image_hash) = image_hash.filter(|_| covered == size) else {
            return Err(source_error(
                disk,
                std::io::Error::other("the image changed size while it was read"),
            ));
        };
        stats.bytes_read = bytes_read;
        let mut origin = plan.origin;
        origin.bytes_from_parent = from_parent;
        Ok(DiskRecord {
            name: disk.name.clone(),
            size,
            manifest_root: root,
            image_hash,
            stats,
            origin,
        })
    }

    fn consume(
        &mut self,
        size: u64,
        ctx: &mut DiskContext<'_, '_>,
        items: Receiver<ReadItem>,
        recycle: SyncSender<Vec<u8>>,
        tx: &SyncSender<Blob>,
    ) -> Result<Consumed> {
        let sealer = self.sealer.clone();
        let mut manifest = ManifestBuilder::new(move |bytes: &[u8]| sealer.chunk_id(bytes))
            .with_format(self.version)
            .holding_leaves();
        let mut hasher = ImageHasher::new(size);
        let mut window = Window::default();
        let mut stats = DiskStats::default();
        let mut from_parent = 0u64;
        let parent = ctx.parent_values;
        let chunks = ctx.chunks;
        let load = |id: &ChunkId, len: u32| chunks.read(id, len);
        let pool = self.pool.clone();
        let mut how = LeafHashing {
            parent,
            size,
            recycle: &recycle,
            version: self.version,
            pool: &pool,
            load: &load,
        };
        for item in items {
            match item {
                ReadItem::Hole(len) => {
                    self.tracker.advance(len);
                    if let (Some(changed), Some(p)) = (&ctx.plan.verify, &mut ctx.plan.parent) {
                        verify_unchanged(
                            p,
                            changed,
                            manifest.position(),
                            None,
                            len,
                            None,
                            ctx.chunks,
                            ctx.disk_name,
                        )?;
                    }
                    stats.zero_bytes += len;
                    manifest.push_zero(len)?;
                    window.push(Pending::Zero(len));
                }
                ReadItem::Reuse(len) => {
                    self.tracker.advance(len);
                    let at = manifest.position();
                    let Some(p) = &mut ctx.plan.parent else {
                        return Err(Error::InvalidArgument(
                            "internal: a reused range without a parent".into(),
                        ));
                    };
                    let extents = p.take(at, at + len, ctx.chunks)?;
                    for e in &extents {
                        match *e {
                            Extent::Data { id, length } => {
                                stats.chunks += 1;
                                manifest.push_data(id, length)?;
                            }
                            Extent::Zero { length } => {
                                stats.zero_bytes += length;
                                manifest.push_zero(length)?;
                            }
                        }
                    }
                    from_parent += len;
                    window.push(Pending::Parent(extents, len));
                    self.hashed += hash_leaves(&mut manifest, &mut hasher, &mut window, &how)?;
                }
                ReadItem::Data { buf, len, cuts } => {
                    self.tracker.advance(len as u64);
                    let data = &buf[..len];
                    // Two jobs at once on the pool, beside the groups being
                    // sealed there: this segment's chunk ids, and the
                    // leaves the last segments closed.
                    let this = &*self;
                    let (results, hashed) = pool.install(|| {
                        rayon::join(
                            || this.seal_segment(data, &cuts),
                            || hash_leaves(&mut manifest, &mut hasher, &mut window, &how),
                        )
                    });
                    self.hashed += hashed?;
                    let mut at = 0;
                    for r in results {
                        let here = at;
                        match &r {
                            Sealed::Zero(len) | Sealed::Known(_, len) | Sealed::New(_, len, _) => {
                                at += len
                            }
                        }
                        if let (Some(changed), Some(p)) = (&ctx.plan.verify, &mut ctx.plan.parent) {
                            let (id, bytes) = match &r {
                                Sealed::Zero(_) => (None, None),
                                Sealed::Known(id, len) | Sealed::New(id, len, _) => {
                                    (Some(*id), Some(&data[here..here + len]))
                                }
                            };
                            let len = (at - here) as u64;
                            verify_unchanged(
                                p,
                                changed,
                                manifest.position(),
                                id,
                                len,
                                bytes,
                                ctx.chunks,
                                ctx.disk_name,
                            )?;
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
                                            sealed,
                                            vec![Member::sole(id, len as u32)],
                                            tx,
                                        )?;
                                    }
                                    None => {
                                        self.group.push(id, &data[here..here + len]);
                                        if self.group.is_full() {
                                            let full = std::mem::take(&mut self.group);
                                            self.start_sealing(full);
                                        }
                                    }
                                }
                                manifest.push_data(id, len as u32)?;
                            }
                        }
                    }
                    self.collect_sealed(GROUPS_IN_FLIGHT, &mut stats, tx)?;
                    window.push(Pending::Data(buf, len));
                }
            }
            self.store_nodes(&mut manifest, &mut stats, tx)?;
        }
        // A disk's groups end with it, so its figures count its own.
        self.seal_groups(&mut stats, tx)?;
        manifest.close()?;
        let covered = manifest.position();
        // A stream's size is known now that it has ended.
        let size = if size == UNKNOWN_SIZE {
            hasher.set_size(covered);
            covered
        } else {
            size
        };
        how.size = size;
        self.hashed += hash_leaves(&mut manifest, &mut hasher, &mut window, &how)?;
        let root = manifest.finish()?;
        self.store_nodes(&mut manifest, &mut stats, tx)?;
        // Short input (the image shrank) is reported by the caller.
        let image_hash = (hasher.position() == size).then(|| hasher.finalize());
        Ok(Consumed {
            root,
            stats,
            covered,
            image_hash,
            from_parent,
        })
    }

    fn store_nodes<F: Fn(&[u8]) -> ChunkId>(
        &mut self,
        manifest: &mut ManifestBuilder<F>,
        stats: &mut DiskStats,
        tx: &SyncSender<Blob>,
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
            self.add_to_pack(sealed, vec![Member::sole(id, bytes.len() as u32)], tx)?;
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
    how: &LeafHashing<'_>,
) -> Result<u64> {
    let LeafHashing {
        parent,
        size,
        recycle,
        version,
        pool,
        load,
    } = *how;
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
                    let spans = window.spans(start, start + covered, load)?;
                    hashed += covered;
                    pool.install(|| subtree_cv(&spans, start, covered))
                }
            };
            hasher.push_subtree(cv, covered);
            Some(cv)
        } else {
            let spans = window.spans(start, start + covered, load)?;
            hashed += covered;
            pool.install(|| hasher.update(&spans));
            None
        };
        window.release(start + covered, recycle);
        manifest.store_leaf(leaf, cv.filter(|_| version >= 2))?;
    }
    Ok(hashed)
}

/// What [`hash_leaves`] needs besides the manifest, the hasher and the
/// window: the same for every call of one disk.
#[derive(Clone, Copy)]
struct LeafHashing<'a> {
    /// Chaining values of the previous point's leaves of this disk.
    parent: &'a LeafValues,
    /// The image's size (known once a stream has ended).
    size: u64,
    /// Where the window hands segment buffers back to the reader.
    recycle: &'a SyncSender<Vec<u8>>,
    version: u8,
    pool: &'a rayon::ThreadPool,
    /// Reads a chunk of the parent point (a leaf taken unread may need it).
    load: &'a (dyn Fn(&ChunkId, u32) -> Result<Vec<u8>> + Sync),
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
    /// Bytes taken from the parent point unread: its extents, loaded from
    /// the repository only if a leaf must hash them.
    Parent(Vec<Extent>, u64),
}

impl Pending {
    fn len(&self) -> u64 {
        match self {
            Pending::Zero(n) | Pending::Parent(_, n) => *n,
            Pending::Data(_, n) => *n as u64,
        }
    }
}

impl Window {
    fn push(&mut self, p: Pending) {
        self.pieces.push_back(p);
    }

    /// The content of image range [from, to), which the window holds,
    /// loading with `load` the parent's chunks of pieces taken unread.
    fn spans(
        &mut self,
        from: u64,
        to: u64,
        load: &(dyn Fn(&ChunkId, u32) -> Result<Vec<u8>> + Sync),
    ) -> Result<Vec<Span<'_>>> {
        let mut at = self.start;
        for p in self.pieces.iter_mut() {
            let len = p.len();
            if at < to && at + len > from {
                if let Pending::Parent(extents, n) = p {
                    let mut buf = Vec::with_capacity(*n as usize);
                    for e in extents.iter() {
                        match *e {
                            Extent::Data { id, length } => {
                                buf.extend_from_slice(&load(&id, length)?)
                            }
                            Extent::Zero { length } => buf.resize(buf.len() + length as usize, 0),
                        }
                    }
                    *p = Pending::Data(buf, *n as usize);
                }
            }
            at += len;
            if at >= to {
                break;
            }
        }
        let mut out = Vec::new();
        let mut at = self.start;
        for p in &self.pieces {
            let len = p.len();
            let (a, b) = (at.max(from), (at + len).min(to));
            if a < b {
                out.push(match p {
                    Pending::Zero(_) => Span::Zero(b - a),
                    Pending::Data(buf, _) => Span::Data(&buf[(a - at) as usize..(b - at) as usize]),
                    Pending::Parent(..) => unreachable!("loaded above"),
                });
            }
            at += len;
            if at >= to {
                break;
            }
        }
        Ok(out)
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

/// The reader thread: walks the disk's pieces in order, reading the data
/// in segments and cutting chunks. Returns the bytes read.
fn read_image(
    src: &dyn DiskSource,
    pieces: Vec<Piece>,
    chunker: Chunker,
    out: SyncSender<ReadItem>,
    recycled: Receiver<Vec<u8>>,
    stop: Stop,
) -> std::io::Result<u64> {
    let stopped = || std::io::Error::other("backup stopped");
    let mut bytes_read = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    for piece in pieces {
        stop.check()?;
        let (start, end) = match piece {
            Piece::Hole(a, b) => {
                out.send(ReadItem::Hole(b - a)).map_err(|_| stopped())?;
                continue;
            }
            Piece::Reuse(mut a, b) => {
                // Items end at 4 MiB boundaries: a leaf that must be hashed
                // then loads only the parent's bytes of its own span.
                while a < b {
                    let n = (b - a).min(CV_SPAN - a % CV_SPAN);
                    out.send(ReadItem::Reuse(n)).map_err(|_| stopped())?;
                    a += n;
                }
                continue;
            }
            Piece::Read(a, b) => (a, b),
        };
        // `pos` is the image offset of carry[0] from here on; each piece
        // is cut to its end, so nothing is carried into the next.
        let mut pos = start;
        let mut next_read = start;
        while next_read < end || !carry.is_empty() {
            stop.check()?;
            let want = (SEGMENT_BYTES as u64).min(end - next_read) as usize;
            // Recycled buffers keep their length, so only growth is zeroed.
            let mut buf = recycled.try_recv().unwrap_or_default();
            let filled = carry.len();
            if buf.len() < filled + want {
                // Exact growth: a recycled buffer one carry too short
                // would otherwise double.
                buf.reserve_exact(filled + want - buf.len());
                buf.resize(filled + want, 0);
            }
            buf[..filled].copy_from_slice(&carry);
            let got = read_full(src, &mut buf[filled..filled + want], next_read, &|| {
                stop.check()
            })?;
            if got < want {
                return Err(shrank());
            }
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

/// The reader thread for a stream: reads `head`, then `rest` (from where
/// the head ends) to its end, in segments, and cuts chunks. Returns the
/// bytes read.
fn read_stream(
    head: Vec<u8>,
    rest: Option<Arc<dyn DiskSource>>,
    chunker: Chunker,
    out: SyncSender<ReadItem>,
    recycled: Receiver<Vec<u8>>,
    stop: Stop,
) -> std::io::Result<u64> {
    let stopped = || std::io::Error::other("backup stopped");
    let mut bytes_read = 0u64;
    let mut pos = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    let mut head = std::io::Cursor::new(head);
    let mut rest_at = head.get_ref().len() as u64;
    loop {
        stop.check()?;
        let mut buf = recycled.try_recv().unwrap_or_default();
        let filled = carry.len();
        if buf.len() < filled + SEGMENT_BYTES {
            buf.resize(filled + SEGMENT_BYTES, 0);
        }
        buf[..filled].copy_from_slice(&carry);
        let target = &mut buf[filled..filled + SEGMENT_BYTES];
        let mut got = head.read(target)?;
        if let Some(src) = &rest {
            let n = read_full(&**src, &mut target[got..], rest_at, &|| stop.check())?;
            rest_at += n as u64;
            got += n;
        }
        // A short segment is the stream's end (the reads fill it otherwise).
        let at_end = got < SEGMENT_BYTES;
        bytes_read += got as u64;
        let valid = filled + got;
        let mut cuts = Vec::new();
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
        if at_end {
            return Ok(bytes_read);
        }
    }
}

/// Bytes of a stream read before its backup starts: a stream that ends
/// within them has a known size; a longer one is known to be larger than
/// one chaining-value span, which is all the hashing needs to know ahead.
const STREAM_PEEK: usize = 2 * CV_SPAN as usize;
/// The size of a stream until it ends.
const UNKNOWN_SIZE: u64 = u64::MAX;

/// An opened disk source.
enum Input {
    /// A source whose size is known ahead.
    Sized {
        source: Arc<dyn DiskSource>,
        size: u64,
    },
    /// A stream: the bytes read ahead, and the rest (none when the head
    /// holds it all).
    Stream {
        head: Vec<u8>,
        rest: Option<Arc<dyn DiskSource>>,
    },
}

impl Input {
    /// Asks the source its size; reads the head of a stream.
    fn open(d: &BackupDisk, stop: &Stop) -> std::io::Result<Self> {
        let source = d.source.clone();
        if let Some(size) = source.size() {
            return Ok(Input::Sized { source, size });
        }
        let mut head = vec![0; STREAM_PEEK];
        let n = read_full(&*source, &mut head, 0, &|| stop.check())?;
        head.truncate(n);
        let rest = (n == STREAM_PEEK).then_some(source);
        Ok(Input::Stream { head, rest })
    }

    /// The image's size; [`UNKNOWN_SIZE`] for a stream longer than the
    /// peek, until it ends.
    fn size(&self) -> u64 {
        match self {
            Input::Sized { size, .. } => *size,
            Input::Stream { head, rest: None } => head.len() as u64,
            Input::Stream { .. } => UNKNOWN_SIZE,
        }
    }
}

/// A stretch of a disk's address space, as the reader walks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Read from the source.
    Read(u64, u64),
    /// A hole of the source: zeros, not read.
    Hole(u64, u64),
    /// Unchanged since the parent point: its extents are taken from there.
    Reuse(u64, u64),
}

/// How one disk is backed up.
struct DiskPlan {
    /// For a file or device: its address space in order, each byte in one
    /// piece. Empty for a stream.
    pieces: Vec<Piece>,
    /// The parent point's manifest of this disk, with changed-block input.
    parent: Option<ParentExtents>,
    /// With `verify_unchanged`: the ranges listed as changed; every other
    /// byte read is compared with the parent's.
    verify: Option<ChangedRanges>,
    origin: DiskOrigin,
}

/// Decides what to read of a disk, and with changed-block input what to
/// take from the parent point instead.
fn plan_disk(
    repo: &Repository,
    index: &ChunkIndex,
    d: &BackupDisk,
    src: &mut Input,
    parent_point: Option<&(PointId, PointBody)>,
    opts: &BackupOptions,
) -> Result<DiskPlan> {
    let (source, size) = match src {
        Input::Sized { source, size } => (source, *size),
        Input::Stream { .. } => {
            if d.changed.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "disk {}: a changed-block list needs a file or device to read the changed ranges from, not a stream",
                    d.name
                )));
            }
            return Ok(DiskPlan {
                pieces: Vec::new(),
                parent: None,
                verify: None,
                origin: DiskOrigin {
                    kind: SourceKind::Stream,
                    ..Default::default()
                },
            });
        }
    };
    let kind = source.kind();
    let regions = source
        .data_ranges()
        .and_then(|r| crate::source::checked_ranges(r, size, "a data range"))
        .map_err(|e| source_error(d, e))?;
    // The caller's list first; else what the source tracks, if a parent
    // says since when.
    let changed = match (&d.changed, parent_point) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(_)) => source.changed_ranges().map_err(|e| source_error(d, e))?,
        (None, None) => None,
    };
    let Some(changed) = &changed else {
        return Ok(DiskPlan {
            pieces: split_holes(&[(0, size)], &regions),
            parent: None,
            verify: None,
            origin: DiskOrigin {
                kind,
                ..Default::default()
            },
        });
    };
    if let Some(&(_, end)) = changed.ranges().last() {
        if end > size {
            return Err(source_error(
                d,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a changed range ends at {end}, past the disk's end ({size} bytes)"),
                ),
            ));
        }
    }
    let (pid, body) = parent_point.expect("checked: changed-block input has a parent");
    let disk = body.disks.iter().find(|p| p.name == d.name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "point {} has no disk named '{}' (it has: {}); changed blocks are relative to the same disk in the parent point",
            pid.short(),
            d.name,
            body.disks.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    if disk.size != size {
        return Err(Error::InvalidArgument(format!(
            "disk {} is {size} bytes but was {} bytes in point {}: changed blocks describe a disk whose size did not change; back it up in full (without --changed-blocks or --dirty-bitmap)",
            d.name,
            disk.size,
            pid.short()
        )));
    }
    let (parent, reads) = ParentExtents::load(repo, index, disk, changed)?;
    let origin = DiskOrigin {
        kind: SourceKind::ChangedBlocks,
        parent: Some(*pid),
        bytes_from_parent: 0,
    };
    if opts.verify_unchanged {
        return Ok(DiskPlan {
            pieces: split_holes(&[(0, size)], &regions),
            parent: Some(parent),
            verify: Some(changed.clone()),
            origin: DiskOrigin { kind, ..origin },
        });
    }
    let mut pieces = Vec::new();
    let mut at = 0;
    for read in split_holes(&reads, &regions) {
        let (Piece::Read(a, b) | Piece::Hole(a, b) | Piece::Reuse(a, b)) = read;
        if a > at {
            pieces.push(Piece::Reuse(at, a));
        }
        pieces.push(read);
        at = b;
    }
    if at < size {
        pieces.push(Piece::Reuse(at, size));
    }
    Ok(DiskPlan {
        pieces,
        parent: Some(parent),
        verify: None,
        origin,
    })
}

/// The ranges `wanted` (sorted, disjoint) as pieces to read where the
/// source has data (`regions`, sorted) and holes elsewhere; gaps between
/// wanted ranges are left out.
fn split_holes(wanted: &[(u64, u64)], regions: &[(u64, u64)]) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut r = 0;
    for &(a, b) in wanted {
        let mut at = a;
        while r < regions.len() && regions[r].1 <= at {
            r += 1;
        }
        let mut i = r;
        while at < b {
            match regions.get(i) {
                Some(&(ra, rb)) if ra < b => {
                    if ra > at {
                        out.push(Piece::Hole(at, ra));
                        at = ra;
                    }
                    let end = rb.min(b);
                    out.push(Piece::Read(at, end));
                    at = end;
                    i += 1;
                }
                _ => {
                    out.push(Piece::Hole(at, b));
                    at = b;
                }
            }
        }
    }
    out
}

/// A parent point's manifest of one disk, read in image order: the leaves
/// are listed up front, each loaded when the backup reaches it.
struct ParentExtents {
    version: u8,
    /// Start offset and node id of each leaf, in order.
    leaves: Vec<(u64, ChunkId)>,
    next_leaf: usize,
    /// Extents loaded and not yet passed, with their offsets.
    extents: VecDeque<(u64, Extent)>,
}

impl ParentExtents {
    /// Lists the leaves of `disk`'s manifest and works out the ranges to
    /// read: each data extent that a changed range touches, whole (chunks
    /// are re-cut from extent boundaries, so unchanged chunks around a
    /// change keep their ids), and the changed parts of zero runs.
    fn load(
        repo: &Repository,
        index: &ChunkIndex,
        disk: &DiskRecord,
        changed: &ChangedRanges,
    ) -> Result<(Self, Vec<(u64, u64)>)> {
        let version = repo.format_major();
        let mut leaves = Vec::new();
        let mut reads: Vec<(u64, u64)> = Vec::new();
        let mut add = |a: u64, b: u64| match reads.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => reads.push((a, b)),
        };
        let mut pending_node = None;
        let mut load = |id: &ChunkId| crate::repo::reader::read_indexed_chunk(repo, index, id);
        crate::manifest::walk(
            &disk.manifest_root,
            disk.size,
            version,
            &mut load,
            &mut |event| {
                match event {
                    ManifestEvent::Node(id) => pending_node = Some(*id),
                    ManifestEvent::Extent { offset, extent } => {
                        // The first extent after a node starts that node,
                        // which is then a leaf.
                        if let Some(id) = pending_node.take() {
                            leaves.push((offset, id));
                        }
                        let end = offset + extent.len();
                        if !changed.overlaps(offset, end) {
                            return Ok(());
                        }
                        match extent {
                            Extent::Data { .. } => add(offset, end),
                            Extent::Zero { .. } => {
                                let rs = changed.ranges();
                                let first = rs.partition_point(|&(_, b)| b <= offset);
                                for &(a, b) in rs[first..].iter().take_while(|&&(a, _)| a < end) {
                                    add(a.max(offset), b.min(end));
                                }
                            }
                        }
                    }
                }
                Ok(())
            },
        )?;
        Ok((
            ParentExtents {
                version,
                leaves,
                next_leaf: 0,
                extents: VecDeque::new(),
            },
            reads,
        ))
    }

    /// The parent's extents that overlap `[from, to)`, whole, with their
    /// offsets. Calls must come in increasing `from`.
    fn covering(
        &mut self,
        from: u64,
        to: u64,
        chunks: &CachedChunks<'_>,
    ) -> Result<Vec<(u64, Extent)>> {
        while self
            .extents
            .front()
            .is_some_and(|(o, e)| o + e.len() <= from)
        {
            self.extents.pop_front();
        }
        // Leaves wholly before `from` are skipped without loading.
        while self.extents.is_empty()
            && self
                .leaves
                .get(self.next_leaf + 1)
                .is_some_and(|&(next_start, _)| next_start <= from)
        {
            self.next_leaf += 1;
        }
        loop {
            let loaded_to = self.extents.back().map(|(o, e)| o + e.len());
            if loaded_to.is_some_and(|end| end >= to) || self.next_leaf >= self.leaves.len() {
                break;
            }
            let (start, id) = self.leaves[self.next_leaf];
            self.next_leaf += 1;
            let bytes = chunks.read_node(&id)?;
            let node = ManifestNode::decode(&bytes, self.version)
                .map_err(|e| Error::format(format!("manifest node {}", id.short()), e))?;
            let NodeEntries::Leaf(extents) = node.entries else {
                return Err(Error::damaged(
                    format!("manifest node {}", id.short()),
                    "it was a leaf when the backup started",
                ));
            };
            let mut at = start;
            for e in extents {
                let len = e.len();
                if at + len > from {
                    self.extents.push_back((at, e));
                }
                at += len;
            }
        }
        let out: Vec<_> = self
            .extents
            .iter()
            .take_while(|(o, _)| *o < to)
            .filter(|(o, e)| o + e.len() > from)
            .copied()
            .collect();
        let covered_to = out.last().map(|(o, e)| o + e.len()).unwrap_or(from);
        if out.first().is_none_or(|(o, _)| *o > from) || covered_to < to {
            return Err(Error::damaged(
                "the parent point's manifest",
                format!("it does not cover image bytes {from}..{to}"),
            ));
        }
        Ok(out)
    }

    /// The parent's extents for `[from, to)` exactly, zero runs cut at the
    /// ends. The plan puts reused ranges on data extent boundaries.
    fn take(&mut self, from: u64, to: u64, chunks: &CachedChunks<'_>) -> Result<Vec<Extent>> {
        let mut out = Vec::new();
        for (o, e) in self.covering(from, to, chunks)? {
            let (a, b) = (o.max(from), (o + e.len()).min(to));
            match e {
                Extent::Zero { .. } => out.push(Extent::Zero { length: b - a }),
                Extent::Data { .. } if a == o && b == o + e.len() => out.push(e),
                Extent::Data { .. } => {
                    return Err(Error::InvalidArgument(format!(
                        "internal: a reused range {from}..{to} cuts a chunk of the parent point"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// The parent's image bytes `[from, to)`, from the repository.
    fn bytes(&mut self, from: u64, to: u64, chunks: &CachedChunks<'_>) -> Result<Vec<u8>> {
        let mut out = vec![0u8; (to - from) as usize];
        for (o, e) in self.covering(from, to, chunks)? {
            if let Extent::Data { id, length } = e {
                let data = chunks.read(&id, length)?;
                let (a, b) = (o.max(from), (o + length as u64).min(to));
                out[(a - from) as usize..(b - from) as usize]
                    .copy_from_slice(&data[(a - o) as usize..(b - o) as usize]);
            }
        }
        Ok(out)
    }

    /// Whether the image bytes at `[from, from + len)`, a chunk with `id`
    /// or zeros when `data` is `None`, are the parent's there. Compares
    /// extents first and reads the parent's bytes only when they differ.
    fn same_as(
        &mut self,
        from: u64,
        id: Option<ChunkId>,
        len: u64,
        data: Option<&[u8]>,
        chunks: &CachedChunks<'_>,
    ) -> Result<bool> {
        let to = from + len;
        let ext = self.covering(from, to, chunks)?;
        match (id, ext.as_slice()) {
            (Some(id), [(o, Extent::Data { id: pid, length })])
                if *o == from && *length as u64 == len && *pid == id =>
            {
                return Ok(true)
            }
            (None, all) if all.iter().all(|(_, e)| matches!(e, Extent::Zero { .. })) => {
                return Ok(true)
            }
            _ => {}
        }
        let theirs = self.bytes(from, to, chunks)?;
        Ok(match data {
            Some(ours) => ours == theirs.as_slice(),
            None => is_all_zero(&theirs),
        })
    }
}

/// Reads chunks of the repository during a backup (manifest nodes and,
/// with changed-block input, the parent's bytes of changed spans),
/// opening each group once while it stays among the last few.
struct CachedChunks<'a> {
    repo: &'a Repository,
    index: &'a ChunkIndex,
    groups: Mutex<crate::repo::reader::OpenedGroups>,
    /// Plaintext bytes of image chunks read.
    bytes: AtomicU64,
}

impl<'a> CachedChunks<'a> {
    fn new(repo: &'a Repository, index: &'a ChunkIndex) -> Self {
        CachedChunks {
            repo,
            index,
            groups: Mutex::new(crate::repo::reader::OpenedGroups::with_budget(
                3 * GROUP_BYTES,
            )),
            bytes: AtomicU64::new(0),
        }
    }

    fn read_node(&self, id: &ChunkId) -> Result<Vec<u8>> {
        crate::repo::reader::read_indexed_chunk(self.repo, self.index, id)
    }

    /// An image chunk, verified against its id, of `length` bytes.
    fn read(&self, id: &ChunkId, length: u32) -> Result<Vec<u8>> {
        let loc = self
            .index
            .get(id)
            .ok_or_else(|| Error::MissingChunk { chunk: id.to_hex() })?;
        let (_, plain) = crate::repo::reader::read_through_groups(
            self.repo,
            self.index,
            &self.groups,
            id,
            loc,
            // Sealed groups are authenticated (AES-GCM): their members are
            // the bytes that were stored. Without encryption only the id
            // vouches for them.
            self.repo.config().encryption != crate::format::config::Encryption::Aes256Gcm,
            "",
        )?;
        if plain.len() != length as usize {
            return Err(Error::damaged(
                format!("chunk {}", id.short()),
                "its length differs from the manifest's",
            ));
        }
        self.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
        Ok(plain)
    }
}

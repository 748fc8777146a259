//! `restore`: rebuild disk images from a recovery point, verifying every
//! chunk and the whole-image hash. What a restore may write is decided in
//! `target.rs`, in one place.
//!
//! The manifest is walked in image order. Each batch of extents is fetched
//! with few large reads (chunks stored next to each other in a pack are read
//! together), opened and verified in parallel, and hashed into the
//! whole-image hash in parallel; a writer thread meanwhile writes the
//! previous batch with positional writes, so the output is never read back.
//! Chunk groups stay open for the batches after (`groups.rs`): a later
//! point's new chunks sit in a few groups that many batches need.
//! Zero runs become holes. A regular file is written under a `.partial` name
//! and renamed into place only once its hash matched, so the output path
//! never holds wrong bytes.
//!
//! With [`RestoreOptions::into_existing`], the output is an older copy of
//! the disk: every extent is first read from it and compared with the
//! manifest by chunk id, and only the chunks that differ are fetched and
//! written (reading the local copy is much cheaper than fetching and
//! decompressing).
//!
//! [`restore_to_target`] restores one disk to a [`RestoreTarget`] instead:
//! a product's own storage, a file ([`FileTarget`]) or a sequential sink
//! ([`StreamTarget`], [`restore_to_writer`]), in image order, with the same
//! fetching and the same final hash check (`to_target.rs`).
//!
//! With [`RestoreOptions::fallback`], a replica of the repository backs the
//! restore up: a chunk that is missing from the index, whose pack cannot be
//! read, or that fails verification is read from the replica instead
//! (whose index is loaded only then), and the report counts those chunks.

mod groups;
mod target;
mod to_target;

pub use to_target::{
    restore_to_target, restore_to_writer, FileTarget, RestoreTarget, StreamTarget,
};

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::manifest::Extent;
use crate::format::point::{DiskRecord, PointBody};
use crate::format::{ChunkId, PointId};
use crate::imagehash::{ImageHasher, Span};
use crate::index::{ChunkIndex, ChunkLocation};
use crate::manifest::{walk, ManifestEvent};
use crate::progress::{Progress, Tracker};
use crate::repo::reader::{blame_damaged_index, ChunkReader, ReplicaReader};
use crate::repo::Damaged;
use crate::repo::RepoLocation;
use crate::repo::{pack_key, RepoLock, Repository};
use groups::{ChunkBytes, OpenedGroup, OpenedGroups, KEPT_BYTES};
use target::{
    open_for_restore, open_in_place, output_error, write_pieces, Output, OutputKind, Target,
};

/// Plaintext bytes fetched per parallel batch.
const BATCH_BYTES: u64 = 8 << 20;
/// Extents a batch takes at most while it waits for the end of a group.
const MAX_BATCH_EXTENTS: usize = 8192;

/// What to restore and where.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Recovery point: `latest`, an id or a unique id prefix.
    pub point: String,
    /// One disk of the point; all disks when `None`.
    pub disk: Option<String>,
    /// Output file or block device for one disk; a directory (created if
    /// needed) receiving `<disk>.img` files when the point has several disks
    /// and none was chosen.
    pub output: PathBuf,
    /// Overwrite existing outputs.
    pub force: bool,
    /// Worker threads; all cores when `None`.
    pub threads: Option<usize>,
    /// Update `output`, an existing older copy of the disk, in place: only
    /// chunks that differ are fetched and written. Needs one disk.
    pub into_existing: bool,
    /// Told the bytes of image restored so far, across all disks.
    pub progress: Option<Progress>,
    /// A replica of the repository (same config id, created by `sync`) to
    /// read chunks from when the repository lacks them or holds them
    /// damaged. It is opened with the repository's key.
    pub fallback: Option<RepoLocation>,
    /// Set to stop the restore (from a signal handler, say): it fails with
    /// [`Error::Interrupted`] and removes the new file it was writing.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// One restored disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoredDisk {
    /// The disk's name in the recovery point.
    pub name: String,
    /// Where it was written.
    #[serde(serialize_with = "crate::ops::path_text")]
    pub path: PathBuf,
    /// The disk's size in bytes.
    pub size: u64,
    /// Plaintext bytes written (zero runs are not written to files; to a
    /// stream they are, so it receives the whole size).
    pub bytes_written: u64,
    /// Data chunks in the disk's manifest.
    pub chunks: u64,
    /// Chunks fetched from the repository (all of them, unless restoring
    /// into an existing copy).
    pub chunks_fetched: u64,
    /// Chunks found already correct in the existing copy.
    pub chunks_reused: u64,
    /// Chunks (data and manifest) missing or damaged in the repository and
    /// read from the fallback replica instead.
    pub chunks_from_replica: u64,
    /// Temporaries of earlier restores to the same path
    /// (`NAME.diskvault-<random>.partial`) that were killed before they
    /// could remove them: no running restore holds them. They are left in
    /// place (a user's file could have such a name): remove them to free
    /// their space.
    pub stale_temporaries: Vec<PathBuf>,
}

impl RestoredDisk {
    /// The report of `disk` restored to `path`.
    fn new(disk: &DiskRecord, path: PathBuf, bytes_written: u64, counts: Counts) -> Self {
        RestoredDisk {
            name: disk.name.clone(),
            path,
            size: disk.size,
            bytes_written,
            chunks: counts.chunks,
            chunks_fetched: counts.fetched,
            chunks_reused: counts.reused,
            chunks_from_replica: counts.from_replica,
            stale_temporaries: Vec::new(),
        }
    }
}

/// The outcome of a restore.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    /// Id of the recovery point restored.
    pub point: PointId,
    /// The disks restored, each verified against the point.
    pub disks: Vec<RestoredDisk>,
    /// Index files that could not be read: the restore went on without
    /// them, and found every chunk it needed elsewhere.
    pub damaged_index_files: Vec<Damaged>,
    /// Wall-clock time the restore took.
    #[serde(rename = "duration_seconds", serialize_with = "crate::ops::seconds")]
    pub duration: Duration,
}

/// Restores disks of a recovery point.
pub fn restore(repo: &Repository, opts: &RestoreOptions) -> Result<RestoreReport> {
    let started = Instant::now();
    let opened = open_point(repo, opts)?;
    let (point_id, point, fallback) = (opened.id, &opened.body, opened.fallback.as_ref());
    if opts.into_existing {
        return restore_into(repo, opts, point_id, point, fallback, started);
    }
    let targets: Vec<(&DiskRecord, PathBuf)> = match &opts.disk {
        Some(name) => vec![(find_disk(point, &point_id, name)?, opts.output.clone())],
        None if point.disks.len() == 1 => vec![(&point.disks[0], opts.output.clone())],
        None => {
            if opts.output.exists() && !opts.output.is_dir() {
                return Err(Error::DiskRequired {
                    point: point_id.short(),
                    count: point.disks.len(),
                });
            }
            fs::create_dir_all(&opts.output).map_err(|source| Error::Output {
                path: opts.output.clone(),
                source,
            })?;
            point
                .disks
                .iter()
                .map(|d| (d, opts.output.join(format!("{}.img", sanitize(&d.name)))))
                .collect()
        }
    };
    for (i, (disk, path)) in targets.iter().enumerate() {
        // Sanitising can map two disk names to one file; restoring both
        // would silently keep only the last.
        if let Some((other, _)) = targets[..i].iter().find(|(_, p)| p == path) {
            return Err(Error::InvalidArgument(format!(
                "disks '{}' and '{}' would both be restored to {}; restore them one at a time with --disk",
                other.name,
                disk.name,
                path.display()
            )));
        }
        // Checked before --force: a directory cannot be overwritten by a
        // file, and finding out after the restore would waste it.
        if path.is_dir() || path.as_os_str().as_bytes().ends_with(b"/") {
            return Err(Error::InvalidArgument(format!(
                "{} names a directory; give a file name for disk '{}', e.g. {}",
                path.display(),
                disk.name,
                path.join(format!("{}.img", sanitize(&disk.name))).display()
            )));
        }
    }
    let mut outputs = Vec::new();
    for (disk, path) in &targets {
        let out = target::resolve(path)?;
        if out.kind != OutputKind::New && !opts.force {
            return Err(Error::OutputExists(path.clone()));
        }
        outputs.push((*disk, out));
    }
    let pool = crate::exec::worker_pool(opts.threads, "restore")?;
    let (index, damaged) = repo.load_index_lenient()?;
    let reader = ChunkReader::new(repo, &index, fallback);
    let mut tracker = Tracker::new(
        opts.progress.clone(),
        targets.iter().map(|(d, _)| d.size).sum(),
    );
    let cancel = opts.cancel.as_deref();
    let mut disks = Vec::new();
    for (disk, out) in &outputs {
        disks.push(
            restore_disk(&reader, &pool, disk, out, &mut tracker, cancel)
                .map_err(|e| blame_damaged_index(e, &damaged))?,
        );
    }
    Ok(RestoreReport {
        point: point_id,
        disks,
        damaged_index_files: damaged,
        duration: started.elapsed(),
    })
}

/// A recovery point read for a restore, with the locks that keep it (and
/// the chunks it needs, in the repository and its replica) from being
/// pruned while the restore runs.
struct OpenedPoint {
    id: PointId,
    body: PointBody,
    fallback: Option<ReplicaReader>,
    _locks: (RepoLock, Option<RepoLock>),
}

/// Locks the repository (and the fallback replica) for reading, and reads
/// the point `opts` names; a point damaged in the repository is read from
/// the replica.
fn open_point(repo: &Repository, opts: &RestoreOptions) -> Result<OpenedPoint> {
    let lock = repo.lock_for_reading("restore")?;
    let replica_lock = opts
        .fallback
        .as_ref()
        .map(|r| r.lock_for_reading("restore (fallback)", repo.lock_options()))
        .transpose()?;
    let fallback = opts
        .fallback
        .as_ref()
        .map(|r| ReplicaReader::open(repo, r))
        .transpose()?;
    let id = repo.resolve_point(&opts.point)?;
    let body = match (repo.read_point(&id), &fallback) {
        (Err(e), Some(f)) if e.category() == crate::ErrorCategory::Damaged => {
            f.repo().read_point(&id)?
        }
        (result, _) => result?,
    };
    Ok(OpenedPoint {
        id,
        body,
        fallback,
        _locks: (lock, replica_lock),
    })
}

/// `restore --into`: update an existing copy of one disk in place.
fn restore_into(
    repo: &Repository,
    opts: &RestoreOptions,
    point_id: PointId,
    point: &PointBody,
    fallback: Option<&ReplicaReader>,
    started: Instant,
) -> Result<RestoreReport> {
    let disk = match &opts.disk {
        Some(name) => find_disk(point, &point_id, name)?,
        None if point.disks.len() == 1 => &point.disks[0],
        None => {
            return Err(Error::DiskRequired {
                point: point_id.short(),
                count: point.disks.len(),
            })
        }
    };
    let out = target::resolve(&opts.output)?;
    if out.kind == OutputKind::New {
        return Err(Error::InvalidArgument(format!(
            "{} does not exist; --into updates an existing copy of the disk: restore to a new file without --into",
            opts.output.display()
        )));
    }
    let current_size = fs::metadata(&out.path)
        .map_err(output_error(&out.given))?
        .len();
    if out.kind == OutputKind::File && current_size != disk.size && !opts.force {
        return Err(Error::InvalidArgument(format!(
            "{} is {current_size} bytes and disk '{}' is {}: it may be a copy of another disk; pass --force to update it anyway",
            opts.output.display(),
            disk.name,
            disk.size
        )));
    }
    let pool = crate::exec::worker_pool(opts.threads, "restore")?;
    let (index, damaged) = repo.load_index_lenient()?;
    let reader = ChunkReader::new(repo, &index, fallback);
    let target = open_in_place(&out, disk.size)?;
    let cancel = opts.cancel.as_deref();
    let mut tracker = Tracker::new(opts.progress.clone(), 2 * disk.size);
    // Before the first write, every chunk the update needs is read and
    // verified, and so is the image it makes: a damaged vault leaves the
    // copy as it was.
    write_disk(
        &reader,
        &pool,
        disk,
        &target,
        Pass::Verify,
        &mut tracker,
        cancel,
    )
    .map_err(|e| blame_damaged_index(e, &damaged))?;
    let written = (|| {
        if out.kind == OutputKind::File && current_size != disk.size {
            target
                .file
                .set_len(disk.size)
                .map_err(output_error(&out.given))?;
        }
        write_disk(
            &reader,
            &pool,
            disk,
            &target,
            Pass::Write,
            &mut tracker,
            cancel,
        )
    })();
    let (bytes_written, counts) = written.map_err(|e| Error::PartlyWritten {
        path: opts.output.clone(),
        point: point_id.short(),
        cause: Box::new(e),
    })?;
    Ok(RestoreReport {
        point: point_id,
        disks: vec![RestoredDisk::new(
            disk,
            opts.output.clone(),
            bytes_written,
            counts,
        )],
        damaged_index_files: damaged,
        duration: started.elapsed(),
    })
}

/// The disk of `point` named `name`, or an error listing the ones it has.
fn find_disk<'a>(point: &'a PointBody, point_id: &PointId, name: &str) -> Result<&'a DiskRecord> {
    point
        .disks
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| Error::UnknownDisk {
            point: point_id.short(),
            disk: name.to_string(),
            available: disk_names(&point.disks),
        })
}

fn disk_names(disks: &[DiskRecord]) -> String {
    disks
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Disk names come from the repository: keep them from escaping the
/// output directory.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

fn restore_disk(
    reader: &ChunkReader<'_>,
    pool: &rayon::ThreadPool,
    disk: &DiskRecord,
    out: &Output,
    tracker: &mut Tracker,
    cancel: Option<&AtomicBool>,
) -> Result<RestoredDisk> {
    let target = open_for_restore(out, disk.size)?;
    let result = write_disk(reader, pool, disk, &target, Pass::Write, tracker, cancel);
    let finished = result.and_then(|(written, counts)| {
        if !target.in_place() {
            fs::rename(&target.write_path, &target.path).map_err(output_error(&out.given))?;
        }
        Ok((written, counts))
    });
    match finished {
        Ok((written, counts)) => Ok(RestoredDisk {
            stale_temporaries: target.stale,
            ..RestoredDisk::new(disk, out.given.clone(), written, counts)
        }),
        Err(e) => {
            if !target.in_place() {
                let _ = fs::remove_file(&target.write_path);
            }
            Err(e)
        }
    }
}

/// A batch item once resolved: bytes to write (or already in place), or a
/// zero run.
pub(super) enum Piece {
    Data {
        offset: u64,
        bytes: ChunkBytes,
        write: bool,
    },
    Zero {
        offset: u64,
        len: u64,
    },
}

#[derive(Default, Clone, Copy)]
struct Counts {
    chunks: u64,
    fetched: u64,
    reused: u64,
    from_replica: u64,
}

/// Largest read that fetches neighbouring chunks of one pack together.
const MAX_RUN_BYTES: u64 = 1 << 20;

/// Bytes not needed that one read may span to join two runs of a pack.
/// A restore of a later point finds the chunks it superseded scattered
/// between the ones it needs (one 4 KiB page changed in a 16 KiB chunk
/// leaves a gap of one sealed chunk): reading across such a gap costs less
/// than a request does on any object store (at 100 MB/s, 256 KiB is
/// 2.6 ms; a request's first byte takes 10 ms or more), and little on a
/// local disk. Measured on the 2 GiB image's next-day restore from
/// Azurite: 4791 GETs joining only adjacent chunks (README, Performance).
const MAX_GAP_BYTES: u64 = 256 << 10;

/// Whether a walk over a disk writes it, or only reads and verifies what
/// it would write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Verify,
    Write,
}

/// Walks the disk's manifest, fetches (or, with `--into`, reuses) every
/// chunk, verifies each and the whole image, and with [`Pass::Write`]
/// writes them to `target`. Returns the bytes written and the counts.
fn write_disk(
    reader: &ChunkReader<'_>,
    pool: &rayon::ThreadPool,
    disk: &DiskRecord,
    target: &Target,
    pass: Pass,
    tracker: &mut Tracker,
    cancel: Option<&AtomicBool>,
) -> Result<(u64, Counts)> {
    let (tx, rx) = sync_channel::<Vec<Piece>>(1);
    let out_path = target.write_path.clone();
    let zeros = target.zeros;
    let writer = match pass {
        Pass::Write => {
            let file = target.file.try_clone().map_err(output_error(&out_path))?;
            Some(
                thread::Builder::new()
                    .name("diskvault-write".into())
                    .spawn(move || write_pieces(file, zeros, rx))
                    .map_err(output_error(&out_path))?,
            )
        }
        Pass::Verify => {
            drop(rx);
            None
        }
    };

    let mut hasher = ImageHasher::new(disk.size);
    let existing = target.compare_existing.then_some(&target.file);
    let fetched = fetch_disk(
        reader,
        pool,
        disk,
        existing,
        tracker,
        cancel,
        &mut |pieces| {
            pool.install(|| hasher.update(&spans(&pieces)));
            match pass {
                Pass::Write => tx.send(pieces).map_err(|_| writer_gone()),
                Pass::Verify => Ok(()),
            }
        },
    );
    drop(tx);
    let written = match writer {
        Some(w) => w
            .join()
            .map_err(|_| Error::InvalidArgument("writer thread panicked".into()))?,
        None => Ok(0),
    };
    let (bytes, counts) = match (fetched, written) {
        // A failed writer explains why sending to it failed: report it first.
        (_, Err(source)) => {
            return Err(Error::Output {
                path: out_path,
                source,
            })
        }
        (Err(e), _) => return Err(e),
        (Ok(counts), Ok(bytes)) => (bytes, counts),
    };
    verify_image(disk, hasher)?;
    Ok((bytes, counts))
}

/// Walks the disk's manifest in image order and resolves its extents batch
/// by batch ([`fetch_batch`]: chunks read and opened in parallel, or with
/// `existing` reused from it), handing each batch's pieces to `deliver`,
/// in image order. The next batch is fetched only once `deliver` returns:
/// a `deliver` that passes pieces to a writer thread through a bounded
/// channel keeps the restore's memory to a few batches whatever the disk's
/// size, while fetching overlaps writing.
fn fetch_disk(
    reader: &ChunkReader<'_>,
    pool: &rayon::ThreadPool,
    disk: &DiskRecord,
    existing: Option<&File>,
    tracker: &mut Tracker,
    cancel: Option<&AtomicBool>,
    deliver: &mut dyn FnMut(Vec<Piece>) -> Result<()>,
) -> Result<Counts> {
    let mut counts = Counts::default();
    let replica_reads_before = reader.replica_reads();
    let mut batch: Vec<(u64, Extent)> = Vec::new();
    let mut batch_bytes = 0u64;
    let mut groups = OpenedGroups::new(KEPT_BYTES);
    let mut run_batch = |batch: Vec<(u64, Extent)>, counts: &mut Counts| -> Result<()> {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Interrupted);
        }
        let pieces = pool.install(|| fetch_batch(reader, &batch, existing, &mut groups))?;
        for p in &pieces {
            tracker.advance(match p {
                Piece::Data { bytes, .. } => bytes.len() as u64,
                Piece::Zero { len, .. } => *len,
            });
            if let Piece::Data { write, .. } = p {
                counts.chunks += 1;
                if *write {
                    counts.fetched += 1;
                } else {
                    counts.reused += 1;
                }
            }
        }
        deliver(pieces)
    };
    let mut load = |id: &ChunkId| reader.read(id);
    // A full batch ends before the next extent that is not in the blob of
    // its last chunk: a chunk group cut in two would be read, decrypted
    // and decompressed once per batch (a quarter of the groups, with
    // 2 MiB groups and 8 MiB batches).
    let blob_of = |e: &Extent| match e {
        Extent::Data { id, .. } => reader.index.get(id).map(|l| (l.pack, l.offset)),
        Extent::Zero { .. } => None,
    };
    let mut full = false;
    let mut last_blob = None;
    let walked = walk(
        &disk.manifest_root,
        disk.size,
        reader.repo.format_major(),
        &mut load,
        &mut |ev| {
            if let ManifestEvent::Extent { offset, extent } = ev {
                let blob = blob_of(extent);
                if full && (blob.is_none() || blob != last_blob || batch.len() >= MAX_BATCH_EXTENTS)
                {
                    batch_bytes = 0;
                    full = false;
                    run_batch(std::mem::take(&mut batch), &mut counts)?;
                }
                if let Extent::Data { .. } = extent {
                    batch_bytes += extent.len();
                    last_blob = blob;
                }
                batch.push((offset, *extent));
                full = batch_bytes >= BATCH_BYTES || batch.len() >= 4096;
            }
            Ok(())
        },
    );
    walked.and_then(|_| run_batch(std::mem::take(&mut batch), &mut counts))?;
    counts.from_replica = reader.replica_reads() - replica_reads_before;
    Ok(counts)
}

/// The pieces of a batch as the image hasher takes them.
fn spans(pieces: &[Piece]) -> Vec<Span<'_>> {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Data { bytes, .. } => Span::Data(bytes),
            Piece::Zero { len, .. } => Span::Zero(*len),
        })
        .collect()
}

/// Compares the hash of the whole restored image with the one the point
/// records: the last check, which catches what the per-chunk checks cannot
/// (a manifest listing the wrong chunks, a bug in the restore itself).
fn verify_image(disk: &DiskRecord, hasher: ImageHasher) -> Result<()> {
    if hasher.position() != disk.size {
        return Err(Error::damaged(
            format!("manifest of disk '{}'", disk.name),
            "it does not cover the whole disk",
        ));
    }
    let hash = hasher.finalize();
    if hash != disk.image_hash {
        return Err(Error::VerificationFailed {
            disk: disk.name.clone(),
            reason: format!(
                "image hash is {}, the point records {}",
                hex::encode(hash),
                hex::encode(disk.image_hash)
            ),
        });
    }
    Ok(())
}

/// One read of neighbouring chunks in a pack: `(pack, start, length)` and
/// the batch positions of the chunks it holds.
struct Run {
    pack: u32,
    start: u64,
    end: u64,
    members: Vec<(usize, ChunkLocation)>,
}

/// Resolves a batch of extents into pieces, in parallel: in `--into` mode
/// chunks already present in `existing` are kept; chunks of a group that
/// an earlier batch opened are taken from `groups`; the others are read
/// from packs in coalesced runs and opened (their groups then kept in
/// `groups`), and those the repository lacks or holds damaged are read
/// from the fallback replica, if there is one.
fn fetch_batch(
    reader: &ChunkReader<'_>,
    batch: &[(u64, Extent)],
    existing: Option<&File>,
    groups: &mut OpenedGroups,
) -> Result<Vec<Piece>> {
    let (repo, index) = (reader.repo, reader.index);
    // Which data extents must come from the repository.
    let reused: Vec<Option<Vec<u8>>> = match existing {
        Some(file) => batch
            .par_iter()
            .map(|(offset, e)| match e {
                Extent::Data { id, length } => {
                    let mut buf = vec![0u8; *length as usize];
                    let same = file.read_exact_at(&mut buf, *offset).is_ok()
                        && repo.sealer().chunk_id(&buf) == *id;
                    same.then_some(buf)
                }
                Extent::Zero { .. } => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let is_reused = |i: usize| reused.get(i).is_some_and(|r| r.is_some());

    // Group the chunks to fetch into runs of neighbouring bytes in a pack.
    let mut wanted: Vec<(usize, ChunkLocation)> = Vec::new();
    // Chunks taken out of groups opened already.
    let mut from_groups: Vec<Member> = Vec::new();
    // Batch positions of chunks to read from the replica.
    let mut from_replica: Vec<usize> = Vec::new();
    for (i, (_, e)) in batch.iter().enumerate() {
        if let Extent::Data { id, length } = e {
            if !is_reused(i) {
                match (index.get(id), reader.fallback) {
                    (Some(loc), _) if loc.is_grouped() => {
                        match groups.get((loc.pack, loc.offset)) {
                            Some(plain) => {
                                let key = pack_key(&index.pack_id(loc.pack));
                                let member = take_member(repo, &plain, id, &loc, &key)
                                    .and_then(|m| check_length(m, id, *length));
                                from_groups.push((i, member));
                            }
                            None => wanted.push((i, loc)),
                        }
                    }
                    (Some(loc), _) => wanted.push((i, loc)),
                    (None, Some(_)) => from_replica.push(i),
                    (None, None) => return Err(Error::MissingChunk { chunk: id.to_hex() }),
                }
            }
        }
    }
    wanted.sort_by_key(|(_, l)| (l.pack, l.offset));
    let mut runs: Vec<Run> = Vec::new();
    for (i, loc) in wanted {
        let (start, end) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        match runs.last_mut() {
            // Sorted by offset: `start >= r.start`; a chunk occurring twice
            // in the batch overlaps its run.
            // A blob the run holds already (another chunk of its group)
            // always joins it.
            Some(r)
                if r.pack == loc.pack
                    && (end <= r.end
                        || (start <= r.end + MAX_GAP_BYTES
                            && end.max(r.end) - r.start <= MAX_RUN_BYTES)) =>
            {
                r.end = r.end.max(end);
                r.members.push((i, loc));
            }
            _ => runs.push(Run {
                pack: loc.pack,
                start,
                end,
                members: vec![(i, loc)],
            }),
        }
    }

    // Read the runs with many requests in flight, then open their chunks
    // on the CPU pool.
    let fetched: Vec<std::result::Result<Vec<u8>, crate::store::StoreError>> =
        crate::exec::request_pool().install(|| {
            runs.par_iter()
                .map(|run| {
                    let key = pack_key(&index.pack_id(run.pack));
                    repo.store()
                        .get_range(&key, run.start, (run.end - run.start) as usize)
                })
                .collect()
        });
    let opened: Vec<(Vec<Member>, Vec<OpenedGroup>)> = runs
        .par_iter()
        .zip(fetched)
        .map(|(run, bytes)| open_run(repo, index, batch, run, bytes))
        .collect();
    let mut members = from_groups;
    for (chunks, opened_groups) in opened {
        members.extend(chunks);
        for (key, plain) in opened_groups {
            groups.put(key, plain);
        }
    }

    let mut slots: Vec<Option<ChunkBytes>> =
        reused.into_iter().map(|r| r.map(ChunkBytes::Own)).collect();
    slots.resize(batch.len(), None);
    let mut fetched = vec![false; batch.len()];
    for (i, plain) in members {
        match plain {
            Ok(p) => {
                slots[i] = Some(p);
                fetched[i] = true;
            }
            Err(_) if reader.fallback.is_some() => from_replica.push(i),
            Err(e) => return Err(e),
        }
    }
    if let Some(f) = reader.fallback {
        let replica: Vec<Member> = from_replica
            .par_iter()
            .map(|&i| {
                let Extent::Data { id, length } = batch[i].1 else {
                    unreachable!("only data extents are fetched")
                };
                let plain = reader.read_from_replica(f, &id).and_then(|p| {
                    if p.len() == length as usize {
                        Ok(ChunkBytes::Own(p))
                    } else {
                        Err(Error::damaged(
                            format!("chunk {} in the replica", id.to_hex()),
                            "its length differs from the manifest",
                        ))
                    }
                });
                (i, plain)
            })
            .collect();
        for (i, plain) in replica {
            slots[i] = Some(plain?);
            fetched[i] = true;
        }
    }
    batch
        .iter()
        .zip(slots)
        .zip(fetched)
        .map(|(((offset, e), slot), fetched)| match e {
            Extent::Zero { length } => Ok(Piece::Zero {
                offset: *offset,
                len: *length,
            }),
            Extent::Data { id, .. } => {
                let bytes = slot.ok_or_else(|| Error::MissingChunk { chunk: id.to_hex() })?;
                Ok(Piece::Data {
                    offset: *offset,
                    bytes,
                    write: fetched,
                })
            }
        })
        .collect()
}

/// A chunk's position in its batch, and its plaintext or why it has none.
type Member = (usize, Result<ChunkBytes>);

/// Chunk `id` taken out of the opened group `plain` that `loc` points into
/// (in pack `key`).
fn take_member(
    repo: &Repository,
    plain: &Arc<Vec<u8>>,
    id: &ChunkId,
    loc: &ChunkLocation,
    key: &str,
) -> Result<ChunkBytes> {
    repo.sealer()
        .group_member(plain, id, loc.member, loc.raw_length, false)
        .map(|b| ChunkBytes::in_group(plain, b))
        .map_err(|e| Error::damaged(format!("chunk {} in {}", id.to_hex(), key), e))
}

/// `plain`, if it has the length the manifest gives chunk `id`.
fn check_length(plain: ChunkBytes, id: &ChunkId, length: u32) -> Result<ChunkBytes> {
    if plain.len() == length as usize {
        Ok(plain)
    } else {
        Err(Error::damaged(
            format!("chunk {}", id.to_hex()),
            "its length differs from the manifest",
        ))
    }
}

/// Reads one run and opens each of its chunks; every member gets its
/// plaintext or the reason it has none. Also returns the groups opened.
fn open_run(
    repo: &Repository,
    index: &ChunkIndex,
    batch: &[(u64, Extent)],
    run: &Run,
    fetched: std::result::Result<Vec<u8>, crate::store::StoreError>,
) -> (Vec<Member>, Vec<OpenedGroup>) {
    let pack = index.pack_id(run.pack);
    let key = pack_key(&pack);
    let bytes = match fetched {
        Ok(b) => b,
        Err(e) => {
            // The first member carries the store's error; the others say
            // why they have nothing.
            let mut first = Some(Error::from(e));
            let members = run
                .members
                .iter()
                .map(|&(i, _)| {
                    let err = first
                        .take()
                        .unwrap_or_else(|| Error::damaged(key.clone(), "it could not be read"));
                    (i, Err(err))
                })
                .collect();
            return (members, Vec::new());
        }
    };
    // Members are in offset order: those of one sealed blob (a group, or
    // a chunk occurring twice) are side by side, and the blob is opened
    // once for all of them.
    let mut units: Vec<&[(usize, ChunkLocation)]> = Vec::new();
    let mut rest = &run.members[..];
    while let Some((_, first)) = rest.first() {
        let n = rest
            .iter()
            .take_while(|(_, l)| l.offset == first.offset)
            .count();
        units.push(&rest[..n]);
        rest = &rest[n..];
    }
    let opened: Vec<(Vec<Member>, Option<OpenedGroup>)> = units
        .par_iter()
        .map(|unit| {
            let loc0 = unit[0].1;
            let at = (loc0.offset as u64 - run.start) as usize;
            let sealed = bytes.get(at..at + loc0.length as usize);
            let group = match sealed {
                Some(sealed) if loc0.is_grouped() => {
                    Some(repo.sealer().open_group(sealed).map(Arc::new))
                }
                _ => None,
            };
            let members = unit
                .iter()
                .map(|&(i, loc)| {
                    let Extent::Data { id, length } = batch[i].1 else {
                        unreachable!("runs hold data extents only")
                    };
                    let Some(sealed) = sealed else {
                        let why = "the store returned fewer bytes than asked for";
                        return (i, Err(Error::damaged(key.clone(), why)));
                    };
                    let what = || format!("chunk {} in {}", id.to_hex(), key);
                    let plain = match (&group, loc.is_grouped()) {
                        (Some(Ok(plain)), true) => take_member(repo, plain, &id, &loc, &key),
                        (Some(Err(e)), true) => Err(Error::damaged(what(), e.to_string())),
                        _ => repo
                            .open_located(sealed, &id, &loc, false)
                            .map(ChunkBytes::Own)
                            .map_err(|e| Error::damaged(what(), e)),
                    };
                    (i, plain.and_then(|p| check_length(p, &id, length)))
                })
                .collect();
            let kept = match group {
                Some(Ok(plain)) => Some(((run.pack, loc0.offset), plain)),
                _ => None,
            };
            (members, kept)
        })
        .collect();
    let mut members = Vec::with_capacity(run.members.len());
    let mut groups = Vec::new();
    for (m, g) in opened {
        members.extend(m);
        groups.extend(g);
    }
    (members, groups)
}

fn writer_gone() -> Error {
    Error::InvalidArgument("the output writer stopped".into())
}

//! `repair`: put back, from a replica, what `check` would find missing or
//! damaged in a repository.
//!
//! Objects are named by the hash of their bytes, and `sync` copies them
//! verbatim, so a damaged or missing pack, index file or point is usually
//! replaced whole by the replica's object of the same name (once its bytes
//! hash to that name). When the replica does not hold the same pack (it
//! was filled by its own backups, or by a selective sync), the repair works
//! chunk by chunk: the pack's intact chunks are salvaged, the others are
//! read from the replica and verified, and all of them are written, still
//! sealed, into new packs with a new index file. The index files that list
//! the damaged pack are then rewritten without its entries, so that no
//! reader can pick a bad copy of a chunk, and the damaged pack is deleted.
//! Chunks that recovery points reference but no index lists are fetched
//! from the replica the same way.
//!
//! Crash safety: each step is durable before the next, and at every instant
//! every chunk that was readable stays indexed at least once:
//!
//! 1. whole objects replaced by the replica's copies (atomic renames); barrier;
//! 2. new packs; barrier; their index file; barrier;
//! 3. rewritten index files; barrier; the index files they replace are
//!    deleted; barrier;
//! 4. damaged packs that no index names any more are deleted; barrier.
//!
//! A repair interrupted at any point can be run again; it finds the chunks
//! already moved and finishes the job. It holds an exclusive lock, since it
//! deletes objects, and a shared lock on the replica.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::error::{Error, ErrorCategory, Result};
use crate::format::config::CompressionSetting;
use crate::format::index::{IndexBody, IndexRecord};
use crate::format::point::PointBody;
use crate::format::{ChunkId, IndexId, PackId, PointId};
use crate::index::ChunkIndex;
use crate::manifest::{ReachWalk, Reached};
use crate::packer::{parse_pack_table, Member, PackWriter};
use crate::progress::{Progress, SharedTracker};
use crate::repo::layout::read_object;
use crate::repo::reader::ReplicaReader;
use crate::repo::{index_key, pack_key, point_key, LockKind, RepoLocation, Repository};
use crate::store::PutMode;

/// How to repair.
#[derive(Debug, Clone, Default)]
pub struct RepairOptions {
    /// Worker threads for reading packs; all cores when `None`.
    pub threads: Option<usize>,
    /// Told the bytes of packs read and hashed so far, and the bytes of
    /// every pack the index names (phase `"repair"`).
    pub progress: Option<Progress>,
}

/// What a repair did, and what it could not do.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// Objects (packs, index files, points) replaced whole by the
    /// replica's copy of the same name.
    pub objects_replaced: Vec<String>,
    /// Chunks read from the replica into new packs.
    pub chunks_from_replica: u64,
    /// Intact chunks moved out of damaged packs into new packs.
    pub chunks_salvaged: u64,
    /// Damaged chunks that no recovery point needs and no copy exists of:
    /// their index entries were dropped.
    pub chunks_dropped: u64,
    /// Packs written with moved chunks.
    pub packs_written: usize,
    /// Index files written (for new packs, and rewritten ones).
    pub index_files_written: usize,
    /// Index files deleted (replaced by rewritten ones, or unreadable).
    pub index_files_removed: usize,
    /// Damaged packs deleted once every chunk in them had moved.
    pub packs_removed: usize,
    /// Bytes read from the replica.
    pub bytes_fetched: u64,
    /// Packs read and hashed.
    pub packs_checked: usize,
    /// What is still wrong: object and reason.
    #[serde(serialize_with = "crate::ops::object_reasons")]
    pub unrepaired: Vec<(String, String)>,
    /// Wall-clock time the repair took.
    #[serde(rename = "duration_seconds", serialize_with = "crate::ops::seconds")]
    pub duration: Duration,
}

impl RepairReport {
    /// True when nothing is left damaged.
    pub fn is_complete(&self) -> bool {
        self.unrepaired.is_empty()
    }

    /// True when the repository needed nothing.
    pub fn found_nothing(&self) -> bool {
        self.is_complete()
            && self.objects_replaced.is_empty()
            && self.packs_written == 0
            && self.index_files_removed == 0
            && self.chunks_dropped == 0
    }
}

/// Repairs `repo` from `replica`, a copy of the same repository (see the
/// module documentation). Reads every pack of `repo` once.
pub fn repair(
    repo: &Repository,
    replica: &RepoLocation,
    opts: &RepairOptions,
) -> Result<RepairReport> {
    let started = Instant::now();
    let pool = crate::exec::worker_pool(opts.threads, "repair")?;
    let lock = repo.lock(LockKind::Exclusive, "repair")?;
    let _replica_lock = replica.lock_for_reading("repair (replica)", repo.lock_options())?;
    let rep = ReplicaReader::open(repo, replica)?;
    let mut report = RepairReport::default();

    // Index files and points: whole objects, replaced from the replica when
    // they do not open.
    let mut bodies: Vec<(IndexId, IndexBody)> = Vec::new();
    let mut lost_index: Vec<IndexId> = Vec::new();
    for id in repo.list_index_files()? {
        let key = index_key(&id);
        let mut read = repo.read_index_file(&id);
        if is_damage(&read) && replace_whole(repo, &rep, &key, &id.0, &mut report)? {
            read = repo.read_index_file(&id);
        }
        match read {
            Ok(b) => bodies.push((id, b)),
            Err(e) if e.category() == ErrorCategory::Damaged => lost_index.push(id),
            Err(e) => return Err(e),
        }
    }
    let mut points: Vec<(PointId, PointBody)> = Vec::new();
    for id in repo.list_point_ids()? {
        let key = point_key(&id);
        let mut read = repo.read_point(&id);
        if is_damage(&read) && replace_whole(repo, &rep, &key, &id.0, &mut report)? {
            read = repo.read_point(&id);
        }
        match read {
            Ok(p) => points.push((id, p)),
            Err(e) if e.category() == ErrorCategory::Damaged => {
                report.unrepaired.push((key, e.to_string()))
            }
            Err(e) => return Err(e),
        }
    }

    // Packs the index names: read and hashed; replaced whole when the
    // replica has the same pack.
    let sizes: HashMap<PackId, u64> = repo.list_packs_sized()?.into_iter().collect();
    let present: HashSet<PackId> = sizes.keys().copied().collect();
    let named: BTreeSet<PackId> = bodies
        .iter()
        .flat_map(|(_, b)| b.packs.iter().copied())
        .collect();
    let named: Vec<PackId> = named.into_iter().collect();
    report.packs_checked = named.len();
    let size_of = |p: &PackId| sizes.get(p).copied().unwrap_or(0);
    let tracker = SharedTracker::begin(
        opts.progress.as_ref(),
        "repair",
        named.iter().map(size_of).sum(),
    );
    let intact: Vec<bool> = pool.install(|| {
        named
            .par_iter()
            .map(|p| {
                let intact = pack_is_intact(repo, p, &present);
                tracker.advance(size_of(p));
                intact
            })
            .collect::<Result<_>>()
    })?;
    let mut damaged: BTreeSet<PackId> = BTreeSet::new();
    for (p, ok) in named.iter().zip(intact) {
        if !ok && !replace_whole(repo, &rep, &pack_key(p), &p.0, &mut report)? {
            damaged.insert(*p);
        }
    }
    repo.store().barrier()?;

    // Packs no readable index names, when an index file was lost: indexed
    // again from their own tables.
    let mut rebuilt: Vec<(PackId, Vec<crate::format::pack::PackEntry>)> = Vec::new();
    if !lost_index.is_empty() {
        let named: HashSet<&PackId> = named.iter().collect();
        for p in present.iter().filter(|p| !named.contains(p)) {
            let Ok(bytes) = repo.read_pack(p) else {
                continue;
            };
            if PackId::hash_of(&bytes) != *p {
                continue;
            }
            let Ok(entries) =
                parse_pack_table(repo.sealer(), &pack_key(p), &bytes, repo.format_major())
            else {
                continue;
            };
            rebuilt.push((*p, entries));
        }
    }

    // Where chunks are: in intact packs (`good`), or in damaged ones.
    let mut good = ChunkIndex::default();
    let mut in_damaged = ChunkIndex::default();
    for (_, b) in &bodies {
        for r in &b.records {
            let pack = b.packs[r.pack as usize];
            let ix = if damaged.contains(&pack) {
                &mut in_damaged
            } else {
                &mut good
            };
            ix.add(pack, &r.as_entry());
        }
    }
    for (pack, entries) in &rebuilt {
        for e in entries {
            good.add(*pack, e);
        }
    }
    good.finish();
    in_damaged.finish();

    // Every chunk the points reference, walking their manifests with nodes
    // read from wherever an intact copy is.
    let mut referenced: HashSet<ChunkId> = HashSet::new();
    let node_cache: RefCell<HashMap<ChunkId, Vec<u8>>> = RefCell::new(HashMap::new());
    let mut walker = ReachWalk::new(repo.format_major());
    for (pid, point) in &points {
        for disk in &point.disks {
            let mut load = |id: &ChunkId| -> Result<Vec<u8>> {
                for ix in [&good, &in_damaged] {
                    if let Some(loc) = ix.get(id) {
                        if let Ok(b) = repo.read_node(id, &loc, &ix.pack_id(loc.pack)) {
                            return Ok(b);
                        }
                    }
                }
                if let Some(b) = node_cache.borrow().get(id) {
                    return Ok(b.clone());
                }
                let (_, plain) = rep.read_sealed_verified(id)?;
                node_cache.borrow_mut().insert(*id, plain.clone());
                Ok(plain)
            };
            let mut visit = |ev: Reached<'_>| -> Result<()> {
                match ev {
                    Reached::Node { id, .. } | Reached::Data { id, .. } => {
                        referenced.insert(*id);
                    }
                    Reached::Damaged { id, error, .. } => {
                        referenced.insert(*id);
                        report.unrepaired.push((
                            format!("manifest of disk '{}' in point {}", disk.name, pid.short()),
                            error.to_string(),
                        ));
                    }
                }
                Ok(())
            };
            walker.walk(&disk.manifest_root, disk.size, &mut load, &mut visit)?;
        }
    }
    drop(node_cache);

    // Chunks of damaged packs: salvaged, fetched, or given up.
    let mut mover = ChunkMover::new(repo);
    for (pack, entries) in &rebuilt {
        mover.writer.index_existing(*pack, entries)?;
    }
    // Index entries (pack, chunk) that no longer need to exist.
    let mut resolved: HashSet<(PackId, ChunkId)> = HashSet::new();
    for p in &damaged {
        let bytes = repo.read_pack(p).ok();
        let mut chunks: Vec<IndexRecord> = bodies
            .iter()
            .flat_map(|(_, b)| {
                b.records
                    .iter()
                    .filter(move |r| b.packs[r.pack as usize] == *p)
                    .copied()
            })
            .collect();
        chunks.sort_by_key(|r| r.id);
        chunks.dedup_by_key(|r| r.id);
        for r in chunks {
            let id = r.id;
            if good.contains(&id) || mover.has(&id) {
                resolved.insert((*p, id));
                continue;
            }
            let salvaged = bytes.as_ref().and_then(|b| {
                let sealed = b.get(r.offset as usize..r.offset as usize + r.length as usize)?;
                let e = r.as_entry();
                repo.sealer()
                    .open_entry(
                        sealed,
                        &id,
                        e.member,
                        e.raw_length,
                        repo.max_chunk_plain(),
                        true,
                    )
                    .ok()
            });
            if let Some(plain) = salvaged {
                mover.add(id, &plain)?;
                report.chunks_salvaged += 1;
                resolved.insert((*p, id));
                continue;
            }
            match rep.read_sealed_verified(&id) {
                Ok((sealed_len, plain)) => {
                    report.bytes_fetched += sealed_len;
                    mover.add(id, &plain)?;
                    report.chunks_from_replica += 1;
                    resolved.insert((*p, id));
                }
                Err(_) if !referenced.contains(&id) => {
                    report.chunks_dropped += 1;
                    resolved.insert((*p, id));
                }
                Err(e) => report
                    .unrepaired
                    .push((format!("chunk {}", id.to_hex()), e.to_string())),
            }
        }
    }

    // Chunks the points need that no index lists at all.
    let mut unindexed: Vec<ChunkId> = referenced
        .iter()
        .filter(|id| !good.contains(id) && !in_damaged.contains(id) && !mover.has(id))
        .copied()
        .collect();
    unindexed.sort();
    for id in unindexed {
        match rep.read_sealed_verified(&id) {
            Ok((sealed_len, plain)) => {
                report.bytes_fetched += sealed_len;
                mover.add(id, &plain)?;
                report.chunks_from_replica += 1;
            }
            Err(e) => report
                .unrepaired
                .push((format!("chunk {}", id.to_hex()), e.to_string())),
        }
    }

    // New packs, then (durable) the index files that list them and the
    // packs indexed again from their tables.
    let written = mover.writer.finish()?;
    report.packs_written = written.packs;
    report.index_files_written += written.index_files;

    // Index files without the entries of moved chunks; then the old ones go.
    let mut still_named: HashSet<PackId> = HashSet::new();
    let mut obsolete: Vec<IndexId> = Vec::new();
    for (id, body) in &bodies {
        let records: Vec<(PackId, IndexRecord)> = body
            .records
            .iter()
            .map(|r| (body.packs[r.pack as usize], *r))
            .collect();
        let kept: Vec<(PackId, IndexRecord)> = records
            .iter()
            .filter(|(p, r)| !resolved.contains(&(*p, r.id)))
            .copied()
            .collect();
        still_named.extend(kept.iter().map(|(p, _)| *p));
        if kept.len() == records.len() {
            // Packs named without entries stay named as they were.
            still_named.extend(body.packs.iter().copied());
            continue;
        }
        report.index_files_written += repo.write_index_records(&kept)?;
        obsolete.push(*id);
    }
    obsolete.extend(lost_index);
    if !obsolete.is_empty() {
        repo.store().barrier()?;
        lock.check()?;
        for id in &obsolete {
            repo.delete_index_file(id)?;
            report.index_files_removed += 1;
        }
        repo.store().barrier()?;
    }

    // Damaged packs whose every chunk moved.
    for p in &damaged {
        if present.contains(p) && !still_named.contains(p) {
            repo.delete_pack(p)?;
            report.packs_removed += 1;
        }
    }
    repo.store().barrier()?;
    report.duration = started.elapsed();
    Ok(report)
}

fn is_damage<T>(r: &Result<T>) -> bool {
    matches!(r, Err(e) if e.category() == ErrorCategory::Damaged)
}

/// Replaces the object at `key` by the replica's copy when its bytes hash
/// to `hash`; returns whether it did.
fn replace_whole(
    repo: &Repository,
    rep: &ReplicaReader,
    key: &str,
    hash: &[u8; 32],
    report: &mut RepairReport,
) -> Result<bool> {
    let bytes = match read_object(rep.repo().store().as_ref(), key, None) {
        Ok(b) => b,
        Err(Error::Store(e)) if e.is_not_found() => return Ok(false),
        Err(Error::Store(e)) => return Err(e.into()),
        // Too large to be what it names: no replacement.
        Err(_) => return Ok(false),
    };
    if blake3::hash(&bytes).as_bytes() != hash {
        return Ok(false);
    }
    repo.store().put(key, &bytes, PutMode::Overwrite)?;
    report.bytes_fetched += bytes.len() as u64;
    report.objects_replaced.push(key.to_string());
    Ok(true)
}

/// True when the pack exists and its bytes hash to its name.
fn pack_is_intact(repo: &Repository, pack: &PackId, present: &HashSet<PackId>) -> Result<bool> {
    if !present.contains(pack) {
        return Ok(false);
    }
    match repo.read_pack(pack) {
        Ok(bytes) => Ok(PackId::hash_of(&bytes) == *pack),
        Err(Error::Damaged { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes moved chunks, still sealed, into new packs, each chunk once.
struct ChunkMover<'a> {
    writer: PackWriter<'a>,
    sealer: std::sync::Arc<crate::crypto::Sealer>,
    moved: HashSet<ChunkId>,
}

impl<'a> ChunkMover<'a> {
    fn new(repo: &'a Repository) -> Self {
        ChunkMover {
            writer: PackWriter::new(repo),
            sealer: repo.sealer().clone(),
            moved: HashSet::new(),
        }
    }

    fn has(&self, id: &ChunkId) -> bool {
        self.moved.contains(id)
    }

    /// Seals a verified chunk alone (once: a group it came from may hold
    /// chunks that are not being moved) and adds it, writing the pack when
    /// full.
    fn add(&mut self, id: ChunkId, plain: &[u8]) -> Result<()> {
        if !self.moved.insert(id) {
            return Ok(());
        }
        let sealed = self.sealer.seal(plain, &id.0, CompressionSetting::Zstd(3));
        self.writer
            .add(&sealed, &[Member::sole(id, plain.len() as u32)])
    }
}

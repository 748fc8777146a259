//! `sync`: make another repository (a replica) hold the recovery points of
//! this one, copying only the objects it lacks.
//!
//! Every object but `config` is immutable and named by the BLAKE3 of its
//! bytes, so a sync needs no key: it copies the objects the destination
//! lacks verbatim, still encrypted, and checks on arrival that each one's
//! bytes hash to its name and that it is the kind of object its name
//! promises. The destination is valid at every instant, because objects are
//! copied in the order a backup writes them, each stage durable before the
//! next:
//!
//! 1. packs, several at once; barrier;
//! 2. index files; barrier;
//! 3. key files, then recovery points; barrier.
//!
//! An interrupted sync leaves at worst packs that no index names (`check`
//! notes them, the next sync skips them), so running it again copies only
//! what is still missing. A destination that does not exist or is empty is
//! first created as a replica, as `init` creates a repository: key files,
//! barrier, replica marker and a verbatim copy of the source's config,
//! barrier. A damaged source object is never copied; the sync then stops
//! after the stage that met it, so that the destination never names an
//! object it lacks.
//!
//! With the key ([`sync_with_key`]) a sync can also select points by tag or
//! `latest`, and verify every chunk it copies. When points are selected it
//! sends only the packs that hold chunks those points need and the
//! destination lacks; as the source's index files may name other packs, it
//! then writes its own index file, listing exactly the packs it sent.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::forget::ForgetRecord;
use crate::format::index::IndexRecord;
use crate::format::keyfile::KeyFile;
use crate::format::pack::{decode_footer, PACK_FOOTER_LEN};
use crate::format::replica::ReplicaMarker;
use crate::format::{ChunkId, IndexId, KeyId, ObjectHeader, ObjectKind, PackId, PointId};
use crate::index::ChunkIndex;
use crate::manifest::{ReachWalk, Reached};
use crate::packer::parse_pack_table;
use crate::progress::{Progress, Tracker};
use crate::repo::layout::{list_ids, read_object, KEYS, TMP};
use crate::repo::location::{minus, Listing};
use crate::repo::reader::read_indexed_chunk;
use crate::repo::{
    check_compatible, host_name, index_key, key_key, now_unix, open_copy, pack_key, point_key,
    LockKind, LockOptions, RepoLocation, Repository, CONFIG_KEY, REPLICA_KEY,
};
use crate::store::PutMode;

/// What to send.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Send only the recovery points whose id starts with one of these
    /// (`latest` needs the key). All points when empty.
    pub points: Vec<String>,
    /// Send only the points carrying one of these tags (needs the key).
    pub tags: Vec<String>,
    /// Read every copied pack back from the destination and open and
    /// verify each of its chunks (needs the key).
    pub verify: bool,
    /// Objects copied at once; [`crate::exec::requests_in_flight`] when
    /// `None`.
    pub threads: Option<usize>,
    /// Told the bytes copied so far and the bytes to copy.
    pub progress: Option<Progress>,
    /// Make the destination's live points exactly the source's live
    /// selected points: destination points that are not are forgotten
    /// there, and points live in the source are unforgotten (needs the
    /// key). Nothing is deleted; see [`sync_with_key`].
    pub delete: bool,
    /// How both repositories are locked; the source repository's handle's
    /// options (or the defaults) when `None`.
    pub lock: Option<LockOptions>,
}

/// Counts of objects by kind, and their bytes. Serialised with `objects`,
/// their sum, beside the counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectTally {
    /// Pack files.
    pub packs: usize,
    /// Index files.
    pub index_files: usize,
    /// Recovery points.
    pub points: usize,
    /// Key files.
    pub key_files: usize,
    /// Bytes of all these objects.
    pub bytes: u64,
}

impl ObjectTally {
    /// Objects of every kind.
    pub fn objects(&self) -> usize {
        self.packs + self.index_files + self.points + self.key_files
    }

    fn add(&mut self, kind: Kind, bytes: u64) {
        match kind {
            Kind::Pack => self.packs += 1,
            Kind::Index => self.index_files += 1,
            Kind::Point => self.points += 1,
            Kind::Key => self.key_files += 1,
        }
        self.bytes += bytes;
    }
}

impl serde::Serialize for ObjectTally {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut t = s.serialize_struct("ObjectTally", 6)?;
        t.serialize_field("packs", &self.packs)?;
        t.serialize_field("index_files", &self.index_files)?;
        t.serialize_field("points", &self.points)?;
        t.serialize_field("key_files", &self.key_files)?;
        t.serialize_field("objects", &self.objects())?;
        t.serialize_field("bytes", &self.bytes)?;
        t.end()
    }
}

/// The outcome of a sync.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport {
    /// Location of the source repository.
    pub source: String,
    /// Location of the destination repository.
    pub destination: String,
    /// The destination did not exist and was created as a replica.
    pub created: bool,
    /// Only the packs the selected points need were considered (points were
    /// selected and the key was given).
    pub selective: bool,
    /// Points selected in the source (all, unless filtered).
    pub points_selected: usize,
    /// Objects copied, by kind, and their bytes.
    pub copied: ObjectTally,
    /// Objects the destination already held, by kind, and their bytes.
    pub skipped: ObjectTally,
    /// Index files the sync wrote itself (selective mode).
    pub index_files_written: usize,
    /// Chunks opened and verified in the destination (`verify`).
    pub chunks_verified: u64,
    /// Destination points forgotten because they are not live in the
    /// source (`delete`).
    pub points_forgotten: usize,
    /// Destination points unforgotten because they are live in the source
    /// (`delete`).
    pub points_unforgotten: usize,
    /// Wall-clock time the sync took.
    #[serde(rename = "duration_seconds", serialize_with = "crate::ops::seconds")]
    pub duration: Duration,
}

impl SyncReport {
    /// True when the destination already held everything.
    pub fn copied_nothing(&self) -> bool {
        !self.created && self.copied.objects() == 0 && self.index_files_written == 0
    }

    /// Bytes copied per second.
    pub fn bytes_per_second(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.copied.bytes as f64 / secs
        } else {
            0.0
        }
    }
}

/// Makes `destination` hold the selected recovery points of `source`,
/// copying verbatim only the objects it lacks, without any key. Creates
/// `destination` as a replica when it does not exist or is empty; refuses
/// a destination whose chunks cannot match ([`Error::IncompatibleRepositories`]).
/// `tags`, `latest` and `verify` need the key: see [`sync_with_key`].
pub fn sync(
    source: &RepoLocation,
    destination: &RepoLocation,
    opts: &SyncOptions,
) -> Result<SyncReport> {
    run(source, destination, None, opts)
}

/// [`sync`] from an open repository: also selects points by tag or
/// `latest`, sends only the packs that the selected points need, checks the
/// authentication of every index file and point it copies, and with
/// `verify` opens every chunk it copies.
pub fn sync_with_key(
    source: &Repository,
    destination: &RepoLocation,
    opts: &SyncOptions,
) -> Result<SyncReport> {
    run(&RepoLocation::of(source), destination, Some(source), opts)
}

/// The kinds of object a sync copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pack,
    Index,
    Point,
    Key,
}

/// One object to copy: its key, the hash its bytes must have, and its
/// size as the source's listing gave it.
struct Item {
    kind: Kind,
    key: String,
    hash: [u8; 32],
    size: u64,
}

impl Item {
    fn pack(&(id, size): &(PackId, u64)) -> Item {
        Item {
            kind: Kind::Pack,
            key: pack_key(&id),
            hash: id.0,
            size,
        }
    }
    fn index(&(id, size): &(IndexId, u64)) -> Item {
        Item {
            kind: Kind::Index,
            key: index_key(&id),
            hash: id.0,
            size,
        }
    }
    fn point(&(id, size): &(PointId, u64)) -> Item {
        Item {
            kind: Kind::Point,
            key: point_key(&id),
            hash: id.0,
            size,
        }
    }
    fn key_file(&(id, size): &(KeyId, u64)) -> Item {
        Item {
            kind: Kind::Key,
            key: key_key(&id),
            hash: id.0,
            size,
        }
    }
}

fn ids<T: Copy>(v: &[(T, u64)]) -> Vec<T> {
    v.iter().map(|(id, _)| *id).collect()
}

/// What this sync copies and writes.
#[derive(Default)]
struct Plan {
    packs: Vec<(PackId, u64)>,
    index_files: Vec<(IndexId, u64)>,
    key_files: Vec<(KeyId, u64)>,
    points: Vec<(PointId, u64)>,
    /// Index records the sync writes itself (selective mode).
    own_index: Vec<(PackId, IndexRecord)>,
    /// Objects the destination already has.
    skipped: Vec<Item>,
}

fn run(
    src: &RepoLocation,
    dst: &RepoLocation,
    key: Option<&Repository>,
    opts: &SyncOptions,
) -> Result<SyncReport> {
    let started = Instant::now();
    crate::exec::check_threads(opts.threads)?;
    if opts.delete && key.is_none() {
        return Err(Error::InvalidArgument(
            "--delete needs the passphrase: it reads which points the source has forgotten".into(),
        ));
    }
    let lock_opts = key.map(|k| k.lock_options().clone()).unwrap_or_default();
    let lock_opts = opts.lock.clone().unwrap_or(lock_opts);
    let _src_lock = src.lock_for_reading("sync (source)", &lock_opts)?;
    let src_config = src.read_config()?;
    let mut copied = ObjectTally::default();
    let created_with = prepare_destination(src, dst, &mut copied)?;
    let created = created_with.is_some();
    let dst_lock = dst.lock(LockKind::Shared, "sync (destination)", &lock_opts)?;
    // Litter of syncs that were killed mid-copy.
    dst.store()
        .remove_stale_temporaries(crate::repo::layout::STALE_TEMPORARY)?;
    // With the key, the destination is opened with it (same key material).
    let dst_repo = key.map(|k| open_copy(k, dst)).transpose()?;
    if dst_repo.is_none() {
        check_compatible(&src_config, src.name(), &dst.read_config()?, dst.name())?;
    }

    let from = Listing::read(src.store().as_ref())?;
    let to = Listing::read(dst.store().as_ref())?;
    let selected = select_points(&from.points, key, opts)?;
    let selective = key.is_some() && (!opts.points.is_empty() || !opts.tags.is_empty());
    let created_keys = created_with.unwrap_or_default();
    let mut plan = Plan {
        key_files: minus(&from.key_files, &to.key_files),
        points: minus(&selected, &to.points),
        ..Plan::default()
    };
    plan.skipped
        .extend(minus(&selected, &plan.points).iter().map(Item::point));
    plan.skipped.extend(
        minus(&from.key_files, &plan.key_files)
            .iter()
            .filter(|(k, _)| !created_keys.contains(k))
            .map(Item::key_file),
    );
    match (key, &dst_repo) {
        (Some(k), Some(d)) if selective => plan_selective(k, d, &from, &to, &mut plan)?,
        _ => {
            plan.packs = minus(&from.packs, &to.packs);
            plan.index_files = minus(&from.index_files, &to.index_files);
            plan.skipped
                .extend(minus(&from.packs, &plan.packs).iter().map(Item::pack));
            plan.skipped.extend(
                minus(&from.index_files, &plan.index_files)
                    .iter()
                    .map(Item::index),
            );
        }
    }

    let mut skipped = ObjectTally::default();
    for item in &plan.skipped {
        skipped.add(item.kind, item.size);
    }

    let copier = Copier {
        src,
        dst,
        key,
        verify_in: if opts.verify { dst_repo.as_ref() } else { None },
        // Copying is mostly waiting on storage: by default as many copies
        // as requests may be in flight.
        threads: opts
            .threads
            .unwrap_or_else(crate::exec::requests_in_flight)
            .max(1),
    };
    let packs: Vec<Item> = plan.packs.iter().map(Item::pack).collect();
    let index_files: Vec<Item> = plan.index_files.iter().map(Item::index).collect();
    let later: Vec<Item> = plan
        .key_files
        .iter()
        .map(Item::key_file)
        .chain(plan.points.iter().map(Item::point))
        .collect();
    let total = packs
        .iter()
        .chain(&index_files)
        .chain(&later)
        .map(|i| i.size)
        .sum();
    let mut tracker = Tracker::new(opts.progress.clone(), total);

    let mut chunks_verified = 0;
    let mut index_files_written = 0;
    let stages: [&[Item]; 3] = [&packs, &index_files, &later];
    for (n, items) in stages.into_iter().enumerate() {
        // What the destination already holds may have been written by a
        // sync that died before its barrier: it must be durable before
        // anything that depends on it, and before this sync reports success.
        for item in plan.skipped.iter().filter(|i| stage_of(i.kind) == n) {
            dst.store().ensure_durable(&item.key)?;
        }
        if let (1, Some(d)) = (n, &dst_repo) {
            index_files_written += d.write_index_records(&plan.own_index)?;
        }
        let outcome = copier.copy_all(items, &mut tracker, &mut copied);
        chunks_verified += outcome.chunks_verified;
        // What was copied is kept even when the stage failed: the next sync
        // skips it.
        dst.store().barrier()?;
        outcome.into_result(src.name(), dst.name())?;
    }

    let mut forgets = ForgetPropagation::default();
    if let (true, Some(k), Some(d)) = (opts.delete, key, &dst_repo) {
        dst_lock.check()?;
        forgets = propagate_forgets(k, d, &ids(&selected))?;
    }

    Ok(SyncReport {
        source: src.name().to_string(),
        destination: dst.name().to_string(),
        created,
        selective,
        points_selected: selected.len(),
        copied,
        skipped,
        index_files_written,
        chunks_verified,
        points_forgotten: forgets.forgotten,
        points_unforgotten: forgets.unforgotten,
        duration: started.elapsed(),
    })
}

/// What `sync --delete` changed in the destination.
#[derive(Default)]
struct ForgetPropagation {
    forgotten: usize,
    unforgotten: usize,
}

/// `sync --delete`: makes the destination's live points the source's live
/// selected points. A destination point that is not one of them is
/// forgotten there (with the source's forget record when it has one, so
/// the grace period counts from the same instant); a destination point
/// that is live in the source loses its forget records. Nothing is
/// deleted: the destination's own `prune` frees the data after its grace
/// period, and only data that no live point of the destination needs.
fn propagate_forgets(
    src: &Repository,
    dst: &Repository,
    selected: &[PointId],
) -> Result<ForgetPropagation> {
    let src_forgotten = src.list_forget_records()?;
    let forgotten_in_src: HashSet<PointId> = src_forgotten.iter().map(|(_, r)| r.point).collect();
    let live: HashSet<PointId> = selected
        .iter()
        .filter(|p| !forgotten_in_src.contains(p))
        .copied()
        .collect();
    let dst_records = dst.list_forget_records()?;
    let forgotten_in_dst: HashSet<PointId> = dst_records.iter().map(|(_, r)| r.point).collect();
    let mut out = ForgetPropagation::default();
    let mut unforgotten = HashSet::new();
    for (id, r) in &dst_records {
        if live.contains(&r.point) {
            dst.delete_forget_record(id)?;
            unforgotten.insert(r.point);
        }
    }
    out.unforgotten = unforgotten.len();
    let (now, _) = now_unix();
    for point in dst.list_point_ids()? {
        if live.contains(&point) || forgotten_in_dst.contains(&point) {
            continue;
        }
        let record = src_forgotten
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.point == point)
            .min_by_key(|r| r.time_secs)
            .cloned()
            .unwrap_or_else(|| {
                ForgetRecord::new(
                    point,
                    now,
                    &host_name(),
                    &format!("sync --delete: not a live point of {}", src.location()),
                )
            });
        dst.write_forget_record(&record)?;
        out.forgotten += 1;
    }
    dst.store().barrier()?;
    Ok(out)
}

/// The stage (0, 1 or 2) in which objects of a kind are copied.
fn stage_of(kind: Kind) -> usize {
    match kind {
        Kind::Pack => 0,
        Kind::Index => 1,
        Kind::Key | Kind::Point => 2,
    }
}

/// Makes sure `dst` is a repository that can hold `src`'s chunks: creates it
/// as a replica when it does not exist, is empty, or holds only what an
/// interrupted creation left. Returns the key files it copied when it
/// created it.
///
/// Of several syncs creating one replica at once, one writes the config
/// (create-only); the others then find a repository there, and go on if it
/// is a copy of the same source, or refuse and remove the key files they
/// copied if it is not.
fn prepare_destination(
    src: &RepoLocation,
    dst: &RepoLocation,
    copied: &mut ObjectTally,
) -> Result<Option<HashSet<KeyId>>> {
    match dst.read_config() {
        Ok(_) => return Ok(None),
        Err(Error::NotARepository(_)) => {}
        Err(e) => return Err(e),
    }
    let leftover = match dst.store().list("") {
        Ok(l) => l,
        Err(crate::store::StoreError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotADirectory =>
        {
            return Err(Error::InvalidArgument(format!(
                "{} is a file, not a directory: the destination of a sync is a new or empty directory, or a replica",
                dst.name()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if leftover
        .iter()
        .any(|o| !(o.key.starts_with(KEYS) || o.key.starts_with(TMP) || o.key == REPLICA_KEY))
    {
        return Err(Error::AlreadyExists(dst.name().to_string()));
    }
    let config_bytes = read_object(src.store().as_ref(), CONFIG_KEY, None)?;
    let present: HashSet<KeyId> = list_ids(dst.store().as_ref(), KEYS)?.into_iter().collect();
    let keys: Vec<KeyId> = list_ids(src.store().as_ref(), KEYS)?;
    let mut copied_keys = HashSet::new();
    for id in &present {
        // Left by an interrupted creation, perhaps before its barrier.
        dst.store().ensure_durable(&key_key(id))?;
    }
    for id in keys.iter().filter(|k| !present.contains(k)) {
        let item = Item::key_file(&(*id, 0));
        let bytes =
            fetch_verified(src, &item, None).map_err(CopyFailure::into_error(src.name()))?;
        // Key files are named by their hash: a concurrent creation from
        // the same source writes the same bytes.
        dst.store().put(&item.key, &bytes, PutMode::Overwrite)?;
        copied.add(Kind::Key, bytes.len() as u64);
        copied_keys.insert(*id);
    }
    // Key files are durable before the config that makes the replica a
    // repository, as at init.
    dst.store().barrier()?;
    let marker = ReplicaMarker::new(src.name(), now_unix().0, &host_name());
    match dst
        .store()
        .put(REPLICA_KEY, &marker.encode(), PutMode::Create)
    {
        Ok(()) => {}
        // Left by an interrupted creation, or written by a concurrent one.
        Err(e) if e.is_already_exists() => dst.store().ensure_durable(REPLICA_KEY)?,
        Err(e) => return Err(e.into()),
    }
    match dst.store().put(CONFIG_KEY, &config_bytes, PutMode::Create) {
        Ok(()) => {}
        Err(e) if e.is_already_exists() => {
            // Another sync created it first.
            let theirs = dst.read_config()?;
            let ours = crate::format::config::RepoConfig::decode(&config_bytes)
                .map_err(|e| Error::format(CONFIG_KEY, e))?;
            if let Err(refused) = check_compatible(&ours, src.name(), &theirs, dst.name()) {
                for id in &copied_keys {
                    let _ = dst.store().delete(&key_key(id));
                }
                let _ = dst.store().barrier();
                return Err(refused);
            }
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    dst.store().barrier()?;
    // Key files left by a creation from another source that lost the race
    // (tidying only: the replica exists now, whatever happens here).
    if let Ok(config) = dst.read_config() {
        let _ = crate::repo::remove_foreign_key_files(dst.store().as_ref(), &config.id);
    }
    Ok(Some(copied_keys))
}

/// The points of `src_points` that `opts` selects.
fn select_points(
    src_points: &[(PointId, u64)],
    key: Option<&Repository>,
    opts: &SyncOptions,
) -> Result<Vec<(PointId, u64)>> {
    let needs_key = |what: &str| {
        Error::InvalidArgument(format!(
            "{what} needs the passphrase (recovery points are encrypted); a sync without it can select points only by id prefix"
        ))
    };
    let sizes: std::collections::HashMap<PointId, u64> = src_points.iter().copied().collect();
    let src_points: Vec<PointId> = ids(src_points);
    let mut selected: Vec<PointId> = if opts.points.is_empty() {
        src_points.clone()
    } else {
        let mut set = BTreeSet::new();
        for spec in &opts.points {
            if spec == "latest" {
                let k = key.ok_or_else(|| needs_key("selecting 'latest'"))?;
                set.insert(k.resolve_point("latest")?);
                continue;
            }
            let lower = spec.to_ascii_lowercase();
            if lower.is_empty() || !lower.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::UnknownPoint(spec.clone()));
            }
            let matches: Vec<PointId> = src_points
                .iter()
                .filter(|id| id.to_hex().starts_with(&lower))
                .copied()
                .collect();
            if matches.is_empty() {
                return Err(Error::UnknownPoint(spec.clone()));
            }
            set.extend(matches);
        }
        set.into_iter().collect()
    };
    if !opts.tags.is_empty() {
        let k = key.ok_or_else(|| needs_key("selecting points by tag"))?;
        let mut kept = Vec::new();
        for id in selected {
            if k.read_point(&id)?
                .tags
                .iter()
                .any(|t| opts.tags.contains(t))
            {
                kept.push(id);
            }
        }
        selected = kept;
    }
    if opts.verify && key.is_none() {
        return Err(needs_key("--verify"));
    }
    Ok(selected
        .into_iter()
        .map(|id| (id, sizes.get(&id).copied().unwrap_or(0)))
        .collect())
}

/// Selective mode: the packs holding chunks that the points to send need
/// and the destination does not index, and the index records of those
/// packs (taken from the source's index) for the destination's own index
/// file. Packs already in the destination but not indexed there (left by
/// an interrupted sync) are indexed, not copied again.
fn plan_selective(
    src: &Repository,
    dst: &Repository,
    from: &Listing,
    to: &Listing,
    plan: &mut Plan,
) -> Result<()> {
    let mut bodies = Vec::new();
    for (id, _) in &from.index_files {
        bodies.push(src.read_index_file(id)?);
    }
    let mut src_index = ChunkIndex::default();
    for b in &bodies {
        src_index.add_body(b);
    }
    src_index.finish();
    let dst_index = dst.load_index()?;

    let mut needed: HashSet<PackId> = HashSet::new();
    let mut walker = ReachWalk::new(src.format_major());
    for (point, _) in &plan.points {
        let body = src.read_point(point)?;
        for disk in &body.disks {
            let mut visit = |ev: Reached<'_>| -> Result<()> {
                let id: &ChunkId = match ev {
                    Reached::Node {
                        id, first: true, ..
                    } => id,
                    Reached::Data { id, .. } => id,
                    Reached::Node { .. } => return Ok(()),
                    Reached::Damaged { error, .. } => return Err(error),
                };
                if !dst_index.contains(id) {
                    let loc = src_index
                        .get(id)
                        .ok_or_else(|| Error::MissingChunk { chunk: id.to_hex() })?;
                    needed.insert(src_index.pack_id(loc.pack));
                }
                Ok(())
            };
            let mut load = |id: &ChunkId| read_indexed_chunk(src, &src_index, id);
            walker.walk(&disk.manifest_root, disk.size, &mut load, &mut visit)?;
        }
    }
    let src_sizes: std::collections::HashMap<PackId, u64> = from.packs.iter().copied().collect();
    let dst_packs: HashSet<PackId> = to.packs.iter().map(|(p, _)| *p).collect();
    let mut needed: Vec<PackId> = needed.into_iter().collect();
    needed.sort();
    for p in &needed {
        let sized = (*p, src_sizes.get(p).copied().unwrap_or(0));
        if dst_packs.contains(p) {
            plan.skipped.push(Item::pack(&sized));
        } else {
            plan.packs.push(sized);
        }
    }
    let unindexed: HashSet<PackId> = needed
        .into_iter()
        .filter(|p| !dst_index.has_pack(p))
        .collect();
    let mut seen = HashSet::new();
    for b in &bodies {
        for r in &b.records {
            let pack = b.packs[r.pack as usize];
            if unindexed.contains(&pack) && seen.insert((pack, r.id)) {
                plan.own_index.push((pack, *r));
            }
        }
    }
    Ok(())
}

/// Why one object was not copied.
enum CopyFailure {
    /// The source's object is missing or damaged: it is skipped, and the
    /// sync stops after this stage.
    Source { object: String, reason: String },
    /// Anything else (the destination failed): the sync stops now.
    Fatal(Error),
}

impl CopyFailure {
    fn into_error(source_name: &str) -> impl Fn(CopyFailure) -> Error + '_ {
        move |f| match f {
            CopyFailure::Source { object, reason } => {
                Error::damaged(format!("{object} in {source_name}"), reason)
            }
            CopyFailure::Fatal(e) => e,
        }
    }
}

/// Reads one object of the source and checks it before it goes anywhere:
/// its bytes hash to its name, it is the kind its name promises, and (with
/// the key) index files and points open.
fn fetch_verified(
    src: &RepoLocation,
    item: &Item,
    key: Option<&Repository>,
) -> std::result::Result<Vec<u8>, CopyFailure> {
    let damaged = |reason: String| CopyFailure::Source {
        object: item.key.clone(),
        reason,
    };
    let listed = Some(item.size).filter(|s| *s > 0);
    let bytes = match read_object(src.store().as_ref(), &item.key, listed) {
        Ok(b) => b,
        Err(Error::Store(e)) if e.is_not_found() => return Err(damaged("it is missing".into())),
        Err(Error::Store(e)) => return Err(CopyFailure::Fatal(e.into())),
        // Larger than any such object can be: damaged, not copied.
        Err(e) => return Err(damaged(e.to_string())),
    };
    if blake3::hash(&bytes).as_bytes() != &item.hash {
        return Err(damaged("content does not match its name".into()));
    }
    let header = |kind| ObjectHeader::decode(&bytes, kind).map(|_| ());
    let checked = match item.kind {
        Kind::Pack => header(ObjectKind::Pack).and_then(|_| {
            let len = bytes.len();
            let footer = bytes
                .get(len.saturating_sub(PACK_FOOTER_LEN)..)
                .unwrap_or(&[]);
            decode_footer(footer, len as u64).map(|_| ())
        }),
        Kind::Index => header(ObjectKind::Index),
        Kind::Point => header(ObjectKind::Point),
        Kind::Key => KeyFile::decode(&bytes).map(|_| ()),
    };
    checked.map_err(|e| damaged(e.to_string()))?;
    if let Some(k) = key {
        let opened = match item.kind {
            Kind::Index => k
                .open_object(&item.key, ObjectKind::Index, &item.hash, &bytes)
                .and_then(|body| {
                    crate::format::index::IndexBody::decode(&body, k.format_major())
                        .map(|_| ())
                        .map_err(|e| Error::format(&item.key, e))
                }),
            Kind::Point => k
                .open_object(&item.key, ObjectKind::Point, &item.hash, &bytes)
                .and_then(|body| {
                    crate::format::point::PointBody::decode(&body)
                        .map(|_| ())
                        .map_err(|e| Error::format(&item.key, e))
                }),
            Kind::Pack | Kind::Key => Ok(()),
        };
        opened.map_err(|e| damaged(e.to_string()))?;
    }
    Ok(bytes)
}

/// Copies objects from one repository to another, several at once.
struct Copier<'a> {
    src: &'a RepoLocation,
    dst: &'a RepoLocation,
    key: Option<&'a Repository>,
    /// The destination opened with the key, when packs are verified.
    verify_in: Option<&'a Repository>,
    threads: usize,
}

/// The outcome of copying one list of objects.
#[derive(Default)]
struct StageOutcome {
    chunks_verified: u64,
    /// Source objects that were not copied because they are damaged.
    damaged: Vec<(String, String)>,
    fatal: Option<Error>,
}

impl StageOutcome {
    fn into_result(self, source_name: &str, destination_name: &str) -> Result<()> {
        if let Some(e) = self.fatal {
            return Err(e);
        }
        let Some((object, reason)) = self.damaged.first() else {
            return Ok(());
        };
        let more = match self.damaged.len() {
            1 => String::new(),
            n => format!(" ({} more damaged objects were not copied either)", n - 1),
        };
        Err(Error::damaged(
            format!("{object} in {source_name}"),
            format!(
                "{reason}; it was not copied{more}, and the sync stopped there so that {destination_name} stays valid (objects already copied are kept)"
            ),
        ))
    }
}

impl Copier<'_> {
    fn copy_all(
        &self,
        items: &[Item],
        tracker: &mut Tracker,
        copied: &mut ObjectTally,
    ) -> StageOutcome {
        let mut outcome = StageOutcome::default();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<(usize, std::result::Result<(u64, u64), CopyFailure>)>();
        thread::scope(|s| {
            for _ in 0..self.threads.min(items.len()) {
                let tx = tx.clone();
                let (next, stop) = (&next, &stop);
                s.spawn(move || loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if tx.send((i, self.copy_one(item))).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            // Results come back to this thread, which alone reports
            // progress.
            for (i, result) in rx {
                match result {
                    Ok((bytes, verified)) => {
                        copied.add(items[i].kind, bytes);
                        outcome.chunks_verified += verified;
                        tracker.advance(bytes);
                    }
                    Err(CopyFailure::Source { object, reason }) => {
                        outcome.damaged.push((object, reason));
                    }
                    Err(CopyFailure::Fatal(e)) => {
                        stop.store(true, Ordering::Relaxed);
                        outcome.fatal.get_or_insert(e);
                    }
                }
            }
        });
        outcome.damaged.sort();
        outcome
    }

    /// Copies one object; returns its bytes and the chunks verified.
    fn copy_one(&self, item: &Item) -> std::result::Result<(u64, u64), CopyFailure> {
        let bytes = fetch_verified(self.src, item, self.key)?;
        self.dst
            .store()
            .put(&item.key, &bytes, PutMode::Overwrite)
            .map_err(|e| CopyFailure::Fatal(e.into()))?;
        let len = bytes.len() as u64;
        drop(bytes);
        let verified = match (item.kind, self.verify_in) {
            (Kind::Pack, Some(dst)) => match verify_pack(dst, &item.key, &item.hash) {
                Ok(n) => n,
                Err(reason) => {
                    // Leave nothing unverified behind.
                    self.dst
                        .store()
                        .delete(&item.key)
                        .map_err(|e| CopyFailure::Fatal(e.into()))?;
                    return Err(CopyFailure::Source {
                        object: item.key.clone(),
                        reason,
                    });
                }
            },
            _ => 0,
        };
        Ok((len, verified))
    }
}

/// Reads a pack back from `repo` and opens every chunk its table lists;
/// returns the number of chunks, or why the pack is bad.
fn verify_pack(repo: &Repository, key: &str, hash: &[u8; 32]) -> std::result::Result<u64, String> {
    let bytes = read_object(repo.store().as_ref(), key, None).map_err(|e| e.to_string())?;
    if blake3::hash(&bytes).as_bytes() != hash {
        return Err("the copy does not match its name".into());
    }
    let entries = parse_pack_table(repo.sealer(), key, &bytes, repo.format_major())
        .map_err(|e| e.to_string())?;
    // A group is opened once for all the chunks the table lists in it.
    let mut group: Option<(u32, Vec<u8>)> = None;
    for e in &entries {
        let sealed = bytes
            .get(e.offset as usize..e.offset as usize + e.length as usize)
            .ok_or_else(|| format!("chunk {} lies beyond the end", e.id.short()))?;
        let len = if e.is_grouped() {
            if group.as_ref().map(|(at, _)| *at) != Some(e.offset) {
                let plain = repo.sealer().open_group(sealed).map_err(|err| {
                    format!("the group at offset {} does not open: {err}", e.offset)
                })?;
                group = Some((e.offset, plain));
            }
            let (_, plain) = group.as_ref().expect("set above");
            repo.sealer()
                .group_member(plain, &e.id, e.member, e.raw_length, true)
                .map_err(|err| format!("chunk {} does not open: {err}", e.id.short()))?
                .len()
        } else {
            repo.sealer()
                .open_chunk(sealed, &e.id, repo.max_chunk_plain())
                .map_err(|err| format!("chunk {} does not open: {err}", e.id.short()))?
                .len()
        };
        if len != e.raw_length as usize {
            return Err(format!(
                "chunk {} has a length other than its table says",
                e.id.short()
            ));
        }
    }
    Ok(entries.len() as u64)
}

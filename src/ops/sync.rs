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
use crate::format::index::{index_bodies, IndexRecord};
use crate::format::keyfile::KeyFile;
use crate::format::manifest::Extent;
use crate::format::pack::{decode_footer, PACK_FOOTER_LEN};
use crate::format::replica::ReplicaMarker;
use crate::format::{ChunkId, IndexId, KeyId, ObjectHeader, ObjectKind, PackId, PointId};
use crate::index::ChunkIndex;
use crate::manifest::{walk, ManifestEvent};
use crate::ops::replica::{check_compatible, open_copy, RepoLocation};
use crate::ops::restore::read_indexed_chunk;
use crate::packer::parse_pack_table;
use crate::progress::{Progress, Tracker};
use crate::repo::{
    host_name, index_key, key_key, list_ids, now_unix, pack_key, point_key, Repository, CONFIG_KEY,
    REPLICA_KEY,
};

/// Packs copied at once when [`SyncOptions::threads`] is `None`: copying
/// is mostly waiting on storage, so more than the cores.
const DEFAULT_COPY_THREADS: usize = 4;

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
    /// Objects copied at once; 4 when `None`.
    pub threads: Option<usize>,
    /// Told the bytes copied so far and the bytes to copy.
    pub progress: Option<Progress>,
}

/// Counts of objects by kind, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectTally {
    pub packs: usize,
    pub index_files: usize,
    pub points: usize,
    pub key_files: usize,
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

/// The outcome of a sync.
#[derive(Debug, Clone)]
pub struct SyncReport {
    pub source: String,
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

/// One object to copy: its key and the hash its bytes must have.
struct Item {
    kind: Kind,
    key: String,
    hash: [u8; 32],
}

impl Item {
    fn pack(id: &PackId) -> Item {
        Item {
            kind: Kind::Pack,
            key: pack_key(id),
            hash: id.0,
        }
    }
    fn index(id: &IndexId) -> Item {
        Item {
            kind: Kind::Index,
            key: index_key(id),
            hash: id.0,
        }
    }
    fn point(id: &PointId) -> Item {
        Item {
            kind: Kind::Point,
            key: point_key(id),
            hash: id.0,
        }
    }
    fn key_file(id: &KeyId) -> Item {
        Item {
            kind: Kind::Key,
            key: key_key(id),
            hash: id.0,
        }
    }
}

/// The objects of both sides.
struct Listing {
    src_points: Vec<PointId>,
    src_index: Vec<IndexId>,
    src_packs: Vec<PackId>,
    src_keys: Vec<KeyId>,
    dst_points: HashSet<PointId>,
    dst_index: HashSet<IndexId>,
    dst_packs: HashSet<PackId>,
    dst_keys: HashSet<KeyId>,
}

impl Listing {
    fn read(src: &RepoLocation, dst: &RepoLocation) -> Result<Listing> {
        let (s, d) = (src.store().as_ref(), dst.store().as_ref());
        // Points before index files before packs: a backup writes them in
        // the opposite order, so every point listed here has its index
        // files listed, and every index file its packs, even while a
        // backup runs in the source.
        let src_points = list_ids(s, "points/")?;
        let src_index = list_ids(s, "index/")?;
        let src_packs = list_ids(s, "packs/")?;
        let src_keys = list_ids(s, "keys/")?;
        Ok(Listing {
            src_points,
            src_index,
            src_packs,
            src_keys,
            dst_points: list_ids(d, "points/")?.into_iter().collect(),
            dst_index: list_ids(d, "index/")?.into_iter().collect(),
            dst_packs: list_ids(d, "packs/")?.into_iter().collect(),
            dst_keys: list_ids(d, "keys/")?.into_iter().collect(),
        })
    }
}

/// What a full sync would copy: every object of the source that the
/// destination lacks.
pub(crate) struct MissingObjects {
    pub points: Vec<PointId>,
    pub index_files: Vec<IndexId>,
    pub packs: Vec<PackId>,
    pub key_files: Vec<KeyId>,
}

impl MissingObjects {
    /// The store keys of the objects.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.packs
            .iter()
            .map(pack_key)
            .chain(self.index_files.iter().map(index_key))
            .chain(self.points.iter().map(point_key))
            .chain(self.key_files.iter().map(key_key))
    }

    pub fn len(&self) -> usize {
        self.points.len() + self.index_files.len() + self.packs.len() + self.key_files.len()
    }
}

/// Every object of `src` that `dst` lacks.
pub(crate) fn missing_objects(src: &RepoLocation, dst: &RepoLocation) -> Result<MissingObjects> {
    let l = Listing::read(src, dst)?;
    Ok(MissingObjects {
        points: without(&l.src_points, &l.dst_points),
        index_files: without(&l.src_index, &l.dst_index),
        packs: without(&l.src_packs, &l.dst_packs),
        key_files: without(&l.src_keys, &l.dst_keys),
    })
}

fn without<T: Copy + Eq + std::hash::Hash>(all: &[T], present: &HashSet<T>) -> Vec<T> {
    all.iter()
        .filter(|x| !present.contains(x))
        .copied()
        .collect()
}

/// What this sync copies and writes.
#[derive(Default)]
struct Plan {
    packs: Vec<PackId>,
    index_files: Vec<IndexId>,
    key_files: Vec<KeyId>,
    points: Vec<PointId>,
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
    let src_config = src.read_config()?;
    let mut copied = ObjectTally::default();
    let created_with = prepare_destination(src, dst, &mut copied)?;
    let created = created_with.is_some();
    // With the key, the destination is opened with it (same key material).
    let dst_repo = key.map(|k| open_copy(k, dst)).transpose()?;
    if dst_repo.is_none() {
        check_compatible(&src_config, src.name(), &dst.read_config()?, dst.name())?;
    }

    let listing = Listing::read(src, dst)?;
    let selected = select_points(&listing.src_points, key, opts)?;
    let selective = key.is_some() && (!opts.points.is_empty() || !opts.tags.is_empty());
    let mut plan = Plan {
        key_files: without(&listing.src_keys, &listing.dst_keys),
        points: without(&selected, &listing.dst_points),
        ..Plan::default()
    };
    plan.skipped.extend(
        selected
            .iter()
            .filter(|p| listing.dst_points.contains(p))
            .map(Item::point),
    );
    plan.skipped.extend(
        listing
            .src_keys
            .iter()
            .filter(|k| listing.dst_keys.contains(k))
            .filter(|k| !created_with.as_ref().is_some_and(|c| c.contains(k)))
            .map(Item::key_file),
    );
    match (key, &dst_repo) {
        (Some(k), Some(d)) if selective => plan_selective(k, d, &listing, &mut plan)?,
        _ => {
            plan.packs = without(&listing.src_packs, &listing.dst_packs);
            plan.index_files = without(&listing.src_index, &listing.dst_index);
            plan.skipped.extend(
                listing
                    .src_packs
                    .iter()
                    .filter(|p| listing.dst_packs.contains(p))
                    .map(Item::pack),
            );
            plan.skipped.extend(
                listing
                    .src_index
                    .iter()
                    .filter(|i| listing.dst_index.contains(i))
                    .map(Item::index),
            );
        }
    }

    let mut skipped = ObjectTally::default();
    for item in &plan.skipped {
        skipped.add(item.kind, src.store().size(&item.key)?);
    }

    let copier = Copier {
        src,
        dst,
        key,
        verify_in: if opts.verify { dst_repo.as_ref() } else { None },
        threads: opts.threads.unwrap_or(DEFAULT_COPY_THREADS).max(1),
    };
    let packs: Vec<Item> = plan.packs.iter().map(Item::pack).collect();
    let index_files: Vec<Item> = plan.index_files.iter().map(Item::index).collect();
    let later: Vec<Item> = plan
        .key_files
        .iter()
        .map(Item::key_file)
        .chain(plan.points.iter().map(Item::point))
        .collect();
    let mut tracker = Tracker::new(opts.progress.clone(), 0);
    if opts.progress.is_some() {
        let mut total = 0;
        for item in packs.iter().chain(&index_files).chain(&later) {
            total += src.store().size(&item.key)?;
        }
        tracker = Tracker::new(opts.progress.clone(), total);
    }

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
            for body in index_bodies(&plan.own_index) {
                d.write_index_file(&body)?;
                index_files_written += 1;
            }
        }
        let outcome = copier.copy_all(items, &mut tracker, &mut copied);
        chunks_verified += outcome.chunks_verified;
        // What was copied is kept even when the stage failed: the next sync
        // skips it.
        dst.store().barrier()?;
        outcome.into_result(src.name(), dst.name())?;
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
        duration: started.elapsed(),
    })
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
    let leftover = dst.store().list("")?;
    if leftover
        .iter()
        .any(|k| !(k.starts_with("keys/") || k.starts_with("tmp/") || k == REPLICA_KEY))
    {
        return Err(Error::AlreadyExists(dst.name().to_string()));
    }
    let config_bytes = src.store().get(CONFIG_KEY)?;
    let present: HashSet<KeyId> = list_ids(dst.store().as_ref(), "keys/")?
        .into_iter()
        .collect();
    let keys: Vec<KeyId> = list_ids(src.store().as_ref(), "keys/")?;
    let mut copied_keys = HashSet::new();
    for id in &present {
        // Left by an interrupted creation, perhaps before its barrier.
        dst.store().ensure_durable(&key_key(id))?;
    }
    for id in keys.iter().filter(|k| !present.contains(k)) {
        let item = Item::key_file(id);
        let bytes =
            fetch_verified(src, &item, None).map_err(CopyFailure::into_error(src.name()))?;
        dst.store().put(&item.key, &bytes)?;
        copied.add(Kind::Key, bytes.len() as u64);
        copied_keys.insert(*id);
    }
    // Key files are durable before the config that makes the replica a
    // repository, as at init.
    dst.store().barrier()?;
    if dst.store().exists(REPLICA_KEY)? {
        dst.store().ensure_durable(REPLICA_KEY)?;
    } else {
        let marker = ReplicaMarker::new(src.name(), now_unix().0, &host_name());
        dst.store().put(REPLICA_KEY, &marker.encode())?;
    }
    dst.store().put(CONFIG_KEY, &config_bytes)?;
    dst.store().barrier()?;
    Ok(Some(copied_keys))
}

/// The points of `src_points` that `opts` selects.
fn select_points(
    src_points: &[PointId],
    key: Option<&Repository>,
    opts: &SyncOptions,
) -> Result<Vec<PointId>> {
    let needs_key = |what: &str| {
        Error::InvalidArgument(format!(
            "{what} needs the passphrase (recovery points are encrypted); a sync without it can select points only by id prefix"
        ))
    };
    let mut selected: Vec<PointId> = if opts.points.is_empty() {
        src_points.to_vec()
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
    Ok(selected)
}

/// Selective mode: the packs holding chunks that the points to send need
/// and the destination does not index, and the index records of those
/// packs (taken from the source's index) for the destination's own index
/// file. Packs already in the destination but not indexed there (left by
/// an interrupted sync) are indexed, not copied again.
fn plan_selective(
    src: &Repository,
    dst: &Repository,
    listing: &Listing,
    plan: &mut Plan,
) -> Result<()> {
    let mut bodies = Vec::new();
    for id in &listing.src_index {
        bodies.push(src.read_index_file(id)?);
    }
    let mut src_index = ChunkIndex::default();
    for b in &bodies {
        src_index.add_body(b);
    }
    src_index.finish();
    let dst_index = dst.load_index()?;

    let mut needed: HashSet<PackId> = HashSet::new();
    for point in &plan.points {
        let body = src.read_point(point)?;
        for disk in &body.disks {
            let mut visit = |ev: ManifestEvent<'_>| -> Result<()> {
                let id: &ChunkId = match ev {
                    ManifestEvent::Node(id) => id,
                    ManifestEvent::Extent {
                        extent: Extent::Data { id, .. },
                        ..
                    } => id,
                    ManifestEvent::Extent { .. } => return Ok(()),
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
            walk(&disk.manifest_root, disk.size, &mut load, &mut visit)?;
        }
    }
    let mut needed: Vec<PackId> = needed.into_iter().collect();
    needed.sort();
    for p in &needed {
        if listing.dst_packs.contains(p) {
            plan.skipped.push(Item::pack(p));
        } else {
            plan.packs.push(*p);
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
    let bytes = match src.store().get(&item.key) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(damaged("it is missing".into())),
        Err(e) => return Err(CopyFailure::Fatal(e.into())),
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
                    crate::format::index::IndexBody::decode(&body)
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
            .put(&item.key, &bytes)
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
    let bytes = repo.store().get(key).map_err(|e| e.to_string())?;
    if blake3::hash(&bytes).as_bytes() != hash {
        return Err("the copy does not match its name".into());
    }
    let entries = parse_pack_table(repo.sealer(), key, &bytes).map_err(|e| e.to_string())?;
    for e in &entries {
        let sealed = bytes
            .get(e.offset as usize..e.offset as usize + e.length as usize)
            .ok_or_else(|| format!("chunk {} lies beyond the end", e.id.short()))?;
        let plain = repo
            .sealer()
            .open_chunk(sealed, &e.id, repo.max_chunk_plain())
            .map_err(|err| format!("chunk {} does not open: {err}", e.id.short()))?;
        if plain.len() != e.raw_length as usize {
            return Err(format!(
                "chunk {} has a length other than its table says",
                e.id.short()
            ));
        }
    }
    Ok(entries.len() as u64)
}

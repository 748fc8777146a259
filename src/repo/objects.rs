//! Typed access to the content-named objects: index files, packs and
//! recovery points. Operations read and write objects only through these.

use std::collections::HashMap;

use super::layout::{
    forget_key, index_key, list_ids, list_ids_sized, pack_key, point_key, read_object, FORGOTTEN,
    INDEX, MAX_PACK_BYTES, PACKS, POINTS, POLICY_KEY,
};
use super::Repository;
use crate::error::{Error, ErrorCategory, Result};
use crate::format::forget::ForgetRecord;
use crate::format::index::{index_bodies, IndexBody, IndexRecord};
use crate::format::point::PointBody;
use crate::format::policy::StoredPolicy;
use crate::format::{ChunkId, ForgetId, IndexId, ObjectKind, PackId, PointId};
use crate::index::{ChunkIndex, ChunkLocation};
use crate::store::PutMode;

/// Recovery points with their bodies.
pub type Points = Vec<(PointId, PointBody)>;

/// An object that could not be used, and why: what lenient readers skip
/// and report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damaged {
    /// The object's key, e.g. `index/ab12...`.
    pub object: String,
    /// Why it does not open.
    pub reason: String,
}

impl Damaged {
    fn of(object: String, e: &Error) -> Self {
        Damaged {
            object,
            reason: e.reason(),
        }
    }
}

/// A missing object that something names (an index file names a pack, a
/// listing named an index file) is damage, as `From<StoreError>` says.
fn not_found_is_damage(e: Error) -> Error {
    match e {
        Error::Store(s) => s.into(),
        other => other,
    }
}

impl Repository {
    // ---- index -------------------------------------------------------------

    /// Ids of all index files.
    pub fn list_index_files(&self) -> Result<Vec<IndexId>> {
        Ok(list_ids(self.store.as_ref(), INDEX)?)
    }

    /// Reads one index file.
    pub fn read_index_file(&self, id: &IndexId) -> Result<IndexBody> {
        let key = index_key(id);
        let bytes = read_object(self.store.as_ref(), &key, None).map_err(not_found_is_damage)?;
        let body = self.open_object(&key, ObjectKind::Index, &id.0, &bytes)?;
        let body =
            IndexBody::decode(&body, self.format_major()).map_err(|e| Error::format(&key, e))?;
        // Readers allocate what an entry says a chunk takes: an entry
        // larger than any chunk of this repository is damage, refused here
        // for every reader at once.
        let max_plain = self.max_chunk_plain() as u64;
        use crate::format::blob::{FIXED_HEADER_LEN, NONCE_LEN, TAG_LEN};
        let overhead = (FIXED_HEADER_LEN + NONCE_LEN + TAG_LEN) as u64;
        let max_group = crate::format::MAX_BLOB_PLAINTEXT as u64;
        for r in &body.records {
            // A group is bounded like every blob that is not a chunk.
            let (max_sealed, inside) = if r.member == crate::format::group::SOLE {
                (max_plain + overhead, true)
            } else {
                (
                    max_group + overhead,
                    r.member as u64 + r.raw_length as u64 <= max_group,
                )
            };
            if r.raw_length as u64 > max_plain
                || !inside
                || r.length as u64 > max_sealed
                || r.offset as u64 + r.length as u64 > MAX_PACK_BYTES
            {
                return Err(Error::damaged(
                    &key,
                    format!(
                        "its entry for chunk {} says {} sealed bytes at offset {} ({} plain), more than a chunk of this repository can be",
                        r.id.short(),
                        r.length,
                        r.offset,
                        r.raw_length
                    ),
                ));
            }
        }
        Ok(body)
    }

    /// Writes an index file (after the packs it names are durable).
    pub fn write_index_file(&self, body: &IndexBody) -> Result<IndexId> {
        let bytes = self.seal_object(ObjectKind::Index, &body.encode(self.format_major()), false);
        let id = IndexId::hash_of(&bytes);
        self.store
            .put(&index_key(&id), &bytes, PutMode::Overwrite)?;
        Ok(id)
    }

    /// Writes index files listing `records` (each with its pack), as many
    /// as the format's bounds need; returns how many. The packs must be
    /// durable already.
    pub(crate) fn write_index_records(&self, records: &[(PackId, IndexRecord)]) -> Result<usize> {
        let bodies = index_bodies(records);
        for body in &bodies {
            self.write_index_file(body)?;
        }
        Ok(bodies.len())
    }

    /// Deletes an index file (prune and repair, once what replaces it is
    /// durable).
    pub(crate) fn delete_index_file(&self, id: &IndexId) -> Result<()> {
        Ok(self.store.delete(&index_key(id))?)
    }

    /// Loads every index file into memory.
    pub fn load_index(&self) -> Result<ChunkIndex> {
        let (index, damaged) = self.load_index_lenient()?;
        match damaged.into_iter().next() {
            Some(d) => Err(Error::damaged(d.object, d.reason)),
            None => Ok(index),
        }
    }

    /// Loads every index file that opens; one that is damaged is left out
    /// and returned, so that one bad file does not hide the chunks of all
    /// the others. Fails only on errors that are not damage (I/O, refusal).
    pub fn load_index_lenient(&self) -> Result<(ChunkIndex, Vec<Damaged>)> {
        let mut index = ChunkIndex::default();
        let mut damaged = Vec::new();
        for id in self.list_index_files()? {
            match self.read_index_file(&id) {
                Ok(body) => index.add_body(&body),
                Err(e) if e.category() == ErrorCategory::Damaged => {
                    damaged.push(Damaged::of(index_key(&id), &e))
                }
                Err(e) => return Err(e),
            }
        }
        index.finish();
        Ok((index, damaged))
    }

    /// Ids of all packs present in the store.
    pub fn list_packs(&self) -> Result<Vec<PackId>> {
        Ok(list_ids(self.store.as_ref(), PACKS)?)
    }

    /// Every pack present in the store, with its size in bytes.
    pub fn list_packs_sized(&self) -> Result<Vec<(PackId, u64)>> {
        Ok(list_ids_sized(self.store.as_ref(), PACKS)?)
    }

    /// Deletes a pack (prune and repair, once no index names it).
    pub(crate) fn delete_pack(&self, id: &PackId) -> Result<()> {
        Ok(self.store.delete(&pack_key(id))?)
    }

    /// Reads a whole pack (check --read-data, repair).
    pub(crate) fn read_pack(&self, id: &PackId) -> Result<Vec<u8>> {
        read_object(self.store.as_ref(), &pack_key(id), None).map_err(not_found_is_damage)
    }

    /// Reads and opens one chunk at a known location, verifying its id.
    pub fn read_chunk(&self, id: &ChunkId, loc: &ChunkLocation, pack: &PackId) -> Result<Vec<u8>> {
        Ok(self.read_sealed_chunk(id, loc, pack)?.1)
    }

    /// Reads and opens a manifest node: [`Repository::read_chunk`], through
    /// the store's cache of sealed blobs when it has one (remote vaults).
    /// A cached copy is opened and verified like one read from the pack;
    /// one that does not open is dropped and the node read from the pack.
    /// (A node is sealed alone, or in format 2 as a group of its own: the
    /// cache holds that sealed blob.)
    pub fn read_node(&self, id: &ChunkId, loc: &ChunkLocation, pack: &PackId) -> Result<Vec<u8>> {
        let name = id.to_hex();
        if let Some(sealed) = self.store.cached_blob(&name) {
            if let Ok(plain) = self.open_located(&sealed, id, loc, true) {
                return Ok(plain);
            }
            self.store.forget_blob(&name);
        }
        let (sealed, plain) = self.read_sealed_chunk(id, loc, pack)?;
        self.store.keep_blob(&name, &sealed);
        Ok(plain)
    }

    /// Opens chunk `id` from the sealed blob `loc` points at (its sealed
    /// chunk or group), recomputing its id when `verify_id`.
    pub(crate) fn open_located(
        &self,
        sealed: &[u8],
        id: &ChunkId,
        loc: &ChunkLocation,
        verify_id: bool,
    ) -> std::result::Result<Vec<u8>, crate::crypto::OpenError> {
        self.sealer.open_entry(
            sealed,
            id,
            loc.member,
            loc.raw_length,
            self.max_chunk_plain(),
            verify_id,
        )
    }

    /// A chunk's sealed blob (the sealed chunk or its group), read from its
    /// pack, and the chunk's plaintext, its id verified.
    fn read_sealed_chunk(
        &self,
        id: &ChunkId,
        loc: &ChunkLocation,
        pack: &PackId,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let key = pack_key(pack);
        let sealed = self
            .store
            .get_range(&key, loc.offset as u64, loc.length as usize)?;
        let plain = self
            .open_located(&sealed, id, loc, true)
            .map_err(|e| Error::damaged(format!("chunk {} in {}", id.short(), key), e))?;
        Ok((sealed, plain))
    }

    // ---- points ------------------------------------------------------------

    /// Ids of all recovery points, forgotten ones included.
    pub fn list_point_ids(&self) -> Result<Vec<PointId>> {
        Ok(list_ids(self.store.as_ref(), POINTS)?)
    }

    /// Reads one recovery point.
    pub fn read_point(&self, id: &PointId) -> Result<PointBody> {
        let key = point_key(id);
        let bytes = read_object(self.store.as_ref(), &key, None).map_err(|e| match e {
            Error::Store(e) if e.is_not_found() => Error::UnknownPoint(id.to_hex()),
            other => not_found_is_damage(other),
        })?;
        let body = self.open_object(&key, ObjectKind::Point, &id.0, &bytes)?;
        PointBody::decode(&body).map_err(|e| Error::format(key, e))
    }

    /// Writes a recovery point (after everything it references is durable).
    pub fn write_point(&self, body: &PointBody) -> Result<PointId> {
        body.validate()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let bytes = self.seal_object(ObjectKind::Point, &body.encode(), true);
        let id = PointId::hash_of(&bytes);
        self.store
            .put(&point_key(&id), &bytes, PutMode::Overwrite)?;
        self.store.barrier()?;
        Ok(id)
    }

    /// Deletes a recovery point (prune, once its grace period is over).
    pub(crate) fn delete_point(&self, id: &PointId) -> Result<()> {
        Ok(self.store.delete(&point_key(id))?)
    }

    /// All recovery points, forgotten ones included, oldest first.
    pub fn list_all_points(&self) -> Result<Vec<(PointId, PointBody)>> {
        let (points, damaged) = self.list_all_points_lenient()?;
        match damaged.into_iter().next() {
            Some(d) => Err(Error::damaged(d.object, d.reason)),
            None => Ok(points),
        }
    }

    /// Every recovery point that opens, forgotten ones included, oldest
    /// first; the objects under `points/` that do not open are returned
    /// apart, so that one bad object does not hide the other points.
    pub fn list_all_points_lenient(&self) -> Result<(Points, Vec<Damaged>)> {
        let mut points = Vec::new();
        let mut damaged = Vec::new();
        for id in self.list_point_ids()? {
            match self.read_point(&id) {
                Ok(p) => points.push((id, p)),
                // Pruned between the listing and the read.
                Err(Error::UnknownPoint(_)) => {}
                Err(e) if e.category() == ErrorCategory::Damaged => {
                    damaged.push(Damaged::of(point_key(&id), &e))
                }
                Err(e) => return Err(e),
            }
        }
        points.sort_by(|a, b| {
            (a.1.time_secs, a.1.time_nanos, a.0).cmp(&(b.1.time_secs, b.1.time_nanos, b.0))
        });
        Ok((points, damaged))
    }

    /// The recovery points that are not forgotten and open, oldest first;
    /// see [`Repository::list_points_lenient`] to learn of those that do
    /// not open.
    pub fn list_points(&self) -> Result<Vec<(PointId, PointBody)>> {
        Ok(self.list_points_lenient()?.0)
    }

    /// The recovery points that are not forgotten, oldest first, and the
    /// point objects that do not open.
    pub fn list_points_lenient(&self) -> Result<(Points, Vec<Damaged>)> {
        let forgotten = self.forgotten_points()?;
        let (mut points, damaged) = self.list_all_points_lenient()?;
        points.retain(|(id, _)| !forgotten.contains_key(id));
        Ok((points, damaged))
    }

    /// Resolves `latest` (the newest point that is not forgotten), a full
    /// id, or a unique id prefix (forgotten points included: they can be
    /// restored until pruned) to a point id.
    ///
    /// `latest~N` is the Nth point before the newest (`latest~1`: the one
    /// before it, yesterday's for daily backups), counting points that are
    /// not forgotten, in time order.
    pub fn resolve_point(&self, spec: &str) -> Result<PointId> {
        let back = match spec.strip_prefix("latest") {
            Some("") => Some(0),
            Some(rest) => match rest.strip_prefix('~').map(str::parse::<usize>) {
                Some(Ok(n)) => Some(n),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "'{spec}' is not a point: write latest, latest~N (the Nth point before the newest), or an id prefix"
                    )))
                }
            },
            None => None,
        };
        if let Some(back) = back {
            let points = self.list_points()?;
            return points
                .len()
                .checked_sub(back + 1)
                .map(|i| points[i].0)
                .ok_or_else(|| {
                    Error::UnknownPoint(match points.len() {
                        0 => format!("{spec} (the repository has no points)"),
                        n => {
                            format!("{spec} (the repository has {n} points that are not forgotten)")
                        }
                    })
                });
        }
        let lower = spec.to_ascii_lowercase();
        if lower.is_empty() || !lower.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::UnknownPoint(spec.to_string()));
        }
        let matches: Vec<PointId> = self
            .list_point_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&lower))
            .collect();
        match matches.len() {
            0 => Err(Error::UnknownPoint(spec.to_string())),
            1 => Ok(matches[0]),
            n => Err(Error::AmbiguousPoint {
                spec: spec.to_string(),
                count: n,
            }),
        }
    }

    // ---- forget records ------------------------------------------------------

    /// Every forget record, each verified against its name and opened.
    pub fn list_forget_records(&self) -> Result<Vec<(ForgetId, ForgetRecord)>> {
        let mut out = Vec::new();
        for id in list_ids::<ForgetId>(self.store.as_ref(), FORGOTTEN)? {
            match self.read_forget_record(&id) {
                Ok(r) => out.push((id, r)),
                // Removed (unforget, prune) between the listing and the read.
                Err(Error::Store(e)) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Reads one forget record.
    pub fn read_forget_record(&self, id: &ForgetId) -> Result<ForgetRecord> {
        let key = forget_key(id);
        let bytes = read_object(self.store.as_ref(), &key, None)?;
        let body = self.open_object(&key, ObjectKind::Forget, &id.0, &bytes)?;
        ForgetRecord::decode(&body).map_err(|e| Error::format(&key, e))
    }

    /// The forgotten points, each with its earliest forget record (the
    /// grace period counts from the first time it was forgotten).
    pub fn forgotten_points(&self) -> Result<HashMap<PointId, ForgetRecord>> {
        let mut out: HashMap<PointId, ForgetRecord> = HashMap::new();
        for (_, r) in self.list_forget_records()? {
            match out.get(&r.point) {
                Some(old) if old.time_secs <= r.time_secs => {}
                _ => {
                    out.insert(r.point, r);
                }
            }
        }
        Ok(out)
    }

    /// Writes a forget record, durable when this returns.
    pub(crate) fn write_forget_record(&self, record: &ForgetRecord) -> Result<ForgetId> {
        let bytes = self.seal_object(ObjectKind::Forget, &record.encode(), false);
        let id = ForgetId::hash_of(&bytes);
        self.store
            .put(&forget_key(&id), &bytes, PutMode::Overwrite)?;
        self.store.barrier()?;
        Ok(id)
    }

    /// Deletes a forget record (unforget, or prune with its point).
    pub(crate) fn delete_forget_record(&self, id: &ForgetId) -> Result<()> {
        Ok(self.store.delete(&forget_key(id))?)
    }

    // ---- policy --------------------------------------------------------------

    /// The stored retention policy, or `None` when none was set.
    pub fn read_policy(&self) -> Result<Option<StoredPolicy>> {
        let bytes = match read_object(self.store.as_ref(), POLICY_KEY, None) {
            Ok(b) => b,
            Err(Error::Store(e)) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let body = self.open_named_object(POLICY_KEY, ObjectKind::Policy, &bytes)?;
        StoredPolicy::decode(&body)
            .map(Some)
            .map_err(|e| Error::format(POLICY_KEY, e))
    }

    /// Stores the retention policy, replacing any earlier one.
    pub fn write_policy(&self, policy: &StoredPolicy) -> Result<()> {
        policy
            .validate()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let bytes = self.seal_object(ObjectKind::Policy, &policy.encode(), false);
        self.store.put(POLICY_KEY, &bytes, PutMode::Overwrite)?;
        self.store.barrier()?;
        Ok(())
    }
}

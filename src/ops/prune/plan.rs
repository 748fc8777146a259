//! The mark-and-plan phase of prune: which points go, which chunks live,
//! which copy of each live chunk stays, and what becomes of every pack.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::{PruneOptions, PruneReport};
use crate::error::{Error, Result};
use crate::format::policy::DEFAULT_GRACE_SECS;
use crate::format::{ChunkId, ForgetId, IndexId, PackId, PointId};
use crate::index::{ChunkIndex, PrefixTable};
use crate::manifest::{ReachWalk, Reached};
use crate::repo::layout::chunk_name;
use crate::repo::{now_unix, Repository};

/// One index entry, with the index file that lists it.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    pub id: ChunkId,
    /// Number of the pack in [`Table::packs`].
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    /// Member offset in its group, or [`crate::format::group::SOLE`].
    pub member: u32,
    pub raw_length: u32,
    /// Number of the index file in [`Table::files`].
    pub file: u32,
}

/// Every entry of every index file, sorted by chunk id (a chunk stored
/// twice has two entries, side by side).
#[derive(Default)]
pub(super) struct Table {
    pub entries: Vec<Entry>,
    pub packs: Vec<PackId>,
    pack_numbers: HashMap<PackId, u32>,
    pub files: Vec<IndexId>,
    buckets: PrefixTable,
}

impl Table {
    fn pack_number(&mut self, pack: PackId) -> u32 {
        if let Some(n) = self.pack_numbers.get(&pack) {
            return *n;
        }
        let n = self.packs.len() as u32;
        self.packs.push(pack);
        self.pack_numbers.insert(pack, n);
        n
    }

    /// Sorts the entries by id and builds the prefix table.
    fn sort(&mut self) {
        self.entries.sort_unstable_by_key(|e| e.id);
        self.buckets = PrefixTable::build(self.entries.iter().map(|e| &e.id));
    }

    /// The entries of chunk `id` (empty if no index lists it).
    pub fn range(&self, id: &ChunkId) -> Range<usize> {
        let lo = self.buckets.bucket(id).start;
        let bucket = &self.entries[self.buckets.bucket(id)];
        let start = bucket.partition_point(|e| e.id < *id);
        let end = start + bucket[start..].partition_point(|e| e.id == *id);
        lo + start..lo + end
    }
}

/// What becomes of a pack the index names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PackFate {
    /// Stays as it is.
    Keep,
    /// Its chosen copies move to new packs; then it is deleted.
    Repack,
    /// Holds no chosen copy: deleted.
    Delete,
    /// Named by the index but not in the store: its entries are dropped.
    Missing,
}

/// The plan.
pub(super) struct Plan {
    pub table: Table,
    /// Per entry: its chunk is reached by a kept point.
    pub live: Vec<bool>,
    /// Per entry: the copy of its (live) chunk that stays.
    pub chosen: Vec<bool>,
    /// Per pack number: its size in the store (0 when missing) and fate.
    pub sizes: Vec<u64>,
    pub fates: Vec<PackFate>,
    /// Points the plan keeps and walked.
    pub walked: HashSet<PointId>,
    /// Forgotten points past their grace period, and their forget records.
    pub expired: Vec<PointId>,
    /// Forget records to delete with them, and those naming no point.
    pub records_to_delete: Vec<ForgetId>,
    /// Forgotten points still in their grace period.
    pub in_grace: usize,
    /// The walk, kept to skip the subtrees already marked when the
    /// exclusive phase walks points written meanwhile.
    pub walker: ReachWalk,
    /// The plan's time, Unix seconds, and the grace period.
    pub now: i64,
    pub grace_secs: u64,
    pub ignore_grace: bool,
    max_unused_percent: f64,
}

impl Plan {
    pub fn make(repo: &Repository, opts: &PruneOptions) -> Result<Plan> {
        let now = opts.now.unwrap_or_else(|| now_unix().0);
        let grace_secs = repo
            .read_policy()?
            .map(|p| p.grace_secs)
            .unwrap_or(DEFAULT_GRACE_SECS);
        // Points (and forget records) before index files before packs: a
        // backup writes them the other way round, so every point listed has
        // its chunks in what is listed next.
        let point_ids = repo.list_point_ids()?;
        let records = repo.list_forget_records()?;
        let mut plan = Plan {
            table: Table::default(),
            live: Vec::new(),
            chosen: Vec::new(),
            sizes: Vec::new(),
            fates: Vec::new(),
            walked: HashSet::new(),
            expired: Vec::new(),
            records_to_delete: Vec::new(),
            in_grace: 0,
            walker: ReachWalk::new(repo.format_major()),
            now,
            grace_secs,
            ignore_grace: opts.ignore_grace,
            max_unused_percent: opts.max_unused_percent,
        };
        let (expired, in_grace, records_to_delete) = plan.classify_points(&point_ids, &records);
        plan.expired = expired;
        plan.in_grace = in_grace;
        plan.records_to_delete = records_to_delete;

        plan.load_index(repo)?;
        let present: HashMap<PackId, u64> = repo.list_packs_sized()?.into_iter().collect();
        plan.sizes = plan
            .table
            .packs
            .iter()
            .map(|p| present.get(p).copied().unwrap_or(0))
            .collect();
        plan.fates = plan
            .table
            .packs
            .iter()
            .map(|p| {
                if present.contains_key(p) {
                    PackFate::Keep
                } else {
                    PackFate::Missing
                }
            })
            .collect();
        plan.live = vec![false; plan.table.entries.len()];
        plan.chosen = vec![false; plan.table.entries.len()];

        let expired: HashSet<PointId> = plan.expired.iter().copied().collect();
        for id in point_ids.iter().filter(|p| !expired.contains(p)) {
            plan.walk_point(repo, id, None, &mut |_| {})?;
        }
        plan.choose_copies();
        plan.choose_fates();
        Ok(plan)
    }

    /// Which forgotten points expired, how many are still in their grace
    /// period, and which forget records go: those of expired points, and
    /// those naming no point.
    pub fn classify_points(
        &self,
        point_ids: &[PointId],
        records: &[(ForgetId, crate::format::forget::ForgetRecord)],
    ) -> (Vec<PointId>, usize, Vec<ForgetId>) {
        let present: HashSet<PointId> = point_ids.iter().copied().collect();
        let mut first_forgotten: HashMap<PointId, i64> = HashMap::new();
        for (_, r) in records {
            let t = first_forgotten.entry(r.point).or_insert(r.time_secs);
            *t = (*t).min(r.time_secs);
        }
        let mut expired = Vec::new();
        let mut in_grace = 0;
        for (point, at) in &first_forgotten {
            if !present.contains(point) {
                continue;
            }
            if self.ignore_grace || at.saturating_add(self.grace_secs as i64) <= self.now {
                expired.push(*point);
            } else {
                in_grace += 1;
            }
        }
        expired.sort();
        let gone: HashSet<PointId> = expired.iter().copied().collect();
        let records_to_delete = records
            .iter()
            .filter(|(_, r)| gone.contains(&r.point) || !present.contains(&r.point))
            .map(|(id, _)| *id)
            .collect();
        (expired, in_grace, records_to_delete)
    }

    fn load_index(&mut self, repo: &Repository) -> Result<()> {
        for file in repo.list_index_files()? {
            let body = repo.read_index_file(&file)?;
            let f = self.table.files.len() as u32;
            self.table.files.push(file);
            let numbers: Vec<u32> = body
                .packs
                .iter()
                .map(|p| self.table.pack_number(*p))
                .collect();
            self.table.entries.reserve(body.records.len());
            for r in &body.records {
                self.table.entries.push(Entry {
                    id: r.id,
                    pack: numbers[r.pack as usize],
                    offset: r.offset,
                    length: r.length,
                    member: r.member,
                    raw_length: r.raw_length,
                    file: f,
                });
            }
        }
        self.table.sort();
        Ok(())
    }

    /// Marks every chunk point `id` reaches, reading only the manifest nodes
    /// not walked before; `newly_live` is told each entry range that turns
    /// live. Fails if the point cannot be read, a manifest node is damaged,
    /// or a chunk is in no index: prune must see everything a point needs
    /// before it deletes anything.
    pub fn walk_point(
        &mut self,
        repo: &Repository,
        id: &PointId,
        newer: Option<&ChunkIndex>,
        newly_live: &mut dyn FnMut(Range<usize>),
    ) -> Result<()> {
        let point = match repo.read_point(id) {
            Ok(p) => p,
            Err(e) => {
                return Err(refuse(format!(
                    "recovery point {} cannot be read: {e}",
                    id.short()
                )))
            }
        };
        self.walked.insert(*id);
        let (table, live, walker) = (&self.table, &mut self.live, &mut self.walker);
        for disk in &point.disks {
            let mut load = |chunk: &ChunkId| -> Result<Vec<u8>> {
                if let Some(loc) = newer.and_then(|n| n.get(chunk)) {
                    let pack = newer.map(|n| n.pack_id(loc.pack)).unwrap_or_default();
                    return repo.read_node(chunk, &loc, &pack);
                }
                let range = table.range(chunk);
                let mut last = None;
                for e in &table.entries[range] {
                    let loc = crate::index::ChunkLocation {
                        pack: e.pack,
                        offset: e.offset,
                        length: e.length,
                        member: e.member,
                        raw_length: e.raw_length,
                    };
                    match repo.read_node(chunk, &loc, &table.packs[e.pack as usize]) {
                        Ok(b) => return Ok(b),
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.unwrap_or(Error::MissingChunk {
                    chunk: chunk.to_hex(),
                }))
            };
            let mut visit = |ev: Reached<'_>| -> Result<()> {
                let chunk = match ev {
                    Reached::Node {
                        id, first: true, ..
                    }
                    | Reached::Data { id, .. } => id,
                    Reached::Node { .. } => return Ok(()),
                    Reached::Damaged { error, .. } => {
                        return Err(refuse(format!(
                            "the manifest of disk '{}' in point {} cannot be walked: {error}",
                            disk.name,
                            id.short()
                        )))
                    }
                };
                let range = table.range(chunk);
                if range.is_empty() && newer.is_some_and(|n| n.contains(chunk)) {
                    // Stored since the plan, in packs it does not touch.
                    return Ok(());
                }
                if range.is_empty() {
                    return Err(refuse(format!(
                        "{} of point {} is in no index",
                        chunk_name(chunk),
                        id.short()
                    )));
                }
                if !live[range.start] {
                    for i in range.clone() {
                        live[i] = true;
                    }
                    newly_live(range);
                }
                Ok(())
            };
            walker.walk(&disk.manifest_root, disk.size, &mut load, &mut visit)?;
        }
        Ok(())
    }

    /// Chooses, for each live chunk, the copy that stays: in a present
    /// pack, preferring the pack with the most live bytes (so duplicates
    /// left by concurrent or interrupted backups drain out of the emptier
    /// packs), then the lowest pack id.
    fn choose_copies(&mut self) {
        let mut live_bytes = vec![0u64; self.table.packs.len()];
        for (i, e) in self.table.entries.iter().enumerate() {
            if self.live[i] {
                live_bytes[e.pack as usize] += e.length as u64;
            }
        }
        let mut i = 0;
        while i < self.table.entries.len() {
            let id = self.table.entries[i].id;
            let mut j = i;
            while j < self.table.entries.len() && self.table.entries[j].id == id {
                j += 1;
            }
            if self.live[i] {
                let best = (i..j)
                    .filter(|&k| {
                        self.fates[self.table.entries[k].pack as usize] != PackFate::Missing
                    })
                    .max_by(|&a, &b| {
                        let (pa, pb) = (
                            self.table.entries[a].pack as usize,
                            self.table.entries[b].pack as usize,
                        );
                        live_bytes[pa]
                            .cmp(&live_bytes[pb])
                            .then(self.table.packs[pb].cmp(&self.table.packs[pa]))
                    });
                if let Some(k) = best {
                    self.chosen[k] = true;
                }
            }
            i = j;
        }
    }

    /// The stored bytes each entry stands for: a chunk sealed alone, its
    /// sealed length; a chunk of a group, its share of the group's sealed
    /// length, in proportion to its plaintext (repacking seals the chunks
    /// of a group that stay as a smaller group, so each chunk that goes
    /// frees about its share).
    fn weights(&self) -> Vec<u64> {
        let entries = &self.table.entries;
        let mut plain_in_group: HashMap<(u32, u32), u64> = HashMap::new();
        for e in entries
            .iter()
            .filter(|e| e.member != crate::format::group::SOLE)
        {
            *plain_in_group.entry((e.pack, e.offset)).or_default() += e.raw_length as u64;
        }
        entries
            .iter()
            .map(|e| match plain_in_group.get(&(e.pack, e.offset)) {
                Some(&total) if e.member != crate::format::group::SOLE => {
                    (e.length as u64 * e.raw_length as u64).div_ceil(total.max(1))
                }
                _ => e.length as u64,
            })
            .collect()
    }

    /// Decides each pack's fate from the chosen copies.
    fn choose_fates(&mut self) {
        let n = self.table.packs.len();
        let (mut used, mut unused) = (vec![0u64; n], vec![0u64; n]);
        let weights = self.weights();
        for (i, e) in self.table.entries.iter().enumerate() {
            if self.chosen[i] {
                used[e.pack as usize] += weights[i];
            } else {
                unused[e.pack as usize] += weights[i];
            }
        }
        let mut candidates = Vec::new();
        for p in 0..n {
            if self.fates[p] == PackFate::Missing {
                continue;
            }
            if used[p] == 0 {
                self.fates[p] = PackFate::Delete;
            } else if unused[p] > 0 {
                candidates.push(p);
            }
        }
        let live_total: u64 = used.iter().sum();
        let tolerated = (live_total as f64 * self.max_unused_percent / 100.0) as u64;
        let mut left: u64 = candidates.iter().map(|&p| unused[p]).sum();
        // Most wasteful first: the fewest bytes copied per byte freed.
        candidates.sort_by(|&a, &b| {
            let ra = unused[a] as f64 / (used[a] + unused[a]) as f64;
            let rb = unused[b] as f64 / (used[b] + unused[b]) as f64;
            rb.total_cmp(&ra)
                .then(self.table.packs[a].cmp(&self.table.packs[b]))
        });
        for p in candidates {
            if left <= tolerated {
                break;
            }
            self.fates[p] = PackFate::Repack;
            left -= unused[p];
        }
    }

    /// The report of the plan, before anything is done.
    pub fn report(&self, dry_run: bool) -> PruneReport {
        let mut r = PruneReport {
            dry_run,
            points_in_grace: self.in_grace,
            ..PruneReport::default()
        };
        self.figures(&mut r, None);
        r
    }

    /// Fills in the figures of `r` from the plan as it stands. `written`:
    /// the bytes of the packs repacking wrote, once it has (before, they
    /// are estimated by the bytes the repack will copy).
    pub fn figures(&self, r: &mut PruneReport, written: Option<u64>) {
        r.points_kept = self.walked.len();
        r.points_removed = self.expired.clone();
        r.forget_records_removed = self.records_to_delete.len();
        r.pack_bytes_before = self.sizes.iter().sum::<u64>() + r.orphan_bytes;
        let (mut live, mut removed, mut live_bytes, mut repacked, mut unused) = (0, 0, 0, 0, 0);
        let entries = &self.table.entries;
        let weights = self.weights();
        let mut i = 0;
        while i < entries.len() {
            let id = entries[i].id;
            if self.live[i] {
                live += 1;
            }
            while i < entries.len() && entries[i].id == id {
                let fate = self.fates[entries[i].pack as usize];
                if self.chosen[i] {
                    live_bytes += weights[i];
                    if fate == PackFate::Repack {
                        repacked += weights[i];
                    }
                } else if fate == PackFate::Keep {
                    unused += weights[i];
                } else {
                    removed += 1;
                }
                i += 1;
            }
        }
        r.chunks_live = live;
        r.chunks_removed = removed;
        r.live_bytes = live_bytes;
        r.unused_bytes_after = unused;
        r.bytes_repacked = repacked;
        let (mut deleted, mut repacked_packs, mut deleted_bytes) = (0, 0, 0);
        for (p, fate) in self.fates.iter().enumerate() {
            match fate {
                PackFate::Delete => deleted += 1,
                PackFate::Repack => repacked_packs += 1,
                PackFate::Keep | PackFate::Missing => continue,
            }
            deleted_bytes += self.sizes[p];
        }
        r.packs_deleted = deleted;
        r.packs_repacked = repacked_packs;
        let written = written.unwrap_or(repacked);
        r.bytes_freed = (deleted_bytes + r.orphan_bytes).saturating_sub(written);
        r.pack_bytes_after = r.pack_bytes_before + written - deleted_bytes - r.orphan_bytes;
    }
}

/// Why prune will not go on: it would have to delete without seeing all
/// that a point needs.
pub(super) fn refuse(reason: String) -> Error {
    Error::Damaged {
        object: "the repository".into(),
        reason: format!(
            "{reason}; prune deletes nothing while a point's data cannot be accounted for. Run 'diskvault check' (and 'diskvault repair' from a replica), then prune again"
        ),
    }
}

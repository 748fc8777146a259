//! The changing phases of prune: repack under the shared lock, then delete
//! under the exclusive one, each step durable before the next.

use std::collections::{HashMap, HashSet};

use super::plan::{refuse, PackFate, Plan};
use super::PruneReport;
use crate::error::Result;
use crate::format::group::SOLE;
use crate::format::index::IndexRecord;
use crate::format::{IndexId, PackId, PointId};
use crate::index::ChunkIndex;
use crate::packer::{Member, PackWriter};
use crate::progress::{Progress, Tracker};
use crate::repo::layout::STALE_TEMPORARY;
use crate::repo::{RepoLock, Repository};

pub(super) fn execute(
    repo: &Repository,
    shared: &RepoLock,
    plan: &mut Plan,
    report: &mut PruneReport,
    progress: Option<&Progress>,
) -> Result<()> {
    let written = repack(repo, plan, report, progress)?;

    // Everything above only added; from here on objects are deleted, so no
    // other command may run. Waits for running backups to finish.
    let exclusive = repo.lock_exclusive_beside(shared, "prune")?;
    shared.check()?;
    catch_up(repo, plan, report)?;
    exclusive.check()?;

    // 1. Points past their grace period, then their forget records.
    for point in &plan.expired {
        repo.delete_point(point)?;
    }
    repo.store().barrier()?;
    for record in &plan.records_to_delete {
        repo.delete_forget_record(record)?;
    }
    repo.store().barrier()?;

    // 2. Index files that name packs about to go, rewritten without them.
    rewrite_index(repo, plan, report)?;
    exclusive.check()?;

    // 3. The packs.
    for (p, fate) in plan.fates.iter().enumerate() {
        if matches!(fate, PackFate::Delete | PackFate::Repack) {
            repo.delete_pack(&plan.table.packs[p])?;
        }
    }
    repo.store().barrier()?;
    let _ = repo.store().remove_stale_temporaries(STALE_TEMPORARY);
    plan.figures(report, Some(written));
    Ok(())
}

/// Copies the chosen copies of the packs to repack, still sealed, into new
/// packs, and indexes them. A pack whose bytes do not match its name is
/// left alone (and reported): copying from it could spread its damage.
/// Returns the bytes of the packs written.
fn repack(
    repo: &Repository,
    plan: &mut Plan,
    report: &mut PruneReport,
    progress: Option<&Progress>,
) -> Result<u64> {
    let mut by_pack: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, e) in plan.table.entries.iter().enumerate() {
        if plan.chosen[i] && plan.fates[e.pack as usize] == PackFate::Repack {
            by_pack.entry(e.pack).or_default().push(i);
        }
    }
    let mut packs: Vec<u32> = by_pack.keys().copied().collect();
    packs.sort_by_key(|p| plan.table.packs[*p as usize]);
    // How many chunks the index lists in each group of those packs.
    let mut unit_sizes: HashMap<(u32, u32), usize> = HashMap::new();
    for e in &plan.table.entries {
        if e.member != SOLE && by_pack.contains_key(&e.pack) {
            *unit_sizes.entry((e.pack, e.offset)).or_default() += 1;
        }
    }
    let to_read: u64 = packs.iter().map(|&p| plan.sizes[p as usize]).sum();
    let mut tracker = Tracker::new(progress.cloned(), to_read);
    if let Some(p) = progress {
        p.begin("repack", to_read);
    }
    let mut writer = PackWriter::new(repo);
    for p in packs {
        let id = plan.table.packs[p as usize];
        let bytes = repo.read_pack(&id)?;
        tracker.advance(plan.sizes[p as usize]);
        if PackId::hash_of(&bytes) != id {
            plan.fates[p as usize] = PackFate::Keep;
            report.damaged_packs.push(crate::repo::pack_key(&id));
            continue;
        }
        let mut entries = by_pack.remove(&p).unwrap_or_default();
        entries.sort_by_key(|&i| (plan.table.entries[i].offset, plan.table.entries[i].member));
        // Each sealed blob once: copied verbatim when every chunk the
        // index lists in it stays; a group with chunks that go is opened
        // and its chunks that stay are sealed again as a smaller group.
        let mut rest = &entries[..];
        while let Some(&first) = rest.first() {
            let e = plan.table.entries[first];
            let n = rest
                .iter()
                .take_while(|&&i| plan.table.entries[i].offset == e.offset)
                .count();
            let start = e.offset as usize;
            let Some(sealed) = bytes.get(start..start + e.length as usize) else {
                return Err(refuse(format!(
                    "{} is shorter than its index says",
                    crate::repo::pack_key(&id)
                )));
            };
            let members: Vec<Member> = rest[..n]
                .iter()
                .map(|&i| {
                    let m = plan.table.entries[i];
                    Member {
                        id: m.id,
                        member: m.member,
                        raw_length: m.raw_length,
                    }
                })
                .collect();
            let listed = unit_sizes.get(&(p, e.offset)).copied().unwrap_or(0);
            if e.member != SOLE && listed > n {
                let (regrouped, placed) = regroup(repo, &id, sealed, &members)?;
                writer.add(&regrouped, &placed)?;
            } else {
                writer.add(sealed, &members)?;
            }
            rest = &rest[n..];
        }
    }
    let written = writer.finish()?;
    report.packs_written = written.packs;
    report.index_files_written += written.index_files;
    Ok(written.bytes)
}

/// Seals the chunks of a group that stay as a new group, after checking
/// each against its id.
fn regroup(
    repo: &Repository,
    pack: &PackId,
    sealed: &[u8],
    keep: &[Member],
) -> Result<(Vec<u8>, Vec<Member>)> {
    let damaged = |e: crate::crypto::OpenError| {
        refuse(format!(
            "a chunk group in {} does not open ({e})",
            crate::repo::pack_key(pack)
        ))
    };
    let plain = repo.sealer().open_group(sealed).map_err(damaged)?;
    let mut members = Vec::with_capacity(keep.len());
    for m in keep {
        let bytes = repo
            .sealer()
            .group_member(&plain, &m.id, m.member, m.raw_length, true)
            .map_err(damaged)?;
        members.push((m.id, bytes));
    }
    let regrouped = repo
        .sealer()
        .seal_group(&members, repo.config().compression);
    let offsets = crate::format::group::member_offsets(members.iter().map(|(_, b)| b.len()));
    let placed = keep
        .iter()
        .zip(offsets)
        .map(|(m, member)| Member { member, ..*m })
        .collect();
    Ok((regrouped, placed))
}

/// Under the exclusive lock: takes in what changed since the plan. Points
/// written or unforgotten meanwhile are walked, and packs planned to go
/// that hold the only copy of a chunk they need are kept; points forgotten
/// meanwhile stay. Packs no index names are added to the deletions.
fn catch_up(repo: &Repository, plan: &mut Plan, report: &mut PruneReport) -> Result<()> {
    let point_ids = repo.list_point_ids()?;
    let records = repo.list_forget_records()?;
    let (still_expired, _, _) = plan.classify_points(&point_ids, &records);
    let still: HashSet<PointId> = still_expired.iter().copied().collect();
    // Only points the plan did not walk may be deleted: a point forgotten
    // since the plan was walked, and its chunks kept, so it simply stays
    // (with its forget record). A point unforgotten since stays too.
    plan.expired.retain(|p| still.contains(p));
    let expired: HashSet<PointId> = plan.expired.iter().copied().collect();
    let present: HashSet<PointId> = point_ids.iter().copied().collect();
    plan.records_to_delete = records
        .iter()
        .filter(|(_, r)| expired.contains(&r.point) || !present.contains(&r.point))
        .map(|(id, _)| *id)
        .collect();

    // Chunks in index files written since the plan (backups that ran
    // meanwhile, and this prune's repacking) live in packs the plan does
    // not touch.
    let known: HashSet<IndexId> = plan.table.files.iter().copied().collect();
    let mut new_bodies = Vec::new();
    let mut named_now: HashSet<PackId> = plan.table.packs.iter().copied().collect();
    let listed: HashSet<IndexId> = repo.list_index_files()?.into_iter().collect();
    if let Some(gone) = known.iter().find(|f| !listed.contains(f)) {
        return Err(refuse(format!(
            "index file {} disappeared during the prune (another command deleted it)",
            gone.short()
        )));
    }
    for file in listed.iter().filter(|f| !known.contains(f)) {
        let body = repo.read_index_file(file)?;
        named_now.extend(body.packs.iter().copied());
        new_bodies.push(body);
    }

    let mut newer = ChunkIndex::default();
    for body in &new_bodies {
        newer.add_body(body);
    }
    newer.finish();
    let mut newly_live = Vec::new();
    let unwalked: Vec<PointId> = point_ids
        .iter()
        .filter(|p| !expired.contains(p) && !plan.walked.contains(p))
        .copied()
        .collect();
    for id in &unwalked {
        plan.walk_point(repo, id, Some(&newer), &mut |r| newly_live.push(r))?;
    }
    for range in newly_live {
        // A copy survives in a pack that stays, or in one stored since.
        let fate_of = |i: usize| plan.fates[plan.table.entries[i].pack as usize];
        if newer.contains(&plan.table.entries[range.start].id)
            || range.clone().any(|i| fate_of(i) == PackFate::Keep)
        {
            continue;
        }
        let Some(i) = range.clone().find(|&i| fate_of(i) != PackFate::Missing) else {
            return Err(refuse(format!(
                "{} is needed by a new point and all its copies are missing",
                crate::repo::layout::chunk_name(&plan.table.entries[range.start].id)
            )));
        };
        plan.fates[plan.table.entries[i].pack as usize] = PackFate::Keep;
        plan.chosen[i] = true;
        report.packs_kept_for_new_points += 1;
    }
    // Packs no index names: left by backups, syncs or prunes that were
    // killed before their index file. No writer runs now.
    for (pack, size) in repo.list_packs_sized()? {
        if !named_now.contains(&pack) {
            repo.delete_pack(&pack)?;
            report.orphan_packs_deleted += 1;
            report.orphan_bytes += size;
        }
    }
    Ok(())
}

/// Writes, for every index file naming a pack that goes, a new one without
/// that pack's entries; once they are durable, deletes the old ones.
fn rewrite_index(repo: &Repository, plan: &Plan, report: &mut PruneReport) -> Result<()> {
    let goes = |pack: u32| plan.fates[pack as usize] != PackFate::Keep;
    let mut touched = vec![false; plan.table.files.len()];
    for e in &plan.table.entries {
        if goes(e.pack) {
            touched[e.file as usize] = true;
        }
    }
    let mut kept: Vec<(PackId, IndexRecord)> = Vec::new();
    for e in &plan.table.entries {
        if touched[e.file as usize] && !goes(e.pack) {
            kept.push((
                plan.table.packs[e.pack as usize],
                IndexRecord {
                    id: e.id,
                    pack: 0,
                    offset: e.offset,
                    length: e.length,
                    member: e.member,
                    raw_length: e.raw_length,
                },
            ));
        }
    }
    // One entry per (pack, chunk): a file listed twice adds nothing.
    kept.sort_by_key(|(pack, r)| (*pack, r.id));
    kept.dedup_by(|a, b| a.0 == b.0 && a.1.id == b.1.id);
    if !touched.iter().any(|t| *t) {
        return Ok(());
    }
    report.index_files_written += repo.write_index_records(&kept)?;
    repo.store().barrier()?;
    for (f, id) in plan.table.files.iter().enumerate() {
        if touched[f] {
            repo.delete_index_file(id)?;
            report.index_files_removed += 1;
        }
    }
    repo.store().barrier()?;
    Ok(())
}

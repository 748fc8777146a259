//! `check`: verify the repository's structure and, optionally, every byte.
//!
//! Structure: every index file opens; every pack the index names exists and
//! is long enough; every recovery point opens and its manifest walks
//! cleanly; every chunk a manifest references is indexed in a present pack;
//! every key file is intact and belongs to this repository.
//! With `read_data`: every pack is read whole, its hash checked against its
//! name and every indexed chunk in it opened and verified. Problems are
//! collected, not fatal, and each names the recovery points it affects.

use std::collections::{BTreeMap, HashMap, HashSet};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::{ChunkId, ForgetId, PackId, PointId};
use crate::index::{ChunkIndex, ChunkLocation};
use crate::manifest::{ReachWalk, Reached};
use crate::packer::parse_pack_table;
use crate::progress::{Progress, SharedTracker};
use crate::repo::layout::{
    chunk_name, forget_key, list_ids, stray_keys, FORGOTTEN, STALE_TEMPORARY, TMP,
};
use crate::repo::reader::read_indexed_chunk;
use crate::repo::{index_key, pack_key, point_key, Repository};

/// How thorough a check is.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Read and verify every chunk, not only the structure.
    pub read_data: bool,
    /// Worker threads; all cores when `None`.
    pub threads: Option<usize>,
    /// With `read_data`: told the bytes of packs read so far and the bytes
    /// of every indexed pack (phase `"check"`).
    pub progress: Option<Progress>,
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The damaged or missing object, e.g. `packs/ab/ab12...` or `chunk 1a2b3c4d`.
    pub object: String,
    /// What is wrong with it.
    pub reason: String,
    /// Recovery points that cannot be fully restored because of it.
    pub affected_points: Vec<PointId>,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// Everything found wrong; empty for a healthy repository.
    pub problems: Vec<Problem>,
    /// Recovery points checked.
    pub points: usize,
    /// Index files read.
    pub index_files: usize,
    /// Pack files checked.
    pub packs: usize,
    /// Distinct chunks in the index.
    pub chunks: usize,
    /// Chunks opened and verified (with `read_data`).
    pub chunks_verified: usize,
    /// Bytes read from packs (with `read_data`).
    pub bytes_read: u64,
    /// Packs no index lists: left by an interrupted backup, reused by the next.
    pub unindexed_packs: usize,
    /// Temporary files older than an hour, left by writers that were
    /// killed; the next backup, sync or prune removes them.
    pub stale_temporaries: usize,
    /// Files under the object folders that are not where an object lives
    /// (a name that is not 64 lower-case hex characters, a pack in the
    /// wrong folder): ignored by every reader; remove them by hand.
    pub strays: Vec<String>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Default)]
struct Findings {
    /// Keyed by object name, so a chunk shared by many points is listed once.
    problems: BTreeMap<String, (String, HashSet<PointId>)>,
}

impl Findings {
    fn add(&mut self, object: String, reason: String, point: Option<PointId>) {
        let e = self
            .problems
            .entry(object)
            .or_insert_with(|| (reason, HashSet::new()));
        if let Some(p) = point {
            e.1.insert(p);
        }
    }
}

/// Checks the repository.
pub fn check(repo: &Repository, opts: &CheckOptions) -> Result<CheckReport> {
    // Judge what the store holds: a remote vault's local cache of index
    // files, points and manifest nodes is passed by.
    let direct = repo.without_cache();
    let repo = direct.as_ref().unwrap_or(repo);
    let pool = crate::exec::worker_pool(opts.threads, "check")?;
    let _lock = repo.lock_for_reading("check")?;
    let mut report = CheckReport::default();
    let mut found = Findings::default();

    // Points before index files before packs: a backup running meanwhile
    // writes them the other way round, so every point listed here has its
    // chunks in the index files and packs listed next. (Nothing is deleted
    // meanwhile: prune deletes only under an exclusive lock.)
    let point_ids = repo.list_point_ids()?;
    report.points = point_ids.len();

    // Key files: a damaged one cannot be used, though the others still
    // open the repository.
    for (key, why) in repo.key_file_problems()? {
        found.add(key, why, None);
    }

    // Index files.
    let mut index = ChunkIndex::default();
    let index_ids = repo.list_index_files()?;
    report.index_files = index_ids.len();
    for id in index_ids {
        match repo.read_index_file(&id) {
            Ok(body) => index.add_body(&body),
            Err(e) => found.add(index_key(&id), e.reason(), None),
        }
    }
    index.finish();
    report.chunks = index.len();

    report.strays = stray_keys(repo.store().as_ref())?;
    let cutoff = std::time::SystemTime::now() - STALE_TEMPORARY;
    report.stale_temporaries = repo
        .store()
        .list(TMP)?
        .iter()
        .filter(|o| o.modified < cutoff)
        .count();

    // Packs: present, long enough, and (read_data) intact.
    let present: HashMap<PackId, u64> = repo.list_packs_sized()?.into_iter().collect();
    report.packs = present.len();
    report.unindexed_packs = present.keys().filter(|p| !index.has_pack(p)).count();
    let mut by_pack: Vec<Vec<(ChunkId, ChunkLocation)>> = vec![Vec::new(); index.packs().len()];
    for (id, loc) in index.iter() {
        by_pack[loc.pack as usize].push((id, loc));
    }
    // Chunks that cannot be read, with the reason.
    let mut bad_chunks: HashMap<ChunkId, String> = HashMap::new();
    // Reading whole packs waits for storage: on the request pool; each
    // pack's chunks are then opened on the CPU pool.
    let to_read: u64 = if opts.read_data {
        index.packs().iter().filter_map(|p| present.get(p)).sum()
    } else {
        0
    };
    let tracker = SharedTracker::begin(
        opts.progress.as_ref().filter(|_| opts.read_data),
        "check",
        to_read,
    );
    let results: Vec<PackCheck> = crate::exec::request_pool().install(|| {
        index
            .packs()
            .par_iter()
            .enumerate()
            .map(|(n, pack)| {
                let checked = check_pack(repo, &pool, pack, &by_pack[n], &present, opts.read_data);
                tracker.advance(present.get(pack).copied().unwrap_or(0));
                checked
            })
            .collect()
    });
    for (pack_problem, chunk_problems, bytes, verified) in results {
        if let Some((obj, why)) = pack_problem {
            found.add(obj, why, None);
        }
        for (id, why) in chunk_problems {
            bad_chunks.insert(id, why);
        }
        report.bytes_read += bytes;
        report.chunks_verified += verified;
    }

    // Forget records open, and name points (a record whose point is gone
    // is harmless: prune removes it).
    for id in list_ids::<ForgetId>(repo.store().as_ref(), FORGOTTEN)? {
        match repo.read_forget_record(&id) {
            Ok(_) => {}
            // Removed by unforget since it was listed.
            Err(Error::Store(e)) if e.is_not_found() => {}
            Err(e) => found.add(forget_key(&id), e.reason(), None),
        }
    }

    // Points and their manifests, each node read once.
    let mut graph = ManifestGraph::default();
    let mut walker = ReachWalk::new(repo.format_major());
    for pid in point_ids {
        let point = match repo.read_point(&pid) {
            Ok(p) => p,
            // Pruned since it was listed.
            Err(Error::UnknownPoint(_)) => {
                report.points -= 1;
                continue;
            }
            Err(e) => {
                found.add(point_key(&pid), e.reason(), Some(pid));
                continue;
            }
        };
        for disk in &point.disks {
            graph.roots.entry(disk.manifest_root).or_default().push(pid);
            let mut load = |id: &ChunkId| -> Result<Vec<u8>> {
                if let Some(why) = bad_chunks.get(id) {
                    return Err(Error::damaged(chunk_name(id), why));
                }
                read_indexed_chunk(repo, &index, id)
            };
            let mut visit = |ev: Reached<'_>| -> Result<()> {
                match ev {
                    Reached::Node { id, parent, .. } => graph.link(id, parent),
                    Reached::Data { id, node, length } => {
                        let why = match bad_chunks.get(id) {
                            Some(why) => Some(why.clone()),
                            None => match index.get(id) {
                                // Restore refuses such an extent: the
                                // manifest and the chunk disagree.
                                Some(loc) if loc.raw_length != length => Some(format!(
                                    "the manifest gives it {length} bytes, the chunk holds {}",
                                    loc.raw_length
                                )),
                                Some(loc) if present.contains_key(&index.pack_id(loc.pack)) => None,
                                Some(loc) => Some(format!(
                                    "its pack {} is missing",
                                    pack_key(&index.pack_id(loc.pack))
                                )),
                                None => Some("not in any index".into()),
                            },
                        };
                        if let Some(why) = why {
                            graph.problem(chunk_name(id), why, *node);
                        }
                    }
                    Reached::Damaged { id, parent, error } => {
                        graph.link(id, parent);
                        graph.problem(
                            format!("manifest node {}", id.to_hex()),
                            format!(
                                "{} (part of the manifest of disk '{}' in point {})",
                                match &error {
                                    // Where the bad copy of the node is.
                                    Error::Damaged { object, reason }
                                        if !object.starts_with("manifest node") =>
                                    {
                                        format!("{object}: {reason}")
                                    }
                                    e => e.reason(),
                                },
                                disk.name,
                                pid.short()
                            ),
                            *id,
                        );
                    }
                }
                Ok(())
            };
            walker.walk(&disk.manifest_root, disk.size, &mut load, &mut visit)?;
        }
    }
    graph.attribute(&mut found);

    report.problems = found
        .problems
        .into_iter()
        .map(|(object, (reason, points))| {
            let mut affected_points: Vec<PointId> = points.into_iter().collect();
            affected_points.sort();
            Problem {
                object,
                reason,
                affected_points,
            }
        })
        .collect();
    Ok(report)
}

/// The manifest nodes as a graph, to tell which points a problem found
/// once (in a subtree walked once) affects: every point whose manifest
/// reaches the node where it was found.
#[derive(Default)]
struct ManifestGraph {
    /// Each node's parents.
    parents: HashMap<ChunkId, HashSet<ChunkId>>,
    /// Manifest roots and the points whose disks they are.
    roots: HashMap<ChunkId, Vec<PointId>>,
    /// Problems (object, reason) and the nodes they were found in.
    problems: BTreeMap<String, (String, HashSet<ChunkId>)>,
}

impl ManifestGraph {
    fn link(&mut self, id: &ChunkId, parent: Option<&ChunkId>) {
        if let Some(p) = parent {
            self.parents.entry(*id).or_default().insert(*p);
        }
    }

    fn problem(&mut self, object: String, reason: String, node: ChunkId) {
        self.problems
            .entry(object)
            .or_insert_with(|| (reason, HashSet::new()))
            .1
            .insert(node);
    }

    /// Adds every problem to `found` with the points whose manifests reach
    /// it, walking up from the nodes where it was found.
    fn attribute(mut self, found: &mut Findings) {
        let mut memo: HashMap<ChunkId, HashSet<PointId>> = HashMap::new();
        let problems = std::mem::take(&mut self.problems);
        for (object, (reason, nodes)) in problems {
            let mut points = HashSet::new();
            for node in nodes {
                points.extend(self.points_reaching(node, &mut memo).iter().copied());
            }
            found.add(object.clone(), reason.clone(), None);
            for p in points {
                found.add(object.clone(), reason.clone(), Some(p));
            }
        }
    }

    /// The points whose manifests contain `node`.
    fn points_reaching(
        &self,
        node: ChunkId,
        memo: &mut HashMap<ChunkId, HashSet<PointId>>,
    ) -> HashSet<PointId> {
        if let Some(p) = memo.get(&node) {
            return p.clone();
        }
        // Iterative: manifests are at most 16 levels deep, but the graph
        // of all points can be wide.
        let mut out: HashSet<PointId> = HashSet::new();
        let mut seen: HashSet<ChunkId> = HashSet::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if let Some(known) = memo.get(&n) {
                out.extend(known.iter().copied());
                continue;
            }
            if let Some(points) = self.roots.get(&n) {
                out.extend(points.iter().copied());
            }
            if let Some(ps) = self.parents.get(&n) {
                stack.extend(ps.iter().copied());
            }
        }
        memo.insert(node, out.clone());
        out
    }
}

type PackCheck = (Option<(String, String)>, Vec<(ChunkId, String)>, u64, usize);

fn check_pack(
    repo: &Repository,
    cpu: &rayon::ThreadPool,
    pack: &PackId,
    chunks: &[(ChunkId, ChunkLocation)],
    present: &HashMap<PackId, u64>,
    read_data: bool,
) -> PackCheck {
    let key = pack_key(pack);
    let all_bad = |why: &str| -> Vec<(ChunkId, String)> {
        chunks
            .iter()
            .map(|(id, _)| (*id, format!("{why} ({key})")))
            .collect()
    };
    let Some(&size) = present.get(pack) else {
        return (
            Some((
                key.clone(),
                "missing: the index lists it but it does not exist".into(),
            )),
            all_bad("its pack is missing"),
            0,
            0,
        );
    };
    if !read_data {
        let needed = chunks
            .iter()
            .map(|(_, l)| l.offset as u64 + l.length as u64)
            .max()
            .unwrap_or(0);
        if size >= needed {
            return (None, Vec::new(), 0, 0);
        }
        return (
            Some((
                key.clone(),
                format!("truncated: {size} bytes, the index needs {needed}"),
            )),
            chunks
                .iter()
                .filter(|(_, l)| l.offset as u64 + l.length as u64 > size)
                .map(|(id, _)| (*id, format!("beyond the end of truncated {key}")))
                .collect(),
            0,
            0,
        );
    }
    let bytes = match repo.read_pack(pack) {
        Ok(b) => b,
        Err(e) => {
            return (
                Some((key.clone(), e.reason())),
                all_bad("unreadable pack"),
                0,
                0,
            )
        }
    };
    let mut pack_problem = None;
    if PackId::hash_of(&bytes) != *pack {
        pack_problem = Some((key.clone(), "content does not match its name".to_string()));
    } else if let Err(e) = parse_pack_table(repo.sealer(), &key, &bytes, repo.format_major()) {
        pack_problem = Some((
            key.clone(),
            format!("its table is unreadable: {}", e.reason()),
        ));
    }
    let mut bad = Vec::new();
    let mut verified = 0;
    // Chunks that share a sealed group are checked from one opening of it.
    let mut units: Vec<&[(ChunkId, ChunkLocation)]> = Vec::new();
    let mut sorted = chunks.to_vec();
    sorted.sort_by_key(|(_, l)| (l.offset, l.member));
    let mut rest = &sorted[..];
    while let Some((_, first)) = rest.first() {
        let n = rest
            .iter()
            .take_while(|(_, l)| l.offset == first.offset && l.length == first.length)
            .count();
        units.push(&rest[..n]);
        rest = &rest[n..];
    }
    let outcomes: Vec<Option<(ChunkId, String)>> = cpu.install(|| {
        units
            .par_iter()
            .flat_map_iter(|unit| verify_unit(repo, &key, &bytes, unit))
            .collect()
    });
    for outcome in outcomes {
        match outcome {
            None => verified += 1,
            Some(problem) => bad.push(problem),
        }
    }
    (pack_problem, bad, bytes.len() as u64, verified)
}

/// Verifies the chunks of one sealed blob of a pack (a sealed chunk, or a
/// group opened once for all its members): authentication, id and length.
fn verify_unit(
    repo: &Repository,
    key: &str,
    pack: &[u8],
    unit: &[(ChunkId, ChunkLocation)],
) -> Vec<Option<(ChunkId, String)>> {
    let loc0 = unit[0].1;
    let start = loc0.offset as usize;
    let Some(sealed) = pack.get(start..start + loc0.length as usize) else {
        return unit
            .iter()
            .map(|(id, _)| Some((*id, format!("beyond the end of {key}"))))
            .collect();
    };
    let group = if unit.iter().any(|(_, l)| l.is_grouped()) {
        Some(repo.sealer().open_group(sealed))
    } else {
        None
    };
    unit.iter()
        .map(|(id, loc)| {
            let opened = match (&group, loc.is_grouped()) {
                (Some(Ok(plain)), true) => repo
                    .sealer()
                    .group_member(plain, id, loc.member, loc.raw_length, true)
                    .map(|b| b.len()),
                (Some(Err(e)), true) => return Some((*id, format!("{e} ({key})"))),
                _ => repo
                    .sealer()
                    .open_chunk(sealed, id, repo.max_chunk_plain())
                    .map(|p| p.len()),
            };
            match opened {
                Ok(len) if len == loc.raw_length as usize => None,
                Ok(_) => Some((*id, format!("length differs from the index ({key})"))),
                Err(e) => Some((*id, format!("{e} ({key})"))),
            }
        })
        .collect()
}

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
use crate::format::manifest::Extent;
use crate::format::{ChunkId, PackId, PointId};
use crate::index::{ChunkIndex, ChunkLocation};
use crate::manifest::{walk, ManifestEvent};
use crate::packer::parse_pack_table;
use crate::repo::{index_key, pack_key, point_key, Repository};

/// How thorough a check is.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Read and verify every chunk, not only the structure.
    pub read_data: bool,
    /// Worker threads; all cores when `None`.
    pub threads: Option<usize>,
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The damaged or missing object, e.g. `packs/ab/ab12...` or `chunk 1a2b3c4d`.
    pub object: String,
    pub reason: String,
    /// Recovery points that cannot be fully restored because of it.
    pub affected_points: Vec<PointId>,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    pub points: usize,
    pub index_files: usize,
    pub packs: usize,
    pub chunks: usize,
    /// Chunks opened and verified (with `read_data`).
    pub chunks_verified: usize,
    /// Bytes read from packs (with `read_data`).
    pub bytes_read: u64,
    /// Packs no index lists: left by an interrupted backup, reused by the next.
    pub unindexed_packs: usize,
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
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start worker threads: {e}")))?;
    let mut report = CheckReport::default();
    let mut found = Findings::default();

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
            Err(e) => found.add(index_key(&id), e.to_string(), None),
        }
    }
    index.finish();
    report.chunks = index.len();

    // Packs: present, long enough, and (read_data) intact.
    let present: HashSet<PackId> = repo.list_packs()?.into_iter().collect();
    report.packs = present.len();
    report.unindexed_packs = present.iter().filter(|p| !index.has_pack(p)).count();
    let mut by_pack: Vec<Vec<(ChunkId, ChunkLocation)>> = vec![Vec::new(); index.packs().len()];
    for (id, loc) in index.iter() {
        by_pack[loc.pack as usize].push((id, loc));
    }
    // Chunks that cannot be read, with the reason.
    let mut bad_chunks: HashMap<ChunkId, String> = HashMap::new();
    let results: Vec<PackCheck> = pool.install(|| {
        index
            .packs()
            .par_iter()
            .enumerate()
            .map(|(n, pack)| check_pack(repo, pack, &by_pack[n], &present, opts.read_data))
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

    // Points and their manifests.
    let point_ids = repo.list_point_ids()?;
    report.points = point_ids.len();
    for pid in point_ids {
        let point = match repo.read_point(&pid) {
            Ok(p) => p,
            Err(e) => {
                found.add(point_key(&pid), e.to_string(), Some(pid));
                continue;
            }
        };
        for disk in &point.disks {
            let mut load = |id: &ChunkId| -> Result<Vec<u8>> {
                if let Some(why) = bad_chunks.get(id) {
                    return Err(Error::damaged(format!("chunk {}", id.to_hex()), why));
                }
                crate::ops::restore::read_indexed_chunk(repo, &index, id)
            };
            // The node being read when the walk fails is the damaged one:
            // the walk names a node before loading and checking it.
            let mut current_node: Option<ChunkId> = None;
            let mut visit = |ev: ManifestEvent<'_>| -> Result<()> {
                if let ManifestEvent::Node(id) = ev {
                    current_node = Some(*id);
                }
                if let ManifestEvent::Extent {
                    extent: Extent::Data { id, .. },
                    ..
                } = ev
                {
                    let object = format!("chunk {}", id.to_hex());
                    if let Some(why) = bad_chunks.get(id) {
                        found.add(object, why.clone(), Some(pid));
                    } else if let Some(loc) = index.get(id) {
                        if !present.contains(&index.pack_id(loc.pack)) {
                            found.add(
                                object,
                                format!(
                                    "its pack {} is missing",
                                    pack_key(&index.pack_id(loc.pack))
                                ),
                                Some(pid),
                            );
                        }
                    } else {
                        found.add(object, "not in any index".into(), Some(pid));
                    }
                }
                Ok(())
            };
            if let Err(e) = walk(&disk.manifest_root, disk.size, &mut load, &mut visit) {
                // Keyed by the node, so a node shared by several points is
                // one problem listing them all.
                let object = match current_node {
                    Some(node) => format!("manifest node {}", node.to_hex()),
                    None => format!("manifest of disk '{}' in point {}", disk.name, pid.short()),
                };
                found.add(
                    object,
                    format!(
                        "{e} (part of the manifest of disk '{}' in point {})",
                        disk.name,
                        pid.short()
                    ),
                    Some(pid),
                );
            }
        }
    }

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

type PackCheck = (Option<(String, String)>, Vec<(ChunkId, String)>, u64, usize);

fn check_pack(
    repo: &Repository,
    pack: &PackId,
    chunks: &[(ChunkId, ChunkLocation)],
    present: &HashSet<PackId>,
    read_data: bool,
) -> PackCheck {
    let key = pack_key(pack);
    let all_bad = |why: &str| -> Vec<(ChunkId, String)> {
        chunks
            .iter()
            .map(|(id, _)| (*id, format!("{why} ({key})")))
            .collect()
    };
    if !present.contains(pack) {
        return (
            Some((
                key.clone(),
                "missing: the index lists it but it does not exist".into(),
            )),
            all_bad("its pack is missing"),
            0,
            0,
        );
    }
    if !read_data {
        let needed = chunks
            .iter()
            .map(|(_, l)| l.offset as u64 + l.length as u64)
            .max()
            .unwrap_or(0);
        return match repo.store().size(&key) {
            Ok(size) if size >= needed => (None, Vec::new(), 0, 0),
            Ok(size) => (
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
            ),
            Err(e) => (
                Some((key.clone(), e.to_string())),
                all_bad("unreadable pack"),
                0,
                0,
            ),
        };
    }
    let bytes = match repo.store().get(&key) {
        Ok(b) => b,
        Err(e) => {
            return (
                Some((key.clone(), e.to_string())),
                all_bad("unreadable pack"),
                0,
                0,
            )
        }
    };
    let mut pack_problem = None;
    if PackId::hash_of(&bytes) != *pack {
        pack_problem = Some((key.clone(), "content does not match its name".to_string()));
    } else if let Err(e) = parse_pack_table(repo.sealer(), &key, &bytes) {
        pack_problem = Some((key.clone(), format!("its table is unreadable: {e}")));
    }
    let mut bad = Vec::new();
    let mut verified = 0;
    for (id, loc) in chunks {
        let start = loc.offset as usize;
        let end = start + loc.length as usize;
        let Some(sealed) = bytes.get(start..end) else {
            bad.push((*id, format!("beyond the end of {key}")));
            continue;
        };
        match repo.sealer().open_chunk(sealed, id, repo.max_chunk_plain()) {
            Ok(plain) if plain.len() == loc.raw_length as usize => verified += 1,
            Ok(_) => bad.push((*id, format!("length differs from the index ({key})"))),
            Err(e) => bad.push((*id, format!("{e} ({key})"))),
        }
    }
    (pack_problem, bad, bytes.len() as u64, verified)
}

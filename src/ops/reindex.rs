//! `repair --index`: rebuild the index from the packs alone, without a
//! replica.
//!
//! Every pack ends in a sealed table of its chunks (spec/FORMAT.md §7), so
//! the index can always be rebuilt from the packs. Under an exclusive lock:
//! the index files that open are kept; every pack none of them names is
//! read, checked against its name, and its table indexed into new index
//! files (durable before anything is deleted); then the index files that do
//! not open are deleted. A pack that is itself damaged cannot be indexed:
//! it is reported, and `repair --from REPLICA` can mend it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{ErrorCategory, Result};
use crate::format::PackId;
use crate::packer::{parse_pack_table, PackWriter};
use crate::repo::{index_key, pack_key, Damaged, LockKind, Repository};

/// What `repair --index` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReindexReport {
    /// Index files that open, kept as they are.
    pub index_files_kept: usize,
    /// Index files that do not open, deleted once their packs were indexed
    /// again.
    pub index_files_removed: Vec<Damaged>,
    /// Packs no readable index file named, indexed from their tables.
    pub packs_indexed: usize,
    /// Chunks those packs hold.
    pub chunks_indexed: u64,
    /// Index files written.
    pub index_files_written: usize,
    /// Packs that could not be indexed: their bytes do not match their
    /// name, or their table does not open.
    pub damaged_packs: Vec<Damaged>,
    /// Wall-clock time the reindex took.
    #[serde(serialize_with = "crate::ops::millis")]
    pub duration: Duration,
}

/// Rebuilds the index from the packs (see the module documentation).
pub fn rebuild_index(repo: &Repository) -> Result<ReindexReport> {
    let started = Instant::now();
    let lock = repo.lock(LockKind::Exclusive, "repair --index")?;
    let mut report = ReindexReport::default();
    let mut named: HashSet<PackId> = HashSet::new();
    let mut damaged_files = Vec::new();
    for id in repo.list_index_files()? {
        match repo.read_index_file(&id) {
            Ok(body) => {
                named.extend(body.packs.iter().copied());
                report.index_files_kept += 1;
            }
            Err(e) if e.category() == ErrorCategory::Damaged => damaged_files.push((id, e)),
            Err(e) => return Err(e),
        }
    }
    let mut writer = PackWriter::new(repo);
    for (pack, _) in repo.list_packs_sized()? {
        if named.contains(&pack) {
            continue;
        }
        let key = pack_key(&pack);
        let entries = repo.read_pack(&pack).and_then(|bytes| {
            if PackId::hash_of(&bytes) != pack {
                return Err(crate::Error::damaged(
                    &key,
                    "content does not match its name",
                ));
            }
            parse_pack_table(repo.sealer(), &key, &bytes, repo.format_major())
        });
        match entries {
            Ok(entries) => {
                report.packs_indexed += 1;
                report.chunks_indexed += entries.len() as u64;
                writer.index_existing(pack, &entries)?;
            }
            Err(e) if e.category() == ErrorCategory::Damaged => {
                report.damaged_packs.push(Damaged {
                    object: key,
                    reason: e.to_string(),
                })
            }
            Err(e) => return Err(e),
        }
    }
    report.index_files_written = writer.finish()?.index_files;
    lock.check()?;
    for (id, e) in damaged_files {
        repo.delete_index_file(&id)?;
        report.index_files_removed.push(Damaged {
            object: index_key(&id),
            reason: e.to_string(),
        });
    }
    repo.store().barrier()?;
    report.duration = started.elapsed();
    Ok(report)
}

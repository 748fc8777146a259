//! `stats`: what the repository protects and what it costs.

use crate::error::Result;
use crate::repo::layout::{INDEX, LOCKS, PACKS, TMP};
use crate::repo::{Damaged, Repository};

/// Repository-wide figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepoStats {
    /// Recovery points that are not forgotten (the figures below count
    /// only these).
    pub points: usize,
    /// Forgotten points waiting for `prune`.
    pub forgotten_points: usize,
    /// Objects under `points/` and `index/` that do not open (`check`
    /// says more); the figures leave them out.
    pub unreadable: Vec<Damaged>,
    /// Disks over all points (a disk in two points counts twice).
    pub disks: usize,
    /// Sum of the logical sizes of every disk of every point.
    pub logical_bytes: u64,
    /// Of those, bytes that are not zero runs (what dedup is measured on).
    pub logical_data_bytes: u64,
    /// Distinct chunks (data and manifest).
    pub unique_chunks: usize,
    /// Plaintext bytes of the distinct chunks.
    pub unique_bytes: u64,
    /// Sealed bytes of the distinct chunks.
    pub chunk_stored_bytes: u64,
    /// Bytes of every object in the repository.
    pub repository_bytes: u64,
    /// Objects in the repository, of every kind.
    pub objects: usize,
    /// Pack files.
    pub packs: usize,
    /// Index files.
    pub index_files: usize,
    /// `logical_data_bytes / unique_bytes`.
    pub dedup_ratio: f64,
    /// `unique_bytes / chunk_stored_bytes`.
    pub compression_ratio: f64,
    /// Memory the loaded index costs per chunk.
    pub index_bytes_per_chunk: usize,
}

/// Computes [`RepoStats`].
pub fn stats(repo: &Repository) -> Result<RepoStats> {
    let mut s = RepoStats {
        index_bytes_per_chunk: crate::index::BYTES_PER_CHUNK,
        ..Default::default()
    };
    let _lock = repo.lock_for_reading("stats")?;
    let forgotten = repo.forgotten_points()?;
    let (points, damaged) = repo.list_all_points_lenient()?;
    s.unreadable.extend(damaged);
    for (id, p) in points {
        if forgotten.contains_key(&id) {
            s.forgotten_points += 1;
            continue;
        }
        s.points += 1;
        for d in &p.disks {
            s.disks += 1;
            s.logical_bytes += d.size;
            s.logical_data_bytes += d.size - d.stats.zero_bytes.min(d.size);
        }
    }
    let (index, damaged_index) = repo.load_index_lenient()?;
    s.unreadable.extend(damaged_index);
    s.unique_chunks = index.len();
    // The chunks of a group share one sealed blob: it counts once.
    let mut groups = std::collections::HashSet::new();
    for (_, loc) in index.iter() {
        s.unique_bytes += loc.raw_length as u64;
        if !loc.is_grouped() || groups.insert((loc.pack, loc.offset)) {
            s.chunk_stored_bytes += loc.length as u64;
        }
    }
    let mut objects = repo.store().list("")?;
    objects.retain(|o| !o.key.starts_with(TMP) && !o.key.starts_with(LOCKS));
    s.objects = objects.len();
    for o in &objects {
        s.repository_bytes += o.size;
        if o.key.starts_with(PACKS) {
            s.packs += 1;
        } else if o.key.starts_with(INDEX) {
            s.index_files += 1;
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.dedup_ratio = ratio(s.logical_data_bytes, s.unique_bytes);
    s.compression_ratio = ratio(s.unique_bytes, s.chunk_stored_bytes);
    Ok(s)
}

//! `status --replica`: how far a replica lags behind its source.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::replica::ReplicaMarker;
use crate::format::PointId;
use crate::repo::location::Listing;
use crate::repo::{open_copy, RepoLocation, Repository};

/// How far a replica lags behind its source.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicaStatus {
    /// Location of the source repository.
    pub source: String,
    /// Location of the replica.
    pub replica: String,
    /// False when the replica does not exist yet (a sync would create it).
    pub replica_exists: bool,
    /// The replica's marker, when `sync` created it.
    pub marker: Option<ReplicaMarker>,
    /// Points of the source that the replica lacks, oldest first, with
    /// their start times (Unix seconds).
    #[serde(serialize_with = "crate::ops::point_times")]
    pub missing_points: Vec<(PointId, i64)>,
    /// Points the replica holds that the source does not (backups taken
    /// into the replica; a sync the other way would send them).
    pub extra_points: usize,
    /// Objects a sync would copy (packs, index files, points, key files).
    pub objects_to_send: usize,
    /// Their bytes.
    pub bytes_to_send: u64,
    /// Newest point of the source: id and start time.
    #[serde(serialize_with = "crate::ops::point_time")]
    pub source_newest: Option<(PointId, i64)>,
    /// Newest point of the replica.
    #[serde(serialize_with = "crate::ops::point_time")]
    pub replica_newest: Option<(PointId, i64)>,
}

impl ReplicaStatus {
    /// True when a sync would copy nothing.
    pub fn is_current(&self) -> bool {
        self.replica_exists && self.objects_to_send == 0
    }
}

/// Compares a repository with its replica: which points the replica lacks,
/// how many bytes a sync would send, and the newest point on each side
/// (the recovery point objective, as users see it). Needs the key, because
/// point times are encrypted; reads no chunk.
pub fn replica_status(source: &Repository, replica: &RepoLocation) -> Result<ReplicaStatus> {
    let _lock = source.lock_for_reading("status")?;
    let src = RepoLocation::of(source);
    let (replica_repo, marker) = match replica.read_config() {
        Ok(_) => (Some(open_copy(source, replica)?), replica.read_marker()?),
        Err(Error::NotARepository(_)) => (None, None),
        Err(e) => return Err(e),
    };
    let _replica_lock = match replica_repo {
        Some(_) => Some(replica.lock_for_reading("status (replica)", source.lock_options())?),
        None => None,
    };
    // What a full sync would copy: every point, index file, pack and key
    // file of the source that the replica lacks.
    let missing =
        Listing::read(src.store().as_ref())?.without(&Listing::read(replica.store().as_ref())?);
    let sizes = missing
        .points
        .iter()
        .map(|(_, s)| s)
        .chain(missing.index_files.iter().map(|(_, s)| s))
        .chain(missing.packs.iter().map(|(_, s)| s))
        .chain(missing.key_files.iter().map(|(_, s)| s));
    let (objects_to_send, bytes_to_send) = sizes.fold((0, 0), |(n, b), s| (n + 1, b + s));
    let newest = |repo: &Repository, ids: &[PointId]| -> Result<Vec<(PointId, i64, u32)>> {
        // Status is a report: a damaged point is `check`'s business.
        let mut v: Vec<(PointId, i64, u32)> = ids
            .iter()
            .filter_map(|id| {
                repo.read_point(id)
                    .ok()
                    .map(|p| (*id, p.time_secs, p.time_nanos))
            })
            .collect();
        v.sort_by_key(|(id, s, n)| (*s, *n, *id));
        Ok(v)
    };
    let src_ids = source.list_point_ids()?;
    let src_points = newest(source, &src_ids)?;
    let (replica_points, replica_ids): (Vec<(PointId, i64, u32)>, HashSet<PointId>) =
        match &replica_repo {
            Some(r) => {
                let ids = r.list_point_ids()?;
                (newest(r, &ids)?, ids.into_iter().collect())
            }
            None => (Vec::new(), HashSet::new()),
        };
    let src_set: HashSet<PointId> = src_ids.iter().copied().collect();
    Ok(ReplicaStatus {
        source: source.location().to_string(),
        replica: replica.name().to_string(),
        replica_exists: replica_repo.is_some(),
        marker,
        missing_points: src_points
            .iter()
            .filter(|(id, _, _)| !replica_ids.contains(id))
            .map(|(id, s, _)| (*id, *s))
            .collect(),
        extra_points: replica_ids
            .iter()
            .filter(|id| !src_set.contains(id))
            .count(),
        objects_to_send,
        bytes_to_send,
        source_newest: src_points.last().map(|(id, s, _)| (*id, *s)),
        replica_newest: replica_points.last().map(|(id, s, _)| (*id, *s)),
    })
}

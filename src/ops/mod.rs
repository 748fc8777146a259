//! One module per user operation.

pub mod analyze;
pub mod backup;
pub mod check;
pub mod forget;
pub mod hooks;
pub mod prune;
pub mod reindex;
pub mod repair;
pub mod restore;
pub mod stats;
pub mod status;
pub mod sync;

/// Serializes a duration as whole milliseconds, for the reports' JSON.
pub(crate) fn millis<S: serde::Serializer>(
    d: &std::time::Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(d.as_millis() as u64)
}

/// Serializes a duration as seconds with a fraction, for the reports' JSON
/// (the fields named `duration_seconds`).
pub(crate) fn seconds<S: serde::Serializer>(
    d: &std::time::Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(d.as_secs_f64())
}

/// Serializes a path as text, replacing what is not UTF-8 (serde's own
/// impl fails on such a path, and a report must not fail to print).
pub(crate) fn path_text<S: serde::Serializer>(
    p: &std::path::Path,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&p.display())
}

/// Serializes `(object, reason)` pairs as `{"object": .., "reason": ..}`
/// records, the shape [`crate::repo::Damaged`] has.
pub(crate) fn object_reasons<S: serde::Serializer>(
    pairs: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(pairs.iter().map(|(object, reason)| crate::repo::Damaged {
        object: object.clone(),
        reason: reason.clone(),
    }))
}

/// Serializes `(point, time)` pairs as `{"id": .., "time": ..}` records.
pub(crate) fn point_times<S: serde::Serializer>(
    pairs: &[(crate::format::PointId, i64)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(pairs.iter().map(|&(id, time)| PointTime::of(id, time)))
}

/// Serializes an optional `(point, time)` pair as a [`PointTime`] record
/// or `null`.
pub(crate) fn point_time<S: serde::Serializer>(
    pair: &Option<(crate::format::PointId, i64)>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&pair.map(|(id, time)| PointTime::of(id, time)), serializer)
}

/// A point and its start time, as reports' JSON shows them.
#[derive(serde::Serialize)]
struct PointTime {
    id: crate::format::PointId,
    /// Unix seconds.
    time: i64,
    /// The same time as `YYYY-MM-DD HH:MM:SS`, UTC.
    time_utc: String,
}

impl PointTime {
    fn of(id: crate::format::PointId, time: i64) -> Self {
        PointTime {
            id,
            time,
            time_utc: crate::retention::format_utc(time),
        }
    }
}

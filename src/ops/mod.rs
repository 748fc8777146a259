//! One module per user operation.

pub mod analyze;
pub mod backup;
pub mod check;
pub mod forget;
pub mod prune;
pub mod reindex;
pub mod repair;
pub mod restore;
pub mod stats;
pub mod status;
pub mod sync;

/// Serializes an id as its hex text, for the reports' JSON.
pub(crate) fn hex_id<S: serde::Serializer, T: std::fmt::Display>(
    id: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(id)
}

/// Serializes a duration as whole milliseconds, for the reports' JSON.
pub(crate) fn millis<S: serde::Serializer>(
    d: &std::time::Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(d.as_millis() as u64)
}

//! One module per user operation.

pub mod backup;
pub mod check;
pub mod forget;
pub mod prune;
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

//! One module per user operation.

pub mod backup;
pub mod check;
pub mod restore;
pub mod stats;

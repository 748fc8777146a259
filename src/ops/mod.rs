//! One module per user operation.

pub mod backup;
pub mod check;
pub mod repair;
pub mod restore;
pub mod stats;
pub mod status;
pub mod sync;

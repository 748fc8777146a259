//! One module per user operation.

pub mod backup;
pub mod check;
pub mod repair;
pub mod replica;
pub mod restore;
pub mod stats;
pub mod sync;

//! One file per command: its arguments (with their help), the library
//! call, and the rendering of the report as text or `--json`.

pub mod analyze;
pub mod backup;
pub mod backup_input;
pub mod cat;
pub mod check;
pub mod extract;
pub mod files;
pub mod forget;
pub mod init;
pub mod key;
pub mod ls;
pub mod partitions;
pub mod points;
pub mod policy;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod restore_stdout;
pub mod serve_nbd;
pub mod show;
pub mod stats;
pub mod status;
pub mod sync;
pub mod unforget;
pub mod unlock;

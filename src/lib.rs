//! # diskvault
//!
//! A content-addressed, deduplicating, encrypted vault for disk images.
//!
//! A *repository* (vault) holds *recovery points*; each point is a
//! point-in-time copy of one or more disks. Images are cut into chunks
//! (FastCDC or fixed size), each chunk is compressed (zstd), encrypted
//! (AES-256-GCM) and stored once, in pack files; a point lists, per disk, a
//! manifest tree of chunk ids. Backups after the first store only new chunks.
//!
//! ```
//! use diskvault::{backup, restore, BackupDisk, BackupOptions, InitOptions,
//!                 KdfCost, Repository, RestoreOptions};
//!
//! # fn main() -> Result<(), diskvault::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let image = dir.path().join("disk.img");
//! std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
//!
//! // Create an encrypted repository (a cheap key derivation, for the example).
//! let opts = InitOptions { kdf: KdfCost::insecure_fast(), ..InitOptions::default() };
//! let repo = Repository::init(&dir.path().join("vault"), Some(b"secret"), &opts)?;
//!
//! // Back up one disk.
//! let report = backup(&repo, &BackupOptions {
//!     disks: vec![BackupDisk::file("sda", &image)?],
//!     ..BackupOptions::default()
//! })?;
//!
//! // Restore it, verified byte for byte.
//! let out = dir.path().join("restored.img");
//! restore(&repo, &RestoreOptions {
//!     point: report.point.to_hex(),
//!     disk: None,
//!     output: out.clone(),
//!     force: false,
//!     threads: None,
//!     ..Default::default()
//! })?;
//! assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&image).unwrap());
//! # Ok(()) }
//! ```
//!
//! ## Embedding
//! A product reads its disks through [`DiskSource`] ([`FileSource`],
//! [`StreamSource`], [`NbdSource`], or its own), restores through
//! [`RestoreTarget`] with [`restore_to_target`] ([`FileTarget`],
//! [`StreamTarget`], or its own), and may keep the vault on its own
//! [`store::Store`] with [`Repository::init_in`] and
//! [`Repository::open_in`]. `examples/embed.rs` in the repository is a
//! small backup product built on the three.
//!
//! ## Replication
//! [`sync`] copies the objects another repository lacks, verbatim and still
//! encrypted, so it needs no key; a missing or empty destination becomes a
//! *replica* (same config and key files). [`replica_status`] shows how far
//! a replica lags, [`repair`] mends a damaged repository from its replica,
//! and [`RestoreOptions::fallback`] lets a restore read what the repository
//! lacks from one.
//!
//! ## Progress and reports
//! The options of every long operation ([`BackupOptions`],
//! [`RestoreOptions`], [`CheckOptions`] with `read_data`, [`SyncOptions`],
//! [`RepairOptions`], [`PruneOptions`]) carry an optional [`Progress`]:
//! built from a closure `|done, total|` or from a [`ProgressSink`] of your
//! own, it is told the bytes processed so far. Every report type
//! implements `serde::Serialize`; the `diskvault` command's `--json` output
//! is that serialisation (`spec/JSON.md` lists the fields).
//!
//! ## Retention
//! [`forget`] marks points forgotten by a retention policy (restic's
//! `--keep-*` rules, [`retention`]) or by id; they stay restorable by id
//! for a grace period (14 days unless [`StoredPolicy`] says otherwise).
//! [`prune`] then frees what no kept point needs: it deletes packs with no
//! live chunk and repacks partly used ones, copying sealed chunks verbatim.
//!
//! ## Concurrency
//! Every operation takes the lock it needs ([`Repository::lock`],
//! `spec/FORMAT.md` §15); [`Repository::set_lock_options`] says how long
//! to wait for one. Which operations may run beside which:
//!
//! | | backup, restore, check, sync, forget | prune (planning) | prune (deleting), key removal, repair |
//! |---|---|---|---|
//! | backup, restore, check, sync, forget | yes | yes | waits |
//! | prune (planning) | yes | no (refused) | waits |
//! | prune (deleting), key removal, repair | waits | waits | waits |
//!
//! Objects are immutable and named by their content, so readers and
//! writers that only add never disturb each other; readers list points
//! before index files before packs, the reverse of the order a backup
//! writes them, so they never see a point before its chunks. Only prune,
//! repair and key removal delete, and only under an exclusive lock; prune
//! walks every point written while it planned before it deletes anything
//! (§18). `config`, key files, the replica marker and locks are written
//! create-only, so concurrent `init`s or replica creations have one winner.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The stable public API: the items re-exported below, and these modules.
mod error;
pub mod format;
pub mod fs;
pub mod image;
mod nbd;
mod progress;
pub mod retention;
pub mod source;
pub mod store;

// Internal modules, public only for diskvault's own command, tests,
// benchmarks and fuzz targets: not part of the API a product may depend
// on, and they change without notice. Everything a product needs from
// them is re-exported at the crate root.
#[doc(hidden)]
pub mod chunker;
#[doc(hidden)]
pub mod crypto;
#[doc(hidden)]
pub mod exec;
#[doc(hidden)]
pub mod imagehash;
#[doc(hidden)]
pub mod index;
#[doc(hidden)]
pub mod manifest;
#[doc(hidden)]
pub mod ops;
#[doc(hidden)]
pub mod packer;
#[doc(hidden)]
pub mod repo;

pub use crypto::KdfCost;
pub use error::{Error, ErrorCategory, Result};
pub use format::changes::ChangedRanges;
pub use format::config::{ChunkerParams, CompressionSetting, Encryption, RepoConfig};
pub use format::point::{
    Consistency, ConsistencyLevel, DiskOrigin, DiskRecord, DiskStats, PointBody, SourceKind,
};
pub use format::policy::StoredPolicy;
pub use format::replica::ReplicaMarker;
pub use format::{ChunkId, IndexId, KeyId, PackId, PointId};
pub use nbd::{serve_nbd, NbdEvent, NbdExport, NbdOverlay};
pub use ops::analyze::{
    analyze, AnalyzeFigures, AnalyzeOptions, AnalyzeReport, AnalyzedImage, ImageFigures,
    SettingReport,
};
pub use ops::backup::{backup, BackupDisk, BackupOptions, BackupReport};
pub use ops::check::{check, CheckOptions, CheckReport, Problem};
pub use ops::forget::{
    forget, list_forgotten, unforget, ForgetDecision, ForgetOptions, ForgetReport, ForgottenPoint,
    PointLine,
};
pub use ops::hooks::{ConsistencyHooks, HookContext, ScriptHooks};
pub use ops::prune::{prune, PruneOptions, PruneReport};
pub use ops::reindex::{rebuild_index, ReindexReport};
pub use ops::repair::{repair, RepairOptions, RepairReport};
pub use ops::restore::{
    restore, restore_to_target, restore_to_writer, FileTarget, RestoreOptions, RestoreReport,
    RestoreTarget, RestoredDisk, StreamTarget,
};
pub use ops::stats::{stats, RepoStats};
pub use ops::status::{replica_status, ReplicaStatus};
pub use ops::sync::{sync, sync_with_key, ObjectTally, SyncOptions, SyncReport};
pub use progress::{Progress, ProgressSink};
pub use repo::{
    Damaged, DiskReader, DiskReaderOptions, InitOptions, KeyInfo, LockEvent, LockInfo, LockKind,
    LockNotifier, LockOptions, ReadStats, RepoLocation, RepoLock, Repository,
};
pub use source::{DiskSource, FileSource, NbdSource, StreamSource};

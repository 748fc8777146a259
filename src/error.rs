//! The library's error type: each variant says what happened and what to do.

use std::io;
use std::path::PathBuf;

use crate::crypto::OpenError;
use crate::format::FormatError;
use crate::store::StoreError;

/// Broad classes of failure, for callers that map errors to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCategory {
    /// Anything not listed below: I/O failures, a full disk.
    Other,
    /// The passphrase is wrong or missing.
    Passphrase,
    /// Repository data is damaged or missing, or a restore failed verification.
    Damaged,
    /// A named thing does not exist: repository, recovery point, disk.
    NotFound,
    /// The repository was written by a newer diskvault.
    Unsupported,
    /// The request itself is invalid or would overwrite something.
    Refused,
    /// Another command holds a conflicting lock on the repository.
    Locked,
    /// Stopped by a signal or by the caller.
    Interrupted,
    /// Object storage cannot be used: the endpoint does not answer, the
    /// credentials are refused, or the container or bucket is missing.
    Storage,
}

/// Everything that can go wrong in diskvault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path holds no repository (no `config` object). Check the path,
    /// or create a repository there with `diskvault init`. Holds the path.
    #[error(
        "no diskvault repository at {0} (no config object); create one with 'diskvault init {0}'"
    )]
    NotARepository(String),
    /// `init` was given a path that already exists and is not empty; the
    /// existing content is left alone. Choose a new path. Holds the path.
    #[error("{0} already exists and is not empty; choose a new path for the repository")]
    AlreadyExists(String),
    /// None of the repository's key files opens with the given passphrase.
    /// Give the right passphrase.
    #[error("wrong passphrase: none of the repository's key files opens with it")]
    WrongPassphrase,
    /// The repository is encrypted and no passphrase was given. Set
    /// `DISKVAULT_PASSWORD`, pass `--password-file`, or run interactively.
    #[error("the repository is encrypted and no passphrase was given; set DISKVAULT_PASSWORD, pass --password-file, or run interactively")]
    PassphraseRequired,
    /// The repository's config declares a newer format version than this
    /// build reads; nothing is changed. Upgrade diskvault.
    #[error("the repository was written by a newer diskvault (format {found}, this build reads up to {supported}); upgrade diskvault")]
    NewerFormat {
        /// The format version the repository's config declares.
        found: u32,
        /// The newest format version this build reads.
        supported: u32,
    },
    /// An object was read but does not decode, fails authentication, or
    /// does not match its id. Run `diskvault check` to see what is affected.
    #[error("{object} is damaged: {reason}; run 'diskvault check' to see what is affected")]
    Damaged {
        /// Names the damaged object (its kind and id, or its key).
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An object is encrypted while the repository is not, or the reverse:
    /// the config may have been changed or the object planted. Examine the
    /// repository (spec/SECURITY.md §6) before writing to it.
    #[error("{object} is damaged: it is encrypted but the repository is not, or the reverse; its config may have been changed or the object planted: examine the repository (spec/SECURITY.md §6) before writing to it")]
    CipherMismatch {
        /// Names the object whose encryption disagrees with the config.
        object: String,
    },
    /// A manifest references a chunk that no index file lists: the
    /// repository is missing data. Run `diskvault check`.
    #[error(
        "chunk {chunk} is not in the index (the repository is missing data); run 'diskvault check'"
    )]
    MissingChunk {
        /// The missing chunk's id, in hex.
        chunk: String,
    },
    /// No recovery point id starts with the given text. `diskvault points`
    /// lists them. Holds the text given.
    #[error("no recovery point matches '{0}'; 'diskvault points REPO' lists them")]
    UnknownPoint(String),
    /// A point id prefix matches more than one recovery point. Give more
    /// characters of the id.
    #[error("'{spec}' matches {count} recovery points; give more characters of the id")]
    AmbiguousPoint {
        /// The id prefix given.
        spec: String,
        /// How many recovery points it matches.
        count: usize,
    },
    /// The recovery point has no disk of the given name. Use one of the
    /// names listed in `available`.
    #[error("recovery point {point} has no disk '{disk}'; its disks are: {available}")]
    UnknownDisk {
        /// The recovery point's id, in hex.
        point: String,
        /// The disk name asked for.
        disk: String,
        /// The point's disk names, comma-separated.
        available: String,
    },
    /// Restoring to a single file from a point with several disks needs a
    /// disk name. Name one with `--disk`, or restore into a directory.
    #[error("recovery point {point} has {count} disks; name one with --disk, or restore into a directory")]
    DiskRequired {
        /// The recovery point's id, in hex.
        point: String,
        /// How many disks it holds.
        count: usize,
    },
    /// The restore output already exists and overwriting was not asked for.
    /// Pass `--force` to overwrite it. Holds the output path.
    #[error("{0} already exists; pass --force to overwrite it")]
    OutputExists(PathBuf),
    /// A backup source (disk image or device) could not be opened or read.
    /// Check the path and its permissions.
    #[error("cannot read {path}: {source}")]
    Source {
        /// The disk image or device that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A restore output could not be created or written. Check the path,
    /// its permissions and the free space.
    #[error("cannot write {path}: {source}{}", output_hint(source))]
    Output {
        /// The file or device that could not be written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A restored disk does not match the image hash or size the recovery
    /// point records: the output is not a faithful copy and must not be
    /// used. Run `diskvault check`.
    #[error("restored disk '{disk}' does not match the recovery point: {reason}; the output is not a faithful copy")]
    VerificationFailed {
        /// The disk's name in the recovery point.
        disk: String,
        /// What did not match, e.g. the image hash found and the one recorded.
        reason: String,
    },
    /// `sync` was pointed at a destination whose chunk ids or keys differ
    /// from the source's. Create the replica with `diskvault sync` into a
    /// new or empty directory.
    #[error("{destination} cannot hold chunks of {source_repo}: {reason}; a replica must be created by 'diskvault sync' into a new or empty directory")]
    IncompatibleRepositories {
        /// The source repository's location.
        source_repo: String,
        /// The destination repository's location.
        destination: String,
        /// What differs: repository id, chunker or encryption.
        reason: String,
    },
    /// Another command holds a lock that conflicts with the one needed.
    /// Wait for it to finish (or pass `--wait`); if its holder is gone,
    /// `diskvault unlock` removes stale locks.
    #[error("{location} is locked: {holders}; cannot take {wanted}. Wait for it to finish (or pass --wait DURATION); if its holder is gone, 'diskvault unlock {location}' removes stale locks")]
    Locked {
        /// The repository's location.
        location: String,
        /// The lock mode asked for (shared or exclusive).
        wanted: String,
        /// The conflicting locks: mode, command, pid, host, user, since when.
        holders: String,
    },
    /// The lock this command held was removed by another command (e.g.
    /// `diskvault unlock --all`); it stopped before changing anything that
    /// depends on it. Run the command again.
    #[error("the lock on {location} was removed by another command while this one held it (for example 'diskvault unlock --all'); stopped before changing anything that depends on it; run the command again")]
    LockLost {
        /// The repository's location.
        location: String,
    },
    /// A restore was interrupted (e.g. Ctrl-C); the file being written was
    /// removed and nothing else changed.
    #[error("interrupted; the file being written was removed, and nothing else changed")]
    Interrupted,
    /// A `restore --into` failed midway: the target holds a mix of its old
    /// content and the point. Fix the cause and run the same restore again
    /// (it writes only what still differs), or restore to a new file.
    #[error("{path} now holds a mix of its old content and point {point}, because updating it failed midway: {cause}. Run the same 'restore --into' again once the cause is fixed (it writes only what still differs), or restore the point to a new file")]
    PartlyWritten {
        /// The file or device being updated in place.
        path: PathBuf,
        /// The recovery point's id, in hex.
        point: String,
        /// The failure that stopped the update.
        cause: Box<Error>,
    },
    /// A restore to a stream (standard output, a pipe) failed after it had
    /// begun to write: the reader holds part of the image, or all of one
    /// that did not verify. Unlike a file, a stream cannot be taken back,
    /// so the message tells whoever reads it not to use what it received.
    #[error("{output} received {written} bytes of disk '{disk}' that are not a faithful copy of it and must not be used: {}", stream_cause(cause))]
    StreamFailed {
        /// Names the stream, e.g. `standard output`.
        output: String,
        /// The disk's name in the recovery point.
        disk: String,
        /// Bytes written before the failure.
        written: u64,
        /// The failure that stopped the stream.
        cause: Box<Error>,
    },
    /// An option or argument is invalid; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// A backup was interrupted (e.g. Ctrl-C); no recovery point was
    /// written. The chunks stored so far are reused by the next backup.
    #[error("interrupted; no recovery point was written (the chunks stored so far are reused by the next backup)")]
    BackupInterrupted,
    /// Application consistency was required but the pre-backup script
    /// failed or is missing; no point was written. Fix the script, or drop
    /// `--require-app-consistent` to accept a crash-consistent point.
    #[error("the backup would not be application-consistent: {reason}; no recovery point was written (fix the pre-backup script, or drop --require-app-consistent to accept a crash-consistent point)")]
    NotApplicationConsistent {
        /// Why the point would only be crash-consistent.
        reason: String,
    },
    /// A changed-block backup found data changed outside the given list,
    /// so the list cannot be trusted. Back up the disk in full, without
    /// `--changed-blocks`.
    #[error("{disk}: {what} changed outside the changed-block list ({detail}); the list cannot be trusted (a dirty bitmap lost or reset since the parent point?): back up this disk in full, without --changed-blocks")]
    ChangedOutsideList {
        /// The disk's name.
        disk: String,
        /// Which bytes changed, e.g. `bytes 0..4096`.
        what: String,
        /// How they differ, e.g. from the parent point's.
        detail: String,
    },
    /// A key file command was refused: no key file or several match the id
    /// given, the repository has no keys, ...; the message says what to do.
    #[error("{0}")]
    KeyManagement(String),
    /// A path asked for does not exist in the file system inside a disk.
    /// `diskvault ls` shows what is there.
    #[error("{path}: no such file or directory in {place}; 'diskvault ls' lists what is there")]
    PathNotFound {
        /// The path asked for.
        path: String,
        /// Where it was looked for, e.g. `ext4 in partition 2 of disk 'root'`.
        place: String,
    },
    /// No file system diskvault reads (ext2/3/4, NTFS) was found where one
    /// was asked for. Choose a partition with `--part` (`diskvault
    /// partitions` lists them).
    #[error("{place} holds no file system diskvault can read (ext2/3/4, NTFS): {found}; 'diskvault partitions' lists the disk's partitions, choose one with --part")]
    NoFileSystem {
        /// Where the file system was looked for.
        place: String,
        /// What was found instead, e.g. `a GPT partition table`.
        found: String,
    },
    /// The disk has no partition matching `--part`. Use one of the numbers
    /// or labels listed in `available`.
    #[error("{disk} has no partition '{part}'; its partitions are: {available}")]
    UnknownPartition {
        /// Names the disk.
        disk: String,
        /// The number or label asked for.
        part: String,
        /// The disk's partitions, as `number (label)`, comma-separated.
        available: String,
    },
    /// A file system or partition table inside a disk could not be read:
    /// its structures are damaged or use a feature this build does not
    /// read. The disk itself was read and verified chunk by chunk.
    #[error("cannot read {place}: {reason}")]
    FileSystem {
        /// What was being read, e.g. `/etc/fstab in ext4 in disk 'root'`.
        place: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The storage backend failed; see [`StoreError`].
    #[error(transparent)]
    Store(StoreError),
}

/// What to do about an output that could not be written, when the error
/// says more than its own text does.
fn output_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            "; free space on the file system that holds it, or write to another place"
        }
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
            "; check that it is writable by this user, or write to another place"
        }
        _ => "",
    }
}

impl Error {
    /// The broad class of this error.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::WrongPassphrase | Error::PassphraseRequired => ErrorCategory::Passphrase,
            Error::Damaged { .. }
            | Error::CipherMismatch { .. }
            | Error::MissingChunk { .. }
            | Error::VerificationFailed { .. } => ErrorCategory::Damaged,
            Error::NotARepository(_)
            | Error::UnknownPoint(_)
            | Error::UnknownDisk { .. }
            | Error::Source { .. }
            | Error::PathNotFound { .. }
            | Error::UnknownPartition { .. } => ErrorCategory::NotFound,
            Error::NoFileSystem { .. } => ErrorCategory::Unsupported,
            Error::NewerFormat { .. } => ErrorCategory::Unsupported,
            Error::Locked { .. } | Error::LockLost { .. } => ErrorCategory::Locked,
            Error::Interrupted | Error::BackupInterrupted => ErrorCategory::Interrupted,
            Error::NotApplicationConsistent { .. } => ErrorCategory::Refused,
            Error::PartlyWritten { cause, .. } | Error::StreamFailed { cause, .. } => {
                cause.category()
            }
            Error::AlreadyExists(_)
            | Error::AmbiguousPoint { .. }
            | Error::DiskRequired { .. }
            | Error::OutputExists(_)
            | Error::IncompatibleRepositories { .. }
            | Error::InvalidArgument(_)
            | Error::KeyManagement(_) => ErrorCategory::Refused,
            Error::Store(StoreError::NotFound { .. }) => ErrorCategory::Damaged,
            Error::Store(StoreError::Backend { .. }) => ErrorCategory::Storage,
            _ => ErrorCategory::Other,
        }
    }

    /// What is wrong, without the next step the message suggests: for a
    /// report that already names the object and says what to do (`check`
    /// does not tell its user to run `check`).
    pub fn reason(&self) -> String {
        match self {
            Error::Damaged { reason, .. } => reason.clone(),
            Error::MissingChunk { .. } => "it is in no index".into(),
            Error::CipherMismatch { .. } => OpenError::CipherMismatch.to_string(),
            other => other.to_string(),
        }
    }

    pub(crate) fn damaged(object: impl Into<String>, reason: impl ToString) -> Self {
        Error::Damaged {
            object: object.into(),
            reason: reason.to_string(),
        }
    }

    /// Wraps a decoding failure of `object`, turning a newer version into
    /// [`Error::NewerFormat`].
    pub(crate) fn format(object: impl Into<String>, e: FormatError) -> Self {
        match e {
            FormatError::NewerVersion {
                found, supported, ..
            } => Error::NewerFormat { found, supported },
            other => Error::damaged(object, other),
        }
    }

    pub(crate) fn open(object: impl Into<String>, e: OpenError) -> Self {
        match e {
            OpenError::Format(f) => Error::format(object, f),
            OpenError::CipherMismatch => Error::CipherMismatch {
                object: object.into(),
            },
            other => Error::damaged(object, other),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { key } => Error::Damaged {
                object: key,
                reason: "it is missing".into(),
            },
            // A read past the end of an object: the object was truncated.
            StoreError::Io { key, source }
                if source.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Error::Damaged {
                    object: key,
                    reason: source.to_string(),
                }
            }
            other => Error::Store(other),
        }
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cause of a failed stream, as [`Error::StreamFailed`] quotes it. An
/// interruption's own message speaks of a file removed, which a stream
/// does not have.
fn stream_cause(cause: &Error) -> String {
    match cause {
        Error::Interrupted => "interrupted".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(errno: i32) -> String {
        Error::Output {
            path: PathBuf::from("/restore/disk.img"),
            source: io::Error::from_raw_os_error(errno),
        }
        .to_string()
    }

    #[test]
    fn an_output_error_names_the_file_and_says_what_to_do_when_it_can() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let msg = output(errno);
            assert!(msg.starts_with("cannot write /restore/disk.img: "), "{msg}");
            assert!(msg.contains("free space on the file system"), "{msg}");
        }
        for errno in [libc::EACCES, libc::EPERM, libc::EROFS] {
            let msg = output(errno);
            assert!(msg.contains("check that it is writable"), "{msg}");
        }
        // Errors whose own text is the whole story get no hint.
        let msg = output(libc::EIO);
        assert!(!msg.contains(';'), "{msg}");
        assert!(msg.contains("/restore/disk.img"), "{msg}");
    }
}

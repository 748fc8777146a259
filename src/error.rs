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
    #[error(
        "no diskvault repository at {0} (no config object); create one with 'diskvault init {0}'"
    )]
    NotARepository(String),
    #[error("{0} already exists and is not empty; choose a new path for the repository")]
    AlreadyExists(String),
    #[error("wrong passphrase: none of the repository's key files opens with it")]
    WrongPassphrase,
    #[error("the repository is encrypted and no passphrase was given; set DISKVAULT_PASSWORD, pass --password-file, or run interactively")]
    PassphraseRequired,
    #[error("the repository was written by a newer diskvault (format {found}, this build reads up to {supported}); upgrade diskvault")]
    NewerFormat { found: u32, supported: u32 },
    #[error("{object} is damaged: {reason}; run 'diskvault check' to see what is affected")]
    Damaged { object: String, reason: String },
    #[error("{object} is damaged: it is encrypted but the repository is not, or the reverse; its config may have been changed or the object planted: examine the repository (spec/SECURITY.md §6) before writing to it")]
    CipherMismatch { object: String },
    #[error(
        "chunk {chunk} is not in the index (the repository is missing data); run 'diskvault check'"
    )]
    MissingChunk { chunk: String },
    #[error("no recovery point matches '{0}'; 'diskvault points REPO' lists them")]
    UnknownPoint(String),
    #[error("'{spec}' matches {count} recovery points; give more characters of the id")]
    AmbiguousPoint { spec: String, count: usize },
    #[error("recovery point {point} has no disk '{disk}'; its disks are: {available}")]
    UnknownDisk {
        point: String,
        disk: String,
        available: String,
    },
    #[error("recovery point {point} has {count} disks; name one with --disk, or restore into a directory")]
    DiskRequired { point: String, count: usize },
    #[error("{0} already exists; pass --force to overwrite it")]
    OutputExists(PathBuf),
    #[error("cannot read {path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("restored disk '{disk}' does not match the recovery point: {reason}; the output is not a faithful copy")]
    VerificationFailed { disk: String, reason: String },
    #[error("{destination} cannot hold chunks of {source_repo}: {reason}; a replica must be created by 'diskvault sync' into a new or empty directory")]
    IncompatibleRepositories {
        source_repo: String,
        destination: String,
        reason: String,
    },
    #[error("{location} is locked: {holders}; cannot take {wanted}. Wait for it to finish (or pass --wait DURATION); if its holder is gone, 'diskvault unlock {location}' removes stale locks")]
    Locked {
        location: String,
        wanted: String,
        holders: String,
    },
    #[error("the lock on {location} was removed by another command while this one held it (for example 'diskvault unlock --all'); stopped before changing anything that depends on it; run the command again")]
    LockLost { location: String },
    #[error("interrupted; the file being written was removed, and nothing else changed")]
    Interrupted,
    #[error("{path} now holds a mix of its old content and point {point}, because updating it failed midway: {cause}. Run the same 'restore --into' again once the cause is fixed (it writes only what still differs), or restore the point to a new file")]
    PartlyWritten {
        path: PathBuf,
        point: String,
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
        disk: String,
        /// Bytes written before the failure.
        written: u64,
        cause: Box<Error>,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("interrupted; no recovery point was written (the chunks stored so far are reused by the next backup)")]
    BackupInterrupted,
    #[error("the backup would not be application-consistent: {reason}; no recovery point was written (fix the pre-backup script, or drop --require-app-consistent to accept a crash-consistent point)")]
    NotApplicationConsistent { reason: String },
    #[error("{disk}: {what} changed outside the changed-block list ({detail}); the list cannot be trusted (a dirty bitmap lost or reset since the parent point?): back up this disk in full, without --changed-blocks")]
    ChangedOutsideList {
        disk: String,
        what: String,
        detail: String,
    },
    #[error("{0}")]
    KeyManagement(String),
    #[error(transparent)]
    Store(StoreError),
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
            | Error::Source { .. } => ErrorCategory::NotFound,
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

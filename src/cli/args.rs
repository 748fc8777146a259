//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use diskvault::{ChunkerParams, CompressionSetting};

/// A content-addressed, deduplicating, encrypted vault for disk images.
#[derive(Parser, Debug)]
#[command(name = "diskvault", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How the passphrase is supplied (besides `DISKVAULT_PASSWORD` and the prompt).
#[derive(Args, Debug, Clone, Default)]
pub struct PassArgs {
    /// Read the passphrase from the first line of this file.
    #[arg(long, value_name = "FILE", global = true)]
    pub password_file: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionArg {
    /// AES-256-GCM, with keyed chunk ids (the default).
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    /// No encryption: anyone who can read the repository can read the disks.
    None,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init {
        /// Directory for the repository (must not exist or be empty).
        repo: PathBuf,
        #[arg(long, value_enum, default_value = "aes-256-gcm")]
        encryption: EncryptionArg,
        /// Chunking: fixed (16K, the default), fixed:SIZE, fastcdc (4K/16K/64K) or fastcdc:MIN/AVG/MAX.
        #[arg(long, default_value = "fixed")]
        chunker: ChunkerParams,
        /// Default compression of new chunks: zstd:LEVEL (-7..=22) or none.
        #[arg(long, default_value = "zstd:1")]
        compression: CompressionSetting,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Back up one or more disk images (raw files or block devices) as a new recovery point.
    Backup {
        repo: PathBuf,
        /// Raw image files or block devices, one per disk.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Disk name for each image, in order (default: the image's file name).
        #[arg(long = "disk", value_name = "NAME")]
        disks: Vec<String>,
        /// Tag the recovery point (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Host name to record (default: this machine's).
        #[arg(long)]
        host: Option<String>,
        /// Compression of new chunks, overriding the repository default.
        #[arg(long)]
        compression: Option<CompressionSetting>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// List recovery points, oldest first.
    Points {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Show one recovery point: its disks, sizes and backup figures.
    Show {
        repo: PathBuf,
        /// Point id, unique id prefix, or `latest`.
        point: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Restore disks of a recovery point, verified byte for byte.
    Restore {
        repo: PathBuf,
        /// Point id, unique id prefix, or `latest`.
        point: String,
        /// Output file or block device (a directory when restoring several disks).
        #[arg(required_unless_present = "into")]
        output: Option<PathBuf>,
        /// Update an existing older copy of the disk in place instead: only
        /// the chunks that differ are fetched and written.
        #[arg(long, value_name = "EXISTING", conflicts_with_all = ["output", "force"])]
        into: Option<PathBuf>,
        /// Restore only this disk.
        #[arg(long)]
        disk: Option<String>,
        /// Overwrite an existing output.
        #[arg(long)]
        force: bool,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// A replica of the repository to read chunks from when they are
        /// missing or damaged in REPO.
        #[arg(long, value_name = "REPLICA")]
        fallback: Option<PathBuf>,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Copy recovery points to a replica, sending only the objects it lacks
    /// (verbatim and still encrypted: no passphrase needed).
    Sync {
        /// The repository to copy from.
        src: PathBuf,
        /// A replica of SRC, or a new or empty directory to create one in.
        dst: PathBuf,
        /// Send only points whose id starts with PREFIX (repeatable, or
        /// comma-separated); `latest` needs the passphrase.
        #[arg(long = "points", value_name = "PREFIX", value_delimiter = ',')]
        points: Vec<String>,
        /// Send only points with this tag (repeatable; needs the passphrase).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Open and verify every chunk of every copied pack (needs the passphrase).
        #[arg(long)]
        verify: bool,
        /// Objects copied at once (default: 4).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Show how far a replica lags behind: points it lacks, bytes to send,
    /// newest point on each side.
    Status {
        repo: PathBuf,
        /// The replica to compare with.
        #[arg(long, value_name = "REPLICA")]
        replica: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Put back missing or damaged packs, chunks, index files and points
    /// from a replica.
    Repair {
        repo: PathBuf,
        /// The replica to take good copies from.
        #[arg(long = "from", value_name = "REPLICA")]
        from: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Verify the repository: structure, and with --read-data every chunk.
    Check {
        repo: PathBuf,
        /// Read, decrypt and verify every chunk.
        #[arg(long)]
        read_data: bool,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Show what the repository protects and what it costs.
    Stats {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Manage the passphrases (key files) that open the repository.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// Add a passphrase. The new one comes from DISKVAULT_NEW_PASSWORD, --new-password-file or a prompt.
    Add {
        repo: PathBuf,
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// List key files.
    List {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Remove a key file (not the one used to open the repository).
    Remove {
        repo: PathBuf,
        /// Key id or unique prefix (see `key list`).
        key: String,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Change the passphrase in use (adds a new key file, removes the old one).
    Passwd {
        repo: PathBuf,
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        pass: PassArgs,
    },
}

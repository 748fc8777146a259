//! `diskvault init`: create a repository.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use diskvault::{
    ChunkerParams, CompressionSetting, Encryption, Error, InitOptions, KdfCost, RepoConfig,
};
use serde::Serialize;

use crate::cli::output::print_json;
use crate::cli::{exit, location, passphrase, Globals, PassArgs};

/// Create a new repository.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory for the repository (must not exist or be empty).
    repo: PathBuf,
    #[arg(long, value_enum, default_value = "aes-256-gcm")]
    encryption: EncryptionArg,
    /// Chunking: fixed (16K, the default), fixed:SIZE, fastcdc (4K/16K/64K) or fastcdc:MIN/AVG/MAX.
    #[arg(long, default_value = "fixed")]
    chunker: ChunkerParams,
    /// Default compression of new chunks: zstd:LEVEL (-7..=22) or none.
    #[arg(long, default_value = "zstd:3")]
    compression: CompressionSetting,
    /// Repository format: 2 (the default) or 1, for readers that know only format 1.
    #[arg(long = "format", value_name = "MAJOR", default_value_t = diskvault::format::FORMAT_MAJOR, value_parser = clap::value_parser!(u32).range(1..=diskvault::format::FORMAT_MAJOR as i64))]
    format_major: u32,
    /// Print the new repository's config as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pass: PassArgs,
}

/// How the chunks of the new repository are encrypted.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionArg {
    /// AES-256-GCM, with keyed chunk ids (the default).
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    /// No encryption: anyone who can read the repository can read the disks.
    None,
}

/// `init --json`: where the repository is, and its config.
#[derive(Serialize)]
struct InitJson<'a> {
    location: &'a str,
    #[serde(flatten)]
    config: &'a RepoConfig,
}

/// Creates the repository and says what it is.
pub fn run(a: InitArgs, _g: &Globals) -> anyhow::Result<i32> {
    let encryption = match a.encryption {
        EncryptionArg::Aes256Gcm => Encryption::Aes256Gcm,
        EncryptionArg::None => Encryption::None,
    };
    let p = match encryption {
        Encryption::Aes256Gcm => Some(passphrase(&a.pass, true)?.ok_or(Error::PassphraseRequired)?),
        Encryption::None => None,
    };
    let opts = InitOptions {
        encryption,
        chunker: a.chunker,
        compression: a.compression,
        kdf: KdfCost::default(),
        format_major: a.format_major,
    };
    let r = location(&a.repo)?.init(p.as_deref().map(|v| v.as_slice()), &opts)?;
    let c = r.config();
    if a.json {
        print_json(&InitJson {
            location: r.location(),
            config: c,
        });
        return Ok(exit::OK);
    }
    out!("created repository {} at {}", &c.id[..8], r.location());
    out!(
        "  format {}.{}, encryption {}, chunker {}, compression {}",
        c.format.major,
        c.format.minor,
        c.encryption,
        c.chunker,
        c.compression
    );
    Ok(exit::OK)
}

//! `diskvault analyze`: what backups of some images would store with each
//! chunker and compression, without a repository and without writing.

use std::path::{Path, PathBuf};

use diskvault::{
    AnalyzeOptions, AnalyzeReport, ChunkerParams, CompressionSetting, Encryption, SettingReport,
};

use super::init::EncryptionArg;
use crate::cli::exit;
use crate::cli::human::size;
use crate::cli::Globals;

/// Predict what backups of some images would store with each chunker and
/// compression (chunks, dedup, compressed and metadata bytes); writes nothing.
#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Raw image files or block devices, in backup order: the versions of
    /// a disk, oldest first (each later one counts what it adds).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Chunkers to compare, comma-separated: fixed, fixed:SIZE, fastcdc,
    /// fastcdc:MIN/AVG/MAX, as init takes them (default: fixed:16K, init's).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub chunker: Vec<ChunkerParams>,
    /// Compressions to compare, comma-separated: zstd:LEVEL or none
    /// (default: zstd:3, init's).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub compression: Vec<CompressionSetting>,
    /// The repository's encryption (it adds 36 bytes to each sealed blob).
    #[arg(long, value_enum, default_value = "aes-256-gcm")]
    pub encryption: EncryptionArg,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=diskvault::exec::MAX_THREADS as i64))]
    pub threads: Option<u16>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the analysis and prints its report.
pub fn run(args: AnalyzeArgs, g: &Globals) -> anyhow::Result<i32> {
    let bar = g.bar("analyze");
    let report = diskvault::analyze(&AnalyzeOptions {
        images: args.images,
        chunkers: args.chunker,
        compressions: args.compression,
        encryption: match args.encryption {
            EncryptionArg::Aes256Gcm => Encryption::Aes256Gcm,
            EncryptionArg::None => Encryption::None,
        },
        threads: args.threads.map(usize::from),
        progress: bar.progress(),
    });
    bar.finish();
    let report = report?;
    if args.json {
        out!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(exit::OK)
}

/// The file name of an image, for the tables (JSON has the whole path).
fn short(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

fn label(s: &SettingReport) -> String {
    format!("{} {}", s.chunker_spec, s.compression)
}

fn print_text(r: &AnalyzeReport) {
    out!(
        "analyze: {} image{}, {}, {} thread{}; nothing was written",
        r.images.len(),
        if r.images.len() == 1 { "" } else { "s" },
        match r.encryption {
            Encryption::Aes256Gcm => "encrypted",
            _ => "not encrypted",
        },
        r.threads,
        if r.threads == 1 { "" } else { "s" },
    );
    for i in &r.images {
        out!("  {:<24} {:>10}", short(&i.path), size(i.size));
    }
    let width = r
        .settings
        .iter()
        .map(|s| label(s).len())
        .max()
        .unwrap_or(0)
        .max("setting".len());
    let iwidth = r
        .images
        .iter()
        .map(|i| short(&i.path).len())
        .max()
        .unwrap_or(0)
        .max("image".len());
    out!();
    out!("Each image as a backup after the ones before it:");
    out!(
        "{:<width$}  {:<iwidth$}  {:>9}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
        "setting",
        "image",
        "chunks",
        "new chunks",
        "new raw",
        "data",
        "manifest",
        "index",
        "adds"
    );
    for s in &r.settings {
        for (n, i) in s.images.iter().enumerate() {
            let f = &i.figures;
            out!(
                "{:<width$}  {:<iwidth$}  {:>9}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
                if n == 0 { label(s) } else { String::new() },
                short(&i.path),
                f.chunks,
                f.new_chunks,
                size(f.new_bytes),
                size(f.group_bytes),
                size(f.manifest_bytes),
                size(f.index_bytes),
                size(f.added_bytes),
            );
        }
    }
    out!();
    out!("All images:");
    out!(
        "{:<width$}  {:>6}  {:>6}  {:>10}  {:>10}  {:>10}  {:>13}  {:>8}  {:>9}",
        "setting",
        "dedup",
        "compr.",
        "data",
        "metadata",
        "adds",
        "index RAM/TiB",
        "MB/s",
        "scan MB/s"
    );
    for s in &r.settings {
        let t = &s.totals;
        let per_tib = if t.new_bytes > 0 {
            (s.index_memory_bytes as f64 * (1u64 << 40) as f64 / t.new_bytes as f64) as u64
        } else {
            0
        };
        out!(
            "{:<width$}  {:>5.2}x  {:>5.2}x  {:>10}  {:>10}  {:>10}  {:>13}  {:>8.0}  {:>9.0}",
            label(s),
            s.dedup_ratio,
            s.compression_ratio,
            size(t.group_bytes),
            size(t.manifest_bytes + t.pack_overhead_bytes + t.index_bytes),
            size(t.added_bytes),
            size(per_tib),
            s.mb_per_s,
            s.scan_mb_per_s,
        );
    }
    out!();
    out!("chunks: data chunks (all-zero ones are holes); new raw: the unique bytes an image adds,");
    out!("before compression; data: the groups they are sealed in (compressed, encrypted);");
    out!("manifest, index: what the backup writes to describe them; metadata: manifest, index");
    out!("and pack tables; adds: packs and index files, what the repository grows by;");
    out!("dedup: chunk bytes of all images per unique byte; compr.: unique bytes per data byte;");
    out!("index RAM/TiB: memory of the loaded index per TiB of unique data; scan: chunking,");
    out!("zero test and chunk ids alone.");
}

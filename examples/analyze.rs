//! What backups of some disk images would store with the default chunker
//! and with FastCDC, predicted without writing anything:
//!
//! ```text
//! cargo run --release --example analyze -- IMAGE...
//! ```
//!
//! Give the versions of one disk oldest first: each later image is
//! counted as a backup after the earlier ones.

use std::path::PathBuf;

use diskvault::{analyze, AnalyzeOptions, ChunkerParams};

fn main() -> Result<(), diskvault::Error> {
    let images: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if images.is_empty() {
        eprintln!("usage: analyze IMAGE...");
        std::process::exit(2);
    }
    let report = analyze(&AnalyzeOptions {
        images,
        chunkers: vec![ChunkerParams::DEFAULT, ChunkerParams::DEFAULT_FASTCDC],
        ..AnalyzeOptions::default()
    })?;
    for setting in &report.settings {
        for image in &setting.images {
            let f = &image.figures;
            println!(
                "{} {} {}: {} new chunks, {} unique bytes, the vault grows by {} bytes",
                setting.chunker_spec,
                setting.compression,
                image.path,
                f.new_chunks,
                f.new_bytes,
                f.added_bytes
            );
        }
        println!(
            "{} {}: dedup {:.2}x, compression {:.2}x",
            setting.chunker_spec,
            setting.compression,
            setting.dedup_ratio,
            setting.compression_ratio
        );
    }
    Ok(())
}

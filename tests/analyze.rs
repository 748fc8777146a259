//! `analyze` predicts what backups would store; these tests hold it to
//! what real backups of the same images then store, and check its command
//! line: JSON that parses, clear errors for bad input.

mod common;

#[allow(dead_code)]
#[path = "../examples/mkimages.rs"]
mod mkimages;

use std::path::{Path, PathBuf};

use common::*;
use diskvault::{
    analyze, AnalyzeOptions, ChunkerParams, CompressionSetting, Encryption, InitOptions,
};

/// v1 and v2 of a 128 MiB ext4 disk (a day of churn between them), made by
/// the project's generator; `None` without e2fsprogs.
fn ext4_pair(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    if let Some(why) = mkimages::missing_tool() {
        eprintln!("skipping: {why}");
        return None;
    }
    let mut opts = mkimages::Options::new(dir.join("images"), 128);
    opts.versions = 2;
    let made = mkimages::generate(&opts).unwrap();
    Some((made.images[0].clone(), made.images[1].clone()))
}

/// Bytes of the files under `prefix` of a local vault.
fn bytes_under(vault: &Path, prefix: &str) -> u64 {
    objects(vault, prefix)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn assert_within_5_percent(what: &str, predicted: u64, real: u64) {
    let off = (predicted as f64 - real as f64).abs() / real as f64;
    eprintln!(
        "{what}: predicted {predicted}, real {real} ({:+.3} %)",
        (predicted as f64 / real as f64 - 1.0) * 100.0
    );
    assert!(
        off <= 0.05,
        "{what}: analyze predicted {predicted} bytes, the backup stored {real} ({:.1} % off)",
        off * 100.0
    );
}

/// The user story: analyze v1 then v2 with two settings, then back up v1
/// and v2 into a new vault of each setting. Per backup, what the backup
/// reports as stored, and the packs and index files that land on disk,
/// are what analyze said, within 5 %.
#[test]
fn prediction_matches_real_backups() {
    let dir = tempfile::tempdir().unwrap();
    let Some((v1, v2)) = ext4_pair(dir.path()) else {
        return;
    };
    let settings = [
        (ChunkerParams::DEFAULT, CompressionSetting::DEFAULT),
        (ChunkerParams::DEFAULT_FASTCDC, CompressionSetting::Zstd(1)),
    ];
    let report = analyze(&AnalyzeOptions {
        images: vec![v1.clone(), v2.clone()],
        chunkers: settings.iter().map(|s| s.0).collect(),
        compressions: vec![CompressionSetting::DEFAULT, CompressionSetting::Zstd(1)],
        ..AnalyzeOptions::default()
    })
    .unwrap();
    assert_eq!(
        report.settings.len(),
        4,
        "two chunkers times two compressions"
    );
    assert_eq!(report.encryption, Encryption::Aes256Gcm);

    for (n, (chunker, compression)) in settings.into_iter().enumerate() {
        let predicted = report
            .settings
            .iter()
            .find(|s| s.chunker == chunker && s.compression == compression)
            .expect("the setting is in the report");
        let vault = dir.path().join(format!("vault{n}"));
        let repo = init_repo_with(
            &vault,
            &InitOptions {
                chunker,
                compression,
                ..fast_init()
            },
        );
        let mut packs_before = 0;
        let mut index_before = 0;
        for (image, figures) in [&v1, &v2].into_iter().zip(&predicted.images) {
            let f = &figures.figures;
            let what = format!("{chunker} {compression} {}", image.display());
            let real = backup_one(&repo, "root", image).totals();
            assert_eq!(real.chunks, f.chunks, "{what}: data chunks");
            assert_eq!(real.zero_bytes, f.zero_bytes, "{what}: zero bytes");
            assert_eq!(real.bytes_read, f.bytes_read, "{what}: bytes read");
            assert_eq!(
                real.new_chunks,
                f.new_chunks + f.manifest_nodes,
                "{what}: new chunks and manifest nodes"
            );
            assert_within_5_percent(
                &format!("{what}: stored"),
                f.stored_bytes,
                real.stored_bytes,
            );
            let packs = bytes_under(&vault, "packs/");
            let index = bytes_under(&vault, "index/");
            assert_within_5_percent(
                &format!("{what}: pack files"),
                f.pack_bytes,
                packs - packs_before,
            );
            assert_within_5_percent(
                &format!("{what}: index files"),
                f.index_bytes,
                index - index_before,
            );
            (packs_before, index_before) = (packs, index);
        }
        // The day's change is a small part of the disk, and both say so.
        let (first, second) = (&predicted.images[0].figures, &predicted.images[1].figures);
        assert!(second.stored_bytes * 5 < first.stored_bytes);
        assert!(predicted.dedup_ratio > 1.5, "{}", predicted.dedup_ratio);
    }
}

/// `--json` prints one document with a row per setting and the figures
/// of each image.
#[test]
fn json_report_parses() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let data = write_random_image(&a, 4 * MIB, 7);
    // b: a with its second MiB rewritten.
    std::fs::write(&b, &data).unwrap();
    write_at(&b, MIB, &Xorshift::new(8).bytes(MIB as usize));

    let run = Cli::without_password().run(&[
        "analyze".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--chunker".as_ref(),
        "fixed:4K,fixed:16K,fastcdc".as_ref(),
        "--compression".as_ref(),
        "zstd:1,zstd:3".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
        "--json".as_ref(),
    ]);
    run.expect_ok("analyze --json");
    let v = run.json();
    let settings = v["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 6);
    assert_eq!(settings[0]["chunker_spec"], "fixed:4K");
    assert_eq!(settings[0]["compression"], "zstd:1");
    assert_eq!(settings[5]["chunker_spec"], "fastcdc:4K/16K/64K");
    assert_eq!(settings[5]["chunker"]["algorithm"], "fastcdc-v2020");
    assert_eq!(v["threads"], 2);
    assert_eq!(v["encryption"], "aes-256-gcm");
    for s in settings {
        let images = s["images"].as_array().unwrap();
        assert_eq!(images.len(), 2);
        for key in [
            "bytes_read",
            "chunks",
            "zero_bytes",
            "new_chunks",
            "new_bytes",
            "groups",
            "stored_bytes",
            "manifest_bytes",
            "index_bytes",
            "pack_overhead_bytes",
            "added_bytes",
        ] {
            assert!(images[1][key].is_u64(), "{key} in {s}");
        }
        assert_eq!(images[0]["bytes_read"], 4 * MIB);
        // Random data: v1 is all new; v2 adds about the MiB that changed.
        assert_eq!(images[0]["new_bytes"], 4 * MIB);
        let added = images[1]["new_bytes"].as_u64().unwrap();
        assert!((MIB..=MIB + 192 * KIB).contains(&added), "{added} in {s}");
        assert!(s["dedup_ratio"].as_f64().unwrap() > 1.4);
        assert!(s["mb_per_s"].as_f64().unwrap() > 0.0);
    }

    // The text report names every setting and image.
    let run = Cli::without_password().run(&[
        "analyze".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--chunker".as_ref(),
        "fixed:64K".as_ref(),
    ]);
    run.expect_ok("analyze")
        .expect_mentions("fixed:64K zstd:3", "the setting")
        .expect_mentions("b.img", "the second image");
}

/// Mistakes get a message that says what is wrong, and the documented
/// exit codes: 2 for a bad flag, 5 for an image that is not there.
#[test]
fn bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    write_random_image(&image, MIB, 9);
    let cli = Cli::without_password();

    let missing = dir.path().join("nope.img");
    cli.run(&["analyze".as_ref(), image.as_os_str(), missing.as_os_str()])
        .expect_code(5, "a missing image")
        .expect_mentions("nope.img", "names the image")
        .expect_mentions("No such file", "says why");

    cli.run(&[
        "analyze".as_ref(),
        image.as_os_str(),
        "--chunker".as_ref(),
        "rabin:16K".as_ref(),
    ])
    .expect_code(2, "an unknown chunker")
    .expect_mentions("unknown chunker 'rabin:16K'", "names the chunker");

    cli.run(&[
        "analyze".as_ref(),
        image.as_os_str(),
        "--chunker".as_ref(),
        "fixed:100".as_ref(),
    ])
    .expect_code(2, "a chunk size out of range")
    .expect_mentions("out of range", "says what is wrong");

    cli.run(&[
        "analyze".as_ref(),
        image.as_os_str(),
        "--compression".as_ref(),
        "lz4".as_ref(),
    ])
    .expect_code(2, "an unknown compression")
    .expect_mentions("unknown compression 'lz4'", "names it");

    cli.run(&["analyze"])
        .expect_code(2, "no image")
        .expect_mentions("IMAGE", "asks for an image");

    cli.run(&["analyze".as_ref(), dir.path().as_os_str()])
        .expect_code(5, "a directory")
        .expect_mentions("not a regular file or block device", "says why");
}

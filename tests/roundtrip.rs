//! Back up an image, restore it, get the same bytes back: through the
//! library, for the shapes of image a user actually has.

mod common;

use common::*;
use diskvault::{
    check, restore, stats, CheckOptions, ChunkerParams, Encryption, Error, InitOptions, KdfCost,
    Repository, RestoreOptions,
};

#[test]
fn random_image_restores_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    write_random_image(&image, 3 * MIB, 1);
    let repo = init_repo(&dir.path().join("vault"));

    let report = backup_one(&repo, "sda", &image);
    let out = dir.path().join("restored.img");
    let restored = restore_to(&repo, &report.point.to_hex(), &out);

    assert_same_bytes(&out, &image);
    assert_eq!(restored.disks.len(), 1);
    assert_eq!(restored.disks[0].name, "sda");
    assert_eq!(restored.disks[0].size, 3 * MIB);
    // Nothing is left behind under a temporary name.
    assert_eq!(
        files_under(dir.path())
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .count(),
        0
    );
}

#[test]
fn sparse_image_restores_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("sparse.img");
    let size = 64 * MIB;
    let mut rng = Xorshift::new(2);
    // A partition table, a little metadata in the middle and a tail, like a
    // fresh file system: 3 x 64 KiB of data in 64 MiB.
    let pieces = vec![
        (0, rng.bytes(64 * KIB as usize)),
        (30 * MIB + 4096, rng.bytes(64 * KIB as usize)),
        (size - 64 * KIB, rng.bytes(64 * KIB as usize)),
    ];
    write_sparse_image(&image, size, &pieces);
    if allocated_bytes(&image) > 16 * MIB {
        eprintln!("skipping: this file system does not keep holes in {image:?}");
        return;
    }
    let repo = init_repo(&dir.path().join("vault"));

    let report = backup_one(&repo, "sparse", &image);
    let t = report.totals();
    assert!(
        t.bytes_read < 4 * MIB,
        "holes should not be read: read {} bytes of a 64 MiB image with 192 KiB of data",
        t.bytes_read
    );
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);

    assert_same_bytes(&out, &image);
    let allocated = allocated_bytes(&out);
    assert!(
        allocated < 4 * MIB,
        "the restored image should be sparse: {allocated} bytes allocated for {size}"
    );
}

#[test]
fn zero_filled_image_is_stored_as_zero_runs() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("zeros.img");
    // Written out, not sparse: the zeros must be recognised by content.
    std::fs::write(&image, vec![0u8; 8 * MIB as usize]).unwrap();
    let repo = init_repo(&dir.path().join("vault"));

    let report = backup_one(&repo, "zeros", &image);
    let t = report.totals();
    assert_eq!(t.zero_bytes, 8 * MIB, "every byte is a zero run");
    assert_eq!(t.chunks, 0, "no data chunks for zeros");
    // Only the manifest (one leaf listing zero runs, and its root) is new.
    assert!(
        t.stored_bytes < 16 * KIB,
        "8 MiB of zeros stored {} bytes",
        t.stored_bytes
    );
    let s = stats(&repo).unwrap();
    assert_eq!(s.logical_bytes, 8 * MIB);
    assert_eq!(s.logical_data_bytes, 0);
    assert!(s.unique_bytes < 16 * KIB, "unique bytes {}", s.unique_bytes);

    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out, &image);
    assert!(
        allocated_bytes(&out) < MIB,
        "zero runs restore as holes: {} bytes allocated",
        allocated_bytes(&out)
    );
}

#[test]
fn image_size_not_a_multiple_of_the_chunk_size() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("odd.img");
    let size = MIB + 12_345;
    assert_ne!(size % DEFAULT_CHUNK, 0);
    write_random_image(&image, size, 3);
    let repo = init_repo(&dir.path().join("vault"));

    let report = backup_one(&repo, "odd", &image);
    assert_eq!(report.body.disks[0].size, size);
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);

    assert_same_bytes(&out, &image);
}

#[test]
fn tiny_image_smaller_than_one_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("tiny.img");
    write_random_image(&image, 1000, 4);
    let repo = init_repo(&dir.path().join("vault"));

    backup_one(&repo, "tiny", &image);
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);

    assert_same_bytes(&out, &image);
}

#[test]
fn empty_image_restores_empty() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("empty.img");
    std::fs::write(&image, b"").unwrap();
    let repo = init_repo(&dir.path().join("vault"));

    let report = backup_one(&repo, "empty", &image);
    assert_eq!(report.body.disks[0].size, 0);
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);

    assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
}

#[test]
fn two_disks_in_one_point() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot.img");
    let root = dir.path().join("root.img");
    write_random_image(&boot, 512 * KIB, 5);
    write_random_image(&root, 2 * MIB + 4096, 6);
    let repo = init_repo(&dir.path().join("vault"));

    let report = backup_disks(&repo, &[("boot", &boot), ("root", &root)]);
    let names: Vec<&str> = report.body.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["boot", "root"]);

    // All disks into a directory: one <disk>.img each.
    let all = dir.path().join("all");
    restore_to(&repo, "latest", &all);
    assert_eq!(
        files_under(&all),
        [
            std::path::PathBuf::from("boot.img"),
            std::path::PathBuf::from("root.img")
        ]
    );
    assert_same_bytes(&all.join("boot.img"), &boot);
    assert_same_bytes(&all.join("root.img"), &root);

    // Just one disk, to a file of the user's choosing.
    let only_root = dir.path().join("just-root.img");
    let rep = restore(
        &repo,
        &RestoreOptions {
            disk: Some("root".into()),
            ..restore_opts("latest", &only_root)
        },
    )
    .unwrap();
    assert_eq!(rep.disks.len(), 1);
    assert_same_bytes(&only_root, &root);

    // A disk the point does not have is named in the error, with the ones it has.
    let err = restore(
        &repo,
        &RestoreOptions {
            disk: Some("swap".into()),
            ..restore_opts("latest", &dir.path().join("swap.img"))
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnknownDisk { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("swap") && msg.contains("boot") && msg.contains("root"),
        "{msg}"
    );
    assert!(!dir.path().join("swap.img").exists());
}

#[test]
fn restoring_several_disks_onto_a_file_asks_for_a_disk() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    write_random_image(&a, 64 * KIB, 7);
    write_random_image(&b, 64 * KIB, 8);
    let repo = init_repo(&dir.path().join("vault"));
    backup_disks(&repo, &[("a", &a), ("b", &b)]);

    let existing_file = dir.path().join("out.img");
    std::fs::write(&existing_file, b"keep me").unwrap();
    let err = restore(&repo, &restore_opts("latest", &existing_file)).unwrap_err();

    assert!(matches!(err, Error::DiskRequired { .. }), "{err:?}");
    assert!(err.to_string().contains("--disk"), "{err}");
    assert_eq!(std::fs::read(&existing_file).unwrap(), b"keep me");
}

/// Backs up a version of an image, then an edited one, with `chunker`, and
/// restores both.
fn roundtrip_two_versions(opts: &InitOptions, passphrase: Option<&[u8]>) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let v1 = write_random_image(&image, 4 * MIB + 777, 9);
    let repo = Repository::init(&dir.path().join("vault"), passphrase, opts).unwrap();
    let first = backup_one(&repo, "disk", &image);

    // Edit in place, and insert nothing (disks never shift).
    let mut rng = Xorshift::new(10);
    write_at(&image, 100_000, &rng.bytes(5000));
    write_at(&image, 3 * MIB, &rng.bytes(300));
    let second = backup_one(&repo, "disk", &image);
    let v1_path = dir.path().join("v1.img");
    std::fs::write(&v1_path, &v1).unwrap();

    let out1 = dir.path().join("restored-v1.img");
    let out2 = dir.path().join("restored-v2.img");
    restore_to(&repo, &first.point.to_hex(), &out1);
    restore_to(&repo, &second.point.to_hex(), &out2);

    assert_same_bytes(&out1, &v1_path);
    assert_same_bytes(&out2, &image);
    let t = second.totals();
    assert!(
        t.new_bytes < MIB,
        "{}: two small edits added {} new bytes",
        opts.chunker,
        t.new_bytes
    );
}

#[test]
fn fixed_chunker_with_other_size() {
    roundtrip_two_versions(
        &InitOptions {
            chunker: "fixed:4K".parse().unwrap(),
            ..fast_init()
        },
        Some(PASSPHRASE.as_bytes()),
    );
}

#[test]
fn fastcdc_chunker() {
    roundtrip_two_versions(
        &InitOptions {
            chunker: ChunkerParams::DEFAULT_FASTCDC,
            ..fast_init()
        },
        Some(PASSPHRASE.as_bytes()),
    );
}

#[test]
fn fastcdc_chunker_small_sizes() {
    roundtrip_two_versions(
        &InitOptions {
            chunker: "fastcdc:1K/2K/8K".parse().unwrap(),
            ..fast_init()
        },
        Some(PASSPHRASE.as_bytes()),
    );
}

#[test]
fn unencrypted_repository() {
    roundtrip_two_versions(
        &InitOptions {
            encryption: Encryption::None,
            kdf: KdfCost::insecure_fast(),
            ..InitOptions::default()
        },
        None,
    );
}

#[test]
fn unencrypted_repository_holds_no_keys_and_opens_without_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let image = dir.path().join("disk.img");
    write_random_image(&image, 256 * KIB, 11);
    let opts = InitOptions {
        encryption: Encryption::None,
        ..fast_init()
    };
    let repo = Repository::init(&vault, None, &opts).unwrap();
    backup_one(&repo, "disk", &image);
    drop(repo);

    let repo = Repository::open(&vault, None).unwrap();
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out, &image);
    assert!(objects(&vault, "keys/").is_empty());
}

#[test]
fn uncompressed_repository() {
    roundtrip_two_versions(
        &InitOptions {
            compression: "none".parse().unwrap(),
            ..fast_init()
        },
        Some(PASSPHRASE.as_bytes()),
    );
}

#[test]
fn restore_refuses_existing_output_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    write_random_image(&image, MIB, 12);
    let repo = init_repo(&dir.path().join("vault"));
    backup_one(&repo, "disk", &image);

    let out = dir.path().join("precious.img");
    std::fs::write(&out, b"the user's other data").unwrap();
    let err = restore(&repo, &restore_opts("latest", &out)).unwrap_err();
    assert!(matches!(err, Error::OutputExists(_)), "{err:?}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"the user's other data");

    restore(
        &repo,
        &RestoreOptions {
            force: true,
            ..restore_opts("latest", &out)
        },
    )
    .unwrap();
    assert_same_bytes(&out, &image);
}

#[test]
fn forced_restore_over_a_longer_file_truncates_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    write_random_image(&image, 100 * KIB, 13);
    let repo = init_repo(&dir.path().join("vault"));
    backup_one(&repo, "disk", &image);

    let out = dir.path().join("out.img");
    write_random_image(&out, 2 * MIB, 14);
    restore(
        &repo,
        &RestoreOptions {
            force: true,
            ..restore_opts("latest", &out)
        },
    )
    .unwrap();

    assert_same_bytes(&out, &image);
}

#[test]
fn repeated_content_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("repeats.img");
    // The same 1 MiB block eight times (aligned to the chunk size).
    let block = Xorshift::new(15).bytes(MIB as usize);
    let data: Vec<u8> = block
        .iter()
        .copied()
        .cycle()
        .take(8 * MIB as usize)
        .collect();
    std::fs::write(&image, &data).unwrap();
    let repo = init_repo(&dir.path().join("vault"));

    let report = backup_one(&repo, "disk", &image);
    let t = report.totals();
    assert!(
        t.new_bytes < MIB + 64 * KIB,
        "8 copies of 1 MiB added {} new bytes",
        t.new_bytes
    );
    let s = stats(&repo).unwrap();
    assert!(s.dedup_ratio > 7.0, "dedup ratio {}", s.dedup_ratio);

    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out, &image);
}

#[test]
fn reopened_repository_restores_with_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    let image = dir.path().join("disk.img");
    write_random_image(&image, 300 * KIB, 16);
    let point = backup_one(&init_repo(&vault), "disk", &image).point;

    assert!(matches!(
        Repository::open(&vault, Some(b"not the passphrase")),
        Err(Error::WrongPassphrase)
    ));
    assert!(matches!(
        Repository::open(&vault, None),
        Err(Error::PassphraseRequired)
    ));
    let repo = open_repo(&vault);
    let out = dir.path().join("restored.img");
    // A unique prefix of the id is enough.
    restore_to(&repo, &point.to_hex()[..10], &out);
    assert_same_bytes(&out, &image);
}

#[test]
fn disk_names_that_map_to_one_file_are_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    write_random_image(&a, 64 * KIB, 17);
    write_random_image(&b, 64 * KIB, 18);
    let repo = init_repo(&dir.path().join("vault"));
    // A restored file's name does not start with a dot, so ".root" is
    // restored as root.img, like "root".
    backup_disks(&repo, &[(".root", &a), ("root", &b)]);

    let out = dir.path().join("out");
    let err = restore(&repo, &restore_opts("latest", &out)).unwrap_err();

    let msg = err.to_string();
    assert!(
        msg.contains("'.root'") && msg.contains("'root'") && msg.contains("--disk"),
        "{msg}"
    );
    assert!(files_under(&out).is_empty(), "{:?}", files_under(&out));
    // Each disk is still there, one at a time.
    for (name, original) in [(".root", &a), ("root", &b)] {
        let file = dir
            .path()
            .join(format!("{}.img", name.replace('.', "dot-")));
        restore(
            &repo,
            &RestoreOptions {
                disk: Some(name.into()),
                ..restore_opts("latest", &file)
            },
        )
        .unwrap();
        assert_same_bytes(&file, original);
    }
}

#[test]
fn sparse_image_with_fine_grained_holes() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("holes.img");
    // Every other 4 KiB block is data, starting at an odd place, and the
    // image ends in a hole at a size that is no multiple of anything.
    let mut rng = Xorshift::new(19);
    let pieces: Vec<(u64, Vec<u8>)> = (0..600u64)
        .filter(|i| i % 2 == 0)
        .map(|i| (3 * MIB + i * 4096, rng.bytes(4096)))
        .collect();
    write_sparse_image(&image, 12 * MIB + 5, &pieces);

    for chunker in ["fixed", "fastcdc", "fastcdc:1K/4K/16K"] {
        let repo = init_repo_with(
            &dir.path().join(format!("vault-{chunker}")),
            &InitOptions {
                chunker: chunker.parse().unwrap(),
                ..fast_init()
            },
        );
        backup_one(&repo, "holes", &image);
        let out = dir
            .path()
            .join(format!("restored-{}.img", chunker.replace('/', "-")));
        restore_to(&repo, "latest", &out);

        assert_same_bytes(&out, &image);
        assert!(
            allocated_bytes(&out) <= allocated_bytes(&image) + 64 * KIB,
            "{chunker}: {} bytes allocated, the original {}",
            allocated_bytes(&out),
            allocated_bytes(&image)
        );
    }
}

#[test]
fn many_small_extents_per_manifest_leaf() {
    let dir = tempfile::tempdir().unwrap();
    // 512-byte chunks alternating with 512-byte zero runs: 16 Ki extents
    // in every 8 MiB.
    let image = dir.path().join("striped.img");
    let mut data = Xorshift::new(20).bytes(9 * MIB as usize);
    for stripe in data.chunks_mut(1024) {
        stripe[..512].fill(0);
    }
    std::fs::write(&image, &data).unwrap();
    let repo = init_repo_with(
        &dir.path().join("vault"),
        &InitOptions {
            chunker: "fixed:512".parse().unwrap(),
            ..fast_init()
        },
    );

    let report = backup_one(&repo, "striped", &image);
    assert_eq!(report.totals().zero_bytes, 9 * MIB / 2);
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out, &image);
}

#[test]
fn tiny_content_defined_chunks_fill_manifest_leaves_early() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    // ~256-byte chunks: a 4 MiB leaf span would need ~16 Ki extents.
    write_random_image(&image, 9 * MIB, 21);
    let repo = init_repo_with(
        &dir.path().join("vault"),
        &InitOptions {
            chunker: "fastcdc:64/256/1024".parse().unwrap(),
            ..fast_init()
        },
    );

    backup_one(&repo, "disk", &image);
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out, &image);
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: None,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// Log-like text: compressible, but no two chunks alike.
fn text_image(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Xorshift::new(seed);
    let mut out = Vec::with_capacity(len + 100);
    let mut n = 0u64;
    while out.len() < len {
        n += 1;
        let line = format!(
            "2024-06-01T12:{:02}:{:02} host{} sshd[{}]: Accepted publickey for user{} port {}\n",
            n / 60 % 60,
            n % 60,
            rng.below(4),
            rng.below(30000),
            rng.below(50),
            rng.below(65536)
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn compressible_data_is_stored_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("logs.img");
    std::fs::write(&image, text_image(4 * MIB as usize, 22)).unwrap();
    let repo = init_repo(&dir.path().join("vault"));

    let report = backup_one(&repo, "logs", &image);

    let stored = report.totals().stored_bytes;
    assert!(
        stored < 4 * MIB / 3,
        "4 MiB of log text stored {stored} bytes"
    );
    let s = stats(&repo).unwrap();
    assert!(s.compression_ratio > 3.0, "{}", s.compression_ratio);
    let out = dir.path().join("restored.img");
    restore_to(&repo, "latest", &out);
    assert_same_bytes(&out, &image);
}

#[test]
fn compression_can_change_between_backups() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("logs.img");
    let v1 = text_image(2 * MIB as usize, 23);
    std::fs::write(&image, &v1).unwrap();
    let repo = init_repo(&dir.path().join("vault"));
    let first = backup_one(&repo, "logs", &image);

    std::fs::write(&image, text_image(2 * MIB as usize, 24)).unwrap();
    let second = diskvault::backup(
        &repo,
        &diskvault::BackupOptions {
            disks: vec![diskvault::BackupDisk::file("logs", &image).unwrap()],
            compression: Some("none".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();

    assert!(
        second.totals().stored_bytes > 2 * MIB,
        "uncompressed chunks are stored as they are: {}",
        second.totals().stored_bytes
    );
    let v1_path = dir.path().join("v1.img");
    std::fs::write(&v1_path, &v1).unwrap();
    let out1 = dir.path().join("restored-v1.img");
    let out2 = dir.path().join("restored-v2.img");
    restore_to(&repo, &first.point.to_hex(), &out1);
    restore_to(&repo, &second.point.to_hex(), &out2);
    assert_same_bytes(&out1, &v1_path);
    assert_same_bytes(&out2, &image);
}

//! `restore --into`: bring an older copy of a disk up to a recovery point by
//! fetching and writing only the chunks that differ.

mod common;

use common::*;
use std::path::Path;

use diskvault::{restore, RestoreOptions};

fn into_opts(point: &str, existing: &std::path::Path) -> RestoreOptions {
    RestoreOptions {
        into_existing: true,
        ..restore_opts(point, existing)
    }
}

#[test]
fn updating_yesterdays_copy_fetches_only_the_changed_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(&dir.path().join("vault"));
    let day1 = dir.path().join("day1.img");
    let day2 = dir.path().join("day2.img");
    write_random_image(&day1, 8 * MIB, 1);
    std::fs::copy(&day1, &day2).unwrap();
    // Day 2 rewrites five blocks in five different 16 KiB chunks.
    for (n, off) in [0u64, 1, 2, 3, 4]
        .iter()
        .map(|k| k * 1_500_000 / 4096 * 4096 + 4096)
        .enumerate()
    {
        write_at(&day2, off, &Xorshift::new(100 + n as u64).bytes(4096));
    }
    backup_one(&repo, "root", &day1);
    backup_one(&repo, "root", &day2);

    // The machine's disk still holds day 1; bring it to day 2.
    let disk = dir.path().join("disk.img");
    std::fs::copy(&day1, &disk).unwrap();
    let report = restore(&repo, &into_opts("latest", &disk)).unwrap();
    assert_same_bytes(&disk, &day2);
    let d = &report.disks[0];
    assert_eq!(
        d.chunks_fetched, 5,
        "only the five changed chunks are fetched"
    );
    assert_eq!(d.chunks_reused + d.chunks_fetched, d.chunks);
    assert_eq!(d.bytes_written, 5 * DEFAULT_CHUNK);

    // Going back to day 1 works the same way.
    let first = repo.list_points().unwrap()[0].0.to_hex();
    restore(&repo, &into_opts(&first, &disk)).unwrap();
    assert_same_bytes(&disk, &day1);
}

#[test]
fn a_copy_of_another_size_or_with_data_in_the_holes_is_corrected() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(&dir.path().join("vault"));
    let image = dir.path().join("sparse.img");
    let a = Xorshift::new(7).bytes(300_000);
    let b = Xorshift::new(8).bytes(200_000);
    write_sparse_image(&image, 6 * MIB, &[(0, a), (4 * MIB, b)]);
    backup_one(&repo, "root", &image);

    // Larger than the disk, and full of data where the disk has holes: a
    // copy of another size may be a copy of another disk, so it takes
    // --force.
    let bigger = dir.path().join("bigger.img");
    write_random_image(&bigger, 7 * MIB + 123, 9);
    let before = std::fs::read(&bigger).unwrap();
    let e = restore(&repo, &into_opts("latest", &bigger)).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(
        std::fs::read(&bigger).unwrap(),
        before,
        "refused: untouched"
    );
    let forced = |path: &Path| RestoreOptions {
        force: true,
        ..into_opts("latest", path)
    };
    restore(&repo, &forced(&bigger)).unwrap();
    assert_same_bytes(&bigger, &image);

    // Smaller than the disk.
    let smaller = dir.path().join("smaller.img");
    write_random_image(&smaller, MIB, 10);
    let report = restore(&repo, &forced(&smaller)).unwrap();
    assert_same_bytes(&smaller, &image);
    assert_eq!(report.disks[0].chunks_reused, 0);
}

#[test]
fn into_needs_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init_repo(&dir.path().join("vault"));
    let image = dir.path().join("disk.img");
    write_random_image(&image, MIB, 3);
    backup_one(&repo, "root", &image);
    let err = restore(&repo, &into_opts("latest", &dir.path().join("nope.img"))).unwrap_err();
    assert!(err.to_string().contains("nope.img"), "{err}");
}

#[test]
fn the_cli_updates_a_copy_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    init_repo(&vault);
    let image = dir.path().join("disk.img");
    write_random_image(&image, 2 * MIB, 4);
    let cli = Cli::new();
    cli.run(&["backup".as_ref(), vault.as_os_str(), image.as_os_str()])
        .expect_ok("backup");
    let copy = dir.path().join("copy.img");
    write_random_image(&copy, 2 * MIB, 5);
    cli.run(&[
        "restore".as_ref(),
        vault.as_os_str(),
        "latest".as_ref(),
        "--into".as_ref(),
        copy.as_os_str(),
    ])
    .expect_ok("restore --into")
    .expect_mentions("verified", "restore --into output");
    assert_same_bytes(&copy, &image);

    // OUTPUT and --into together make no sense.
    cli.run(&[
        "restore".as_ref(),
        vault.as_os_str(),
        "latest".as_ref(),
        dir.path().join("x.img").as_os_str(),
        "--into".as_ref(),
        copy.as_os_str(),
    ])
    .expect_code(2, "restore OUTPUT --into");
}

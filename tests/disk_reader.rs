//! Random access to a disk of a recovery point (`DiskReader`): reads at any
//! offset return the image's bytes, fetch only the chunks they touch, and
//! fail loudly on damage instead of returning wrong bytes.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use common::*;
use diskvault::image::ImageRead;
use diskvault::{DiskReader, DiskReaderOptions, Error, Repository};

/// A sparse image with data, holes, written zeros and data at the end,
/// backed up in a new vault.
fn vault_with_image(dir: &Path) -> (Arc<Repository>, Vec<u8>) {
    let image = dir.join("disk.img");
    let size = 24 * MIB + 4321;
    let mut rng = Xorshift::new(11);
    let pieces = vec![
        (0, rng.bytes(3_000_000)),
        (5 * MIB, vec![0u8; 2 * MIB as usize]),
        (9 * MIB + 17, rng.bytes(6_500_000)),
        (size - 50_000, rng.bytes(50_000)),
    ];
    write_sparse_image(&image, size, &pieces);
    let repo = init_repo(&dir.join("vault"));
    backup_one(&repo, "root", &image);
    (Arc::new(repo), std::fs::read(&image).unwrap())
}

#[test]
fn reads_at_random_offsets_equal_the_image() {
    let dir = scratch_dir();
    let (repo, image) = vault_with_image(dir.path());
    let reader = DiskReader::open(repo, "latest", None).unwrap();
    assert_eq!(reader.size(), image.len() as u64);
    let mut rng = Xorshift::new(5);
    for round in 0..300 {
        // Lengths from 1 byte to several chunks and leaves; offsets
        // anywhere, so reads start and end inside chunks, holes and the
        // last partial chunk.
        let len = match round % 4 {
            0 => 1 + rng.below(16) as usize,
            1 => 1 + rng.below(70_000) as usize,
            2 => 1 + rng.below(5 * MIB) as usize,
            _ => 4096,
        };
        let offset = rng.below(image.len() as u64 - len as u64 + 1);
        let mut buf = vec![0xeeu8; len];
        reader.read_exact_at(&mut buf, offset).unwrap();
        assert!(
            buf[..] == image[offset as usize..offset as usize + len],
            "{len} bytes at {offset} differ from the image"
        );
    }
    // The last byte, and an empty read at the very end.
    let mut last = [0u8; 1];
    reader
        .read_exact_at(&mut last, image.len() as u64 - 1)
        .unwrap();
    assert_eq!(last[0], image[image.len() - 1]);
    reader.read_exact_at(&mut [], image.len() as u64).unwrap();
}

#[test]
fn read_and_seek_stream_the_image() {
    let dir = scratch_dir();
    let (repo, image) = vault_with_image(dir.path());
    let mut reader = DiskReader::open(repo, "latest", Some("root")).unwrap();
    let mut all = Vec::new();
    reader.read_to_end(&mut all).unwrap();
    assert!(all == image, "reading the disk to its end gives the image");

    let at = reader.seek(SeekFrom::End(-60_000)).unwrap();
    let mut tail = Vec::new();
    reader.read_to_end(&mut tail).unwrap();
    assert!(tail[..] == image[at as usize..]);
    assert_eq!(reader.stream_position().unwrap(), image.len() as u64);
    assert!(reader
        .seek(SeekFrom::Current(-(image.len() as i64) - 1))
        .is_err());
}

#[test]
fn a_small_read_fetches_a_small_part_of_the_disk() {
    let dir = scratch_dir();
    let (repo, image) = vault_with_image(dir.path());
    let reader = DiskReader::open_with(
        repo,
        "latest",
        None,
        DiskReaderOptions {
            readahead: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    reader.read_exact_at(&mut buf, 10 * MIB).unwrap();
    assert!(buf[..] == image[10 * MIB as usize..10 * MIB as usize + 4096]);
    let stats = reader.stats();
    // One chunk group (at most 2 MiB of plaintext, less sealed) and the
    // manifest nodes on the way.
    assert_eq!(stats.blobs_fetched, 1, "{stats:?}");
    assert!(stats.bytes_fetched < 3 * MIB, "{stats:?}");
    // The same bytes again come from the cache.
    reader.read_exact_at(&mut buf, 10 * MIB).unwrap();
    assert_eq!(reader.stats().blobs_fetched, 1);
    // A hole is read without fetching anything.
    let mut hole = vec![1u8; 65536];
    reader.read_exact_at(&mut hole, 4 * MIB).unwrap();
    assert!(hole.iter().all(|&b| b == 0));
    assert_eq!(reader.stats().blobs_fetched, 1);
}

#[test]
fn zero_ranges_report_the_holes() {
    let dir = scratch_dir();
    let (repo, image) = vault_with_image(dir.path());
    let reader = DiskReader::open(repo, "latest", None).unwrap();
    let zeros = reader.zero_ranges(0..image.len() as u64).unwrap();
    assert!(!zeros.is_empty());
    for r in &zeros {
        assert!(
            image[r.start as usize..r.end as usize]
                .iter()
                .all(|&b| b == 0),
            "{r:?} is reported as zeros"
        );
    }
    // The hole between the first data and the written zeros is reported.
    assert!(zeros.iter().any(|r| r.start <= 4 * MIB && r.end >= 5 * MIB));
    // Clipped to the range asked for.
    let inner = reader.zero_ranges(4 * MIB..4 * MIB + 100).unwrap();
    assert_eq!(inner, vec![4 * MIB..4 * MIB + 100]);
}

#[test]
fn reads_past_the_end_are_refused() {
    let dir = scratch_dir();
    let (repo, image) = vault_with_image(dir.path());
    let reader = DiskReader::open(repo, "latest", None).unwrap();
    let size = image.len() as u64;
    for (len, offset) in [
        (1, size),
        (2, size - 1),
        (10, u64::MAX - 3),
        (4096, size + 5),
    ] {
        let mut buf = vec![0u8; len];
        let err = reader.read_exact_at(&mut buf, offset).unwrap_err();
        assert!(
            err.to_string().contains("past the end of disk 'root'"),
            "{len} at {offset}: {err}"
        );
    }
}

#[test]
fn many_threads_read_one_disk() {
    let dir = scratch_dir();
    let (repo, image) = vault_with_image(dir.path());
    let reader = DiskReader::open_with(
        repo,
        "latest",
        None,
        DiskReaderOptions {
            // Smaller than the disk: blobs are dropped and fetched again
            // while other threads use them.
            cache_bytes: 4 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let (reader, image) = (&reader, &image);
            s.spawn(move || {
                let mut rng = Xorshift::new(100 + t);
                for _ in 0..60 {
                    let len = 1 + rng.below(300_000) as usize;
                    let offset = rng.below(image.len() as u64 - len as u64);
                    let mut buf = vec![0u8; len];
                    reader.read_exact_at(&mut buf, offset).unwrap();
                    assert!(buf[..] == image[offset as usize..offset as usize + len]);
                }
            });
        }
    });
}

#[test]
fn a_damaged_chunk_fails_the_read_that_touches_it_and_only_that() {
    let dir = scratch_dir();
    let (repo, image) = vault_with_image(dir.path());
    let pack = damage_chunk_at(&repo, &dir.path().join("vault"), &image, 0);
    let reader = DiskReader::open(repo, "latest", None).unwrap();
    let mut buf = vec![0u8; 100];
    let err = reader.read_exact_at(&mut buf, 50).unwrap_err();
    assert!(matches!(err, Error::Damaged { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&pack[..8]) || text.contains(&pack), "{text}");
    assert!(text.contains("disk 'root'"), "{text}");
    // Reads of other chunk groups still work.
    let at = image.len() - 10_000;
    let mut tail = vec![0u8; 10_000];
    reader.read_exact_at(&mut tail, at as u64).unwrap();
    assert!(tail[..] == image[at..]);
}

#[test]
fn points_and_disks_are_chosen_by_name() {
    let dir = scratch_dir();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let a_bytes = write_random_image(&a, 300_000, 1);
    let b_bytes = write_random_image(&b, 200_000, 2);
    let repo = init_repo(&dir.path().join("vault"));
    let report = backup_disks(&repo, &[("root", &a), ("data", &b)]);
    let repo = Arc::new(repo);
    let err = DiskReader::open(repo.clone(), "latest", None)
        .err()
        .expect("two disks need a name");
    assert!(matches!(err, Error::DiskRequired { count: 2, .. }), "{err}");
    let err = DiskReader::open(repo.clone(), "latest", Some("swap"))
        .err()
        .expect("no such disk");
    assert!(err.to_string().contains("root, data"), "{err}");
    let err = DiskReader::open(repo.clone(), "ffffff", Some("root"))
        .err()
        .expect("no such point");
    assert!(matches!(err, Error::UnknownPoint(_)), "{err}");
    let point = report.point.to_hex();
    for (name, bytes) in [("root", &a_bytes), ("data", &b_bytes)] {
        let mut r = DiskReader::open(repo.clone(), &point[..8], Some(name)).unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert!(all == *bytes, "disk {name}");
        assert_eq!(r.point(), report.point);
    }
}

/// The golden repositories of every format read at random like the images
/// they hold.
#[test]
fn golden_repositories_read_at_random() {
    for version in ["v1", "v1.1", "v2"] {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let dir = scratch_dir();
        let vault = dir.path().join("repo");
        copy_dir(&root.join(format!("golden-{version}/repo")), &vault);
        let repo =
            Arc::new(Repository::open(&vault, Some(b"diskvault-golden".as_slice())).unwrap());
        let text =
            std::fs::read_to_string(root.join(format!("golden-{version}/expected.txt"))).unwrap();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (disk, point, hash) = (f[1], f[2], f[3]);
            let mut reader = DiskReader::open(repo.clone(), &point[..12], Some(disk)).unwrap();
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            assert_eq!(
                blake3::hash(&all).to_hex().as_str(),
                hash,
                "{version} {point} {disk}"
            );
            let mut rng = Xorshift::new(3);
            for _ in 0..20 {
                let len = 1 + rng.below(40_000.min(all.len() as u64)) as usize;
                let offset = rng.below(all.len() as u64 - len as u64 + 1);
                let mut buf = vec![0u8; len];
                reader.read_exact_at(&mut buf, offset).unwrap();
                assert!(buf[..] == all[offset as usize..offset as usize + len]);
            }
        }
    }
}

#[test]
fn latest_tilde_n_names_the_points_before_the_newest() {
    let dir = scratch_dir();
    let image = dir.path().join("disk.img");
    let repo = init_repo(&dir.path().join("vault"));
    let mut days = Vec::new();
    for day in 0..3u64 {
        days.push(write_random_image(&image, 100_000, day));
        backup_one(&repo, "root", &image);
    }
    let repo = Arc::new(repo);
    for (spec, day) in [
        ("latest", 2),
        ("latest~0", 2),
        ("latest~1", 1),
        ("latest~2", 0),
    ] {
        let mut r = DiskReader::open(repo.clone(), spec, None).unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert!(all == days[day], "{spec} is day {day}");
    }
    let err = DiskReader::open(repo.clone(), "latest~3", None)
        .err()
        .unwrap();
    assert!(matches!(err, Error::UnknownPoint(_)), "{err}");
    assert!(err.to_string().contains("3 points"), "{err}");
    for bad in ["latest~", "latest~x", "latest-1", "latest~-1"] {
        let err = DiskReader::open(repo.clone(), bad, None).err().unwrap();
        assert!(err.to_string().contains("latest~N"), "{bad}: {err}");
    }
}

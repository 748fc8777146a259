//! The project's own image generator (`examples/mkimages.rs`), which the
//! ext4 tests and `benches/e2e.sh` use: the same seed gives the same bytes,
//! another seed other bytes, and the changed blocks it reports are the
//! blocks that differ.

#[allow(dead_code)]
#[path = "../examples/mkimages.rs"]
mod mkimages;

use std::fs::File;
use std::io::Read;
use std::path::Path;

fn blake3_of(path: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path).unwrap()).unwrap();
    hasher.finalize().to_hex().to_string()
}

/// Counts differing 4 KiB blocks the plain way, one block at a time.
fn differing_blocks(a: &Path, b: &Path) -> u64 {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut x, mut y) = ([0u8; 4096], [0u8; 4096]);
    let mut differ = 0;
    loop {
        let n = fa.read(&mut x).unwrap();
        let m = fb.read(&mut y).unwrap();
        assert_eq!(n, m, "images of one size, read alike");
        if n == 0 {
            return differ;
        }
        assert_eq!(n, 4096, "a whole block at a time from a regular file");
        differ += u64::from(x != y);
    }
}

#[test]
fn same_seed_same_bytes_and_true_change_counts() {
    if let Some(why) = mkimages::missing_tool() {
        eprintln!("skipping: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, seed: u64| {
        let mut opts = mkimages::Options::new(dir.path().join(name), 64);
        opts.seed = seed;
        mkimages::generate(&opts).unwrap()
    };
    let a = make("a", 7);
    let b = make("b", 7);
    let other = make("c", 8);
    assert_eq!(a.images.len(), 3, "v1, v2, v3");
    for (x, y) in a.images.iter().zip(&b.images) {
        assert_eq!(
            blake3_of(x),
            blake3_of(y),
            "{} differs between runs",
            x.display()
        );
        assert_eq!(std::fs::metadata(x).unwrap().len(), 64 << 20);
    }
    assert_ne!(blake3_of(&a.images[0]), blake3_of(&other.images[0]));
    assert_eq!(a.changed, b.changed);

    // The reported changes are the blocks that differ, and a day's churn
    // is a few per cent of a disk 60 % full.
    for (pair, c) in a.images.windows(2).zip(&a.changed) {
        let counted = differing_blocks(&pair[0], &pair[1]);
        assert_eq!(c.blocks, counted, "{c:?}");
        assert_eq!(c.of, 16384);
        assert!(
            (100..2000).contains(&counted),
            "a day of churn on 64 MiB changed {counted} blocks"
        );
    }
    // Every kind of change happened: new, replaced, rewritten in place,
    // deleted.
    let day = a.report.lines().find(|l| l.starts_with("day 2:")).unwrap();
    for kind in ["new", "replaced", "rewritten in place", "deleted"] {
        let count: u64 = day
            .split(kind)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(count > 0, "no {kind} files in {day:?}");
    }

    // A second run with the same parameters keeps the images it finds.
    let before = std::fs::metadata(&a.images[0]).unwrap().modified().unwrap();
    let again = make("a", 7);
    assert_eq!(again.changed, a.changed);
    let after = std::fs::metadata(&a.images[0]).unwrap().modified().unwrap();
    assert_eq!(before, after, "cached images are not made again");
}

//! The format-v1 golden repository in `testdata/golden-v1/` was written by
//! the first release of format v1. Every later build must read it and restore
//! it byte for byte: this test guards the format forever. Never regenerate
//! the fixture to make this test pass.

use std::path::{Path, PathBuf};

use diskvault::{check, restore, CheckOptions, Error, Repository, RestoreOptions};

const PASSPHRASE: &[u8] = b"diskvault-golden";

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden-v1")
}

/// (point label, disk, point id, BLAKE3 of the disk image)
fn expected() -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(golden().join("expected.txt")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].into(), f[1].into(), f[2].into(), f[3].into())
        })
        .collect()
}

#[test]
fn golden_v1_repository_restores_byte_for_byte() {
    let repo = Repository::open(&golden().join("repo"), Some(PASSPHRASE)).unwrap();
    let points = repo.list_points().unwrap();
    let expected = expected();
    assert_eq!(points.len(), 2, "the golden repository holds two points");
    assert_eq!(expected.len(), 3);

    let out = tempfile::tempdir().unwrap();
    for (label, disk, id, hash) in &expected {
        let path = out.path().join(format!("{label}-{disk}.img"));
        let report = restore(
            &repo,
            &RestoreOptions {
                point: id[..12].to_string(),
                disk: Some(disk.clone()),
                output: path.clone(),
                force: false,
                threads: Some(2),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("restoring {label} {disk}: {e}"));
        assert_eq!(report.point.to_hex(), *id);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), hash.as_str());
        if label == "point1" || disk == "data" {
            let sample = std::fs::read(golden().join("../sample.img")).unwrap();
            assert!(
                bytes == sample,
                "{label} {disk} must equal testdata/sample.img"
            );
        }
    }
}

#[test]
fn golden_v1_repository_passes_a_full_check() {
    let repo = Repository::open(&golden().join("repo"), Some(PASSPHRASE)).unwrap();
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            threads: Some(2),
        },
    )
    .unwrap();
    assert!(report.is_ok(), "problems: {:?}", report.problems);
    assert_eq!(report.points, 2);
    assert_eq!(report.chunks, report.chunks_verified);
}

#[test]
fn golden_v1_repository_refuses_a_wrong_passphrase() {
    let err = Repository::open(&golden().join("repo"), Some(b"not it")).err();
    assert!(matches!(err, Some(Error::WrongPassphrase)), "{err:?}");
}

//! The golden repositories in `testdata/` were written by the first release
//! of each format version: `golden-v1/` by format 1.0, `golden-v1.1/` by
//! format 1.1 (forget records and the stored policy), `golden-v2/` by
//! format 2.0 (chunk groups, chaining values, the config bound to the
//! keys). Every later build
//! must read them and restore them byte for byte: these tests guard the
//! format forever. Never regenerate a fixture to make a test pass.
//!
//! Commands take locks in the repository they use, so each test works on a
//! copy of the fixture and the checkout stays as committed.

mod common;

use std::path::{Path, PathBuf};

use diskvault::format::manifest::{ManifestNode, NodeEntries};
use diskvault::format::policy::StoredPolicy;
use diskvault::retention::RetentionPolicy;
use diskvault::{check, restore, CheckOptions, Error, Repository, RestoreOptions};

const PASSPHRASE: &[u8] = b"diskvault-golden";

fn golden(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/golden-{version}"))
}

/// A copy of a golden repository, in a directory that lives as long as the
/// returned guard.
fn copy_of(version: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    common::copy_dir(&golden(version).join("repo"), &repo);
    (dir, repo)
}

/// (point label, disk, point id, BLAKE3 of the disk image)
fn expected(version: &str) -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(golden(version).join("expected.txt")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].into(), f[1].into(), f[2].into(), f[3].into())
        })
        .collect()
}

/// Restores every disk `expected.txt` lists and compares its BLAKE3.
fn restores_byte_for_byte(version: &str, repo: &Repository, out: &Path) {
    for (label, disk, id, hash) in &expected(version) {
        let path = out.join(format!("{label}-{disk}.img"));
        let report = restore(
            repo,
            &RestoreOptions {
                point: id[..12].to_string(),
                disk: Some(disk.clone()),
                output: path.clone(),
                force: false,
                threads: Some(2),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{version}: restoring {label} {disk}: {e}"));
        assert_eq!(report.point.to_hex(), *id);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), hash.as_str());
        // Point 1 of v1 and v1.1, and every "data" disk, is sample.img.
        if (label == "point1" && version != "v2") || disk == "data" {
            let sample = std::fs::read(golden(version).join("../sample.img")).unwrap();
            assert!(
                bytes == sample,
                "{version}: {label} {disk} must equal testdata/sample.img"
            );
        }
        std::fs::remove_file(&path).unwrap();
    }
}

fn full_check(repo: &Repository, points: usize) {
    let report = check(
        repo,
        &CheckOptions {
            read_data: true,
            threads: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.is_ok(), "problems: {:?}", report.problems);
    assert_eq!(report.points, points);
    assert_eq!(report.chunks, report.chunks_verified);
}

#[test]
fn golden_v1_repository_restores_byte_for_byte() {
    let (dir, path) = copy_of("v1");
    let repo = Repository::open(&path, Some(PASSPHRASE)).unwrap();
    assert_eq!(repo.list_points().unwrap().len(), 2, "two points");
    assert_eq!(expected("v1").len(), 3);
    restores_byte_for_byte("v1", &repo, dir.path());
    // A 1.0 repository has no policy and no forgotten point.
    assert!(repo.read_policy().unwrap().is_none());
    assert!(repo.forgotten_points().unwrap().is_empty());
}

#[test]
fn golden_v1_repository_passes_a_full_check() {
    let (_dir, path) = copy_of("v1");
    full_check(&Repository::open(&path, Some(PASSPHRASE)).unwrap(), 2);
}

#[test]
fn golden_v1_repository_refuses_a_wrong_passphrase() {
    let (_dir, path) = copy_of("v1");
    let err = Repository::open(&path, Some(b"not it")).err();
    assert!(matches!(err, Some(Error::WrongPassphrase)), "{err:?}");
}

#[test]
fn golden_v1_1_repository_restores_every_point_and_knows_what_was_forgotten() {
    let (dir, path) = copy_of("v1.1");
    let repo = Repository::open(&path, Some(PASSPHRASE)).unwrap();
    let expected = expected("v1.1");
    assert_eq!(expected.len(), 4);
    // Point 1 was forgotten by the stored policy: not listed, but restorable.
    let point1: diskvault::PointId = expected[0].2.parse().unwrap();
    let live: Vec<_> = repo
        .list_points()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(live.len(), 2);
    assert!(!live.contains(&point1));
    let forgotten = repo.forgotten_points().unwrap();
    assert_eq!(forgotten.len(), 1);
    assert_eq!(
        forgotten[&point1].reason,
        "forget --keep-last 2 --keep-tag keep --group-by host"
    );
    restores_byte_for_byte("v1.1", &repo, dir.path());
    assert_eq!(
        repo.read_policy().unwrap(),
        Some(StoredPolicy {
            rules: RetentionPolicy {
                keep_last: Some(2),
                keep_tags: vec!["keep".into()],
                group_by: "host".parse().unwrap(),
                ..RetentionPolicy::default()
            },
            grace_secs: 30 * 86_400,
        })
    );
    full_check(&repo, 3);

    // Pruned now, the forgotten point goes and the others still restore.
    let report = prune_now(&repo);
    assert_eq!(report.points_removed, vec![point1]);
    full_check(&repo, 2);
}

#[test]
fn golden_v2_repository_restores_every_point_prunes_and_passes_a_full_check() {
    let (dir, path) = copy_of("v2");
    let repo = Repository::open(&path, Some(PASSPHRASE)).unwrap();
    assert_eq!(repo.format_major(), 2);
    let expected = expected("v2");
    assert_eq!(expected.len(), 4);
    let point1: diskvault::PointId = expected[0].2.parse().unwrap();
    assert_eq!(repo.list_points().unwrap().len(), 2);
    assert!(repo.forgotten_points().unwrap().contains_key(&point1));
    restores_byte_for_byte("v2", &repo, dir.path());
    full_check(&repo, 3);

    // Data chunks are sealed in groups, and the second point took the
    // chaining value of the span the first point's leaf recorded.
    let index = repo.load_index().unwrap();
    assert!(index.iter().filter(|(_, l)| l.is_grouped()).count() > 100);
    let leaves = |point: &str| -> Vec<(diskvault::ChunkId, Option<[u8; 32]>)> {
        let id = repo.resolve_point(point).unwrap();
        let root = repo.read_point(&id).unwrap().disks[0].manifest_root;
        let read = |id: &diskvault::ChunkId| {
            let loc = index.get(id).unwrap();
            repo.read_chunk(id, &loc, &index.pack_id(loc.pack)).unwrap()
        };
        let node = ManifestNode::decode(&read(&root), 2).unwrap();
        let NodeEntries::Interior(children) = node.entries else {
            panic!("a 9 MiB disk has three leaves")
        };
        children
            .iter()
            .map(|c| {
                let leaf = ManifestNode::decode(&read(&c.id), 2).unwrap();
                (c.id, leaf.chaining_value)
            })
            .collect()
    };
    let (p1, p2) = (leaves(&expected[0].2), leaves(&expected[1].2));
    assert_eq!(p1.len(), 3);
    assert!(p1[0].1.is_some() && p1[1].1.is_some() && p1[2].1.is_none());
    assert_ne!(p1[0], p2[0], "span 0 changed on day 2");
    assert_eq!(p1[1], p2[1], "span 1 is the same leaf, value and all");

    let report = prune_now(&repo);
    assert_eq!(report.points_removed, vec![point1]);
    full_check(&repo, 2);
}

#[test]
fn golden_v2_repository_refuses_a_wrong_passphrase_and_a_changed_config() {
    let (_dir, path) = copy_of("v2");
    let err = Repository::open(&path, Some(b"not it")).err();
    assert!(matches!(err, Some(Error::WrongPassphrase)), "{err:?}");
    let config = path.join("config");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("zstd:3", "zstd:1")).unwrap();
    let err = Repository::open(&path, Some(PASSPHRASE)).err().unwrap();
    assert!(
        matches!(err, Error::Damaged { ref object, .. } if object == "config"),
        "{err:?}"
    );
}

/// Prunes without waiting for the grace period.
fn prune_now(repo: &Repository) -> diskvault::PruneReport {
    diskvault::prune(
        repo,
        &diskvault::PruneOptions {
            ignore_grace: true,
            ..Default::default()
        },
    )
    .unwrap()
}

//! The local cache in front of a remote vault: index files, points and
//! manifest nodes are fetched once; a damaged cache entry is detected and
//! fetched again; deleting the cache changes no result; and `check` judges
//! what the store holds, not the cache's copies.
//!
//! The "remote" here is a counting store in memory, so that every request
//! that reaches it can be asserted on.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use diskvault::repo::layout::is_cacheable;
use diskvault::store::{CachedStore, FaultyStore, MemoryStore, Store};
use diskvault::{
    backup, check, prune, restore, BackupOptions, CheckOptions, PruneOptions, Repository,
};

/// A session against the remote: a new cache handle on the same cache
/// directory, over a fresh counter of the requests that reach the remote.
fn session(remote: &Arc<MemoryStore>, cache: &Path) -> (Arc<FaultyStore>, Repository) {
    let counted = Arc::new(FaultyStore::counting(remote.clone()));
    let store: Arc<dyn Store> = Arc::new(CachedStore::new(
        counted.clone(),
        cache.to_path_buf(),
        is_cacheable,
    ));
    let repo = Repository::open_in(store, "remote".into(), Some(PASSPHRASE.as_bytes())).unwrap();
    (counted, repo)
}

/// A remote vault with two points of one disk, made through a cache.
fn remote_vault(dir: &Path) -> (Arc<MemoryStore>, std::path::PathBuf) {
    let remote = Arc::new(MemoryStore::new());
    let cache = dir.join("cache");
    let store: Arc<dyn Store> = Arc::new(CachedStore::new(
        remote.clone(),
        cache.clone(),
        is_cacheable,
    ));
    let repo = Repository::init_in(
        store,
        "remote".into(),
        Some(PASSPHRASE.as_bytes()),
        &fast_init(),
    )
    .unwrap();
    let image = dir.join("vda.img");
    write_random_image(&image, 12 * MIB, 3);
    for day in 0..2 {
        write_at(&image, day * MIB, &Xorshift::new(day + 9).bytes(4096));
        backup(
            &repo,
            &BackupOptions {
                disks: vec![diskvault::BackupDisk::file("vda", &image).unwrap()],
                ..BackupOptions::default()
            },
        )
        .unwrap();
    }
    (remote, cache)
}

/// What prune would do, without its timings.
fn plan(repo: &Repository) -> (usize, u64, u64, u64, usize, usize) {
    let r = prune(
        repo,
        &PruneOptions {
            dry_run: true,
            max_unused_percent: 10.0,
            ..PruneOptions::default()
        },
    )
    .unwrap();
    (
        r.points_kept,
        r.chunks_live,
        r.live_bytes,
        r.pack_bytes_before,
        r.packs_deleted,
        r.packs_repacked,
    )
}

#[test]
fn a_second_session_fetches_no_index_point_or_manifest_node_again() {
    let dir = scratch_dir();
    let (remote, cache) = remote_vault(dir.path());
    // The cache is cold (deleted): the first session fetches everything.
    std::fs::remove_dir_all(&cache).unwrap();
    let (first, repo) = session(&remote, &cache);
    let cold = plan(&repo);
    let counts = first.counts();
    assert!(counts.reads_under("index/") > 0 && counts.reads_under("points/") > 0);
    assert!(
        counts.reads_under("packs/") > 0,
        "manifest nodes come from packs"
    );

    // The next session reads none of them from the remote, and plans the
    // same prune.
    let (second, repo) = session(&remote, &cache);
    let warm = plan(&repo);
    let counts = second.counts();
    for prefix in ["index/", "points/", "packs/"] {
        assert_eq!(counts.reads_under(prefix), 0, "{prefix}: {counts:?}");
    }
    assert_eq!(cold, warm);
}

#[test]
fn damaged_cache_entries_are_fetched_again_and_change_no_result() {
    let dir = scratch_dir();
    let (remote, cache) = remote_vault(dir.path());
    let (_, repo) = session(&remote, &cache);
    let reference = plan(&repo);

    // Every cached file damaged a different way: flipped, cut, emptied,
    // replaced by another entry's bytes.
    let files = files_under(&cache);
    assert!(files.iter().any(|f| f.starts_with("blobs")), "{files:?}");
    let other = std::fs::read(cache.join(&files[0])).unwrap();
    for (n, f) in files.iter().enumerate() {
        let path = cache.join(f);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        match n % 4 {
            0 => bytes[mid] ^= 1,
            1 => bytes.truncate(mid),
            2 => bytes.clear(),
            _ => bytes.clone_from(&other),
        }
        std::fs::write(&path, &bytes).unwrap();
    }
    let (counted, repo) = session(&remote, &cache);
    let again = plan(&repo);
    assert_eq!(reference, again);
    assert!(
        counted.counts().reads_under("packs/") > 0,
        "nodes were refetched"
    );
    // The entries were mended: a third session fetches nothing again.
    let (third, repo) = session(&remote, &cache);
    plan(&repo);
    assert_eq!(third.counts().reads_under("packs/"), 0);

    // Restoring through the mended cache gives the image back.
    let out = dir.path().join("out.img");
    let report = restore(&repo, &restore_opts("latest", &out)).unwrap();
    assert_eq!(report.disks.len(), 1);
    assert_same_bytes(&out, &dir.path().join("vda.img"));
}

#[test]
fn check_reads_the_store_not_the_cache() {
    let dir = scratch_dir();
    let (remote, cache) = remote_vault(dir.path());
    // A warm cache ...
    let (_, repo) = session(&remote, &cache);
    plan(&repo);
    // ... does not spare check a single read: it judges the objects the
    // store holds.
    let (warm, repo) = session(&remote, &cache);
    let report = check(&repo, &CheckOptions::default()).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    std::fs::remove_dir_all(&cache).unwrap();
    let (cold, repo) = session(&remote, &cache);
    check(&repo, &CheckOptions::default()).unwrap();
    let (w, c) = (warm.counts(), cold.counts());
    for prefix in ["index/", "points/", "packs/"] {
        assert_eq!(w.reads_under(prefix), c.reads_under(prefix), "{prefix}");
        assert!(w.reads_under(prefix) > 0, "{prefix}");
    }

    // A damaged index file in the store is found even though the cache
    // holds a good copy of it.
    let (_, repo) = session(&remote, &cache);
    plan(&repo);
    let index = remote.list("index/").unwrap()[0].key.clone();
    let mut bytes = remote.get(&index).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    remote
        .put(&index, &bytes, diskvault::store::PutMode::Overwrite)
        .unwrap();
    let (_, repo) = session(&remote, &cache);
    let report = check(&repo, &CheckOptions::default()).unwrap();
    assert!(!report.is_ok(), "check missed {index}");
    assert!(
        format!("{:?}", report.problems).contains(&index[6..14]),
        "{:?}",
        report.problems
    );
}

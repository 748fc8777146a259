//! Every store backend keeps the store contract: the one conformance suite
//! (`diskvault::store::testing::conformance`) runs against each.

use std::sync::Arc;

use diskvault::store::testing::conformance;
use diskvault::store::{Fault, FaultyStore, LocalStore, MemoryStore, OpKind, PutMode, Store};

#[test]
fn the_local_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(LocalStore::new(dir.path().join("vault"))));
}

#[test]
fn the_memory_store_keeps_the_contract() {
    conformance(Arc::new(MemoryStore::new()));
}

#[test]
fn the_fault_injector_passing_through_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    conformance(Arc::new(FaultyStore::counting(Arc::new(LocalStore::new(
        dir.path(),
    )))));
    conformance(Arc::new(FaultyStore::counting(
        Arc::new(MemoryStore::new()),
    )));
}

/// Slow puts widen the window between a racer's temporary file and its
/// rename: create-only must still let exactly one through.
#[test]
fn slow_create_races_still_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let slow = FaultyStore::new(Arc::new(LocalStore::new(dir.path()))).with_fault(Fault::Slow(
        OpKind::Put,
        std::time::Duration::from_millis(30),
    ));
    conformance(Arc::new(slow));
}

/// Errors say what kind of failure they are, so callers (and a retry
/// layer) can tell them apart.
#[test]
fn errors_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::new(dir.path());
    local.put("k", b"x", PutMode::Overwrite).unwrap();
    assert!(local
        .put("k", b"y", PutMode::Create)
        .unwrap_err()
        .is_already_exists());
    assert!(local.get("missing").unwrap_err().is_not_found());

    let transient =
        FaultyStore::new(Arc::new(MemoryStore::new())).with_fault(Fault::Transient(OpKind::Put, 1));
    let e = transient.put("k", b"x", PutMode::Overwrite).unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        !transient.exists("k").unwrap(),
        "a transient failure writes nothing"
    );
    transient.put("k", b"x", PutMode::Overwrite).unwrap();

    // A read-only directory refuses writes as "denied" (root ignores
    // permissions, so this part only runs as another user).
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let ro_store = LocalStore::new(&ro);
    ro_store.put("probe", b"x", PutMode::Overwrite).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("can-i"), b"x").is_err() {
        let e = ro_store.put("other", b"x", PutMode::Overwrite).unwrap_err();
        assert!(e.is_denied(), "{e}");
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A store whose pack puts are slow, and which counts how many run at
/// once: what a backup holds in memory is the packs being put.
struct SlowPacks {
    inner: MemoryStore,
    allowed: Option<usize>,
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl Store for SlowPacks {
    fn get(&self, key: &str) -> Result<Vec<u8>, diskvault::store::StoreError> {
        self.inner.get(key)
    }
    fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, diskvault::store::StoreError> {
        self.inner.get_range(key, offset, len)
    }
    fn size(&self, key: &str) -> Result<u64, diskvault::store::StoreError> {
        self.inner.size(key)
    }
    fn put(
        &self,
        key: &str,
        data: &[u8],
        mode: PutMode,
    ) -> Result<(), diskvault::store::StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if !key.starts_with("packs/") {
            return self.inner.put(key, data, mode);
        }
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(150));
        let result = self.inner.put(key, data, mode);
        self.running.fetch_sub(1, SeqCst);
        result
    }
    fn exists(&self, key: &str) -> Result<bool, diskvault::store::StoreError> {
        self.inner.exists(key)
    }
    fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<diskvault::store::ObjectInfo>, diskvault::store::StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), diskvault::store::StoreError> {
        self.inner.delete(key)
    }
    fn barrier(&self) -> Result<(), diskvault::store::StoreError> {
        self.inner.barrier()
    }
    fn large_puts_in_flight(&self) -> Option<usize> {
        self.allowed
    }
}

/// A backup never runs more pack puts at once than the store finds worth
/// it: on a slow store (an NFS mount, a busy disk) the packs would
/// otherwise pile up in memory, 16 MiB each.
#[test]
fn a_backup_runs_no_more_pack_puts_than_the_store_allows() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    // Incompressible, so it fills several 16 MiB packs.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..80 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&image, &bytes).unwrap();
    for allowed in [Some(1), Some(2), None] {
        let store = Arc::new(SlowPacks {
            inner: MemoryStore::new(),
            allowed,
            running: Default::default(),
            most: Default::default(),
        });
        let opts = diskvault::InitOptions {
            kdf: diskvault::KdfCost::insecure_fast(),
            ..Default::default()
        };
        let repo = diskvault::Repository::init_in(store.clone(), "slow".into(), Some(b"pw"), &opts)
            .unwrap();
        diskvault::backup(
            &repo,
            &diskvault::BackupOptions {
                disks: vec![diskvault::BackupDisk::file("root", &image).unwrap()],
                ..Default::default()
            },
        )
        .unwrap();
        let most = store.most.load(SeqCst);
        match allowed {
            Some(n) => assert!(most <= n, "{most} pack puts ran at once, {n} allowed"),
            // Without a limit from the store, puts overlap (up to the
            // requests in flight): the limit above is what held them.
            None => assert!(most >= 2, "pack puts never overlapped ({most})"),
        }
    }
}

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

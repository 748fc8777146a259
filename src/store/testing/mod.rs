//! Test tools for stores: a fault-injecting decorator ([`faulty`]) and the
//! conformance suite every backend must pass ([`conformance`]).

pub mod faulty;

use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use super::{PutMode, Store, StoreError};

/// Checks that `store` keeps the contract of [`Store`] (see the module
/// documentation of [`crate::store`]). `store` must be empty; the suite
/// leaves objects behind. Panics with a message naming the broken promise.
///
/// ```
/// diskvault::store::testing::conformance(std::sync::Arc::new(diskvault::store::MemoryStore::new()));
/// ```
pub fn conformance(store: Arc<dyn Store>) {
    missing_objects(store.as_ref());
    puts_and_reads(store.as_ref());
    create_only_puts(store.as_ref());
    create_races(&store);
    listings(store.as_ref());
    deletes(store.as_ref());
    large_objects(store.as_ref());
    streamed_puts(store.as_ref());
}

fn missing_objects(s: &dyn Store) {
    let key = "conformance/missing";
    assert!(
        matches!(s.get(key), Err(StoreError::NotFound { .. })),
        "get of a missing object must be NotFound"
    );
    assert!(
        matches!(s.get_range(key, 0, 1), Err(StoreError::NotFound { .. })),
        "get_range of a missing object must be NotFound"
    );
    assert!(
        matches!(s.size(key), Err(StoreError::NotFound { .. })),
        "size of a missing object must be NotFound"
    );
    assert!(!s.exists(key).unwrap(), "a missing object must not exist");
    s.delete(key)
        .expect("deleting a missing object is not an error");
    assert!(
        s.list("conformance-none/").unwrap().is_empty(),
        "listing an empty prefix gives nothing"
    );
}

fn puts_and_reads(s: &dyn Store) {
    let key = "conformance/rw/object";
    s.put(key, b"first version", PutMode::Overwrite).unwrap();
    assert_eq!(s.get(key).unwrap(), b"first version");
    assert!(s.exists(key).unwrap());
    assert_eq!(s.size(key).unwrap(), 13);
    s.put(key, b"second", PutMode::Overwrite)
        .expect("an overwriting put replaces the object");
    assert_eq!(s.get(key).unwrap(), b"second", "overwrite replaces");
    assert_eq!(s.get_range(key, 2, 3).unwrap(), b"con");
    assert_eq!(
        s.get_range(key, 6, 0).unwrap(),
        b"",
        "empty range at the end"
    );
    let e = s
        .get_range(key, 4, 3)
        .expect_err("a range past the end must fail, not return a short read");
    assert!(
        !e.is_not_found(),
        "a range past the end of an existing object is not NotFound: {e}"
    );
    s.put("conformance/rw/empty", b"", PutMode::Overwrite)
        .unwrap();
    assert_eq!(s.get("conformance/rw/empty").unwrap(), b"");
    assert_eq!(s.size("conformance/rw/empty").unwrap(), 0);
    s.barrier().expect("a barrier after puts succeeds");
}

/// A streamed put is a put: whole or nothing under its key, its bytes in
/// order, and an abandoned one leaves no object.
fn streamed_puts(s: &dyn Store) {
    let Some(mut put) = s.begin_put().expect("begin_put succeeds") else {
        return;
    };
    let key = "conformance/stream/object";
    let pieces: Vec<Vec<u8>> = (0..40u32)
        .map(|i| (0..(i * 977 % 5000)).map(|j| (i ^ j) as u8).collect())
        .collect();
    let whole: Vec<u8> = pieces.concat();
    for (i, p) in pieces.iter().enumerate() {
        put.write(p).unwrap();
        if i == 20 {
            assert!(
                !s.exists(key).unwrap() && s.list("conformance/stream/").unwrap().is_empty(),
                "nothing is under the key before the commit"
            );
        }
    }
    assert_eq!(
        put.len(),
        whole.len() as u64,
        "len counts every byte written"
    );
    put.commit(key, PutMode::Overwrite)
        .expect("a streamed put commits");
    assert_eq!(
        s.get(key).unwrap(),
        whole,
        "a streamed object reads back whole, in order"
    );
    assert_eq!(s.size(key).unwrap(), whole.len() as u64);

    // Overwriting through a stream replaces; creating over it fails and
    // leaves it.
    let mut put = s.begin_put().unwrap().expect("streams again");
    put.write(b"replaced").unwrap();
    put.commit(key, PutMode::Overwrite).unwrap();
    assert_eq!(s.get(key).unwrap(), b"replaced");
    let mut put = s.begin_put().unwrap().expect("streams again");
    put.write(b"loser").unwrap();
    let e = put
        .commit(key, PutMode::Create)
        .expect_err("a create-only streamed put of a taken key must fail");
    assert!(e.is_already_exists(), "it must say AlreadyExists: {e}");
    assert_eq!(
        s.get(key).unwrap(),
        b"replaced",
        "the loser changes nothing"
    );

    // Abandoned: dropped before its commit, it stores nothing.
    let before = s.list("").unwrap().len();
    let mut put = s.begin_put().unwrap().expect("streams again");
    put.write(&whole).unwrap();
    drop(put);
    assert_eq!(
        s.list("").unwrap().len(),
        before,
        "an abandoned streamed put leaves no object (not even a temporary)"
    );
    s.barrier().expect("a barrier after streamed puts succeeds");
}

fn create_only_puts(s: &dyn Store) {
    let key = "conformance/create/object";
    s.put(key, b"winner", PutMode::Create)
        .expect("a create-only put of a new key succeeds");
    let e = s
        .put(key, b"loser", PutMode::Create)
        .expect_err("a create-only put of a taken key must fail");
    assert!(e.is_already_exists(), "it must say AlreadyExists: {e}");
    assert!(e.to_string().contains(key), "the error names the key: {e}");
    assert_eq!(s.get(key).unwrap(), b"winner", "the loser changes nothing");
    s.delete(key).unwrap();
    s.put(key, b"again", PutMode::Create)
        .expect("a deleted key can be created again");
    assert_eq!(s.get(key).unwrap(), b"again");
}

fn create_races(store: &Arc<dyn Store>) {
    const WRITERS: usize = 8;
    for round in 0..5 {
        let key = format!("conformance/race/{round}");
        let start = Arc::new(Barrier::new(WRITERS));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (s, start, key) = (store.clone(), start.clone(), key.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let body = format!("writer {w}");
                    (body.clone(), s.put(&key, body.as_bytes(), PutMode::Create))
                })
            })
            .collect();
        let results: Vec<(String, Result<(), StoreError>)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<&String> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(b, _)| b)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "exactly one of {WRITERS} racing create-only puts must win"
        );
        for (_, r) in &results {
            if let Err(e) = r {
                assert!(e.is_already_exists(), "losers get AlreadyExists: {e}");
            }
        }
        assert_eq!(
            store.get(&key).unwrap(),
            winners[0].as_bytes(),
            "the stored object is the winner's"
        );
    }
}

fn listings(s: &dyn Store) {
    let before = SystemTime::now() - Duration::from_secs(3600);
    let objects = [
        ("conformance/list/a", 1usize),
        ("conformance/list/sub/b", 20),
        ("conformance/list/sub/deeper/c", 300),
        ("conformance/listing-other/d", 4),
    ];
    for (key, len) in objects {
        s.put(key, &vec![7u8; len], PutMode::Overwrite).unwrap();
    }
    let mut listed = s.list("conformance/list/").unwrap();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let got: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(
        got,
        vec![
            ("conformance/list/a", 1),
            ("conformance/list/sub/b", 20),
            ("conformance/list/sub/deeper/c", 300),
        ],
        "list gives every object under the prefix, recursively, with its size, and nothing else"
    );
    let after = SystemTime::now() + Duration::from_secs(3600);
    for o in &listed {
        assert!(
            o.modified > before && o.modified < after,
            "{} has a modification time within the hour (store clock)",
            o.key
        );
    }
    let all = s.list("").unwrap();
    for (key, _) in objects {
        assert!(
            all.iter().any(|o| o.key == key),
            "list(\"\") includes {key}"
        );
    }
}

fn deletes(s: &dyn Store) {
    let key = "conformance/delete/object";
    s.put(key, b"x", PutMode::Overwrite).unwrap();
    s.delete(key).unwrap();
    assert!(!s.exists(key).unwrap(), "a deleted object is gone");
    assert!(s.get(key).unwrap_err().is_not_found());
    assert!(
        s.list("conformance/delete/").unwrap().is_empty(),
        "a deleted object is not listed"
    );
    s.barrier().expect("a barrier after deletes succeeds");
}

fn large_objects(s: &dyn Store) {
    let key = "conformance/large/object";
    let data: Vec<u8> = (0..(17u32 << 20) / 4)
        .flat_map(|i| i.to_le_bytes())
        .collect();
    s.put(key, &data, PutMode::Overwrite).unwrap();
    assert_eq!(s.size(key).unwrap(), data.len() as u64);
    let mid = (9 << 20) + 3;
    assert_eq!(
        s.get_range(key, mid, 1000).unwrap(),
        &data[mid as usize..mid as usize + 1000]
    );
    assert!(
        s.get(key).unwrap() == data,
        "a 17 MiB object reads back whole"
    );
}

//! Vaults on object storage, against the emulators (Azurite for Azure Blob
//! Storage, moto for S3): the store contract, clear errors for a wrong
//! credential, a missing container and an unreachable endpoint.

mod common;

use std::sync::Arc;

use common::emulators::{emulators, Emulator};
use diskvault::store::testing::conformance;
use diskvault::store::{BackendFailure, ObjectBackend, ObjectUrl, Store, StoreError};

fn open(emu: &Emulator, url: &str, extra: &[(&str, &str)]) -> Result<ObjectBackend, StoreError> {
    let url = ObjectUrl::parse(url).unwrap().unwrap();
    let mut settings = emu.env();
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ObjectBackend::open_with(&url, &settings)
}

#[test]
fn each_emulated_service_keeps_the_store_contract() {
    for emu in emulators() {
        let store = open(&emu, &emu.fresh_url("conformance"), &[]).unwrap();
        conformance(Arc::new(store));
    }
}

#[test]
fn urls_parse_and_bad_ones_say_how_to_write_them() {
    let u = ObjectUrl::parse("az://dr/vaults/web1/").unwrap().unwrap();
    assert_eq!(
        (u.container.as_str(), u.prefix.as_str()),
        ("dr", "vaults/web1")
    );
    assert_eq!(u.to_string(), "az://dr/vaults/web1");
    let u = ObjectUrl::parse("s3://bucket").unwrap().unwrap();
    assert_eq!((u.container.as_str(), u.prefix.as_str()), ("bucket", ""));
    assert!(
        ObjectUrl::parse("/backups/vault").is_none(),
        "a path is not a URL"
    );
    assert!(ObjectUrl::parse("./az://x").is_none());
    let e = ObjectUrl::parse("s3:///prefix").unwrap().unwrap_err();
    assert!(e.contains("s3://BUCKET/PREFIX"), "{e}");
    assert!(ObjectUrl::parse("az://c/a/../b").unwrap().is_err());
}

#[test]
fn a_wrong_credential_a_missing_container_and_an_unreachable_endpoint_are_told_apart() {
    for emu in emulators() {
        let failure = |r: Result<ObjectBackend, StoreError>| match r {
            Err(StoreError::Backend { failure, .. }) => failure,
            Err(e) => panic!("{}: not a backend failure: {e}", emu.scheme),
            Ok(_) => panic!("{}: opened", emu.scheme),
        };
        let missing = format!(
            "{}://no-such-container-{}/vault",
            emu.scheme,
            std::process::id()
        );
        assert_eq!(
            failure(open(&emu, &missing, &[])),
            BackendFailure::MissingContainer,
            "{}",
            emu.scheme
        );
        let unreachable: &[(&str, &str)] = if emu.scheme == "az" {
            &[(
                "AZURE_STORAGE_ENDPOINT",
                "http://127.0.0.1:9/devstoreaccount1",
            )]
        } else {
            &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")]
        };
        assert_eq!(
            failure(open(&emu, &emu.fresh_url("x"), unreachable)),
            BackendFailure::Unreachable,
            "{}",
            emu.scheme
        );
        // moto accepts any credential; Azurite checks the key.
        if emu.scheme == "az" {
            let wrong = base64_of_zeros();
            assert_eq!(
                failure(open(
                    &emu,
                    &emu.fresh_url("x"),
                    &[("AZURE_STORAGE_ACCOUNT_KEY", &wrong)]
                )),
                BackendFailure::Credentials
            );
        }
    }
}

fn base64_of_zeros() -> String {
    // 64 zero bytes, base64: a well-formed key that is not the account's.
    "A".repeat(86) + "=="
}

#[test]
fn request_counts_are_kept() {
    for emu in emulators() {
        let store = open(&emu, &emu.fresh_url("counts"), &[]).unwrap();
        store
            .put("a/b", b"hello", diskvault::store::PutMode::Overwrite)
            .unwrap();
        assert_eq!(store.get("a/b").unwrap(), b"hello");
        store.list("a/").unwrap();
        let c = store.requests().unwrap();
        assert_eq!((c.put, c.get), (1, 1), "{c:?}");
        assert!(c.list >= 1);
        assert_eq!((c.bytes_sent, c.bytes_received), (5, 5));
    }
}

/// Objects past the multipart threshold go up in parts: they read back
/// byte for byte (also by range, across part boundaries), replace an older
/// object whole, and cost one request per part. A create-only put of the
/// same size stays one conditional request, refused when the key is taken.
#[test]
fn large_objects_go_up_in_parts_and_read_back_whole() {
    use diskvault::store::object::{MULTIPART_THRESHOLD, PART_SIZE};
    use diskvault::store::PutMode;
    for emu in emulators() {
        let store = open(&emu, &emu.fresh_url("parts"), &[]).unwrap();
        // Just past the threshold and not a whole number of parts.
        let len = MULTIPART_THRESHOLD + PART_SIZE / 3;
        let first: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let second: Vec<u8> = (0..len).map(|i| (i * 13 % 241) as u8).collect();
        store.put("packs/big", &first, PutMode::Overwrite).unwrap();
        store.put("packs/big", &second, PutMode::Overwrite).unwrap();
        let c = store.requests().unwrap();
        let parts = len.div_ceil(PART_SIZE) as u64;
        assert!(c.put >= 2 * (parts + 1), "{} puts for {parts} parts", c.put);
        assert_eq!(c.bytes_sent, 2 * len as u64);
        assert!(store.get("packs/big").unwrap() == second, "{}", emu.scheme);
        let across = PART_SIZE as u64 - 10;
        assert_eq!(
            store.get_range("packs/big", across, 20).unwrap(),
            &second[across as usize..across as usize + 20]
        );
        assert_eq!(store.size("packs/big").unwrap(), len as u64);

        let before = store.requests().unwrap().put;
        store.put("config", &first, PutMode::Create).unwrap();
        assert_eq!(store.requests().unwrap().put, before + 1, "{}", emu.scheme);
        let err = store.put("config", &second, PutMode::Create).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
        assert!(store.get("config").unwrap() == first);
    }
}

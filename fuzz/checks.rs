//! What every decoder of repository bytes must do with any input: return an
//! error or a value without panicking, and when it returns a value, that
//! value must satisfy the decoder's own bounds and survive
//! decode(encode(x)) == x. For binary encodings the bytes must also be
//! canonical: encode(decode(bytes)) == bytes, so one value has one encoding
//! (and so one content-derived name).
//!
//! Shared by the cargo-fuzz targets in `fuzz_targets/` (one per function
//! here) and by the stable property test `tests/decoders.rs`, so the fuzzer
//! and CI check the same things. Each function returns whether the input
//! decoded.
#![allow(dead_code)]

use std::sync::LazyLock;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use diskvault::crypto::{MasterKey, Sealer};
use diskvault::format::blob::{BlobHeader, Cipher, Compression, NONCE_LEN};
use diskvault::format::config::{CompressionSetting, RepoConfig};
use diskvault::format::forget::ForgetRecord;
use diskvault::format::group;
use diskvault::format::index::IndexBody;
use diskvault::format::keyfile::{
    KeyFile, MAX_KDF_ITERATIONS, MAX_KDF_MEMORY_KIB, MAX_KDF_PARALLELISM,
};
use diskvault::format::lock::{LockRecord, MAX_LOCK_STRING};
use diskvault::format::manifest::{ManifestNode, NodeEntries, MAX_LEVEL, MAX_NODE_LEN};
use diskvault::format::pack::{
    decode_footer, decode_table, encode_footer, encode_table, PACK_FOOTER_LEN,
};
use diskvault::format::point::PointBody;
use diskvault::format::point::MAX_STRING;
use diskvault::format::policy::{StoredPolicy, MAX_GRACE_SECS};
use diskvault::format::zstd_frame::{check_frame, ZSTD_MAGIC};
use diskvault::format::{
    ChunkId, ObjectHeader, ObjectKind, FORMAT_MAJOR, MAX_BLOB_PLAINTEXT, OBJECT_HEADER_LEN,
};
use diskvault::packer::parse_pack_table;

/// A check: runs one decoder on the input and says whether it decoded.
pub type Check = fn(&[u8]) -> bool;

/// Every check, by the name of its fuzz target.
pub const TARGETS: [(&str, Check); 13] = [
    ("object_header", object_header),
    ("blob_header", blob_header),
    ("chunk", chunk),
    ("pack", pack),
    ("index", index),
    ("manifest", manifest),
    ("point", point),
    ("config", config),
    ("keyfile", keyfile),
    ("forget_record", forget_record),
    ("lock", lock),
    ("policy", policy),
    ("group", group),
];

/// The fixed key of the chunk check: data key 0x11.., id key 0x22...
pub const DATA_KEY: [u8; 32] = [0x11; 32];
pub const ID_KEY: [u8; 32] = [0x22; 32];
/// The chunk check's bound on a chunk's plaintext (the manifest node limit,
/// which is what a repository with small chunks allows).
pub const MAX_CHUNK_PLAIN: usize = 1 << 20;

/// A sealer holding the fixed key.
pub static ENCRYPTED: LazyLock<Sealer> = LazyLock::new(|| {
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&DATA_KEY);
    bytes[32..].copy_from_slice(&ID_KEY);
    Sealer::encrypted(&MasterKey::from_test_bytes(&bytes))
});
/// An unencrypted repository's sealer.
pub static PLAIN: LazyLock<Sealer> = LazyLock::new(Sealer::plain);
static AEAD: LazyLock<Aes256Gcm> =
    LazyLock::new(|| Aes256Gcm::new_from_slice(&DATA_KEY).expect("32-byte key"));

/// `ObjectHeader::decode`, for every kind a key prefix can promise.
pub fn object_header(data: &[u8]) -> bool {
    let mut decoded = false;
    for kind in [ObjectKind::Pack, ObjectKind::Index, ObjectKind::Point] {
        if let Ok(header) = ObjectHeader::decode(data, kind) {
            assert_eq!(header.kind, kind);
            let bytes = header.encode();
            assert_eq!(bytes[..], data[..OBJECT_HEADER_LEN], "not canonical");
            assert_eq!(ObjectHeader::decode(&bytes, kind), Ok(header));
            decoded = true;
        }
    }
    decoded
}

/// `BlobHeader::decode` (the sealed-blob envelope) under each plaintext bound
/// readers use.
pub fn blob_header(data: &[u8]) -> bool {
    let mut decoded = false;
    for max_plain in [0, 16 << 10, MAX_CHUNK_PLAIN, MAX_BLOB_PLAINTEXT] {
        if let Ok((header, payload)) = BlobHeader::decode(data, max_plain) {
            assert!(header.plain_len as usize <= max_plain);
            // An unencrypted zstd body is the frame itself: its shape is
            // checked before anything is decompressed.
            if header.compression == Compression::Zstd && header.cipher == Cipher::None {
                if let Ok(frame) = check_frame(payload, header.plain_len) {
                    assert!(frame
                        .content_size
                        .is_none_or(|n| n == header.plain_len as u64));
                    assert_eq!(payload[..4], ZSTD_MAGIC.to_le_bytes());
                }
            }
            let mut again = Vec::new();
            header.encode_into(&mut again);
            assert_eq!(again.len(), header.encoded_len());
            again.extend_from_slice(payload);
            assert_eq!(again, data, "not canonical");
            assert_eq!(BlobHeader::decode(&again, max_plain), Ok((header, payload)));
            decoded = true;
        }
    }
    decoded
}

/// Opens `sealed` as chunk `id` the way `check` does (`open_chunk`, which
/// recomputes the id) and the way `restore` does (`open_chunk_for_restore`,
/// which relies on the tag when encrypted): both must agree.
fn open_chunk_checked(sealer: &Sealer, sealed: &[u8], id: &ChunkId) -> bool {
    let for_restore = sealer.open_chunk_for_restore(sealed, id, MAX_CHUNK_PLAIN);
    match sealer.open_chunk(sealed, id, MAX_CHUNK_PLAIN) {
        Ok(plain) => {
            assert!(plain.len() <= MAX_CHUNK_PLAIN);
            assert_eq!(sealer.chunk_id(&plain), *id);
            assert_eq!(for_restore.ok(), Some(plain));
            true
        }
        Err(_) => {
            // Only a key holder can seal under a wrong id, so an attacker's
            // blob that restore accepts must also pass the id check.
            assert!(
                for_restore.is_err(),
                "restore accepts a chunk check refuses"
            );
            false
        }
    }
}

/// `Sealer::open_chunk` with the fixed key, three ways:
/// 1. input = chunk id (32 bytes) then a sealed chunk as found in a pack,
///    opened by an encrypted repository's sealer and by an unencrypted one's;
/// 2. input = chunk id, a 20-byte blob header, then a body that is encrypted
///    here under the fixed key with the right associated data. Only a key
///    holder could write such a blob; building it here lets a fuzzer reach
///    decompression and the id check that sit behind authentication;
/// 3. input = plaintext: sealing then opening gives it back
///    (decode(encode(x)) == x), compressed or stored, encrypted or not.
pub fn chunk(data: &[u8]) -> bool {
    let mut decoded = false;
    if let Some((id, sealed)) = data.split_first_chunk::<32>() {
        let id = ChunkId(*id);
        decoded |= open_chunk_checked(&ENCRYPTED, sealed, &id);
        decoded |= open_chunk_checked(&PLAIN, sealed, &id);

        if let Some((header, body)) = sealed.split_first_chunk::<20>() {
            let mut header = *header;
            header[1] = 1; // cipher: AES-256-GCM
            let nonce: [u8; NONCE_LEN] = header[8..].try_into().expect("12 bytes");
            let mut aad = id.0.to_vec();
            aad.extend_from_slice(&header);
            let mut payload = body.to_vec();
            let tag = AEAD
                .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut payload)
                .expect("AES-GCM encryption of a short buffer");
            let mut blob = header.to_vec();
            blob.extend_from_slice(&payload);
            blob.extend_from_slice(&tag);
            if let Ok(plain) = ENCRYPTED.open_chunk(&blob, &id, MAX_CHUNK_PLAIN) {
                let plain_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
                assert_eq!(plain.len(), plain_len as usize);
                assert_eq!(ENCRYPTED.chunk_id(&plain), id);
                decoded = true;
            }
        }
    }

    for sealer in [&*ENCRYPTED, &*PLAIN] {
        let id = sealer.chunk_id(data);
        for compression in [CompressionSetting::None, CompressionSetting::Zstd(1)] {
            let sealed = sealer.seal(data, &id.0, compression);
            let opened = sealer.open_chunk(&sealed, &id, data.len());
            assert_eq!(opened.ok().as_deref(), Some(data), "seal/open round trip");
        }
    }
    decoded
}

/// Pack tables and footers, three ways:
/// 1. input = a table's plaintext, inside chunk areas of several sizes;
/// 2. input = a whole pack whose last 8 bytes are the footer;
/// 3. input = a whole pack through `parse_pack_table` (the reader `check`
///    uses), with an unencrypted repository's sealer so that the sealed
///    table's plaintext reaches `decode_table`.
pub fn pack(data: &[u8]) -> bool {
    let mut decoded = false;
    for version in [1, 2] {
        for area_end in [0, data.len() as u64, 16 << 20, u64::MAX] {
            if let Ok(entries) = decode_table(data, area_end, version) {
                for e in &entries {
                    assert!(e.offset as usize >= OBJECT_HEADER_LEN);
                    assert!(e.offset as u64 + e.length as u64 <= area_end);
                    assert!(version >= 2 || !e.is_grouped());
                }
                let bytes = encode_table(&entries, version);
                assert_eq!(bytes, data, "not canonical");
                assert_eq!(decode_table(&bytes, area_end, version), Ok(entries));
                decoded = true;
            }
        }
    }

    if let Some(footer_start) = data.len().checked_sub(PACK_FOOTER_LEN) {
        let footer = &data[footer_start..];
        if let Ok(table_len) = decode_footer(footer, data.len() as u64) {
            assert!(OBJECT_HEADER_LEN + PACK_FOOTER_LEN + table_len as usize <= data.len());
            assert_eq!(encode_footer(table_len)[..], footer[..]);
            decoded = true;
        }
    }

    for version in [1, 2] {
        if let Ok(entries) = parse_pack_table(&PLAIN, "packs/fuzz", data, version) {
            let table_end = data.len() - PACK_FOOTER_LEN;
            assert!(entries
                .iter()
                .all(|e| e.offset as usize >= OBJECT_HEADER_LEN
                    && e.offset as usize + e.length as usize <= table_end));
            decoded = true;
        }
    }
    decoded
}

/// `IndexBody::decode` (the plaintext of an index file).
pub fn index(data: &[u8]) -> bool {
    let mut decoded = false;
    for version in [1, 2] {
        let Ok(body) = IndexBody::decode(data, version) else {
            continue;
        };
        assert!(body
            .records
            .iter()
            .all(|r| (r.pack as usize) < body.packs.len()));
        let bytes = body.encode(version);
        assert_eq!(bytes, data, "not canonical");
        assert_eq!(IndexBody::decode(&bytes, version), Ok(body));
        decoded = true;
    }
    decoded
}

/// `group::decode_members` and `group::member` (the plaintext of a chunk
/// group, format 2): members fill the group exactly, each is found at its
/// offset, and the encoding is canonical.
pub fn group(data: &[u8]) -> bool {
    let Ok(members) = group::decode_members(data) else {
        return false;
    };
    assert!(!members.is_empty());
    let mut at = group::header_len(members.len());
    let mut parts = Vec::new();
    for m in &members {
        assert_eq!(m.offset as usize, at);
        let bytes = group::member(data, &m.id, m.offset, m.length).expect("listed member");
        assert_eq!(bytes.len(), m.length as usize);
        parts.push((m.id, bytes));
        at += m.length as usize;
    }
    assert_eq!(at, data.len());
    assert_eq!(group::encode_group(&parts), data, "not canonical");
    true
}

/// `ManifestNode::decode`.
pub fn manifest(data: &[u8]) -> bool {
    let mut decoded = false;
    for version in [1, 2] {
        decoded |= manifest_of(data, version);
    }
    decoded
}

fn manifest_of(data: &[u8], version: u8) -> bool {
    let Ok(node) = ManifestNode::decode(data, version) else {
        return false;
    };
    assert!(version >= 2 || node.chaining_value.is_none());
    assert!(data.len() <= MAX_NODE_LEN);
    match &node.entries {
        NodeEntries::Leaf(extents) => {
            assert_eq!(node.level, 0);
            assert!(extents.iter().all(|e| !e.is_empty()));
        }
        NodeEntries::Interior(children) => {
            assert!((1..=MAX_LEVEL).contains(&node.level));
            assert!(!children.is_empty());
        }
    }
    // Decode promised the sums fit in u64; covered() would overflow (and
    // panic under overflow checks) if they did not.
    assert!(node.start.checked_add(node.covered()).is_some());
    let bytes = node.encode(version);
    assert_eq!(bytes, data, "not canonical");
    assert_eq!(ManifestNode::decode(&bytes, version), Ok(node));
    true
}

/// `PointBody::decode` (the plaintext of a recovery point).
pub fn point(data: &[u8]) -> bool {
    let Ok(point) = PointBody::decode(data) else {
        return false;
    };
    assert!(
        point.validate().is_ok(),
        "decoded a point the writer refuses"
    );
    let bytes = point.encode();
    assert_eq!(bytes, data, "not canonical");
    assert_eq!(PointBody::decode(&bytes), Ok(point));
    true
}

/// `RepoConfig::decode` (JSON, so not canonical: no byte comparison).
pub fn config(data: &[u8]) -> bool {
    let Ok(config) = RepoConfig::decode(data) else {
        return false;
    };
    assert!(config.format.major <= FORMAT_MAJOR);
    assert!(config.chunker.validate().is_ok());
    assert!((1..=FORMAT_MAJOR).contains(&config.format.major));
    assert_eq!(config.id.len(), 64);
    assert!(config
        .id
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let bytes = config.encode();
    assert_eq!(RepoConfig::decode(&bytes), Ok(config));
    true
}

/// `KeyFile::decode` (JSON). The key derivation itself is not run: its cost
/// is what these bounds limit, and a fuzzer would only measure it.
pub fn keyfile(data: &[u8]) -> bool {
    let Ok(key) = KeyFile::decode(data) else {
        return false;
    };
    assert!(key.kdf.memory_kib <= MAX_KDF_MEMORY_KIB);
    assert!((1..=MAX_KDF_ITERATIONS).contains(&key.kdf.iterations));
    assert!((1..=MAX_KDF_PARALLELISM).contains(&key.kdf.parallelism));
    assert!(key.kdf.memory_kib as u64 >= 8 * key.kdf.parallelism as u64);
    for hex in [
        &key.kdf.salt,
        &key.nonce,
        &key.wrapped_key,
        &key.repository_id,
    ] {
        assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    }
    let bytes = key.encode();
    assert_eq!(KeyFile::decode(&bytes), Ok(key));
    true
}

/// `ForgetRecord::decode` (the plaintext of a forget record): bounded
/// strings, canonical.
pub fn forget_record(data: &[u8]) -> bool {
    let Ok(record) = ForgetRecord::decode(data) else {
        return false;
    };
    assert!(record.host.len() <= MAX_STRING && record.reason.len() <= MAX_STRING);
    let bytes = record.encode();
    assert_eq!(bytes, data, "not canonical");
    assert_eq!(ForgetRecord::decode(&bytes), Ok(record));
    true
}

/// `LockRecord::decode` (JSON): bounded strings.
pub fn lock(data: &[u8]) -> bool {
    let Ok(lock) = LockRecord::decode(data) else {
        return false;
    };
    for s in [&lock.command, &lock.host, &lock.user, &lock.boot_id] {
        assert!(s.len() <= MAX_LOCK_STRING);
    }
    let bytes = lock.encode();
    assert_eq!(LockRecord::decode(&bytes), Ok(lock));
    true
}

/// `StoredPolicy::decode` (the plaintext of the policy, JSON): only
/// policies the writer accepts decode.
pub fn policy(data: &[u8]) -> bool {
    let Ok(policy) = StoredPolicy::decode(data) else {
        return false;
    };
    assert!(
        policy.validate().is_ok(),
        "decoded a policy the writer refuses"
    );
    assert!(policy.grace_secs <= MAX_GRACE_SECS);
    let bytes = policy.encode();
    assert_eq!(StoredPolicy::decode(&bytes), Ok(policy));
    true
}

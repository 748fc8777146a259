//! What spec/FORMAT.md says readers refuse, one table per object. Each row
//! changes a valid encoding in one way the spec forbids (or allows) and
//! says what a reader must do with it; the valid encoding itself must be
//! accepted, so every refusal is caused by the change alone.

use diskvault::crypto::{self, MasterKey, Sealer};
use diskvault::format::blob::BlobHeader;
use diskvault::format::config::{ChunkerParams, CompressionSetting, Encryption, RepoConfig};
use diskvault::format::keyfile::KeyFile;
use diskvault::format::manifest::{
    ChildRef, Extent, ManifestNode, NodeEntries, MAX_NODE_ENTRIES, MAX_NODE_LEN,
};
use diskvault::format::point::{check_disk_name, DiskRecord, DiskStats, PointBody};
use diskvault::format::zstd_frame::check_frame;
use diskvault::format::{ChunkId, FormatError, ObjectHeader, ObjectKind};
use diskvault::KdfCost;
use serde_json::{json, Value};

// ---- JSON: config and key files (§3.1, §4.1) --------------------------------

fn valid_config() -> Value {
    let config = RepoConfig::new(
        "0123456789abcdef".repeat(4),
        ChunkerParams::DEFAULT_FASTCDC,
        CompressionSetting::DEFAULT,
        Encryption::Aes256Gcm,
        1_795_740_663,
    );
    serde_json::from_slice(&config.encode()).unwrap()
}

fn valid_key_file() -> Value {
    let file = crypto::wrap_master_key(
        &MasterKey::from_test_bytes(&[7; 64]),
        b"passphrase",
        &"0123456789abcdef".repeat(4),
        "0123456789abcdef".repeat(4).as_bytes(),
        KdfCost::insecure_fast(),
        1_795_740_663,
        "vm".into(),
        "root".into(),
    )
    .unwrap();
    serde_json::from_slice(&file.encode()).unwrap()
}

fn config_decodes(v: &Value) -> Result<(), FormatError> {
    RepoConfig::decode(&serde_json::to_vec(v).unwrap()).map(drop)
}

fn key_file_decodes(v: &Value) -> Result<(), FormatError> {
    KeyFile::decode(&serde_json::to_vec(v).unwrap()).map(drop)
}

/// Every member of `v`, as paths of keys (`["chunker", "size"]`).
fn member_paths(v: &Value, prefix: &[String], out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            let mut path = prefix.to_vec();
            path.push(k.clone());
            out.push(path.clone());
            member_paths(child, &path, out);
        }
    }
}

fn parent_of<'a>(v: &'a mut Value, path: &[String]) -> &'a mut serde_json::Map<String, Value> {
    let mut at = v;
    for k in &path[..path.len() - 1] {
        at = at.get_mut(k).unwrap();
    }
    at.as_object_mut().unwrap()
}

fn with(v: &Value, path: &[&str], new: Value) -> Value {
    let mut v = v.clone();
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    parent_of(&mut v, &path).insert(path.last().unwrap().clone(), new);
    v
}

/// A value of every JSON type, to put where another type belongs.
fn values_of_every_type() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!("16384"),
        json!(16384),
        json!(16384.5),
        json!([16384]),
        json!({}),
    ]
}

fn same_json_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
        && a.is_f64() == b.is_f64()
        && !(a.is_object() && b.is_object())
}

/// Every member is required and has one JSON type: removing any member, or
/// giving it a value of another type, makes the document unreadable.
fn every_member_is_required_and_typed(
    valid: &Value,
    decodes: fn(&Value) -> Result<(), FormatError>,
) {
    assert_eq!(decodes(valid), Ok(()), "the valid document");
    let mut paths = Vec::new();
    member_paths(valid, &[], &mut paths);
    assert!(paths.len() >= 9);
    for path in &paths {
        let mut missing = valid.clone();
        parent_of(&mut missing, path).remove(path.last().unwrap());
        assert!(decodes(&missing).is_err(), "accepted without {path:?}");

        let original = {
            let mut at = valid;
            for k in path {
                at = &at[k];
            }
            at.clone()
        };
        for other in values_of_every_type() {
            if same_json_type(&original, &other) {
                continue;
            }
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            let changed = with(valid, &refs, other.clone());
            assert!(
                decodes(&changed).is_err(),
                "accepted {path:?} = {other} (a {original} belongs there)"
            );
        }
    }
}

#[test]
fn a_config_needs_every_member_with_its_json_type() {
    every_member_is_required_and_typed(&valid_config(), config_decodes);
    let fixed = with(
        &valid_config(),
        &["chunker"],
        json!({"algorithm": "fixed", "size": 16384}),
    );
    every_member_is_required_and_typed(&fixed, config_decodes);
}

#[test]
fn a_key_file_needs_every_member_with_its_json_type() {
    every_member_is_required_and_typed(&valid_key_file(), key_file_decodes);
}

#[test]
fn config_values_out_of_bounds_are_refused_and_those_within_accepted() {
    let v = valid_config();
    let fixed = |size: Value| {
        with(
            &v,
            &["chunker"],
            json!({"algorithm": "fixed", "size": size}),
        )
    };
    let cdc = |a: u64, b: u64, c: u64| {
        with(
            &v,
            &["chunker"],
            json!({"algorithm": "fastcdc-v2020", "min_size": a, "avg_size": b, "max_size": c}),
        )
    };
    let refused: Vec<(&str, Value)> = vec![
        ("format major 0", with(&v, &["format", "major"], json!(0))),
        ("negative minor", with(&v, &["format", "minor"], json!(-1))),
        (
            "minor beyond u32",
            with(&v, &["format", "minor"], json!(1u64 << 32)),
        ),
        (
            "id of 63 characters",
            with(&v, &["id"], json!("a".repeat(63))),
        ),
        (
            "id of 65 characters",
            with(&v, &["id"], json!("a".repeat(65))),
        ),
        (
            "id in upper case",
            with(&v, &["id"], json!("ABCDEF01".repeat(8))),
        ),
        ("id not hex", with(&v, &["id"], json!("g".repeat(64)))),
        (
            "unknown chunker",
            with(&v, &["chunker", "algorithm"], json!("rabin")),
        ),
        (
            "chunker name in capitals",
            with(&v, &["chunker", "algorithm"], json!("FIXED")),
        ),
        ("fixed below 512", fixed(json!(511))),
        ("fixed above 8 MiB", fixed(json!((8 << 20) + 1))),
        ("fixed negative", fixed(json!(-16384))),
        ("fixed as a fraction", fixed(json!(16384.0))),
        ("fixed as text", fixed(json!("16K"))),
        ("fastcdc odd min", cdc(4097, 16384, 65536)),
        ("fastcdc odd avg", cdc(4096, 16383, 65536)),
        ("fastcdc odd max", cdc(4096, 16384, 65535)),
        ("fastcdc min below 64", cdc(62, 16384, 65536)),
        (
            "fastcdc min above 1 MiB",
            cdc((1 << 20) + 2, 2 << 20, 4 << 20),
        ),
        ("fastcdc avg below 256", cdc(64, 254, 1024)),
        ("fastcdc avg above 4 MiB", cdc(4096, (4 << 20) + 2, 8 << 20)),
        ("fastcdc max below 1024", cdc(64, 256, 1022)),
        ("fastcdc max above 8 MiB", cdc(4096, 16384, (8 << 20) + 2)),
        ("fastcdc min above avg", cdc(32768, 16384, 65536)),
        ("fastcdc avg above max", cdc(4096, 131072, 65536)),
        (
            "compression zstd without a level",
            with(&v, &["compression"], json!("zstd")),
        ),
        (
            "compression with a plus sign",
            with(&v, &["compression"], json!("zstd:+1")),
        ),
        (
            "compression with a leading zero",
            with(&v, &["compression"], json!("zstd:01")),
        ),
        (
            "compression with a space",
            with(&v, &["compression"], json!("zstd: 1")),
        ),
        (
            "compression level 23",
            with(&v, &["compression"], json!("zstd:23")),
        ),
        (
            "compression level -8",
            with(&v, &["compression"], json!("zstd:-8")),
        ),
        (
            "compression in capitals",
            with(&v, &["compression"], json!("NONE")),
        ),
        (
            "unknown compression",
            with(&v, &["compression"], json!("lz4")),
        ),
        (
            "unknown encryption",
            with(&v, &["encryption"], json!("aes-128-gcm")),
        ),
        (
            "encryption in capitals",
            with(&v, &["encryption"], json!("AES-256-GCM")),
        ),
        (
            "created beyond i64",
            with(&v, &["created"], json!(u64::MAX)),
        ),
    ];
    for (what, doc) in &refused {
        assert!(config_decodes(doc).is_err(), "accepted: {what}");
    }
    let accepted: Vec<(&str, Value)> = vec![
        ("a newer minor", with(&v, &["format", "minor"], json!(7))),
        (
            "fixed of 1000 bytes: no power of two needed",
            fixed(json!(1000)),
        ),
        ("fixed of an odd size", fixed(json!(4097))),
        ("fixed at 512", fixed(json!(512))),
        ("fixed at 8 MiB", fixed(json!(8 << 20))),
        ("fastcdc at its lowest", cdc(64, 256, 1024)),
        ("fastcdc at its highest", cdc(1 << 20, 4 << 20, 8 << 20)),
        ("fastcdc with equal sizes", cdc(65536, 65536, 65536)),
        ("no compression", with(&v, &["compression"], json!("none"))),
        (
            "negative level",
            with(&v, &["compression"], json!("zstd:-7")),
        ),
        ("level 22", with(&v, &["compression"], json!("zstd:22"))),
        ("unencrypted", with(&v, &["encryption"], json!("none"))),
        ("created before 1970", with(&v, &["created"], json!(-1))),
        (
            "unknown top-level member",
            with(&v, &["comment"], json!({"any": [1, 2]})),
        ),
        (
            "unknown member of format",
            with(&v, &["format", "patch"], json!(3)),
        ),
        (
            "unknown member of chunker",
            with(&v, &["chunker", "seed"], json!(0)),
        ),
    ];
    for (what, doc) in &accepted {
        assert_eq!(config_decodes(doc), Ok(()), "refused: {what}");
    }
}

#[test]
fn key_file_values_out_of_bounds_are_refused_and_those_within_accepted() {
    let v = valid_key_file();
    let kdf = |m: u64, t: u64, p: u64| {
        let v = with(&v, &["kdf", "memory_kib"], json!(m));
        let v = with(&v, &["kdf", "iterations"], json!(t));
        with(&v, &["kdf", "parallelism"], json!(p))
    };
    let mut refused: Vec<(String, Value)> = vec![
        (
            "argon2i".into(),
            with(&v, &["kdf", "algorithm"], json!("argon2i")),
        ),
        (
            "Argon2id".into(),
            with(&v, &["kdf", "algorithm"], json!("Argon2id")),
        ),
        ("memory above 4 GiB".into(), kdf((4 << 20) + 1, 3, 1)),
        ("memory 0".into(), kdf(0, 3, 1)),
        ("memory below 8 KiB per lane".into(), kdf(31, 3, 4)),
        ("0 passes".into(), kdf(65536, 0, 1)),
        ("65 passes".into(), kdf(65536, 65, 1)),
        ("0 lanes".into(), kdf(65536, 3, 0)),
        ("65 lanes".into(), kdf(65536, 3, 65)),
        (
            "memory as a fraction".into(),
            with(&v, &["kdf", "memory_kib"], json!(65536.0)),
        ),
        (
            "created beyond i64".into(),
            with(&v, &["created"], json!(u64::MAX)),
        ),
    ];
    for (field, bytes) in [
        (&["kdf", "salt"][..], 32),
        (&["nonce"][..], 12),
        (&["wrapped_key"][..], 80),
        (&["repository_id"][..], 32),
    ] {
        let good = "ab".repeat(bytes);
        assert_eq!(key_file_decodes(&with(&v, field, json!(good))), Ok(()));
        for (how, bad) in [
            ("upper case", "AB".repeat(bytes)),
            ("one character short", good[1..].to_string()),
            ("one byte long", format!("{good}ab")),
            ("not hex", format!("{}zz", &good[2..])),
            ("spaces", format!(" {} ", &good[2..])),
        ] {
            refused.push((format!("{field:?} {how}"), with(&v, field, json!(bad))));
        }
    }
    for (what, doc) in &refused {
        assert!(key_file_decodes(doc).is_err(), "accepted: {what}");
    }
    let accepted: Vec<(&str, Value)> = vec![
        ("the least Argon2 allows", kdf(8, 1, 1)),
        ("8 KiB per lane", kdf(512, 1, 64)),
        ("the most a reader allows", kdf(4 << 20, 64, 64)),
        ("an empty host", with(&v, &["host"], json!(""))),
        (
            "a user name in any script",
            with(&v, &["username"], json!("Zoë 李")),
        ),
        (
            "unknown top-level member",
            with(&v, &["label"], json!("laptop")),
        ),
        (
            "unknown member of kdf",
            with(&v, &["kdf", "secret"], json!(null)),
        ),
    ];
    for (what, doc) in &accepted {
        assert_eq!(key_file_decodes(doc), Ok(()), "refused: {what}");
    }
}

/// Rules about the document's text that a JSON value cannot show.
#[test]
fn json_documents_are_one_object_without_duplicates_or_a_byte_order_mark() {
    let config = String::from_utf8(serde_json::to_vec(&valid_config()).unwrap()).unwrap();
    let key = String::from_utf8(serde_json::to_vec(&valid_key_file()).unwrap()).unwrap();
    let decode_config = |s: &str| RepoConfig::decode(s.as_bytes()).map(drop);
    let decode_key = |s: &str| KeyFile::decode(s.as_bytes()).map(drop);
    type Decode<'a> = &'a dyn Fn(&str) -> Result<(), FormatError>;
    let docs: [(&str, &str, Decode); 2] = [
        ("config", &config, &decode_config),
        ("key file", &key, &decode_key),
    ];
    for (what, text, decode) in docs {
        assert_eq!(decode(text), Ok(()), "{what}");
        assert_eq!(
            decode(&format!("\n  {text}\n\n")),
            Ok(()),
            "{what} in whitespace"
        );
        let inner = &text[1..];
        let refused = [
            ("a byte-order mark", format!("\u{feff}{text}")),
            ("a second object", format!("{text}{text}")),
            ("trailing text", format!("{text} x")),
            ("an array", format!("[{text}]")),
            ("a duplicate created", format!("{{\"created\":1,{inner}")),
            ("a trailing comma", text.replacen('}', ",}", 1)),
            ("a comment", format!("/* */{text}")),
        ];
        for (how, doc) in refused {
            assert!(decode(&doc).is_err(), "{what} with {how} accepted");
        }
    }
    // Duplicates inside nested objects too.
    let dup = config.replacen("\"minor\"", "\"major\":1,\"minor\"", 1);
    assert!(
        decode_config(&dup).is_err(),
        "duplicate format.major accepted"
    );
    let dup = key.replacen("\"iterations\"", "\"memory_kib\":8,\"iterations\"", 1);
    assert!(
        decode_key(&dup).is_err(),
        "duplicate kdf.memory_kib accepted"
    );
}

// ---- object headers and sealed blobs (§2) ----------------------------------

#[test]
fn object_headers_refuse_every_byte_outside_the_spec() {
    let valid = ObjectHeader::new(ObjectKind::Index, 1).encode();
    assert!(ObjectHeader::decode(&valid, ObjectKind::Index).is_ok());
    let mut cases: Vec<(String, [u8; 8])> = Vec::new();
    for (at, value) in [(6, 1), (7, 1), (6, 0x80), (7, 0xff)] {
        let mut h = valid;
        h[at] = value;
        cases.push((format!("reserved byte {at} = {value:#x}"), h));
    }
    for (at, value) in [(0, b'd'), (3, b'X')] {
        let mut h = valid;
        h[at] = value;
        cases.push((format!("magic byte {at}"), h));
    }
    for kind in [0u8, 1, 3, 6, 255] {
        let mut h = valid;
        h[4] = kind;
        cases.push((format!("kind {kind} for an index"), h));
    }
    for version in [0u8, 3, 255] {
        let mut h = valid;
        h[5] = version;
        cases.push((format!("version {version}"), h));
    }
    for (what, h) in cases {
        assert!(
            ObjectHeader::decode(&h, ObjectKind::Index).is_err(),
            "accepted {what}"
        );
    }
}

#[test]
fn sealed_blob_headers_refuse_every_byte_outside_the_spec() {
    let sealer = Sealer::plain();
    let valid = sealer.seal(b"some plaintext", b"ctx", CompressionSetting::None);
    assert!(BlobHeader::decode(&valid, 1 << 20).is_ok());
    let changed = |at: usize, value: u8| {
        let mut b = valid.clone();
        b[at] = value;
        b
    };
    let cases = vec![
        ("reserved byte 2", changed(2, 1)),
        ("reserved byte 3", changed(3, 0x40)),
        ("compression 2", changed(0, 2)),
        ("cipher 2", changed(1, 2)),
        ("stored length one short", valid[..valid.len() - 1].to_vec()),
        ("stored length one long", [&valid[..], b"x"].concat()),
        ("header only", valid[..7].to_vec()),
        // cipher 1 needs a nonce and a 16-byte tag after the header.
        ("cipher 1 and no room for nonce and tag", changed(1, 1)),
    ];
    for (what, bytes) in cases {
        assert!(
            BlobHeader::decode(&bytes, 1 << 20).is_err(),
            "accepted {what}"
        );
    }
    assert!(
        BlobHeader::decode(&valid, 13).is_err(),
        "a plaintext over the reader's bound is refused before anything is allocated"
    );
}

// ---- zstd bodies (§2.3) -------------------------------------------------------

const CONTENT: &[u8] = b"diskvault keeps disk images; diskvault keeps them small. ";

/// A raw-block frame written by hand: magic, `header` (descriptor and the
/// fields it announces), then `blocks` (block header and content each).
fn frame(header: &[u8], blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.extend_from_slice(header);
    for b in blocks {
        f.extend_from_slice(b);
    }
    f
}

/// A block of `block_type` carrying `content` (one byte for RLE, repeated
/// `size` times).
fn block(last: bool, block_type: u32, size: usize, content: &[u8]) -> Vec<u8> {
    let h = ((size as u32) << 3) | (block_type << 1) | last as u32;
    [&h.to_le_bytes()[..3], content].concat()
}

fn raw_block(content: &[u8]) -> Vec<u8> {
    block(true, 0, content.len(), content)
}

/// Single segment, 1-byte content size (for contents under 256 bytes).
fn single_segment_header(size: usize) -> Vec<u8> {
    vec![0x20, size as u8]
}

/// Opens `body` as the zstd body of an unencrypted blob declaring `plain`
/// bytes of plaintext: the path every reader of every blob takes.
fn open_zstd(body: &[u8], plain: usize) -> Result<Vec<u8>, String> {
    let mut blob = vec![1u8, 0, 0, 0];
    blob.extend((plain as u32).to_le_bytes());
    blob.extend_from_slice(body);
    Sealer::plain()
        .open(&blob, b"ctx", 1 << 20)
        .map_err(|e| e.to_string())
}

fn compressed_with(configure: impl FnOnce(&mut zstd::bulk::Compressor<'static>)) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    configure(&mut c);
    c.compress(&CONTENT.repeat(4)).unwrap()
}

#[test]
fn a_compressed_body_is_exactly_one_zstd_frame_of_p_bytes() {
    let n = CONTENT.len();
    let valid = frame(&single_segment_header(n), &[raw_block(CONTENT)]);
    assert_eq!(open_zstd(&valid, n).as_deref(), Ok(CONTENT));

    let library = compressed_with(|_| {});
    let p = 4 * n;
    assert_eq!(open_zstd(&library, p).unwrap(), CONTENT.repeat(4));

    let skippable = |len: u32| {
        let mut f = 0x184D_2A53u32.to_le_bytes().to_vec();
        f.extend(len.to_le_bytes());
        f.extend(vec![0u8; len as usize]);
        f
    };
    let refused: Vec<(&str, Vec<u8>, usize)> = vec![
        ("an empty body", vec![], 0),
        ("the magic alone", valid[..4].to_vec(), n),
        ("a truncated block", valid[..valid.len() - 1].to_vec(), n),
        ("one trailing zero byte", [&valid[..], &[0]].concat(), n),
        ("four trailing bytes", [&valid[..], b"junk"].concat(), n),
        (
            "a second frame (together P bytes)",
            [&valid[..], &valid[..]].concat(),
            2 * n,
        ),
        (
            "a skippable frame before",
            [&skippable(4)[..], &valid[..]].concat(),
            n,
        ),
        (
            "a skippable frame after",
            [&valid[..], &skippable(0)[..]].concat(),
            n,
        ),
        ("a skippable frame alone", skippable(8), 0),
        (
            "a legacy (v0.7) magic",
            {
                let mut f = valid.clone();
                f[..4].copy_from_slice(&0xFD2F_B527u32.to_le_bytes());
                f
            },
            n,
        ),
        (
            "the reserved header bit",
            frame(&[0x28, n as u8], &[raw_block(CONTENT)]),
            n,
        ),
        (
            "a dictionary id (1 byte)",
            frame(&[0x21, 7, n as u8], &[raw_block(CONTENT)]),
            n,
        ),
        (
            "a dictionary id (4 bytes)",
            frame(&[0x23, 0, 0, 0, 1, n as u8], &[raw_block(CONTENT)]),
            n,
        ),
        ("a content size above P", valid.clone(), n - 1),
        ("a content size below P", valid.clone(), n + 1),
        (
            "no content size and less than P",
            frame(&[0x00, 0x00], &[raw_block(CONTENT)]),
            n + 1,
        ),
        (
            "no content size and more than P",
            frame(&[0x00, 0x00], &[raw_block(CONTENT)]),
            n - 1,
        ),
        (
            "the reserved block type",
            frame(&single_segment_header(n), &[block(true, 3, n, CONTENT)]),
            n,
        ),
        (
            "no last block",
            frame(&single_segment_header(n), &[block(false, 0, n, CONTENT)]),
            n,
        ),
        (
            "a checksum that does not match",
            {
                let mut f = compressed_with(|c| {
                    c.include_checksum(true).unwrap();
                });
                *f.last_mut().unwrap() ^= 1;
                f
            },
            p,
        ),
        (
            "a library frame cut short",
            library[..library.len() - 2].to_vec(),
            p,
        ),
    ];
    for (what, body, plain) in &refused {
        assert!(
            open_zstd(body, *plain).is_err(),
            "a body with {what} was opened"
        );
    }

    // What the spec leaves optional.
    let accepted: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "no content size",
            frame(&[0x00, 0x00], &[raw_block(CONTENT)]),
            n,
        ),
        (
            "a dictionary id field of 0",
            frame(&[0x21, 0, n as u8], &[raw_block(CONTENT)]),
            n,
        ),
        (
            "the unused header bit",
            frame(&[0x30, n as u8], &[raw_block(CONTENT)]),
            n,
        ),
        (
            "two blocks, one of them RLE",
            frame(
                &single_segment_header(n + 5),
                &[block(false, 0, n, CONTENT), block(true, 1, 5, b"!")],
            ),
            n + 5,
        ),
        (
            "a content checksum",
            compressed_with(|c| {
                c.include_checksum(true).unwrap();
            }),
            p,
        ),
        (
            "no content size, from libzstd",
            compressed_with(|c| {
                c.include_contentsize(false).unwrap();
            }),
            p,
        ),
    ];
    for (what, body, plain) in accepted {
        assert!(
            open_zstd(&body, plain).is_ok(),
            "a body with {what} was refused"
        );
    }
    // A 2-byte content size field holds the size minus 256.
    let big = CONTENT.repeat(6);
    let two_byte_size = frame(
        &[
            0x60,
            (big.len() - 256) as u8,
            ((big.len() - 256) >> 8) as u8,
        ],
        &[raw_block(&big)],
    );
    assert_eq!(open_zstd(&two_byte_size, big.len()).unwrap(), big);
}

/// diskvault's writer: the content size always, no checksum, no
/// dictionary (what §2.3 says diskvault writes).
#[test]
fn diskvault_writes_frames_with_their_content_size_and_no_checksum() {
    let plaintext = CONTENT.repeat(40);
    for level in [1, 3, 19, -7] {
        let sealed = Sealer::plain().seal(&plaintext, b"ctx", CompressionSetting::Zstd(level));
        let (header, body) = BlobHeader::decode(&sealed, 1 << 20).unwrap();
        let frame = check_frame(body, header.plain_len).unwrap();
        assert_eq!(frame.content_size, Some(plaintext.len() as u64));
        assert!(!frame.has_checksum, "level {level}");
    }
}

// ---- manifest nodes (§9.2) ----------------------------------------------------

fn leaf(extents: Vec<Extent>) -> ManifestNode {
    ManifestNode {
        level: 0,
        start: 0,
        entries: NodeEntries::Leaf(extents),
        chaining_value: None,
    }
}

fn data_extents(n: usize) -> Vec<Extent> {
    (0..n)
        .map(|i| Extent::Data {
            id: ChunkId([i as u8; 32]),
            length: 16384,
        })
        .collect()
}

#[test]
fn a_manifest_node_is_at_most_one_mebibyte_whatever_its_entry_count() {
    // 16 + 28 339 × 37 bytes fits; one more data extent does not, with an
    // entry count far below 65 536.
    let fits = leaf(data_extents(28_339)).encode(1);
    assert!(fits.len() <= MAX_NODE_LEN);
    assert!(ManifestNode::decode(&fits, 1).is_ok());
    let over = leaf(data_extents(28_340)).encode(1);
    assert!(over.len() > MAX_NODE_LEN);
    assert!(matches!(
        ManifestNode::decode(&over, 1),
        Err(FormatError::TooLarge { .. })
    ));

    let children = |n: usize| ManifestNode {
        level: 1,
        start: 0,
        entries: NodeEntries::Interior(
            (0..n)
                .map(|i| ChildRef {
                    id: ChunkId([i as u8; 32]),
                    covered: 4 << 20,
                })
                .collect(),
        ),
        chaining_value: None,
    };
    assert!(ManifestNode::decode(&children(26_214).encode(1), 1).is_ok());
    assert!(ManifestNode::decode(&children(26_215).encode(1), 1).is_err());

    // Zero runs take 9 bytes: here the entry count binds first.
    let zeros = |n: usize| leaf(vec![Extent::Zero { length: 1 }; n]).encode(1);
    assert!(zeros(MAX_NODE_ENTRIES).len() <= MAX_NODE_LEN);
    assert!(ManifestNode::decode(&zeros(MAX_NODE_ENTRIES), 1).is_ok());
    assert!(matches!(
        ManifestNode::decode(&zeros(MAX_NODE_ENTRIES + 1), 1),
        Err(FormatError::TooLarge { .. })
    ));
}

#[test]
fn manifest_nodes_refuse_every_byte_outside_the_spec() {
    let valid = leaf(vec![
        Extent::Data {
            id: ChunkId([1; 32]),
            length: 4096,
        },
        Extent::Zero { length: 8192 },
    ])
    .encode(1);
    assert!(ManifestNode::decode(&valid, 1).is_ok());
    let interior = ManifestNode {
        level: 1,
        start: 0,
        entries: NodeEntries::Interior(vec![ChildRef {
            id: ChunkId([2; 32]),
            covered: 4096,
        }]),
        chaining_value: None,
    }
    .encode(1);
    assert!(ManifestNode::decode(&interior, 1).is_ok());
    let changed = |from: &[u8], at: usize, value: u8| {
        let mut b = from.to_vec();
        b[at] = value;
        b
    };
    // Leaf entries start at 16: tag, then a u32 length for data.
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("reserved byte 2".into(), changed(&valid, 2, 1)),
        ("reserved byte 3".into(), changed(&valid, 3, 0xff)),
        ("a leaf at level 1".into(), changed(&valid, 1, 1)),
        (
            "an interior node at level 0".into(),
            changed(&interior, 1, 0),
        ),
        (
            "an interior node at level 17".into(),
            changed(&interior, 1, 17),
        ),
        ("an empty data extent".into(), {
            let mut b = valid.clone();
            b[17..21].copy_from_slice(&0u32.to_le_bytes());
            b
        }),
        ("an empty zero run".into(), {
            let mut b = valid.clone();
            let at = 16 + 37 + 1;
            b[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
            b
        }),
        (
            "an interior node without children".into(),
            [&[2u8, 1, 0, 0][..], &[0; 8], &0u32.to_le_bytes()].concat(),
        ),
        ("one trailing byte".into(), [&valid[..], &[0]].concat()),
        (
            "a trailing zero run not counted".into(),
            [&valid[..], &[2], &1u64.to_le_bytes()].concat(),
        ),
        (
            "one trailing byte on an interior node".into(),
            [&interior[..], &[0]].concat(),
        ),
        (
            "a missing last byte".into(),
            valid[..valid.len() - 1].to_vec(),
        ),
        ("coverage beyond 2^64".into(), {
            let mut b = valid.clone();
            b[4..12].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
    ];
    for kind in [0u8, 3, 255] {
        cases.push((format!("node kind {kind}"), changed(&valid, 0, kind)));
    }
    for tag in [0u8, 3, 4, 0x81, 255] {
        cases.push((format!("entry tag {tag}"), changed(&valid, 16, tag)));
        cases.push((
            format!("second entry tag {tag}"),
            changed(&valid, 16 + 37, tag),
        ));
    }
    for (what, bytes) in cases {
        assert!(ManifestNode::decode(&bytes, 1).is_err(), "accepted {what}");
    }
    // An empty disk's manifest: an empty leaf.
    assert!(ManifestNode::decode(&leaf(vec![]).encode(1), 1).is_ok());
}

// ---- recovery points (§10) ----------------------------------------------------

fn point_with(names: &[&str]) -> PointBody {
    PointBody {
        time_secs: 1_795_740_663,
        time_nanos: 5,
        duration_millis: 10,
        host: "vm".into(),
        source: "/dev/sda".into(),
        tags: vec![],
        disks: names
            .iter()
            .map(|name| DiskRecord {
                name: name.to_string(),
                size: 0,
                manifest_root: ChunkId([0; 32]),
                image_hash: [0; 32],
                stats: DiskStats::default(),
                origin: Default::default(),
            })
            .collect(),
        consistency: None,
        unknown_extensions: Vec::new(),
    }
}

#[test]
fn disk_names_that_are_not_plain_names_are_refused_by_writers_and_readers() {
    let long = "n".repeat(1025);
    let refused: Vec<(&str, Vec<&str>)> = vec![
        ("an empty name", vec![""]),
        ("a dot", vec!["."]),
        ("two dots", vec![".."]),
        ("a slash", vec!["a/b"]),
        ("a lone slash", vec!["/"]),
        ("a leading slash", vec!["/dev/sda"]),
        ("a trailing slash", vec!["sda/"]),
        ("a parent path", vec!["../etc"]),
        ("NUL", vec!["sd\0a"]),
        ("a newline", vec!["sda\n"]),
        ("a tab", vec!["\tsda"]),
        ("a carriage return", vec!["sda\rsdb"]),
        ("an escape sequence", vec!["\u{1b}[2Jsda"]),
        ("DEL", vec!["sda\u{7f}"]),
        ("a C1 control (NEL)", vec!["sda\u{85}"]),
        ("a C1 control (U+009F)", vec!["\u{9f}"]),
        ("1025 bytes", vec![&long]),
        ("the same name twice", vec!["sda", "sda"]),
        ("the same name twice, apart", vec!["sda", "sdb", "sda"]),
        ("a bad name after good ones", vec!["sda", "sdb", "x/y"]),
    ];
    for (what, names) in &refused {
        let point = point_with(names);
        assert!(point.validate().is_err(), "the writer accepts {what}");
        assert!(
            PointBody::decode(&point.encode()).is_err(),
            "a reader accepts {what}"
        );
    }
    let max = "n".repeat(1024);
    let accepted: Vec<(&str, Vec<&str>)> = vec![
        ("one plain name", vec!["sda"]),
        ("several names", vec!["root", "data", "swap"]),
        ("three dots", vec!["..."]),
        ("a leading dot", vec![".hidden"]),
        ("dots inside", vec!["disk.img"]),
        ("a space", vec!["my disk"]),
        ("a backslash", vec!["a\\b"]),
        ("a colon", vec!["c:"]),
        ("letters of any script", vec!["ディスク", "ünïcode"]),
        ("a no-break space (not a control)", vec!["a\u{a0}b"]),
        (
            "a zero-width joiner (format, not control)",
            vec!["a\u{200d}b"],
        ),
        ("names differing in case", vec!["SDA", "sda"]),
        ("1024 bytes", vec![&max]),
        ("no disk at all", vec![]),
    ];
    for (what, names) in &accepted {
        let point = point_with(names);
        assert_eq!(point.validate(), Ok(()), "the writer refuses {what}");
        assert_eq!(
            PointBody::decode(&point.encode()),
            Ok(point.clone()),
            "a reader refuses {what}"
        );
        for name in names {
            assert_eq!(check_disk_name(name), Ok(()), "{what}");
        }
    }
}

#[test]
fn points_refuse_bytes_after_the_last_disk_and_nanoseconds_out_of_range() {
    let point = point_with(&["sda"]);
    let bytes = point.encode();
    assert!(PointBody::decode(&bytes).is_ok());
    assert!(PointBody::decode(&[&bytes[..], &[0]].concat()).is_err());
    let mut nanos = bytes.clone();
    nanos[8..12].copy_from_slice(&1_000_000_000u32.to_le_bytes());
    assert!(PointBody::decode(&nanos).is_err());
    let mut not_utf8 = bytes;
    let host_at = 8 + 4 + 8 + 2;
    not_utf8[host_at] = 0xff;
    assert!(PointBody::decode(&not_utf8).is_err());
}

//! A damaged or hostile repository must not crash diskvault or exhaust its
//! memory. Every decoder of repository bytes gets random bytes and mutated
//! valid encodings of every object kind (bit flips, truncation, extension,
//! splices, length and count fields overwritten with extreme values), on
//! stable Rust in every `cargo test`. Each input goes through the same checks
//! as the cargo-fuzz targets (`fuzz/checks.rs`): no panic, anything that
//! decodes survives decode(encode(x)) == x, and, measured by a counting
//! allocator, no decode allocates more than its input justifies.

#[path = "../fuzz/checks.rs"]
mod checks;
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use common::Xorshift;
use diskvault::crypto::{self, MasterKey};
use diskvault::format::blob::BlobHeader;
use diskvault::format::config::{ChunkerParams, CompressionSetting, Encryption, RepoConfig};
use diskvault::format::forget::ForgetRecord;
use diskvault::format::group;
use diskvault::format::index::{IndexBody, IndexRecord};
use diskvault::format::lock::{LockMode, LockRecord};
use diskvault::format::manifest::{ChildRef, Extent, ManifestNode, NodeEntries};
use diskvault::format::pack::{decode_table, encode_table};
use diskvault::format::point::{
    Consistency, ConsistencyLevel, DiskOrigin, DiskRecord, DiskStats, PointBody, SourceKind,
};
use diskvault::format::policy::StoredPolicy;
use diskvault::format::{
    ChunkId, FormatError, ObjectHeader, ObjectKind, PackId, PointId, MAX_BLOB_PLAINTEXT,
};
use diskvault::packer::{read_pack_table, Member, PackBuilder};
use diskvault::retention::RetentionPolicy;
use diskvault::{KdfCost, Repository};

// ---- a counting allocator ---------------------------------------------------

/// Counts the bytes each thread has live, and the most it had since the last
/// [`peak_during`] began. Tests run on several threads; counting per thread
/// keeps one test's allocations out of another's measurement.
struct CountingAllocator;

thread_local! {
    // `const` thread-locals of `Cell<isize>` need no allocation and no
    // destructor, so the allocator may touch them.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// bookkeeping around it does not allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the most bytes it had allocated at
/// once on this thread (allocations of the C zstd library are not seen).
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get) - start;
    (r, peak.max(0) as usize)
}

const KIB: usize = 1 << 10;

/// The most a check may allocate for an input of `len` bytes: a few bytes of
/// decoded structure per input byte (the densest case is a 9-byte zero run
/// becoming a 40-byte extent), plus a constant, plus the plaintext a sealed
/// blob may declare before it is decompressed (which the format bounds).
fn allocation_bound(target: &str, len: usize) -> usize {
    let declared_plaintext = match target {
        "chunk" => checks::MAX_CHUNK_PLAIN,
        // parse_pack_table opens the sealed table with the general blob bound.
        "pack" => MAX_BLOB_PLAINTEXT,
        _ => 0,
    };
    declared_plaintext + 8 * len + 64 * KIB
}

// ---- valid encodings of every object kind ------------------------------------

/// A valid encoding of some object, labelled with the check it feeds.
struct Sample {
    target: &'static str,
    what: String,
    bytes: Vec<u8>,
}

fn sample(target: &'static str, what: impl Into<String>, bytes: Vec<u8>) -> Sample {
    Sample {
        target,
        what: what.into(),
        bytes,
    }
}

fn golden_repo() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/golden-v1/repo"
    ))
}

/// Encodings made here, covering every variant of every structure.
fn synthetic_samples() -> Vec<Sample> {
    let mut rng = Xorshift::new(5);
    let text = b"diskvault seals chunks of disk images. ".repeat(6);
    let random = rng.bytes(100);
    let mut out = Vec::new();

    for kind in [ObjectKind::Pack, ObjectKind::Index, ObjectKind::Point] {
        for version in [1, 2] {
            let header = ObjectHeader::new(kind, version).encode().to_vec();
            out.push(sample("object_header", kind.name(), header));
        }
    }

    for (name, sealer) in [
        ("encrypted", &*checks::ENCRYPTED),
        ("plain", &*checks::PLAIN),
    ] {
        for (body_name, body) in [("text", &text[..]), ("random", &random[..])] {
            for comp in [CompressionSetting::Zstd(3), CompressionSetting::None] {
                let sealed = sealer.seal(body, b"context", comp);
                out.push(sample(
                    "blob_header",
                    format!("{name} {body_name} {comp}"),
                    sealed,
                ));
            }
            // As a chunk: its id, then the sealed chunk.
            let id = sealer.chunk_id(body);
            for comp in [CompressionSetting::Zstd(3), CompressionSetting::None] {
                let mut bytes = id.0.to_vec();
                bytes.extend(sealer.seal(body, &id.0, comp));
                out.push(sample("chunk", format!("{name} {body_name} {comp}"), bytes));
            }
        }
    }
    // Chunks in the form the chunk check encrypts itself: id, 20-byte header
    // (compression, cipher, reserved, plaintext length, nonce), then body.
    for (body_name, body) in [("text", &text[..]), ("random", &random[..])] {
        let id = checks::ENCRYPTED.chunk_id(body);
        for zstd in [true, false] {
            let mut bytes = id.0.to_vec();
            bytes.extend([zstd as u8, 1, 0, 0]);
            bytes.extend((body.len() as u32).to_le_bytes());
            bytes.extend([0u8; 12]);
            if zstd {
                bytes.extend(zstd::bulk::compress(body, 3).expect("zstd"));
            } else {
                bytes.extend_from_slice(body);
            }
            out.push(sample(
                "chunk",
                format!("{body_name} to encrypt, zstd {zstd}"),
                bytes,
            ));
        }
    }

    for (name, sealer) in [
        ("plain", &*checks::PLAIN),
        ("encrypted", &*checks::ENCRYPTED),
    ] {
        for version in [1, 2] {
            let mut pack = PackBuilder::new(4 * KIB, version);
            for body in [&text[..], &random[..]] {
                let id = sealer.chunk_id(body);
                let sealed = sealer.seal(body, &id.0, CompressionSetting::Zstd(3));
                pack.add(&sealed, &[Member::sole(id, body.len() as u32)]);
            }
            if version >= 2 {
                // A group of both bodies, as format 2 stores data chunks.
                let members = [
                    (sealer.chunk_id(&text), &text[..]),
                    (sealer.chunk_id(&random), &random[..]),
                ];
                let sealed = sealer.seal_group(&members, CompressionSetting::Zstd(3));
                let offsets = group::member_offsets([text.len(), random.len()].into_iter());
                let listed: Vec<Member> = members
                    .iter()
                    .zip(offsets)
                    .map(|((id, b), member)| Member {
                        id: *id,
                        member,
                        raw_length: b.len() as u32,
                    })
                    .collect();
                pack.add(&sealed, &listed);
                out.push(sample(
                    "group",
                    format!("{name} group"),
                    group::encode_group(&members),
                ));
            }
            let pack = pack.finish(sealer);
            out.push(sample(
                "pack",
                format!("{name} pack v{version}"),
                pack.bytes.clone(),
            ));
            out.push(sample(
                "pack",
                format!("{name} table v{version}"),
                encode_table(&pack.entries, version),
            ));
            out.push(sample(
                "object_header",
                format!("{name} pack v{version}"),
                pack.bytes[..8].to_vec(),
            ));
        }
    }
    out.push(sample(
        "group",
        "one member",
        group::encode_group(&[(ChunkId([9; 32]), &b"x"[..])]),
    ));

    let packs = vec![PackId([1; 32]), PackId([2; 32])];
    let records = (0..3)
        .map(|i| IndexRecord {
            id: ChunkId([10 + i as u8; 32]),
            pack: i % 2,
            offset: 8 + 1000 * i,
            length: 900,
            member: if i == 1 { 4 + 36 } else { group::SOLE },
            raw_length: 16 * KIB as u32,
        })
        .collect();
    let body = IndexBody { packs, records };
    out.push(sample("index", "synthetic v2", body.encode(2)));
    let v1 = IndexBody {
        records: body
            .records
            .iter()
            .map(|r| IndexRecord {
                member: group::SOLE,
                ..*r
            })
            .collect(),
        ..body
    };
    out.push(sample("index", "synthetic v1", v1.encode(1)));

    let leaf = ManifestNode {
        level: 0,
        start: 4 << 20,
        entries: NodeEntries::Leaf(vec![
            Extent::Data {
                id: ChunkId([3; 32]),
                length: 16 * KIB as u32,
            },
            Extent::Zero { length: 1 << 20 },
            Extent::Data {
                id: ChunkId([4; 32]),
                length: 512,
            },
        ]),
        chaining_value: None,
    };
    out.push(sample("manifest", "leaf", leaf.encode(1)));
    out.push(sample("manifest", "leaf v2", leaf.encode(2)));
    let span_leaf = ManifestNode {
        level: 0,
        start: 8 << 20,
        entries: NodeEntries::Leaf(vec![
            Extent::Zero { length: 1 << 20 },
            Extent::Data {
                id: ChunkId([5; 32]),
                length: 3 << 20,
            },
        ]),
        chaining_value: Some([0x5a; 32]),
    };
    out.push(sample(
        "manifest",
        "leaf with a chaining value",
        span_leaf.encode(2),
    ));
    let interior = ManifestNode {
        level: 1,
        start: 0,
        entries: NodeEntries::Interior(
            (0..3)
                .map(|i| ChildRef {
                    id: ChunkId([20 + i; 32]),
                    covered: 4 << 20,
                })
                .collect(),
        ),
        chaining_value: None,
    };
    out.push(sample("manifest", "interior", interior.encode(1)));
    out.push(sample("manifest", "interior v2", interior.encode(2)));

    let disk = |name: &str, seed: u8| DiskRecord {
        name: name.into(),
        size: 8 << 20,
        manifest_root: ChunkId([seed; 32]),
        image_hash: [seed + 1; 32],
        stats: DiskStats {
            bytes_read: 6 << 20,
            zero_bytes: 2 << 20,
            chunks: 384,
            new_chunks: 12,
            new_bytes: 3 << 16,
            stored_bytes: 1 << 16,
        },
        origin: Default::default(),
    };
    let mut point = PointBody {
        time_secs: 1_795_740_663,
        time_nanos: 999_999_999,
        duration_millis: 1234,
        host: "vm-host".into(),
        source: "/dev/sda, /dev/sdb".into(),
        tags: vec!["daily".into(), "ünïcode".into(), String::new()],
        disks: vec![disk("sda", 7), disk("sdb", 9)],
        consistency: None,
        unknown_extensions: Vec::new(),
    };
    out.push(sample("point", "synthetic", point.encode()));
    point.consistency = Some(Consistency {
        level: ConsistencyLevel::Application,
        reason: "pre script succeeded; post script succeeded".into(),
    });
    point.disks[1].origin = DiskOrigin {
        kind: SourceKind::ChangedBlocks,
        parent: Some(PointId([3; 32])),
        bytes_from_parent: 5 << 20,
    };
    out.push(sample("point", "extensions", point.encode()));

    let id = hex::encode([0xab; 32]);
    for (chunker, encryption) in [
        (ChunkerParams::DEFAULT, Encryption::Aes256Gcm),
        (ChunkerParams::DEFAULT_FASTCDC, Encryption::None),
    ] {
        let config = RepoConfig::new(id.clone(), chunker, CompressionSetting::None, encryption, 1);
        out.push(sample("config", format!("{chunker}"), config.encode()));
    }

    let key = MasterKey::from_test_bytes(&[7; 64]);
    let file = crypto::wrap_master_key(
        &key,
        b"passphrase",
        &id,
        id.as_bytes(),
        KdfCost::insecure_fast(),
        1,
        "host".into(),
        "user".into(),
    )
    .expect("wrap");
    out.push(sample("keyfile", "synthetic", file.encode()));

    out.push(sample(
        "forget_record",
        "synthetic",
        ForgetRecord::new(
            PointId([5; 32]),
            1_795_740_663,
            "vm",
            "forget --keep-last 3",
        )
        .encode(),
    ));
    out.push(sample(
        "lock",
        "synthetic",
        LockRecord {
            version: 1,
            mode: LockMode::Shared,
            command: "backup".into(),
            host: "vm".into(),
            user: "root".into(),
            pid: 4242,
            process_start: 99,
            boot_id: "b0".into(),
            created: 1_795_740_663,
            refreshed: 1_795_740_963,
        }
        .encode(),
    ));
    let policy = StoredPolicy {
        rules: RetentionPolicy {
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_within: Some("1y2m".parse().unwrap()),
            keep_tags: vec!["keep".into()],
            ..RetentionPolicy::default()
        },
        grace_secs: 86_400,
    };
    out.push(sample("policy", "synthetic", policy.encode()));
    out
}

/// Every object of the golden format-v1 repository, as stored, and the
/// plaintexts behind its encryption.
fn golden_samples() -> Vec<Sample> {
    let root = golden_repo();
    let read = |key: &str| std::fs::read(root.join(key)).expect("read golden object");
    let mut out = vec![sample("config", "golden config", read("config"))];
    for path in common::objects(root, "keys") {
        let bytes = std::fs::read(&path).expect("read key file");
        out.push(sample("keyfile", "golden key file", bytes));
    }
    for prefix in ["index", "points", "packs"] {
        for path in common::objects(root, prefix) {
            let bytes = std::fs::read(&path).expect("read object");
            let what = format!("golden {}", path.display());
            out.push(sample("object_header", what.clone(), bytes[..8].to_vec()));
            if prefix == "packs" {
                if bytes.len() <= 4 * KIB {
                    out.push(sample("pack", what, bytes));
                }
            } else {
                out.push(sample("blob_header", what, bytes[8..].to_vec()));
            }
        }
    }

    let repo = Repository::open(root, Some(b"diskvault-golden")).expect("open golden repository");
    for id in repo.list_index_files().expect("list index files") {
        let body = repo.read_index_file(&id).expect("read index file");
        out.push(sample(
            "index",
            format!("golden index {}", id.short()),
            body.encode(repo.format_major()),
        ));
    }
    for id in repo.list_packs().expect("list packs") {
        let entries = read_pack_table(&repo, &id).expect("read pack table");
        out.push(sample(
            "pack",
            format!("golden table {}", id.short()),
            encode_table(&entries, repo.format_major()),
        ));
    }
    let index = repo.load_index().expect("load index");
    for (id, point) in repo.list_points().expect("list points") {
        out.push(sample(
            "point",
            format!("golden point {}", id.short()),
            point.encode(),
        ));
        for disk in &point.disks {
            let loc = index
                .get(&disk.manifest_root)
                .expect("manifest root indexed");
            let node = repo
                .read_chunk(&disk.manifest_root, &loc, &index.pack_id(loc.pack))
                .expect("read manifest root");
            out.push(sample(
                "manifest",
                format!("golden root of {}", disk.name),
                node,
            ));
        }
    }
    out
}

fn all_samples() -> Vec<Sample> {
    let mut samples = synthetic_samples();
    samples.extend(golden_samples());
    for s in &samples {
        assert!(
            check_fn(s.target)(&s.bytes),
            "sample '{}' does not decode with check {}",
            s.what,
            s.target
        );
    }
    samples
}

fn check_fn(target: &str) -> checks::Check {
    checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .expect("known check")
}

// ---- mutations ---------------------------------------------------------------

/// Values to write over length and count fields: the edges of every bound
/// the format has, and of the integer widths.
const EXTREMES: [u64; 18] = [
    0,
    1,
    0x7f,
    0xff,
    0x100,
    0x400,
    0x401,
    0xffff,
    0x1_0000,
    0x1_0001,
    0x10_0000,
    0x10_0001,
    64 << 20,
    (64 << 20) + 1,
    u32::MAX as u64,
    1 << 32,
    i64::MAX as u64,
    u64::MAX,
];

/// Numbers to put in place of a JSON number.
const JSON_NUMBERS: [&str; 8] = [
    "0",
    "-1",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "-9223372036854775809",
    "1e309",
    "0.5",
];

fn pick(rng: &mut Xorshift, n: usize) -> usize {
    rng.below(n.max(1) as u64) as usize
}

/// One random change to `input`; `other` is another valid encoding to
/// splice from.
fn mutate_once(rng: &mut Xorshift, input: &mut Vec<u8>, other: &[u8]) {
    let len = input.len();
    match rng.below(9) {
        0 => {
            for _ in 0..=rng.below(4) {
                if len > 0 {
                    input[pick(rng, len)] ^= 1 << rng.below(8);
                }
            }
        }
        1 => input.truncate(pick(rng, len)),
        2 => {
            let n = 1 + pick(rng, 64);
            let extra = rng.bytes(n);
            input.extend(extra);
        }
        3 => {
            let copy = input.clone();
            input.extend(copy);
        }
        4 | 5 => {
            // A length or count field overwritten with an extreme value
            // (or with the input's own length, give or take one).
            let width = [1, 2, 4, 8][pick(rng, 4)];
            let at = pick(rng, len);
            let v = match rng.below(4) {
                0 => (len as u64 + rng.below(3)).wrapping_sub(1),
                _ => EXTREMES[pick(rng, EXTREMES.len())],
            };
            for (i, b) in v.to_le_bytes()[..width].iter().enumerate() {
                if let Some(slot) = input.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        6 => {
            let start = pick(rng, len);
            let end = (start + 1 + pick(rng, 16)).min(len);
            input.drain(start..end);
        }
        7 => {
            // The head of this encoding, the tail of another.
            let cut = pick(rng, len);
            input.truncate(cut);
            input.extend_from_slice(&other[pick(rng, other.len())..]);
        }
        _ => {
            // A JSON number replaced (for config and key files), or random
            // bytes inserted (for binary encodings).
            let digits: Vec<usize> = (0..len).filter(|&i| input[i].is_ascii_digit()).collect();
            if digits.is_empty() || input.first() != Some(&b'{') {
                let at = pick(rng, len);
                let n = 1 + pick(rng, 8);
                let extra = rng.bytes(n);
                input.splice(at..at, extra);
            } else {
                let mut start = digits[pick(rng, digits.len())];
                while start > 0 && input[start - 1].is_ascii_digit() {
                    start -= 1;
                }
                let mut end = start;
                while end < len && input[end].is_ascii_digit() {
                    end += 1;
                }
                let number = JSON_NUMBERS[pick(rng, JSON_NUMBERS.len())];
                input.splice(start..end, number.bytes());
            }
        }
    }
}

/// Runs one check on `input`, failing the test with a reproducible report if
/// it panics or allocates more than the bound. Returns whether the input
/// decoded, and the peak allocation.
fn run_check(target: &'static str, input: &[u8]) -> (bool, usize) {
    let check = check_fn(target);
    let (result, peak) = peak_during(|| catch_unwind(AssertUnwindSafe(|| check(input))));
    let Ok(decoded) = result else {
        panic!(
            "check {target} panicked on {} bytes: {}\n(write them to a file and run \
             `cargo fuzz run {target} FILE` in fuzz/ to debug)",
            input.len(),
            hex::encode(input)
        );
    };
    let bound = allocation_bound(target, input.len());
    assert!(
        peak <= bound,
        "check {target} allocated {peak} bytes at once for {} input bytes (bound {bound}): {}",
        input.len(),
        hex::encode(input)
    );
    (decoded, peak)
}

// ---- the tests -----------------------------------------------------------------

/// Mutated inputs per valid sample, and random inputs per check.
const MUTANTS_PER_SAMPLE: usize = 2000;
const RANDOM_PER_CHECK: usize = 2000;

#[test]
fn random_and_mutated_bytes_never_panic_nor_overallocate() {
    let samples = all_samples();
    let mut rng = Xorshift::new(0x5eed);
    for (target, _) in checks::TARGETS {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.target == target).collect();
        assert!(!mine.is_empty(), "no valid sample feeds check {target}");
        let (mut runs, mut decoded, mut max_peak) = (0usize, 0usize, 0usize);
        for s in &mine {
            for _ in 0..MUTANTS_PER_SAMPLE {
                let mut input = s.bytes.clone();
                let other = &mine[pick(&mut rng, mine.len())].bytes;
                for _ in 0..=rng.below(3) {
                    mutate_once(&mut rng, &mut input, other);
                }
                let (ok, peak) = run_check(target, &input);
                runs += 1;
                decoded += ok as usize;
                max_peak = max_peak.max(peak);
            }
        }
        for _ in 0..RANDOM_PER_CHECK {
            let len = pick(&mut rng, 2 * KIB);
            let input = rng.bytes(len);
            let (ok, peak) = run_check(target, &input);
            runs += 1;
            decoded += ok as usize;
            max_peak = max_peak.max(peak);
        }
        eprintln!(
            "{target}: {runs} inputs, {decoded} decoded, peak allocation {} KiB",
            max_peak / KIB
        );
        // Some mutants must still decode, or the round-trip assertions in
        // the checks were never exercised.
        assert!(decoded > 0, "no mutated input decoded with check {target}");
    }
}

#[test]
fn the_counting_allocator_sees_a_large_allocation() {
    let (v, peak) = peak_during(|| Vec::<u8>::with_capacity(3 << 20));
    drop(v);
    assert!(peak >= 3 << 20, "peak {peak}");
    let ((), small) = peak_during(|| ());
    assert!(small < KIB);
}

/// A count or length larger than the bytes that follow is refused as
/// truncated, before anything proportional to it is allocated.
#[test]
fn declared_counts_beyond_the_bytes_present_are_refused_without_allocating() {
    let truncated = |r: Result<(), FormatError>| matches!(r, Err(FormatError::Truncated { .. }));
    let too_large = |r: Result<(), FormatError>| matches!(r, Err(FormatError::TooLarge { .. }));
    type Decode = fn(&[u8]) -> Result<(), FormatError>;
    let cases: Vec<(&str, Vec<u8>, Decode, bool)> = vec![
        (
            "index pack count",
            (1u32 << 20).to_le_bytes().to_vec(),
            |b| IndexBody::decode(b, 2).map(drop),
            true,
        ),
        (
            "index pack count over the limit",
            ((1u32 << 20) + 1).to_le_bytes().to_vec(),
            |b| IndexBody::decode(b, 2).map(drop),
            false,
        ),
        (
            "index entry count",
            [0u32.to_le_bytes(), (1u32 << 20).to_le_bytes()].concat(),
            |b| IndexBody::decode(b, 2).map(drop),
            true,
        ),
        (
            "pack table entry count",
            (1u32 << 20).to_le_bytes().to_vec(),
            |b| decode_table(b, u64::MAX, 2).map(drop),
            true,
        ),
        (
            "manifest leaf entry count",
            [&[1u8, 0, 0, 0][..], &[0; 8], &(1u32 << 16).to_le_bytes()].concat(),
            |b| ManifestNode::decode(b, 1).map(drop),
            true,
        ),
        (
            "manifest interior entry count",
            [&[2u8, 1, 0, 0][..], &[0; 8], &(1u32 << 16).to_le_bytes()].concat(),
            |b| ManifestNode::decode(b, 1).map(drop),
            true,
        ),
        (
            "point host length",
            [&[0u8; 20][..], &1024u16.to_le_bytes()].concat(),
            |b| PointBody::decode(b).map(drop),
            true,
        ),
        (
            "point tag count",
            [&[0u8; 24][..], &256u16.to_le_bytes()].concat(),
            |b| PointBody::decode(b).map(drop),
            true,
        ),
        (
            "point disk count",
            [&[0u8; 26][..], &256u16.to_le_bytes()].concat(),
            |b| PointBody::decode(b).map(drop),
            true,
        ),
        (
            "blob plaintext length",
            [&[1u8, 0, 0, 0][..], &(u32::MAX).to_le_bytes(), b"tiny"].concat(),
            |b| BlobHeader::decode(b, MAX_BLOB_PLAINTEXT).map(drop),
            false,
        ),
    ];
    for (what, bytes, decode, expect_truncated) in cases {
        let (result, peak) = peak_during(|| decode(&bytes));
        let refused = if expect_truncated {
            truncated(result.clone())
        } else {
            too_large(result.clone())
        };
        assert!(refused, "{what}: {result:?}");
        assert!(peak < 4 * KIB, "{what}: allocated {peak} bytes");
    }
}

/// Found by the `object_header` fuzz target: the reserved bytes were not
/// checked, and readers authenticate the header they re-encode, so a copy
/// of an index or point with other reserved bytes opened under a new name.
#[test]
fn object_headers_with_nonzero_reserved_bytes_are_refused() {
    let mut header = ObjectHeader::new(ObjectKind::Point, 2).encode();
    assert!(ObjectHeader::decode(&header, ObjectKind::Point).is_ok());
    header[6] = 1;
    assert!(matches!(
        ObjectHeader::decode(&header, ObjectKind::Point),
        Err(FormatError::Invalid { .. })
    ));
}

/// Writes the valid samples no larger than 1 KiB into `fuzz/seeds/<target>/`
/// as the fuzzers' seed corpora. Run by hand after a format change:
/// `cargo test --test decoders -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files into fuzz/seeds; run by hand"]
fn write_fuzz_seeds() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let _ = std::fs::remove_dir_all(&seeds);
    for s in all_samples() {
        if s.bytes.len() > KIB {
            continue;
        }
        let dir = seeds.join(s.target);
        std::fs::create_dir_all(&dir).expect("create seed directory");
        let name = &blake3::hash(&s.bytes).to_hex()[..16];
        std::fs::write(dir.join(name), &s.bytes).expect("write seed");
    }
}

//! Per-stage throughput of the backup and restore pipelines, each beside a
//! reference measured in the same run on the same bytes:
//! chunking vs a memory copy, chunk ids vs plain BLAKE3 of the whole
//! buffer, per-chunk compression vs zstd of the whole buffer, sealing and
//! opening vs compression alone.
//!
//! Input: the first 64 MiB of data of `DISKVAULT_BENCH_IMAGE` (a raw disk
//! image) if set, else 64 MiB of synthetic, partly compressible bytes.
//! Run with `cargo bench --bench stages`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diskvault::chunker::{is_all_zero, Chunker};
use diskvault::crypto::{MasterKey, Sealer};
use diskvault::{ChunkerParams, CompressionSetting};

const INPUT_BYTES: usize = 64 << 20;

fn input() -> Vec<u8> {
    if let Ok(path) = std::env::var("DISKVAULT_BENCH_IMAGE") {
        let data = std::fs::read(&path).expect("DISKVAULT_BENCH_IMAGE is readable");
        // Skip leading zero blocks (free space) so the stages see real data.
        let mut out: Vec<u8> = data
            .chunks(4096)
            .filter(|b| !is_all_zero(b))
            .flatten()
            .copied()
            .take(INPUT_BYTES)
            .collect();
        out.resize(INPUT_BYTES, 0);
        return out;
    }
    // Synthetic: runs of log-like text (compressible) between random runs.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(INPUT_BYTES);
    while out.len() < INPUT_BYTES {
        if next() % 3 == 0 {
            for _ in 0..2048 {
                out.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            for _ in 0..400 {
                let line = format!(
                    "2026-11-27 host{} svc[{}]: ok in {}us\n",
                    next() % 9,
                    next() % 5000,
                    next() % 900
                );
                out.extend_from_slice(line.as_bytes());
            }
        }
    }
    out.truncate(INPUT_BYTES);
    out
}

fn chunks_of(data: &[u8], params: ChunkerParams) -> Vec<(usize, usize)> {
    let mut cuts = Vec::new();
    Chunker::new(params).cut(data, 0, true, &mut cuts);
    let mut off = 0;
    cuts.into_iter()
        .map(|len| {
            let s = (off, len);
            off += len;
            s
        })
        .collect()
}

fn stages(c: &mut Criterion) {
    let data = input();
    let sealer = Sealer::encrypted(&MasterKey::generate());
    let fixed = chunks_of(&data, ChunkerParams::DEFAULT);

    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    let mut copy = vec![0u8; data.len()];
    g.bench_function("reference: memcpy", |b| {
        b.iter(|| copy.copy_from_slice(black_box(&data)))
    });
    for params in [ChunkerParams::DEFAULT, ChunkerParams::DEFAULT_FASTCDC] {
        g.bench_function(params.to_string(), |b| {
            let chunker = Chunker::new(params);
            let mut cuts = Vec::with_capacity(8192);
            b.iter(|| {
                cuts.clear();
                chunker.cut(black_box(&data), 0, true, &mut cuts)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("reference: blake3 whole buffer", |b| {
        b.iter(|| blake3::hash(black_box(&data)))
    });
    g.bench_function("keyed chunk ids (16K)", |b| {
        b.iter(|| {
            for &(o, l) in &fixed {
                black_box(sealer.chunk_id(&data[o..o + l]));
            }
        })
    });
    g.finish();

    // Compression-bound stages on a quarter of the input to keep runs short.
    let part = &data[..INPUT_BYTES / 4];
    let part_chunks: Vec<_> = fixed
        .iter()
        .copied()
        .filter(|(o, l)| o + l <= part.len())
        .collect();
    let mut g = c.benchmark_group("compress");
    g.throughput(Throughput::Bytes(part.len() as u64));
    g.sample_size(10);
    g.bench_function("reference: zstd -3 whole buffer", |b| {
        b.iter(|| zstd::bulk::compress(black_box(part), 3).unwrap())
    });
    g.bench_function("seal 16K chunks (zstd:3 + AES-GCM)", |b| {
        b.iter(|| {
            for &(o, l) in &part_chunks {
                let chunk = &part[o..o + l];
                black_box(sealer.seal(chunk, &[0u8; 32], CompressionSetting::Zstd(3)));
            }
        })
    });
    g.bench_function("seal 16K chunks (zstd:1 + AES-GCM)", |b| {
        b.iter(|| {
            for &(o, l) in &part_chunks {
                let chunk = &part[o..o + l];
                black_box(sealer.seal(chunk, &[0u8; 32], CompressionSetting::Zstd(1)));
            }
        })
    });
    g.bench_function("seal 16K chunks (no compression, AES-GCM only)", |b| {
        b.iter(|| {
            for &(o, l) in &part_chunks {
                black_box(sealer.seal(&part[o..o + l], &[0u8; 32], CompressionSetting::None));
            }
        })
    });
    g.finish();

    let sealed: Vec<_> = part_chunks
        .iter()
        .map(|&(o, l)| {
            let chunk = &part[o..o + l];
            let id = sealer.chunk_id(chunk);
            (id, sealer.seal(chunk, &id.0, CompressionSetting::Zstd(3)))
        })
        .collect();
    let compressed = zstd::bulk::compress(part, 3).unwrap();
    let mut g = c.benchmark_group("open");
    g.throughput(Throughput::Bytes(part.len() as u64));
    g.sample_size(10);
    g.bench_function("reference: zstd decompress whole buffer", |b| {
        b.iter(|| zstd::bulk::decompress(black_box(&compressed), part.len()).unwrap())
    });
    g.bench_function("open + verify 16K chunks", |b| {
        b.iter(|| {
            for (id, s) in &sealed {
                black_box(sealer.open_chunk(s, id, 1 << 20).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);

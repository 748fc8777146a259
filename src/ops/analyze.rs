//! `analyze`: what backing up some images would store with each chunker
//! and compression, worked out without writing anything.
//!
//! Each setting is a simulated series of backups into one new repository,
//! one backup per image in the order given (v1, then v2 of the same disk:
//! what v2 adds after v1). The simulation runs the backup's own parts on
//! the images' bytes: the data regions of the source, the chunker, the
//! all-zero test, chunk ids, chunk groups filled and sealed as a format-2
//! backup seals them ([`ChunkGroup`], compressed and encrypted for real
//! with a throwaway key), the manifest builder, and pack files and index
//! bodies assembled by the writer's code. Only the writes are left out, so
//! the predicted bytes are the bytes a backup stores, give or take the
//! order in which its threads finish. Memory stays bounded: a set of
//! 32-byte ids per setting, one segment of image, the groups being sealed
//! and one pack.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::chunker::{is_all_zero, Chunker};
use crate::crypto::{MasterKey, Sealer};
use crate::error::{Error, Result};
use crate::format::config::{ChunkerParams, CompressionSetting, Encryption};
use crate::format::index::{index_bodies, IndexRecord};
use crate::format::{ChunkId, ObjectHeader, ObjectKind, PackId, FORMAT_MAJOR, OBJECT_HEADER_LEN};
use crate::manifest::{leaf_digest, ManifestBuilder};
use crate::packer::{ChunkGroup, Member, PackBuilder, DEFAULT_PACK_TARGET, INDEX_FLUSH_ENTRIES};
use crate::progress::{Progress, Tracker};
use crate::source::FileSource;

/// Image bytes read and chunked at a time (as a backup reads them).
const SEGMENT_BYTES: usize = 4 << 20;
/// Manifest nodes are always compressed so (spec/FORMAT.md §2.4).
const NODE_COMPRESSION: CompressionSetting = CompressionSetting::Zstd(3);
/// Bytes one chunk costs in a loaded index (spec/FORMAT.md §8).
const INDEX_MEMORY_PER_CHUNK: u64 = 52;
/// The format the simulated backups write: the one `init` creates.
const FORMAT: u8 = FORMAT_MAJOR as u8;

/// What to analyze, and with which settings.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Raw images or block devices, in the order they would be backed up
    /// (the versions of one disk, oldest first).
    pub images: Vec<PathBuf>,
    /// Chunkers to compare; the default chunker when empty.
    pub chunkers: Vec<ChunkerParams>,
    /// Compressions to compare with each chunker; the default when empty.
    pub compressions: Vec<CompressionSetting>,
    /// Whether the repository would be encrypted (36 bytes more per sealed
    /// blob: nonce and tag).
    pub encryption: Encryption,
    /// Worker threads; all cores when `None`.
    pub threads: Option<usize>,
    /// Told the bytes of image processed so far, across all settings.
    pub progress: Option<Progress>,
}

impl Default for AnalyzeOptions {
    /// No images; the defaults of `init`: fixed 16 KiB chunks, zstd:3,
    /// encrypted.
    fn default() -> Self {
        AnalyzeOptions {
            images: Vec::new(),
            chunkers: vec![ChunkerParams::DEFAULT],
            compressions: vec![CompressionSetting::DEFAULT],
            encryption: Encryption::Aes256Gcm,
            threads: None,
            progress: None,
        }
    }
}

/// The outcome of [`analyze`]: one row per (chunker, compression).
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeReport {
    /// The images, in the order they were taken as backups.
    pub images: Vec<AnalyzedImage>,
    /// Whether the simulated repository is encrypted.
    pub encryption: Encryption,
    /// Worker threads used.
    pub threads: usize,
    /// One entry per setting: chunkers in the order given, and for each
    /// its compressions in the order given.
    pub settings: Vec<SettingReport>,
}

/// An image given to [`analyze`].
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzedImage {
    /// Its path, as given.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What one setting would store for the images, one backup per image.
#[derive(Debug, Clone, Serialize)]
pub struct SettingReport {
    /// The chunker, as the repository config records it.
    pub chunker: ChunkerParams,
    /// The chunker as `--chunker` spells it (`fixed:16K`).
    pub chunker_spec: String,
    /// Compression of the chunk groups (manifest nodes are always zstd:3).
    pub compression: CompressionSetting,
    /// Per image, in order: what its backup would add after the earlier
    /// images'.
    pub images: Vec<ImageFigures>,
    /// The sums over all images.
    pub totals: AnalyzeFigures,
    /// Non-zero chunk bytes of all images divided by the unique bytes
    /// among them (before compression): how much deduplication saves.
    pub dedup_ratio: f64,
    /// Unique data bytes divided by the sealed bytes of their groups.
    pub compression_ratio: f64,
    /// Memory the repository's loaded index would take for the chunks of
    /// these backups (52 bytes per chunk, spec/FORMAT.md §8).
    pub index_memory_bytes: u64,
    /// Wall-clock seconds this setting took, all images.
    pub seconds: f64,
    /// Image bytes read per wall-clock second, in MB/s (10^6 bytes),
    /// everything included.
    pub mb_per_s: f64,
    /// Bytes read per second of the scan alone (chunking, the zero test and
    /// chunk ids), in MB/s: how fast a backup could find what changed.
    pub scan_mb_per_s: f64,
    /// New data bytes per second of group sealing (compression and
    /// encryption), in MB/s.
    pub seal_mb_per_s: f64,
}

/// The figures of one image under one setting.
#[derive(Debug, Clone, Serialize)]
pub struct ImageFigures {
    /// The image's path, as given.
    pub path: String,
    /// The figures.
    #[serde(flatten)]
    pub figures: AnalyzeFigures,
}

/// Byte and object counts of one simulated backup (or their sums).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AnalyzeFigures {
    /// Logical size of the image.
    pub size: u64,
    /// Bytes read: the data regions (holes of sparse files are not read).
    pub bytes_read: u64,
    /// Bytes that are holes or all-zero chunks: never stored.
    pub zero_bytes: u64,
    /// Data chunks (not all zero) the image was cut into.
    pub chunks: u64,
    /// Their bytes.
    pub chunk_bytes: u64,
    /// Data chunks no earlier image (nor an earlier place in this one)
    /// had: what the backup stores.
    pub new_chunks: u64,
    /// Their bytes, before compression.
    pub new_bytes: u64,
    /// Chunk groups the new chunks are sealed in.
    pub groups: u64,
    /// Sealed bytes of those groups (compressed, with header, nonce and tag).
    pub group_bytes: u64,
    /// Manifest nodes the backup stores (nodes an earlier backup stored
    /// are reused).
    pub manifest_nodes: u64,
    /// Their sealed bytes.
    pub manifest_bytes: u64,
    /// Sealed bytes of groups and manifest nodes: what a backup reports as
    /// stored.
    pub stored_bytes: u64,
    /// Pack files written.
    pub packs: u64,
    /// Their bytes: the stored bytes, plus each pack's header and table.
    pub pack_bytes: u64,
    /// Pack bytes beyond the stored bytes (headers and tables).
    pub pack_overhead_bytes: u64,
    /// Index files written.
    pub index_files: u64,
    /// Their bytes.
    pub index_bytes: u64,
    /// What the repository grows by: pack and index bytes (the point
    /// itself, a few hundred bytes, aside).
    pub added_bytes: u64,
    /// Wall-clock seconds this image took.
    pub seconds: f64,
    /// Of which scanning: chunking, the zero test and chunk ids.
    pub scan_seconds: f64,
    /// Of which sealing groups and manifest nodes.
    pub seal_seconds: f64,
}

impl AnalyzeFigures {
    fn add(&mut self, o: &AnalyzeFigures) {
        self.size += o.size;
        self.bytes_read += o.bytes_read;
        self.zero_bytes += o.zero_bytes;
        self.chunks += o.chunks;
        self.chunk_bytes += o.chunk_bytes;
        self.new_chunks += o.new_chunks;
        self.new_bytes += o.new_bytes;
        self.groups += o.groups;
        self.group_bytes += o.group_bytes;
        self.manifest_nodes += o.manifest_nodes;
        self.manifest_bytes += o.manifest_bytes;
        self.stored_bytes += o.stored_bytes;
        self.packs += o.packs;
        self.pack_bytes += o.pack_bytes;
        self.pack_overhead_bytes += o.pack_overhead_bytes;
        self.index_files += o.index_files;
        self.index_bytes += o.index_bytes;
        self.added_bytes += o.added_bytes;
        self.seconds += o.seconds;
        self.scan_seconds += o.scan_seconds;
        self.seal_seconds += o.seal_seconds;
    }
}

/// Predicts, for each setting in `opts`, what backing up its images one
/// after the other into a new repository would store. Reads the images,
/// writes nothing.
pub fn analyze(opts: &AnalyzeOptions) -> Result<AnalyzeReport> {
    if opts.images.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to analyze: no image given".into(),
        ));
    }
    let chunkers = if opts.chunkers.is_empty() {
        vec![ChunkerParams::DEFAULT]
    } else {
        opts.chunkers.clone()
    };
    for c in &chunkers {
        c.validate().map_err(Error::InvalidArgument)?;
    }
    let compressions = if opts.compressions.is_empty() {
        vec![CompressionSetting::DEFAULT]
    } else {
        opts.compressions.clone()
    };
    // Open every image first, so a typo fails before minutes of work.
    let sources = opts
        .images
        .iter()
        .map(|path| open_source(path))
        .collect::<Result<Vec<_>>>()?;
    let images: Vec<AnalyzedImage> = opts
        .images
        .iter()
        .zip(&sources)
        .map(|(p, s)| AnalyzedImage {
            path: p.display().to_string(),
            size: s.len(),
        })
        .collect();
    let pool = crate::exec::worker_pool(opts.threads, "analyze")?;
    let per_pass: u64 = sources.iter().map(FileSource::len).sum();
    let mut tracker = Tracker::new(
        opts.progress.clone(),
        per_pass * (chunkers.len() * compressions.len()) as u64,
    );
    let mut settings = Vec::new();
    for &chunker in &chunkers {
        for &compression in &compressions {
            let mut sim = Simulation {
                sealer: Arc::new(match opts.encryption {
                    Encryption::Aes256Gcm => Sealer::encrypted(&MasterKey::generate()),
                    Encryption::None => Sealer::plain(),
                }),
                chunker: Chunker::new(chunker),
                compression,
                known: HashSet::new(),
                pool: &pool,
                tracker: &mut tracker,
            };
            let started = Instant::now();
            let mut per_image = Vec::new();
            for (path, src) in opts.images.iter().zip(&sources) {
                let figures = sim.image(path, src)?;
                per_image.push(ImageFigures {
                    path: path.display().to_string(),
                    figures,
                });
            }
            let seconds = started.elapsed().as_secs_f64();
            settings.push(setting_report(
                chunker,
                compression,
                per_image,
                sim.known.len() as u64,
                seconds,
            ));
        }
    }
    Ok(AnalyzeReport {
        images,
        encryption: opts.encryption,
        threads: pool.current_num_threads(),
        settings,
    })
}

fn open_source(path: &Path) -> Result<FileSource> {
    FileSource::open(path).map_err(|source| Error::Source {
        path: path.to_path_buf(),
        source,
    })
}

/// `a / b`, or 0 when nothing was measured.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn setting_report(
    chunker: ChunkerParams,
    compression: CompressionSetting,
    images: Vec<ImageFigures>,
    unique_chunks: u64,
    seconds: f64,
) -> SettingReport {
    let mut totals = AnalyzeFigures::default();
    for i in &images {
        totals.add(&i.figures);
    }
    let t = &totals;
    SettingReport {
        chunker,
        chunker_spec: chunker.to_string(),
        compression,
        dedup_ratio: ratio(t.chunk_bytes as f64, t.new_bytes as f64),
        compression_ratio: ratio(t.new_bytes as f64, t.group_bytes as f64),
        index_memory_bytes: unique_chunks * INDEX_MEMORY_PER_CHUNK,
        seconds,
        mb_per_s: ratio(t.bytes_read as f64 / 1e6, seconds),
        scan_mb_per_s: ratio(t.bytes_read as f64 / 1e6, t.scan_seconds),
        seal_mb_per_s: ratio(t.new_bytes as f64 / 1e6, t.seal_seconds),
        images,
        totals,
    }
}

/// One setting's series of simulated backups.
struct Simulation<'a> {
    sealer: Arc<Sealer>,
    chunker: Chunker,
    compression: CompressionSetting,
    /// Ids of every chunk and manifest node stored so far: the simulated
    /// repository's index.
    known: HashSet<ChunkId>,
    pool: &'a rayon::ThreadPool,
    tracker: &'a mut Tracker,
}

/// One simulated backup's output: packs as the pack writer assembles them
/// and index bodies as it writes them, counted and dropped.
struct Output {
    pack: PackBuilder,
    /// Index records of finished packs not yet in an index file.
    pending: Vec<(PackId, IndexRecord)>,
    /// Full groups waiting to be sealed, several at once on the pool.
    ready: Vec<ChunkGroup>,
    figures: AnalyzeFigures,
    seal_time: Duration,
}

impl Simulation<'_> {
    /// Simulates the backup of one image after the earlier ones.
    fn image(&mut self, path: &Path, src: &FileSource) -> Result<AnalyzeFigures> {
        let started = Instant::now();
        let size = src.len();
        let source_error = |source| Error::Source {
            path: path.to_path_buf(),
            source,
        };
        let regions = src.regions().map_err(source_error)?;
        let node_sealer = Arc::clone(&self.sealer);
        let mut manifest = ManifestBuilder::new(move |bytes: &[u8]| node_sealer.chunk_id(bytes))
            .with_format(FORMAT)
            .holding_leaves();
        let mut out = Output {
            pack: PackBuilder::new(DEFAULT_PACK_TARGET, FORMAT),
            pending: Vec::new(),
            ready: Vec::new(),
            figures: AnalyzeFigures {
                size,
                ..AnalyzeFigures::default()
            },
            seal_time: Duration::ZERO,
        };
        let mut group = ChunkGroup::default();
        let mut scan_time = Duration::ZERO;
        let mut buf: Vec<u8> = Vec::new();
        let mut cuts = Vec::new();
        let mut pos = 0u64;
        for (start, end) in regions.into_iter().chain(std::iter::once((size, size))) {
            if start > pos {
                out.figures.zero_bytes += start - pos;
                manifest.push_zero(start - pos)?;
                self.tracker.advance(start - pos);
                pos = start;
            }
            // buf[..carry] holds bytes read but not cut yet, from `pos` on.
            let mut carry = 0usize;
            let mut next_read = start;
            while next_read < end || carry > 0 {
                let want = (SEGMENT_BYTES as u64).min(end - next_read) as usize;
                if buf.len() < carry + want {
                    buf.resize(carry + want, 0);
                }
                src.read_exact_at(&mut buf[carry..carry + want], next_read)
                    .map_err(source_error)?;
                next_read += want as u64;
                out.figures.bytes_read += want as u64;
                let valid = carry + want;
                let scan = Instant::now();
                cuts.clear();
                let consumed = self
                    .chunker
                    .cut(&buf[..valid], pos, next_read == end, &mut cuts);
                let ids = self.chunk_ids(&buf[..consumed], &cuts);
                scan_time += scan.elapsed();
                let mut at = 0;
                for (&len, id) in cuts.iter().zip(ids) {
                    let data = &buf[at..at + len];
                    at += len;
                    let Some(id) = id else {
                        out.figures.zero_bytes += len as u64;
                        manifest.push_zero(len as u64)?;
                        continue;
                    };
                    out.figures.chunks += 1;
                    out.figures.chunk_bytes += len as u64;
                    if self.known.insert(id) {
                        out.figures.new_chunks += 1;
                        out.figures.new_bytes += len as u64;
                        group.push(id, data);
                        if group.is_full() {
                            out.ready.push(std::mem::take(&mut group));
                        }
                    }
                    manifest.push_data(id, len as u32)?;
                }
                self.tracker.advance(consumed as u64);
                if out.ready.len() >= self.pool.current_num_threads() {
                    self.seal_groups(&mut out);
                }
                self.store_nodes(&mut manifest, size, &mut out)?;
                buf.copy_within(consumed..valid, 0);
                carry = valid - consumed;
                pos += consumed as u64;
            }
        }
        // A disk's last group ends with it.
        if !group.is_empty() {
            out.ready.push(group);
        }
        self.seal_groups(&mut out);
        manifest.close()?;
        self.store_nodes(&mut manifest, size, &mut out)?;
        manifest.finish()?;
        self.store_nodes(&mut manifest, size, &mut out)?;
        if !out.pack.is_empty() {
            self.finish_pack(&mut out);
        }
        self.write_index(&mut out);
        let mut f = out.figures;
        f.stored_bytes = f.group_bytes + f.manifest_bytes;
        f.pack_overhead_bytes = f.pack_bytes - f.stored_bytes;
        f.added_bytes = f.pack_bytes + f.index_bytes;
        f.scan_seconds = scan_time.as_secs_f64();
        f.seal_seconds = out.seal_time.as_secs_f64();
        f.seconds = started.elapsed().as_secs_f64();
        Ok(f)
    }

    /// The id of each chunk cut from `data`, or `None` for an all-zero
    /// chunk, computed on the pool.
    fn chunk_ids(&self, data: &[u8], cuts: &[usize]) -> Vec<Option<ChunkId>> {
        let mut spans = Vec::with_capacity(cuts.len());
        let mut off = 0;
        for &len in cuts {
            spans.push(&data[off..off + len]);
            off += len;
        }
        let sealer = &self.sealer;
        self.pool.install(|| {
            spans
                .par_iter()
                .map(|chunk| (!is_all_zero(chunk)).then(|| sealer.chunk_id(chunk)))
                .collect()
        })
    }

    /// Seals the full groups on the pool and adds them to packs, in order.
    fn seal_groups(&self, out: &mut Output) {
        if out.ready.is_empty() {
            return;
        }
        let started = Instant::now();
        let ready = std::mem::take(&mut out.ready);
        let (sealer, compression) = (&self.sealer, self.compression);
        let sealed: Vec<(Vec<u8>, Vec<Member>)> = self.pool.install(|| {
            ready
                .par_iter()
                .map(|g| g.seal(sealer, compression))
                .collect()
        });
        out.seal_time += started.elapsed();
        for (bytes, members) in sealed {
            out.figures.groups += 1;
            out.figures.group_bytes += bytes.len() as u64;
            self.add_to_pack(&bytes, &members, out);
        }
    }

    /// Gives the manifest's closed leaves their chaining values and seals
    /// the nodes it finished that are new. A leaf's value stands in for
    /// the BLAKE3 of the bytes it covers: 32 bytes that are the same
    /// exactly when the leaf's extents are, which is all that matters to
    /// the node's size and to whether a later backup reuses it.
    fn store_nodes<F: Fn(&[u8]) -> ChunkId>(
        &mut self,
        manifest: &mut ManifestBuilder<F>,
        size: u64,
        out: &mut Output,
    ) -> Result<()> {
        while let Some(leaf) = manifest.take_closed() {
            let cv = leaf.takes_chaining_value(size).then(|| leaf_digest(&leaf));
            manifest.store_leaf(leaf, cv)?;
        }
        let nodes: Vec<_> = manifest.drain_nodes().collect();
        for (id, bytes) in nodes {
            if !self.known.insert(id) {
                continue;
            }
            let started = Instant::now();
            let sealed = self.sealer.seal(&bytes, &id.0, NODE_COMPRESSION);
            out.seal_time += started.elapsed();
            out.figures.manifest_nodes += 1;
            out.figures.manifest_bytes += sealed.len() as u64;
            self.add_to_pack(&sealed, &[Member::sole(id, bytes.len() as u32)], out);
        }
        Ok(())
    }

    fn add_to_pack(&self, sealed: &[u8], members: &[Member], out: &mut Output) {
        out.pack.add(sealed, members);
        if out.pack.is_full() {
            self.finish_pack(out);
        }
    }

    /// Closes the pack being filled, as the pack writer does, and queues
    /// its chunks for an index file.
    fn finish_pack(&self, out: &mut Output) {
        let pack = std::mem::replace(&mut out.pack, PackBuilder::new(DEFAULT_PACK_TARGET, FORMAT))
            .finish(&self.sealer);
        out.figures.packs += 1;
        out.figures.pack_bytes += pack.bytes.len() as u64;
        out.pending.extend(
            pack.entries
                .iter()
                .map(|e| (pack.id, IndexRecord::from_entry(e))),
        );
        if out.pending.len() >= INDEX_FLUSH_ENTRIES {
            self.write_index(out);
        }
    }

    /// Counts the index files the pending records make, sealed as the
    /// repository seals them (stored, not compressed).
    fn write_index(&self, out: &mut Output) {
        let header = ObjectHeader::new(ObjectKind::Index, FORMAT).encode();
        for body in index_bodies(&out.pending) {
            let sealed = self
                .sealer
                .seal(&body.encode(FORMAT), &header, CompressionSetting::None);
            out.figures.index_files += 1;
            out.figures.index_bytes += (OBJECT_HEADER_LEN + sealed.len()) as u64;
        }
        out.pending.clear();
    }
}

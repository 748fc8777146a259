//! `restore`: rebuild disk images from a recovery point, verifying every
//! chunk and the whole-image hash.
//!
//! The manifest is walked in image order; batches of extents are fetched,
//! opened and verified in parallel, then a writer thread writes them with
//! positional writes and feeds the image hash in order, so the output is
//! never read back. Zero runs become holes. A regular file is written under
//! a `.partial` name and renamed into place only once its hash matched, so
//! the output path never holds wrong bytes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::manifest::Extent;
use crate::format::point::DiskRecord;
use crate::format::{ChunkId, PointId};
use crate::index::ChunkIndex;
use crate::manifest::{walk, ManifestEvent};
use crate::repo::Repository;

/// Plaintext bytes fetched per parallel batch.
const BATCH_BYTES: u64 = 16 << 20;

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Recovery point: `latest`, an id or a unique id prefix.
    pub point: String,
    /// One disk of the point; all disks when `None`.
    pub disk: Option<String>,
    /// Output file or block device for one disk; a directory (created if
    /// needed) receiving `<disk>.img` files when the point has several disks
    /// and none was chosen.
    pub output: PathBuf,
    /// Overwrite existing outputs.
    pub force: bool,
    /// Worker threads; all cores when `None`.
    pub threads: Option<usize>,
}

/// One restored disk.
#[derive(Debug, Clone)]
pub struct RestoredDisk {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Plaintext bytes written (zero runs are not written to files).
    pub bytes_written: u64,
    pub chunks: u64,
}

/// The outcome of a restore.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub point: PointId,
    pub disks: Vec<RestoredDisk>,
    pub duration: Duration,
}

/// Restores disks of a recovery point.
pub fn restore(repo: &Repository, opts: &RestoreOptions) -> Result<RestoreReport> {
    let started = Instant::now();
    let point_id = repo.resolve_point(&opts.point)?;
    let point = repo.read_point(&point_id)?;
    let targets: Vec<(&DiskRecord, PathBuf)> = match &opts.disk {
        Some(name) => {
            let d = point
                .disks
                .iter()
                .find(|d| &d.name == name)
                .ok_or_else(|| Error::UnknownDisk {
                    point: point_id.short(),
                    disk: name.clone(),
                    available: disk_names(&point.disks),
                })?;
            vec![(d, opts.output.clone())]
        }
        None if point.disks.len() == 1 => vec![(&point.disks[0], opts.output.clone())],
        None => {
            if opts.output.exists() && !opts.output.is_dir() {
                return Err(Error::DiskRequired {
                    point: point_id.short(),
                    count: point.disks.len(),
                });
            }
            fs::create_dir_all(&opts.output).map_err(|source| Error::Output {
                path: opts.output.clone(),
                source,
            })?;
            point
                .disks
                .iter()
                .map(|d| (d, opts.output.join(format!("{}.img", sanitize(&d.name)))))
                .collect()
        }
    };
    for (i, (disk, path)) in targets.iter().enumerate() {
        // Sanitising can map two disk names to one file; restoring both
        // would silently keep only the last.
        if let Some((other, _)) = targets[..i].iter().find(|(_, p)| p == path) {
            return Err(Error::InvalidArgument(format!(
                "disks '{}' and '{}' would both be restored to {}; restore them one at a time with --disk",
                other.name,
                disk.name,
                path.display()
            )));
        }
        // Checked before --force: a directory cannot be overwritten by a
        // file, and finding out after the restore would waste it.
        if path.is_dir() || path.as_os_str().as_bytes().ends_with(b"/") {
            return Err(Error::InvalidArgument(format!(
                "{} names a directory; give a file name for disk '{}', e.g. {}",
                path.display(),
                disk.name,
                path.join(format!("{}.img", sanitize(&disk.name))).display()
            )));
        }
        if path.exists() && !opts.force {
            return Err(Error::OutputExists(path.clone()));
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start worker threads: {e}")))?;
    let index = repo.load_index()?;
    let mut disks = Vec::new();
    for (disk, path) in targets {
        disks.push(restore_disk(repo, &index, &pool, disk, &path)?);
    }
    Ok(RestoreReport {
        point: point_id,
        disks,
        duration: started.elapsed(),
    })
}

fn disk_names(disks: &[DiskRecord]) -> String {
    disks
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Disk names come from the repository: keep them from escaping the
/// output directory.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

/// Where a disk's bytes go.
struct Target {
    file: File,
    /// Path written during the restore (differs from `path` for files).
    write_path: PathBuf,
    path: PathBuf,
    /// Block devices get their zero runs written; files get holes.
    is_device: bool,
}

fn open_target(path: &Path, size: u64) -> Result<Target> {
    let out_err = |source: io::Error| Error::Output {
        path: path.to_path_buf(),
        source,
    };
    let is_device = fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    if is_device {
        let file = OpenOptions::new().write(true).open(path).map_err(out_err)?;
        let dev_size = {
            use std::io::{Seek, SeekFrom};
            let mut f = &file;
            f.seek(SeekFrom::End(0)).map_err(out_err)?
        };
        if dev_size < size {
            return Err(Error::InvalidArgument(format!(
                "{} holds {dev_size} bytes, the disk needs {size}",
                path.display()
            )));
        }
        return Ok(Target {
            file,
            write_path: path.to_path_buf(),
            path: path.to_path_buf(),
            is_device,
        });
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let write_path = path.with_file_name(name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&write_path)
        .map_err(out_err)?;
    file.set_len(size).map_err(out_err)?;
    Ok(Target {
        file,
        write_path,
        path: path.to_path_buf(),
        is_device,
    })
}

/// A batch item: an extent at an image offset, with its bytes once fetched.
enum Piece {
    Data(u64, Vec<u8>),
    Zero(u64, u64),
}

fn restore_disk(
    repo: &Repository,
    index: &ChunkIndex,
    pool: &rayon::ThreadPool,
    disk: &DiskRecord,
    path: &Path,
) -> Result<RestoredDisk> {
    let target = open_target(path, disk.size)?;
    let result = write_disk(repo, index, pool, disk, &target);
    match result {
        Ok((written, chunks)) => {
            if !target.is_device {
                fs::rename(&target.write_path, &target.path).map_err(|source| {
                    let _ = fs::remove_file(&target.write_path);
                    Error::Output {
                        path: target.path.clone(),
                        source,
                    }
                })?;
            }
            Ok(RestoredDisk {
                name: disk.name.clone(),
                path: target.path,
                size: disk.size,
                bytes_written: written,
                chunks,
            })
        }
        Err(e) => {
            if !target.is_device {
                let _ = fs::remove_file(&target.write_path);
            }
            Err(e)
        }
    }
}

fn write_disk(
    repo: &Repository,
    index: &ChunkIndex,
    pool: &rayon::ThreadPool,
    disk: &DiskRecord,
    target: &Target,
) -> Result<(u64, u64)> {
    let (tx, rx) = sync_channel::<Vec<Piece>>(1);
    let out_path = target.write_path.clone();
    let is_device = target.is_device;
    let file = target.file.try_clone().map_err(|source| Error::Output {
        path: out_path.clone(),
        source,
    })?;
    let writer = thread::Builder::new()
        .name("diskvault-write".into())
        .spawn(move || -> io::Result<([u8; 32], u64)> {
            let mut hasher = blake3::Hasher::new();
            let zeros = vec![0u8; 1 << 20];
            let mut written = 0u64;
            for batch in rx {
                for piece in batch {
                    match piece {
                        Piece::Data(off, bytes) => {
                            file.write_all_at(&bytes, off)?;
                            hasher.update(&bytes);
                            written += bytes.len() as u64;
                        }
                        Piece::Zero(mut off, mut len) => {
                            while len > 0 {
                                let k = len.min(zeros.len() as u64) as usize;
                                hasher.update(&zeros[..k]);
                                if is_device {
                                    file.write_all_at(&zeros[..k], off)?;
                                }
                                off += k as u64;
                                len -= k as u64;
                            }
                        }
                    }
                }
            }
            file.sync_all()?;
            Ok((*hasher.finalize().as_bytes(), written))
        })
        .map_err(|source| Error::Output {
            path: out_path.clone(),
            source,
        })?;

    let fetch = |batch: Vec<(u64, Extent)>| -> Result<Vec<Piece>> {
        pool.install(|| {
            batch
                .into_par_iter()
                .map(|(off, e)| match e {
                    Extent::Zero { length } => Ok(Piece::Zero(off, length)),
                    Extent::Data { id, length } => {
                        let bytes = read_indexed_chunk(repo, index, &id)?;
                        if bytes.len() != length as usize {
                            return Err(Error::damaged(
                                format!("chunk {}", id.short()),
                                "its length differs from the manifest",
                            ));
                        }
                        Ok(Piece::Data(off, bytes))
                    }
                })
                .collect()
        })
    };

    let mut batch: Vec<(u64, Extent)> = Vec::new();
    let mut batch_bytes = 0u64;
    let mut chunks = 0u64;
    let mut load = |id: &ChunkId| read_indexed_chunk(repo, index, id);
    let walked = walk(&disk.manifest_root, disk.size, &mut load, &mut |ev| {
        if let ManifestEvent::Extent { offset, extent } = ev {
            if let Extent::Data { .. } = extent {
                chunks += 1;
                batch_bytes += extent.len();
            }
            batch.push((offset, *extent));
            if batch_bytes >= BATCH_BYTES || batch.len() >= 4096 {
                let pieces = fetch(std::mem::take(&mut batch))?;
                batch_bytes = 0;
                tx.send(pieces).map_err(|_| writer_gone())?;
            }
        }
        Ok(())
    });
    let last = walked.and_then(|_| {
        let pieces = fetch(std::mem::take(&mut batch))?;
        tx.send(pieces).map_err(|_| writer_gone())
    });
    drop(tx);
    let written = writer
        .join()
        .map_err(|_| Error::InvalidArgument("writer thread panicked".into()))?;
    let (hash, bytes) = match (last, written) {
        // A failed writer explains why sending to it failed: report it first.
        (_, Err(source)) => {
            return Err(Error::Output {
                path: out_path,
                source,
            })
        }
        (Err(e), _) => return Err(e),
        (Ok(()), Ok(v)) => v,
    };
    if hash != disk.image_hash {
        return Err(Error::VerificationFailed {
            disk: disk.name.clone(),
            reason: format!(
                "image hash is {}, the point records {}",
                hex::encode(hash),
                hex::encode(disk.image_hash)
            ),
        });
    }
    Ok((bytes, chunks))
}

fn writer_gone() -> Error {
    Error::InvalidArgument("the output writer stopped".into())
}

/// Reads a chunk through the index, naming it when missing.
pub(crate) fn read_indexed_chunk(
    repo: &Repository,
    index: &ChunkIndex,
    id: &ChunkId,
) -> Result<Vec<u8>> {
    let loc = index
        .get(id)
        .ok_or_else(|| Error::MissingChunk { chunk: id.to_hex() })?;
    repo.read_chunk(id, &loc, &index.pack_id(loc.pack))
}

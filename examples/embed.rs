//! A small backup product built on diskvault: it backs up the volumes of
//! its own (imaginary) hypervisor, through its own disk source, into a
//! vault kept on its own blob service, lists the recovery points and
//! restores one into a new volume through its own restore target. No disk
//! is ever copied to a file.
//!
//! Run it with `cargo run --example embed`; `cargo test` runs it too (the
//! tests at the end), so it cannot rot.
//!
//! The three seams a product implements:
//! - [`DiskSource`]: the size, the ranges that hold data, positional reads,
//!   and the ranges changed since the last backup (here a change-tracking
//!   bitmap of 64 KiB blocks, like QEMU's dirty bitmaps or VMware's CBT);
//! - [`Store`]: where the vault's objects live (here a blob service with
//!   generation numbers and conditional puts, like a cloud object store);
//! - [`RestoreTarget`]: where a restored disk goes (here a new volume).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use diskvault::format::changes::ChangedRanges;
use diskvault::store::{ObjectInfo, PutMode, Store, StoreError};
use diskvault::{
    backup, check, restore_to_target, BackupDisk, BackupOptions, CheckOptions, DiskSource,
    InitOptions, KdfCost, Repository, RestoreOptions, RestoreTarget,
};

/// The hypervisor's allocation and change-tracking unit.
const BLOCK: u64 = 64 << 10;

// ---------------------------------------------------------------------
// The product's hypervisor: volumes of blocks, with change tracking.

/// A thin volume: only written blocks are allocated; every write marks
/// its blocks dirty until the next snapshot.
struct Volume {
    name: String,
    size: u64,
    blocks: Mutex<BTreeMap<u64, Arc<Vec<u8>>>>,
    dirty: Mutex<BTreeSet<u64>>,
}

impl Volume {
    fn new(name: &str, size: u64) -> Self {
        Volume {
            name: name.into(),
            size,
            blocks: Mutex::new(BTreeMap::new()),
            dirty: Mutex::new(BTreeSet::new()),
        }
    }

    /// A guest write.
    fn write(&self, offset: u64, bytes: &[u8]) {
        let mut blocks = self.blocks.lock().unwrap();
        let mut dirty = self.dirty.lock().unwrap();
        let mut done = 0;
        while done < bytes.len() {
            let at = offset + done as u64;
            let (number, within) = (at / BLOCK, (at % BLOCK) as usize);
            let n = (bytes.len() - done).min(BLOCK as usize - within);
            let block = blocks
                .entry(number)
                .or_insert_with(|| Arc::new(vec![0; BLOCK as usize]));
            Arc::make_mut(block)[within..within + n].copy_from_slice(&bytes[done..done + n]);
            dirty.insert(number);
            done += n;
        }
    }

    /// A point-in-time snapshot, with the blocks written since the last
    /// one (whose tracking starts afresh).
    fn snapshot(&self, number: u32) -> Snapshot {
        let blocks = self.blocks.lock().unwrap().clone();
        let changed = std::mem::take(&mut *self.dirty.lock().unwrap());
        Snapshot {
            label: format!("{} snapshot {number}", self.name),
            size: self.size,
            blocks,
            changed,
        }
    }
}

/// A frozen view of a volume: what the backup reads.
struct Snapshot {
    label: String,
    size: u64,
    blocks: BTreeMap<u64, Arc<Vec<u8>>>,
    changed: BTreeSet<u64>,
}

impl Snapshot {
    fn contents(&self) -> Vec<u8> {
        let mut out = vec![0; self.size as usize];
        self.read_at(&mut out, 0).unwrap();
        out
    }

    /// Block numbers as merged byte ranges.
    fn ranges(blocks: impl Iterator<Item = u64>, size: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for b in blocks {
            let (start, end) = (b * BLOCK, ((b + 1) * BLOCK).min(size));
            match out.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => out.push((start, end)),
            }
        }
        out
    }
}

impl DiskSource for Snapshot {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = buf.len().min(self.size.saturating_sub(offset) as usize);
        let mut done = 0;
        while done < n {
            let at = offset + done as u64;
            let (number, within) = (at / BLOCK, (at % BLOCK) as usize);
            let k = (n - done).min(BLOCK as usize - within);
            match self.blocks.get(&number) {
                Some(block) => buf[done..done + k].copy_from_slice(&block[within..within + k]),
                None => buf[done..done + k].fill(0),
            }
            done += k;
        }
        Ok(n)
    }

    fn data_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        Ok(Self::ranges(self.blocks.keys().copied(), self.size))
    }

    fn changed_ranges(&self) -> io::Result<Option<ChangedRanges>> {
        let ranges = Self::ranges(self.changed.iter().copied(), self.size);
        ChangedRanges::from_pairs(ranges.iter().map(|&(a, b)| (a, b - a)), self.size)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

// ---------------------------------------------------------------------
// The product's blob service, and the vault's store on it.

/// A blob service in the style of cloud object stores: every blob has a
/// generation number, and a put can be made conditional on it (0: only
/// if the blob does not exist).
#[derive(Default)]
struct BlobService {
    blobs: Mutex<BTreeMap<String, Blob>>,
    next_generation: AtomicU64,
    requests: AtomicU64,
}

impl BlobService {
    fn put_blob(&self, name: &str, bytes: &[u8], if_generation: Option<u64>) -> Result<(), u64> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut blobs = self.blobs.lock().unwrap();
        let current = blobs.get(name).map_or(0, |b| b.1);
        if if_generation.is_some_and(|g| g != current) {
            return Err(current);
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        blobs.insert(name.into(), (bytes.into(), generation, SystemTime::now()));
        Ok(())
    }

    fn get_blob(&self, name: &str) -> Option<Arc<[u8]>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.blobs.lock().unwrap().get(name).map(|b| b.0.clone())
    }
}

/// A blob's bytes, generation and time of its last put.
type Blob = (Arc<[u8]>, u64, SystemTime);

/// The vault's objects as blobs named `vault/KEY`.
struct VaultOnBlobs(Arc<BlobService>);

fn blob_name(key: &str) -> String {
    format!("vault/{key}")
}

fn not_found(key: &str) -> StoreError {
    StoreError::NotFound { key: key.into() }
}

impl Store for VaultOnBlobs {
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let blob = self
            .0
            .get_blob(&blob_name(key))
            .ok_or_else(|| not_found(key))?;
        Ok(blob.to_vec())
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let blob = self
            .0
            .get_blob(&blob_name(key))
            .ok_or_else(|| not_found(key))?;
        let start = offset.min(blob.len() as u64) as usize;
        match blob.get(start..start.saturating_add(len)) {
            Some(bytes) if bytes.len() == len => Ok(bytes.to_vec()),
            _ => Err(StoreError::io(
                key,
                io::Error::new(io::ErrorKind::UnexpectedEof, "the blob is shorter"),
            )),
        }
    }

    fn size(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.get(key)?.len() as u64)
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StoreError> {
        // Create-only is the service's own conditional put, never a check
        // followed by a write: of two racing writers, one wins.
        let condition = (mode == PutMode::Create).then_some(0);
        self.0
            .put_blob(&blob_name(key), data, condition)
            .map_err(|_| StoreError::AlreadyExists { key: key.into() })
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.0.get_blob(&blob_name(key)).is_some())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        // A prefix names a directory: `packs` must not match `packsX`.
        let dir = match prefix {
            "" => String::new(),
            p if p.ends_with('/') => p.to_string(),
            p => format!("{p}/"),
        };
        let full = blob_name(&dir);
        let blobs = self.0.blobs.lock().unwrap();
        Ok(blobs
            .range(full.clone()..)
            .take_while(|(name, _)| name.starts_with(&full))
            .map(|(name, (bytes, _, modified))| ObjectInfo {
                key: name["vault/".len()..].to_string(),
                size: bytes.len() as u64,
                modified: *modified,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        self.0.blobs.lock().unwrap().remove(&blob_name(key));
        Ok(())
    }

    fn barrier(&self) -> Result<(), StoreError> {
        // Every put is durable when it returns: nothing to wait for.
        Ok(())
    }
}

// ---------------------------------------------------------------------
// The product's restore target: a new volume.

/// Restores into a new thin volume: it starts all zeros, so the holes of
/// the disk need no writes.
struct NewVolume {
    volume: Volume,
    finished: bool,
}

impl RestoreTarget for NewVolume {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > self.volume.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a write past the end of the volume",
            ));
        }
        self.volume.write(offset, buf);
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        // A real volume would unmap the range; this one writes zeros.
        let zeros = vec![0; BLOCK as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(BLOCK);
            self.write_at(&zeros[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }

    fn starts_zeroed(&self) -> bool {
        true
    }

    fn finish(&mut self) -> io::Result<()> {
        self.finished = true;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("volume {}", self.volume.name)
    }
}

// ---------------------------------------------------------------------
// The product.

/// What one run of the product did.
#[derive(Debug)]
struct Summary {
    /// Recovery points in the vault, oldest first, with their disks' sizes.
    points: Vec<(String, u64)>,
    /// Bytes the incremental backup read from the volume.
    incremental_bytes_read: u64,
    /// Bytes of the volume.
    volume_size: u64,
    /// The restored volume equals the snapshot it was backed up from.
    restored_equal: bool,
    /// Requests the vault made to the blob service.
    blob_requests: u64,
}

fn run(kdf: KdfCost) -> Result<Summary, Box<dyn std::error::Error>> {
    let service = Arc::new(BlobService::default());
    let store: Arc<dyn Store> = Arc::new(VaultOnBlobs(service.clone()));
    let repo = Repository::init_in(
        store,
        "blob-service://vault".into(),
        Some(b"product key"),
        &InitOptions {
            kdf,
            ..InitOptions::default()
        },
    )?;

    // A 64 MiB volume with an operating system's worth of data.
    let volume = Volume::new("vol-7", 64 << 20);
    for i in 0..96u64 {
        let bytes: Vec<u8> = (0..100_000u64)
            .map(|j| ((i * 7919 + j * 31) % 251) as u8)
            .collect();
        volume.write(i * 400_000, &bytes);
    }

    // Day 1: a full backup of the first snapshot.
    let day1 = backup(
        &repo,
        &BackupOptions {
            disks: vec![BackupDisk::new("vol-7", volume.snapshot(1))],
            tags: vec!["nightly".into()],
            ..BackupOptions::default()
        },
    )?;

    // Day 2: the guest writes a little; the backup reads only the blocks
    // the change tracking reports, and takes the rest from day 1.
    volume.write(5 << 20, &[0xAB; 10_000]);
    volume.write(50 << 20, b"a new configuration file");
    let snapshot = volume.snapshot(2);
    let expected = snapshot.contents();
    let day2 = backup(
        &repo,
        &BackupOptions {
            disks: vec![BackupDisk::new("vol-7", snapshot)],
            parent: Some(day1.point.to_hex()),
            tags: vec!["nightly".into()],
            ..BackupOptions::default()
        },
    )?;

    // The vault is whole.
    let checked = check(&repo, &CheckOptions::default())?;
    if !checked.problems.is_empty() {
        return Err(format!("check found problems: {:?}", checked.problems).into());
    }

    // List the points, and restore day 2 into a new volume.
    let points = repo
        .list_points()?
        .into_iter()
        .map(|(id, body)| (id.short(), body.disks.iter().map(|d| d.size).sum()))
        .collect();
    let mut target = NewVolume {
        volume: Volume::new("vol-7-restored", 64 << 20),
        finished: false,
    };
    restore_to_target(
        &repo,
        &RestoreOptions {
            point: day2.point.to_hex(),
            ..RestoreOptions::default()
        },
        &mut target,
    )?;
    let restored = target.volume.snapshot(0).contents();
    Ok(Summary {
        points,
        incremental_bytes_read: day2.totals().bytes_read,
        volume_size: volume.size,
        restored_equal: target.finished && restored == expected,
        blob_requests: service.requests.load(Ordering::Relaxed),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let summary = run(KdfCost::default())?;
    for (id, size) in &summary.points {
        println!("point {id}: {size} bytes");
    }
    println!(
        "the incremental backup read {} of {} bytes; the restored volume {} the snapshot; {} blob requests",
        summary.incremental_bytes_read,
        summary.volume_size,
        if summary.restored_equal { "equals" } else { "DIFFERS FROM" },
        summary.blob_requests
    );
    if !summary.restored_equal {
        return Err("the restore differs".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_backs_up_its_volume_incrementally_and_restores_it() {
        let s = run(KdfCost::insecure_fast()).unwrap();
        assert_eq!(s.points.len(), 2, "two points: {:?}", s.points);
        assert!(s.restored_equal, "the restored volume equals the snapshot");
        // Two 64 KiB blocks were dirty (one write spans two): the backup
        // read about them, not the volume.
        assert!(
            s.incremental_bytes_read <= 6 * BLOCK,
            "the incremental backup read {} bytes",
            s.incremental_bytes_read
        );
        assert!(s.blob_requests > 0);
    }

    #[test]
    fn the_products_store_keeps_the_store_contract() {
        diskvault::store::testing::conformance(Arc::new(VaultOnBlobs(Arc::default())));
    }
}

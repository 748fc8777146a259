//! `restore_to_target`: a product restores a disk into its own storage
//! through the `RestoreTarget` trait, or into a file or device it opened
//! (`FileTarget`). Every byte arrives once, in order; `finish` is called
//! only for an image that verified; a failure says the target's bytes must
//! not be used.

mod common;

use std::cell::Cell;
use std::io;
use std::path::Path;
use std::rc::Rc;

use common::*;
use diskvault::{restore_to_target, Error, FileTarget, RestoreOptions, RestoreTarget};

/// A sparse image: data, holes, written zeros, data at the end.
fn holey_image(path: &Path) -> Vec<u8> {
    let size = 20 * MIB + 4321;
    let mut rng = Xorshift::new(7);
    let pieces = vec![
        (0, rng.bytes(700_000)),
        (3 * MIB, vec![0u8; 2 * MIB as usize]),
        (9 * MIB + 17, rng.bytes(1_500_000)),
        (size - 50_000, rng.bytes(50_000)),
    ];
    write_sparse_image(path, size, &pieces);
    std::fs::read(path).unwrap()
}

fn latest() -> RestoreOptions {
    RestoreOptions {
        point: "latest".into(),
        threads: Some(2),
        ..Default::default()
    }
}

/// What a target saw, shared with the test after the restore.
#[derive(Default)]
struct Seen {
    bytes: Vec<u8>,
    /// `(offset, len)` of every write and zeroing, in call order.
    calls: Vec<(u64, u64)>,
    zeroings: u64,
    begun: Option<u64>,
    finished: bool,
}

/// An in-memory volume that records every call.
struct Recorder {
    seen: Rc<std::cell::RefCell<Seen>>,
    zeroed: bool,
    /// Fail the Nth write with `Interrupted` (the restore must retry it).
    interrupt_write: Cell<Option<usize>>,
    /// Refuse `begin` (a volume too small, say).
    refuse_begin: bool,
}

impl Recorder {
    fn new(zeroed: bool) -> (Recorder, Rc<std::cell::RefCell<Seen>>) {
        let seen = Rc::new(std::cell::RefCell::new(Seen::default()));
        let r = Recorder {
            seen: seen.clone(),
            zeroed,
            interrupt_write: Cell::new(None),
            refuse_begin: false,
        };
        (r, seen)
    }
}

impl RestoreTarget for Recorder {
    fn begin(&mut self, size: u64) -> io::Result<()> {
        if self.refuse_begin {
            return Err(io::Error::other("the volume holds 1 MiB"));
        }
        let mut s = self.seen.borrow_mut();
        s.begun = Some(size);
        s.bytes = vec![0; size as usize];
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Some(n) = self.interrupt_write.get() {
            if n == 0 {
                self.interrupt_write.set(None);
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.interrupt_write.set(Some(n - 1));
        }
        let mut s = self.seen.borrow_mut();
        assert!(s.begun.is_some(), "a write before begin");
        s.calls.push((offset, buf.len() as u64));
        s.bytes[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let mut s = self.seen.borrow_mut();
        s.calls.push((offset, len));
        s.zeroings += 1;
        s.bytes[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }

    fn starts_zeroed(&self) -> bool {
        self.zeroed
    }

    fn finish(&mut self) -> io::Result<()> {
        self.seen.borrow_mut().finished = true;
        Ok(())
    }

    fn describe(&self) -> String {
        "volume vol-9".into()
    }
}

#[test]
fn a_custom_target_receives_every_byte_once_in_order_then_finish() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("disk.img");
    let image = holey_image(&image_path);
    let repo = init_repo(&dir.path().join("vault"));
    backup_one(&repo, "root", &image_path);

    for zeroed in [false, true] {
        let (mut target, seen) = Recorder::new(zeroed);
        // The third write is interrupted by a signal: it is retried.
        target.interrupt_write.set(Some(2));
        let report = restore_to_target(&repo, &latest(), &mut target).expect("restore");
        let s = seen.borrow();
        assert_eq!(s.begun, Some(image.len() as u64), "begin got the disk size");
        assert!(s.finished, "finish was called");
        assert!(s.bytes == image, "the volume holds the image");
        // In order, no gap and no overlap among what was handed over.
        let mut next = 0;
        for &(offset, len) in &s.calls {
            assert!(offset >= next, "a call at {offset} went back before {next}");
            if !zeroed {
                assert_eq!(offset, next, "a gap before {offset}");
            }
            next = offset + len;
        }
        if zeroed {
            assert_eq!(s.zeroings, 0, "a zeroed volume gets no zeroing calls");
            assert!(
                report.disks[0].bytes_written < image.len() as u64 - 2 * MIB,
                "the zero runs were skipped: {} bytes written",
                report.disks[0].bytes_written
            );
        } else {
            assert!(s.zeroings > 0, "the zero runs were zeroed");
            assert_eq!(next, image.len() as u64, "every byte covered");
            assert_eq!(report.disks[0].bytes_written, image.len() as u64);
        }
        assert_eq!(report.disks[0].path.to_string_lossy(), "volume vol-9");
    }
}

#[test]
fn a_damaged_chunk_fails_the_restore_and_finish_is_never_called() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("disk.img");
    let image = write_random_image(&image_path, 18 * MIB, 3);
    let vault = dir.path().join("vault");
    let repo = init_repo(&vault);
    backup_one(&repo, "root", &image_path);
    // In the second 16 MiB batch: the first was written already.
    let pack = damage_chunk_at(&repo, &vault, &image, 17 * MIB as usize);

    let (mut target, seen) = Recorder::new(false);
    let err = restore_to_target(&repo, &latest(), &mut target).unwrap_err();
    assert!(
        !seen.borrow().finished,
        "finish is only for a verified image"
    );
    match &err {
        Error::StreamFailed { written, .. } => assert!(*written >= 16 * MIB, "{err}"),
        other => panic!("expected StreamFailed, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("volume vol-9") && text.contains("must not be used") && text.contains(&pack),
        "the message names the target, says not to use it, and names the pack: {text}"
    );
}

#[test]
fn a_target_that_refuses_to_begin_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("disk.img");
    holey_image(&image_path);
    let repo = init_repo(&dir.path().join("vault"));
    backup_one(&repo, "root", &image_path);

    let (mut target, seen) = Recorder::new(false);
    target.refuse_begin = true;
    let err = restore_to_target(&repo, &latest(), &mut target).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::Output { .. })
            && text.contains("volume vol-9")
            && text.contains("1 MiB"),
        "{text}"
    );
    assert!(seen.borrow().calls.is_empty() && !seen.borrow().finished);

    // --into cannot update a target the library cannot read back.
    let (mut target, _) = Recorder::new(false);
    let into = RestoreOptions {
        into_existing: true,
        ..latest()
    };
    let err = restore_to_target(&repo, &into, &mut target).unwrap_err();
    assert!(err.to_string().contains("--into"), "{err}");
}

#[test]
fn a_file_target_restores_sparse_and_overwrites_stale_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("disk.img");
    holey_image(&image_path);
    let repo = init_repo(&dir.path().join("vault"));
    backup_one(&repo, "root", &image_path);

    // A new empty file: the holes stay holes.
    let fresh = dir.path().join("fresh.img");
    let file = std::fs::File::create(&fresh).unwrap();
    let report =
        restore_to_target(&repo, &latest(), &mut FileTarget::new(file, "fresh.img")).unwrap();
    assert_same_bytes(&fresh, &image_path);
    assert!(
        allocated_bytes(&fresh) < 4 * MIB,
        "the restore is sparse: {} bytes allocated",
        allocated_bytes(&fresh)
    );
    assert!(report.disks[0].bytes_written < 4 * MIB);

    // A file full of other bytes, longer than the disk: every stale byte,
    // in the zero runs too, is replaced, and the length is the disk's.
    let stale = dir.path().join("stale.img");
    write_random_image(&stale, 25 * MIB, 99);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&stale)
        .unwrap();
    restore_to_target(&repo, &latest(), &mut FileTarget::new(file, "stale.img")).unwrap();
    assert_same_bytes(&stale, &image_path);
}

#[test]
fn a_file_target_refuses_what_is_not_a_file_or_device() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = dir.path().join("disk.img");
    holey_image(&image_path);
    let repo = init_repo(&dir.path().join("vault"));
    backup_one(&repo, "root", &image_path);

    let fifo = dir.path().join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    // Opened read-write so that opening does not wait for a reader.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let err =
        restore_to_target(&repo, &latest(), &mut FileTarget::new(file, "the fifo")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("the fifo") && text.contains("StreamTarget"),
        "{text}"
    );
}

//! Restore of one disk to any [`RestoreTarget`]: a product's own storage
//! API, a file or block device ([`FileTarget`]), or a sequential sink such
//! as standard output or a pipe ([`StreamTarget`], behind
//! [`restore_to_writer`]).
//!
//! Chunks are fetched, opened and verified by the same pipeline as a
//! restore to a path ([`fetch_disk`]), on a fetching thread that stays one
//! batch ahead of the writer through a bounded channel; the caller's thread
//! writes, so a target need not be `Send`. Bytes reach the target in image
//! order. The writer hashes exactly the pieces it handed over and compares
//! the hash with the point's at the end, before the target's
//! [`finish`](RestoreTarget::finish): a target that publishes its result
//! there never publishes a wrong image.
//!
//! What differs from a restore to a path: a file is renamed into place only
//! once it verified, but bytes handed to a target cannot be taken back by
//! the library. A failure after the first byte is therefore
//! [`Error::StreamFailed`], which tells the user that what the target
//! received must not be used.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::Instant;

use super::target::{punch_hole, Writeback};
use super::{
    disk_names, fetch_disk, find_disk, open_point, spans, verify_image, writer_gone, Counts, Piece,
    RestoreOptions, RestoreReport, RestoredDisk,
};
use crate::error::{Error, Result};
use crate::format::point::DiskRecord;
use crate::imagehash::{ImageHasher, ZEROS};
use crate::progress::Tracker;
use crate::repo::reader::{blame_damaged_index, ChunkReader};
use crate::repo::Repository;

/// Where a restored disk goes: the seam through which a product restores
/// into its own storage (a volume API, an object, a device).
///
/// The restore calls [`begin`](Self::begin) once with the disk's size, then
/// [`write_at`](Self::write_at) and [`write_zeroes`](Self::write_zeroes) in
/// image order, every byte of the disk covered exactly once, and
/// [`finish`](Self::finish) only after the whole image matched the hash
/// the point records. A restore that fails after `begin` never calls
/// `finish`: the target should then drop what it received (it is not a
/// faithful copy of the disk). Writes run on the thread that called
/// [`restore_to_target`], so a target need not be `Send`.
pub trait RestoreTarget {
    /// Called once before the first write with the size of the disk.
    /// A target that must be sized (a file, a new volume) does it here; one
    /// that is too small fails here, before anything is fetched.
    fn begin(&mut self, size: u64) -> io::Result<()> {
        let _ = size;
        Ok(())
    }

    /// Writes all of `buf` at byte `offset` of the disk. An error of kind
    /// [`io::ErrorKind::Interrupted`] makes the restore call again with the
    /// same arguments (unless it was asked to stop); any other error ends
    /// it.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Makes `len` bytes from `offset` read as zeros: punch a hole, unmap,
    /// or write zeros. Not called when [`starts_zeroed`](Self::starts_zeroed)
    /// is true. The default writes zeros with [`write_at`](Self::write_at).
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64);
            self.write_at(&ZEROS[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }

    /// True when every byte not written reads as zero already (a new
    /// sparse file, a new thin volume): the disk's zero runs are then
    /// skipped, not written. Asked after [`begin`](Self::begin).
    fn starts_zeroed(&self) -> bool {
        false
    }

    /// Called once the whole image is written and verified: flush, make it
    /// durable, publish it.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Names the target in messages and in the report, e.g. `volume vol-7`.
    fn describe(&self) -> String;
}

/// A [`RestoreTarget`] on an open file or block device: positional writes,
/// zero runs punched as holes in a file (written as zeros where the file
/// system cannot punch, and on a device), writeback started as the restore
/// goes, `fsync` at the end.
///
/// A regular file is resized to the disk's size; an empty one is taken as
/// all zeros, so its zero runs cost nothing. A block device must hold at
/// least the disk's size. Unlike [`restore`](super::restore) to a path,
/// the file is written in place: the caller decides what to do with it when
/// the restore fails.
#[derive(Debug)]
pub struct FileTarget {
    file: File,
    name: String,
    zeroed: bool,
    device: bool,
    writeback: Writeback,
}

impl FileTarget {
    /// Writes to `file` (opened for writing), named `name` in messages.
    pub fn new(file: File, name: impl Into<String>) -> Self {
        FileTarget {
            file,
            name: name.into(),
            zeroed: false,
            device: false,
            writeback: Writeback::default(),
        }
    }

    /// Gives the file back.
    pub fn into_inner(self) -> File {
        self.file
    }
}

impl RestoreTarget for FileTarget {
    fn begin(&mut self, size: u64) -> io::Result<()> {
        let kind = self.file.metadata()?.file_type();
        if kind.is_block_device() {
            use std::io::{Seek, SeekFrom};
            let held = (&self.file).seek(SeekFrom::End(0))?;
            if held < size {
                return Err(io::Error::other(format!(
                    "the device holds {held} bytes, the disk needs {size}"
                )));
            }
            self.device = true;
        } else if kind.is_file() {
            self.zeroed = self.file.metadata()?.len() == 0;
            self.file.set_len(size)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device (restore to a pipe with StreamTarget)",
            ));
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)?;
        self.writeback
            .wrote_up_to(&self.file, offset + buf.len() as u64);
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if !self.device && punch_hole(&self.file, offset, len).is_ok() {
            return Ok(());
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64);
            self.file
                .write_all_at(&ZEROS[..n as usize], offset + done)?;
            done += n;
        }
        self.writeback.wrote_up_to(&self.file, offset + len);
        Ok(())
    }

    fn starts_zeroed(&self) -> bool {
        self.zeroed
    }

    fn finish(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// A [`RestoreTarget`] on a sequential sink (standard output, a pipe, a
/// socket): bytes in image order, zero runs written as zeros (a pipe has no
/// holes), flushed at the end. A closed pipe is an error that says the
/// reader went away.
pub struct StreamTarget<W: Write> {
    out: W,
    name: String,
    /// Bytes written so far: the image offset of the next byte.
    position: u64,
}

impl<W: Write> StreamTarget<W> {
    /// Writes to `out`, named `name` in messages (e.g. `standard output`).
    pub fn new(out: W, name: impl Into<String>) -> Self {
        StreamTarget {
            out,
            name: name.into(),
            position: 0,
        }
    }

    /// Gives the sink back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> std::fmt::Debug for StreamTarget<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTarget")
            .field("name", &self.name)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl<W: Write> RestoreTarget for StreamTarget<W> {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        // A write retried after an interruption starts where the last one
        // stopped: skip what already went out.
        let done = self
            .position
            .checked_sub(offset)
            .filter(|d| *d <= buf.len() as u64);
        let Some(done) = done else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a stream is written in order: byte {offset} came where byte {} was expected",
                    self.position
                ),
            ));
        };
        let mut rest = &buf[done as usize..];
        while !rest.is_empty() {
            match self.out.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    rest = &rest[n..];
                    self.position += n as u64;
                }
                // "Broken pipe (os error 32)" does not say who broke it.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the reader went away (broken pipe) before the whole image was written",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Restores one disk of a recovery point to `target`, a product's own
/// storage or one of [`FileTarget`] and [`StreamTarget`].
///
/// `opts` is read as by [`restore`](super::restore), except:
/// - `output` is not opened; the report names the target by its
///   [`describe`](RestoreTarget::describe);
/// - `disk` may be left out only when the point has one disk; otherwise
///   the restore is refused with a message naming the disks;
/// - `into_existing` is refused (the library cannot read a target back),
///   and `force` does not apply.
///
/// Chunks are fetched and verified in parallel batches ahead of the
/// writer, with the memory of a restore to a file (a few 16 MiB batches).
/// The BLAKE3 of the image handed to the target is compared with the
/// point's once the last byte is written, and only then is the target's
/// [`finish`](RestoreTarget::finish) called. A failure once bytes were
/// written (a damaged chunk, a hash that differs, an interruption, a write
/// that failed) is [`Error::StreamFailed`]: what the target received must
/// not be used. Failures of the target itself are [`Error::Output`] naming
/// it.
pub fn restore_to_target(
    repo: &Repository,
    opts: &RestoreOptions,
    target: &mut dyn RestoreTarget,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let output = target.describe();
    if opts.into_existing {
        return Err(Error::InvalidArgument(format!(
            "{output} is written once from start to end: it cannot be updated in place with --into; restore to it without --into"
        )));
    }
    let opened = open_point(repo, opts)?;
    let disk = match (&opts.disk, opened.body.disks.as_slice()) {
        (Some(name), _) => find_disk(&opened.body, &opened.id, name)?,
        (None, [only]) => only,
        (None, disks) => {
            return Err(Error::InvalidArgument(format!(
            "recovery point {} has {} disks ({}) and {output} takes one image: name it with --disk",
            opened.id.short(),
            disks.len(),
            disk_names(disks)
        )))
        }
    };
    let pool = crate::exec::worker_pool(opts.threads, "restore")?;
    let (index, damaged) = repo.load_index_lenient()?;
    let reader = ChunkReader::new(repo, &index, opened.fallback.as_ref());
    target.begin(disk.size).map_err(|source| Error::Output {
        path: PathBuf::from(&output),
        source,
    })?;
    let mut tracker = Tracker::new(opts.progress.clone(), disk.size);
    let (restored, written) = write_to_target(
        &reader,
        &pool,
        disk,
        target,
        &output,
        &mut tracker,
        opts.cancel.as_deref(),
    );
    let counts = restored.map_err(|e| {
        let e = blame_damaged_index(e, &damaged);
        if written == 0 {
            e
        } else {
            Error::StreamFailed {
                output: output.clone(),
                disk: disk.name.clone(),
                written,
                cause: Box::new(e),
            }
        }
    })?;
    Ok(RestoreReport {
        point: opened.id,
        disks: vec![RestoredDisk::new(
            disk,
            PathBuf::from(&output),
            written,
            counts,
        )],
        damaged_index_files: damaged,
        duration: started.elapsed(),
    })
}

/// Restores one disk of a recovery point to `out`, a sequential sink such
/// as standard output or a pipe: exactly the image's bytes, in order, zero
/// runs written as zeros. Nothing else is written to `out`; the report is
/// returned. This is [`restore_to_target`] with a [`StreamTarget`] named by
/// `opts.output` (or `the output stream` when it is empty); a closed pipe
/// never raises SIGPIPE here (Rust ignores it), it is an error like any
/// other.
pub fn restore_to_writer(
    repo: &Repository,
    opts: &RestoreOptions,
    out: &mut dyn Write,
) -> Result<RestoreReport> {
    let name = if opts.output.as_os_str().is_empty() {
        "the output stream".to_string()
    } else {
        opts.output.display().to_string()
    };
    restore_to_target(repo, opts, &mut StreamTarget::new(out, name))
}

/// Fetches the disk on a thread of its own and writes it to `out` on this
/// one. Returns the outcome and the bytes written, which the caller needs
/// in both cases (a failure after the first byte is reported differently).
fn write_to_target(
    reader: &ChunkReader<'_>,
    pool: &rayon::ThreadPool,
    disk: &DiskRecord,
    target: &mut dyn RestoreTarget,
    output: &str,
    tracker: &mut Tracker,
    cancel: Option<&AtomicBool>,
) -> (Result<Counts>, u64) {
    let mut sink = VerifyingWriter::new(target, output, disk, cancel);
    // One batch in the channel, one being fetched, one being written: the
    // memory of a restore to a file.
    let (tx, rx) = sync_channel::<Vec<Piece>>(1);
    let fetched = thread::scope(|scope| {
        let fetcher = thread::Builder::new()
            .name("diskvault-fetch".into())
            .spawn_scoped(scope, move || {
                fetch_disk(reader, pool, disk, None, tracker, cancel, &mut |pieces| {
                    tx.send(pieces).map_err(|_| writer_gone())
                })
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start a thread: {e}")))?;
        let mut written = Ok(());
        for pieces in &rx {
            written = sink.write_pieces(&pieces, pool);
            if written.is_err() {
                break;
            }
        }
        // The fetcher's next send fails and it stops.
        drop(rx);
        let fetched = fetcher.join().unwrap_or_else(|_| {
            Err(Error::InvalidArgument(
                "the fetching thread panicked".into(),
            ))
        });
        // A failed write explains why the fetcher could not hand over:
        // report it first.
        written.and(fetched)
    });
    let written = sink.written;
    match fetched {
        Ok(counts) => (sink.finish().map(|()| counts), written),
        Err(e) => (Err(e), written),
    }
}

/// Writes an image to a target, in order, and hashes exactly the pieces it
/// handed over; [`VerifyingWriter::finish`] compares that hash with the one
/// the point records and only then finishes the target.
struct VerifyingWriter<'a> {
    target: &'a mut dyn RestoreTarget,
    /// Names the target in messages.
    output: &'a str,
    disk: &'a DiskRecord,
    /// Stops a write that a signal interrupted (a reader that stalls keeps
    /// the writer blocked, out of reach of the fetcher's checks).
    cancel: Option<&'a AtomicBool>,
    hasher: ImageHasher,
    /// The image offset of the next piece.
    position: u64,
    /// Bytes handed to the target (zero runs it starts with are not).
    written: u64,
    zeroed: bool,
}

impl<'a> VerifyingWriter<'a> {
    fn new(
        target: &'a mut dyn RestoreTarget,
        output: &'a str,
        disk: &'a DiskRecord,
        cancel: Option<&'a AtomicBool>,
    ) -> Self {
        let zeroed = target.starts_zeroed();
        VerifyingWriter {
            target,
            output,
            disk,
            cancel,
            hasher: ImageHasher::new(disk.size),
            position: 0,
            written: 0,
            zeroed,
        }
    }

    /// Writes one batch of pieces, which must follow the bytes written so
    /// far, and adds the same bytes to the hash (in parallel, on `pool`).
    fn write_pieces(&mut self, pieces: &[Piece], pool: &rayon::ThreadPool) -> Result<()> {
        for piece in pieces {
            let (offset, len) = match piece {
                Piece::Data { offset, bytes, .. } => (*offset, bytes.len() as u64),
                Piece::Zero { offset, len } => (*offset, *len),
            };
            // Every byte once, in order: a gap or an overlap is a damaged
            // manifest (and would shift every later byte of a stream).
            if offset != self.position {
                return Err(Error::damaged(
                    format!("manifest of disk '{}'", self.disk.name),
                    format!(
                        "an extent starts at byte {offset}, where byte {} was expected",
                        self.position
                    ),
                ));
            }
            match piece {
                Piece::Data { bytes, .. } => {
                    self.retrying(|t| t.write_at(bytes, offset))?;
                    self.written += len;
                }
                Piece::Zero { .. } if self.zeroed => {}
                Piece::Zero { .. } => {
                    self.retrying(|t| t.write_zeroes(offset, len))?;
                    self.written += len;
                }
            }
            self.position += len;
        }
        let hasher = &mut self.hasher;
        pool.install(|| hasher.update(&spans(pieces)));
        Ok(())
    }

    /// Checks the image (every byte written, its hash the point's), then
    /// finishes the target.
    fn finish(self) -> Result<()> {
        verify_image(self.disk, self.hasher)?;
        self.target.finish().map_err(|source| Error::Output {
            path: PathBuf::from(self.output),
            source,
        })
    }

    /// Runs one write, again when a signal interrupted it, unless the
    /// signal asked the restore to stop.
    fn retrying(
        &mut self,
        mut write: impl FnMut(&mut dyn RestoreTarget) -> io::Result<()>,
    ) -> Result<()> {
        loop {
            match write(&mut *self.target) {
                Ok(()) => return Ok(()),
                // The signal that stopped the restore may also have ended
                // the reader (Ctrl-C on a pipeline): say so, not that the
                // pipe broke.
                Err(_) if self.cancelled() => return Err(Error::Interrupted),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Output {
                        path: PathBuf::from(self.output),
                        source,
                    })
                }
            }
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::point::DiskStats;
    use crate::format::ChunkId;

    /// An image of data, a zero run longer than the zero block, and data,
    /// as the pieces of two batches.
    fn image_and_batches() -> (Vec<u8>, Vec<Vec<Piece>>) {
        let head: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let zeros = 3 * ZEROS.len() as u64 + 123;
        let tail: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8 | 1).collect();
        let mut image = head.clone();
        image.resize(image.len() + zeros as usize, 0);
        image.extend_from_slice(&tail);
        let batches = vec![
            vec![
                Piece::Data {
                    offset: 0,
                    bytes: head.clone().into(),
                    write: true,
                },
                Piece::Zero {
                    offset: head.len() as u64,
                    len: zeros,
                },
            ],
            vec![Piece::Data {
                offset: head.len() as u64 + zeros,
                bytes: tail.into(),
                write: true,
            }],
        ];
        (image, batches)
    }

    fn disk(size: u64, image_hash: [u8; 32]) -> DiskRecord {
        DiskRecord {
            name: "root".into(),
            size,
            manifest_root: ChunkId::default(),
            image_hash,
            stats: DiskStats::default(),
            origin: Default::default(),
        }
    }

    fn pool() -> rayon::ThreadPool {
        crate::exec::worker_pool(Some(2), "test").expect("a thread pool")
    }

    /// Writes the batches through a verifying writer into a vector.
    fn write_all(disk: &DiskRecord, batches: &[Vec<Piece>]) -> (Result<()>, Vec<u8>) {
        let mut sink = StreamTarget::new(Vec::new(), "the test sink");
        let pool = pool();
        let mut w = VerifyingWriter::new(&mut sink, "the test sink", disk, None);
        let result = batches
            .iter()
            .try_for_each(|b| w.write_pieces(b, &pool))
            .and_then(|()| w.finish());
        (result, sink.into_inner())
    }

    #[test]
    fn writes_the_image_in_order_with_zeros_and_verifies_it() {
        let (image, batches) = image_and_batches();
        let d = disk(image.len() as u64, *blake3::hash(&image).as_bytes());
        let (result, written) = write_all(&d, &batches);
        result.expect("the image verifies");
        assert!(written == image, "the sink holds the image");
    }

    #[test]
    fn a_hash_that_differs_from_the_point_fails_at_the_end() {
        let (image, batches) = image_and_batches();
        let mut wrong = *blake3::hash(&image).as_bytes();
        wrong[0] ^= 1;
        let d = disk(image.len() as u64, wrong);
        let (result, written) = write_all(&d, &batches);
        assert_eq!(written.len(), image.len(), "every byte went out first");
        match result {
            Err(Error::VerificationFailed { disk, reason }) => {
                assert_eq!(disk, "root");
                assert!(reason.contains(&hex::encode(wrong)), "{reason}");
            }
            other => panic!("expected a verification failure, got {other:?}"),
        }
    }

    #[test]
    fn a_short_image_fails() {
        let (image, mut batches) = image_and_batches();
        batches.pop();
        let d = disk(image.len() as u64, *blake3::hash(&image).as_bytes());
        let (result, _) = write_all(&d, &batches);
        assert!(
            matches!(&result, Err(Error::Damaged { reason, .. }) if reason.contains("whole disk")),
            "{result:?}"
        );
    }

    #[test]
    fn pieces_out_of_order_are_refused_before_writing_them() {
        let (image, mut batches) = image_and_batches();
        batches.swap(0, 1);
        let d = disk(image.len() as u64, *blake3::hash(&image).as_bytes());
        let (result, written) = write_all(&d, &batches);
        assert!(written.is_empty(), "nothing written out of order");
        assert!(
            matches!(&result, Err(Error::Damaged { reason, .. }) if reason.contains("where byte 0 was expected")),
            "{result:?}"
        );
    }

    /// A sink whose every write fails: `BrokenPipe` when the reader went
    /// away, `Interrupted` when a signal interrupted a blocked write.
    struct FailingSink(io::ErrorKind);

    impl Write for FailingSink {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_an_error_naming_the_output() {
        let (image, batches) = image_and_batches();
        let d = disk(image.len() as u64, *blake3::hash(&image).as_bytes());
        let mut sink = StreamTarget::new(FailingSink(io::ErrorKind::BrokenPipe), "standard output");
        let mut w = VerifyingWriter::new(&mut sink, "standard output", &d, None);
        let e = w.write_pieces(&batches[0], &pool()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("standard output") && text.contains("reader went away"),
            "{text}"
        );
    }

    #[test]
    fn a_write_interrupted_by_a_stop_request_stops() {
        let (image, batches) = image_and_batches();
        let d = disk(image.len() as u64, *blake3::hash(&image).as_bytes());
        let cancel = AtomicBool::new(true);
        let mut sink =
            StreamTarget::new(FailingSink(io::ErrorKind::Interrupted), "standard output");
        let mut w = VerifyingWriter::new(&mut sink, "standard output", &d, Some(&cancel));
        let e = w.write_pieces(&batches[0], &pool()).unwrap_err();
        assert!(matches!(e, Error::Interrupted), "{e:?}");
    }
}

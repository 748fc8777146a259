//! Restore of one disk to a sequential sink: standard output, a pipe, a
//! socket (`diskvault restore V latest - --disk root | ssh host dd
//! of=/dev/sdb`).
//!
//! Chunks are fetched, opened and verified by the same pipeline as a
//! restore to a file ([`fetch_disk`]), on a fetching thread that stays one
//! batch ahead of the writer through a bounded channel; the caller's thread
//! writes, so the sink need not be `Send`. A sink cannot seek, so bytes go
//! out strictly in image order and zero runs are written as zeros. The
//! writer hashes exactly the bytes it wrote and compares the hash with the
//! point's at the end.
//!
//! What differs from a file: a file is renamed into place only once it
//! verified, but bytes sent down a stream cannot be taken back. A failure
//! after the first byte is therefore [`Error::StreamFailed`], which tells
//! the user that what the reader received must not be used; the exit
//! status is the only other signal the far end gets.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::Instant;

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

/// Restores one disk of a recovery point to `out`, a sequential sink such
/// as standard output or a pipe: exactly the image's bytes, in order, zero
/// runs written as zeros (a pipe has no holes). Nothing else is written to
/// `out`; the report is returned.
///
/// `opts` is read as by [`restore`](super::restore), except:
/// - `output` is not opened: it only names `out` in messages and in the
///   report (the command line passes `standard output`);
/// - `disk` may be left out only when the point has one disk; otherwise
///   the restore is refused with a message naming the disks;
/// - `into_existing` is refused (a stream cannot be updated in place), and
///   `force` does not apply.
///
/// Chunks are fetched and verified in parallel batches ahead of the
/// writer, with the memory of a restore to a file (a few 16 MiB batches).
/// The BLAKE3 of the bytes written is compared with the point's once the
/// last byte is out. A failure once bytes went out (a damaged chunk, a
/// hash that differs, an interruption, the reader going away) is
/// [`Error::StreamFailed`]: what the reader received is not a faithful copy
/// of the disk and must not be used. Failures to write are
/// [`Error::Output`] naming the output; a closed pipe says the reader went
/// away. `out` is flushed on success; a broken pipe never raises SIGPIPE
/// here (Rust ignores it), it is an error like any other.
pub fn restore_to_writer(
    repo: &Repository,
    opts: &RestoreOptions,
    out: &mut dyn Write,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let output = if opts.output.as_os_str().is_empty() {
        "the output stream".to_string()
    } else {
        opts.output.display().to_string()
    };
    if opts.into_existing {
        return Err(Error::InvalidArgument(format!(
            "{output} is a stream, written once from start to end: it cannot be updated in place with --into; restore to it without --into"
        )));
    }
    let opened = open_point(repo, opts)?;
    let disk = match (&opts.disk, opened.body.disks.as_slice()) {
        (Some(name), _) => find_disk(&opened.body, &opened.id, name)?,
        (None, [only]) => only,
        (None, disks) => {
            return Err(Error::InvalidArgument(format!(
                "recovery point {} has {} disks ({}) and {output} carries one image: name it with --disk",
                opened.id.short(),
                disks.len(),
                disk_names(disks)
            )))
        }
    };
    let pool = crate::exec::worker_pool(opts.threads, "restore")?;
    let (index, damaged) = repo.load_index_lenient()?;
    let reader = ChunkReader::new(repo, &index, opened.fallback.as_ref());
    let mut tracker = Tracker::new(opts.progress.clone(), disk.size);
    let (streamed, written) = stream_disk(
        &reader,
        &pool,
        disk,
        out,
        &output,
        &mut tracker,
        opts.cancel.as_deref(),
    );
    let counts = streamed.map_err(|e| {
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

/// Fetches the disk on a thread of its own and writes it to `out` on this
/// one. Returns the outcome and the bytes written, which the caller needs
/// in both cases (a failure after the first byte is reported differently).
fn stream_disk(
    reader: &ChunkReader<'_>,
    pool: &rayon::ThreadPool,
    disk: &DiskRecord,
    out: &mut dyn Write,
    output: &str,
    tracker: &mut Tracker,
    cancel: Option<&AtomicBool>,
) -> (Result<Counts>, u64) {
    let mut sink = VerifyingWriter::new(out, output, disk, cancel);
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

/// Writes an image to a sequential sink, in order, and hashes exactly the
/// bytes it wrote; [`VerifyingWriter::finish`] compares that hash with the
/// one the point records.
struct VerifyingWriter<'a> {
    out: &'a mut dyn Write,
    /// Names `out` in messages.
    output: &'a str,
    disk: &'a DiskRecord,
    /// Stops a write that a signal interrupted (a reader that stalls keeps
    /// the writer blocked, out of reach of the fetcher's checks).
    cancel: Option<&'a AtomicBool>,
    hasher: ImageHasher,
    /// Bytes written so far: the image offset of the next byte.
    written: u64,
}

impl<'a> VerifyingWriter<'a> {
    fn new(
        out: &'a mut dyn Write,
        output: &'a str,
        disk: &'a DiskRecord,
        cancel: Option<&'a AtomicBool>,
    ) -> Self {
        VerifyingWriter {
            out,
            output,
            disk,
            cancel,
            hasher: ImageHasher::new(disk.size),
            written: 0,
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
            // A sink cannot seek: a gap or an overlap would shift every
            // later byte.
            if offset != self.written {
                return Err(Error::damaged(
                    format!("manifest of disk '{}'", self.disk.name),
                    format!(
                        "an extent starts at byte {offset}, where byte {} was expected",
                        self.written
                    ),
                ));
            }
            match piece {
                Piece::Data { bytes, .. } => self.write_all(bytes)?,
                Piece::Zero { len, .. } => {
                    // From the static zero block, never a buffer per run.
                    let mut left = *len;
                    while left > 0 {
                        let n = left.min(ZEROS.len() as u64) as usize;
                        self.write_all(&ZEROS[..n])?;
                        left -= n as u64;
                    }
                }
            }
            self.written += len;
        }
        let hasher = &mut self.hasher;
        pool.install(|| hasher.update(&spans(pieces)));
        Ok(())
    }

    /// Flushes the sink and checks the image: every byte written, and its
    /// hash the point's.
    fn finish(self) -> Result<()> {
        self.out.flush().map_err(|e| self.output_error(e))?;
        verify_image(self.disk, self.hasher)
    }

    /// `Write::write_all`, but a write interrupted by a signal that asked
    /// the restore to stop stops it, instead of being retried.
    fn write_all(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            match self.out.write(buf) {
                Ok(0) => return Err(self.output_error(io::ErrorKind::WriteZero.into())),
                Ok(n) => buf = &buf[n..],
                // The signal that stopped the restore may also have ended
                // the reader (Ctrl-C on a pipeline): say so, not that the
                // pipe broke.
                Err(_) if self.cancelled() => return Err(Error::Interrupted),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.output_error(e)),
            }
        }
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn output_error(&self, source: io::Error) -> Error {
        // "Broken pipe (os error 32)" does not say who broke it.
        let source = if source.kind() == io::ErrorKind::BrokenPipe {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the reader went away (broken pipe) before the whole image was written",
            )
        } else {
            source
        };
        Error::Output {
            path: PathBuf::from(self.output),
            source,
        }
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
                    bytes: head.clone(),
                    write: true,
                },
                Piece::Zero {
                    offset: head.len() as u64,
                    len: zeros,
                },
            ],
            vec![Piece::Data {
                offset: head.len() as u64 + zeros,
                bytes: tail,
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
        let mut sink = Vec::new();
        let pool = pool();
        let mut w = VerifyingWriter::new(&mut sink, "the test sink", disk, None);
        let result = batches
            .iter()
            .try_for_each(|b| w.write_pieces(b, &pool))
            .and_then(|()| w.finish());
        (result, sink)
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
        let mut sink = FailingSink(io::ErrorKind::BrokenPipe);
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
        let mut sink = FailingSink(io::ErrorKind::Interrupted);
        let mut w = VerifyingWriter::new(&mut sink, "standard output", &d, Some(&cancel));
        let e = w.write_pieces(&batches[0], &pool()).unwrap_err();
        assert!(matches!(e, Error::Interrupted), "{e:?}");
    }
}

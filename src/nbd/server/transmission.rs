//! The transmission phase: requests read by the connection's thread,
//! served by a few worker threads in parallel (a slow read of the image
//! does not hold up the others), replies written whole under one lock so
//! they never interleave.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Condvar, Mutex, PoisonError};

use super::super::proto::*;
use super::negotiation::{Session, BASE_ALLOCATION_ID};
use super::{Export, BLOCK_SIZE_MAX};
use crate::error::Result;

/// Requests of one connection served at once. qemu keeps up to 16 in
/// flight; reads of a recovery point wait on storage, so more than the
/// cores pays.
const WORKERS: usize = 8;

/// Most bytes of request and reply data one connection holds in memory at
/// once (write payloads read ahead, read buffers being filled). One
/// request of the maximum size always goes through, so a connection holds
/// at most this plus 32 MiB.
const MEMORY_BUDGET: u64 = 128 << 20;

/// Most extents in one block status reply; the protocol lets the reply
/// cover less than was asked, and the client asks again for the rest.
const MAX_EXTENTS: usize = 64 * 1024;

/// Where the bytes of one range of the export come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The image, read through [`crate::image::ImageRead`].
    Image,
    /// Blocks a client wrote, in the overlay.
    NbdOverlay,
    /// A range the image reports as zeroes: nothing is read.
    Zero,
}

impl Export {
    /// Splits `range` (inside the export) into pieces by where their bytes
    /// come from, in order, adjacent pieces of one source merged.
    fn plan(&self, range: Range<u64>) -> Result<Vec<(Range<u64>, Source)>> {
        let mut pieces: Vec<(Range<u64>, Source)> = Vec::new();
        let mut push = |r: Range<u64>, source: Source| {
            if r.start >= r.end {
                return;
            }
            match pieces.last_mut() {
                Some((last, s)) if *s == source && last.end == r.start => last.end = r.end,
                _ => pieces.push((r, source)),
            }
        };
        let runs = match &self.overlay {
            Some(overlay) => overlay.runs(range.clone()),
            None => vec![(range, false)],
        };
        for (run, held) in runs {
            if held {
                push(run, Source::NbdOverlay);
                continue;
            }
            // The image's answer is clipped and ordered here, so a wrong
            // answer costs bytes read, never a panic or bytes skipped.
            let mut at = run.start;
            for zero in self.image.zero_ranges(run.clone())? {
                let start = zero.start.max(at);
                let end = zero.end.min(run.end);
                if start >= end {
                    continue;
                }
                push(at..start, Source::Image);
                push(start..end, Source::Zero);
                at = end;
            }
            push(at..run.end, Source::Image);
        }
        Ok(pieces)
    }
}

/// A bound on the bytes a connection holds: taken before a payload is
/// read or a read buffer allocated, given back once the reply is sent.
struct Budget {
    used: Mutex<u64>,
    freed: Condvar,
}

impl Budget {
    fn take(&self, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used > 0 && *used + n > MEMORY_BUDGET {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *used += n;
    }

    fn give_back(&self, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        *used -= n;
        self.freed.notify_all();
    }
}

/// One request, checked and ready for a worker.
struct Request {
    kind: u16,
    flags: u16,
    cookie: u64,
    offset: u64,
    length: u32,
    /// A write's data (empty for other commands).
    payload: Vec<u8>,
    /// Bytes taken from the budget for this request.
    charged: u64,
}

/// What one connection moved, for the operator.
#[derive(Default)]
pub(super) struct Counts {
    /// Bytes of the export sent to the client.
    pub read: AtomicU64,
    /// Bytes the client wrote (write and write-zeroes requests).
    pub written: AtomicU64,
}

/// One connection in the transmission phase.
pub(super) struct Connection<'a> {
    export: &'a Export,
    session: Session,
    writer: Mutex<TcpStream>,
    /// Set once a reply could not be sent: the client is gone, and the
    /// other workers stop writing.
    broken: AtomicBool,
    budget: Budget,
    counts: &'a Counts,
    /// Told about requests that failed on the server's side (the image
    /// could not be read, the overlay not written): the client got EIO.
    failed: &'a (dyn Fn(String) + Sync),
}

impl<'a> Connection<'a> {
    pub(super) fn new(
        export: &'a Export,
        session: Session,
        writer: TcpStream,
        counts: &'a Counts,
        failed: &'a (dyn Fn(String) + Sync),
    ) -> Self {
        Connection {
            export,
            session,
            writer: Mutex::new(writer),
            broken: AtomicBool::new(false),
            budget: Budget {
                used: Mutex::new(0),
                freed: Condvar::new(),
            },
            counts,
            failed,
        }
    }

    /// Serves requests read from `r` until the client disconnects (`Ok`),
    /// vanishes or breaks the protocol (an error). Requests in flight are
    /// answered before this returns.
    pub(super) fn serve(&self, r: &mut impl Read) -> io::Result<()> {
        let (tx, rx) = sync_channel::<Request>(WORKERS);
        let rx = Mutex::new(rx);
        std::thread::scope(|s| {
            let mut started = 0;
            for i in 0..WORKERS {
                let rx = &rx;
                let spawned = std::thread::Builder::new()
                    .name(format!("nbd-worker-{i}"))
                    .spawn_scoped(s, move || self.work(rx));
                if spawned.is_ok() {
                    started += 1;
                }
            }
            if started == 0 {
                return Err(io::Error::other("cannot start a worker thread"));
            }
            let result = self.read_requests(r, &tx);
            // Workers finish what was queued, then see the channel closed.
            drop(tx);
            result
        })
    }

    fn read_requests(&self, r: &mut impl Read, tx: &SyncSender<Request>) -> io::Result<()> {
        let size = self.export.info.size;
        let writable = self.export.overlay.is_some();
        loop {
            let mut head = [0; 28];
            r.read_exact(&mut head)?;
            let field = |at: usize, n: usize| {
                head[at..at + n]
                    .iter()
                    .fold(0u64, |v, &b| (v << 8) | u64::from(b))
            };
            let magic = field(0, 4) as u32;
            if magic != REQUEST_MAGIC {
                return Err(protocol_error(format!("bad request magic {magic:#x}")));
            }
            let mut request = Request {
                flags: field(4, 2) as u16,
                kind: field(6, 2) as u16,
                cookie: field(8, 8),
                offset: field(16, 8),
                length: field(24, 4) as u32,
                payload: Vec::new(),
                charged: 0,
            };
            let len = u64::from(request.length);
            let inside = request
                .offset
                .checked_add(len)
                .is_some_and(|end| end <= size);
            let past_end = || {
                format!(
                    "{len} bytes at offset {} go past the end of the export ({size} bytes)",
                    request.offset
                )
            };
            let too_long = || {
                format!("{len} bytes is more than the maximum block size ({BLOCK_SIZE_MAX} bytes)")
            };
            let too_long_errno = if self.session.structured {
                EOVERFLOW
            } else {
                EINVAL
            };
            let refusal: Option<(u32, String)> = match request.kind {
                CMD_DISC => return Ok(()),
                CMD_READ if len > u64::from(BLOCK_SIZE_MAX) => Some((too_long_errno, too_long())),
                CMD_READ if !inside => Some((EINVAL, past_end())),
                CMD_READ => None,
                CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM if !writable => {
                    Some((EPERM, "the export is read-only".into()))
                }
                CMD_WRITE if len > u64::from(BLOCK_SIZE_MAX) => Some((too_long_errno, too_long())),
                CMD_WRITE | CMD_WRITE_ZEROES if !inside => Some((ENOSPC, past_end())),
                CMD_TRIM if !inside => Some((EINVAL, past_end())),
                CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM | CMD_FLUSH => None,
                CMD_BLOCK_STATUS if !self.session.base_allocation => Some((
                    EINVAL,
                    "block status needs the base:allocation context to be negotiated".into(),
                )),
                CMD_BLOCK_STATUS if len == 0 || !inside => Some((EINVAL, past_end())),
                CMD_BLOCK_STATUS => None,
                other => Some((EINVAL, format!("command {other} is not supported"))),
            };
            if let Some((errno, message)) = refusal {
                self.reply_error(&request, errno, &message)?;
                if request.kind == CMD_WRITE {
                    // The data follows anyway; read it past without keeping it.
                    skip(r, len)?;
                }
                continue;
            }
            if matches!(request.kind, CMD_READ | CMD_WRITE) {
                request.charged = len;
                self.budget.take(len);
            }
            if request.kind == CMD_WRITE {
                request.payload = read_vec(r, len as usize)?;
            }
            if tx.send(request).is_err() {
                return Err(io::Error::other("every worker thread has stopped"));
            }
        }
    }

    fn work(&self, rx: &Mutex<Receiver<Request>>) {
        loop {
            let request = {
                let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
                match rx.recv() {
                    Ok(request) => request,
                    Err(_) => return,
                }
            };
            let charged = request.charged;
            self.handle(request);
            self.budget.give_back(charged);
        }
    }

    /// Serves one request; a failure to reply marks the connection broken,
    /// which ends it.
    fn handle(&self, request: Request) {
        let image = self.export.image.as_ref();
        let len = u64::from(request.length);
        let range = request.offset..request.offset + len;
        let done = match request.kind {
            CMD_READ => return self.handle_read(&request, range),
            CMD_BLOCK_STATUS => return self.handle_block_status(&request, range),
            CMD_WRITE | CMD_WRITE_ZEROES => {
                // The reader refused writes to a read-only export already.
                let Some(overlay) = &self.export.overlay else {
                    self.send(&[&simple_header(EPERM, request.cookie)]);
                    return;
                };
                let written = if request.kind == CMD_WRITE {
                    overlay.write_at(image, &request.payload, request.offset)
                } else {
                    overlay.write_zeroes_at(image, request.offset, len)
                };
                written.and_then(|()| {
                    self.counts.written.fetch_add(len, Ordering::Relaxed);
                    if request.flags & CMD_FLAG_FUA != 0 {
                        overlay.sync()
                    } else {
                        Ok(())
                    }
                })
            }
            CMD_FLUSH => match &self.export.overlay {
                Some(overlay) => overlay.sync(),
                None => Ok(()),
            },
            // Trimming is advisory: the blocks keep what they hold.
            _ => Ok(()),
        };
        match done {
            Ok(()) => self.reply_ok(request.cookie),
            Err(e) => self.fail(&request, e),
        }
    }

    fn handle_read(&self, request: &Request, range: Range<u64>) {
        let pieces = match self.export.plan(range.clone()) {
            Ok(pieces) => pieces,
            Err(e) => return self.fail(request, e),
        };
        let mut buf = vec![0; request.length as usize];
        for (piece, source) in &pieces {
            let at = (piece.start - range.start) as usize..(piece.end - range.start) as usize;
            let read = match (source, &self.export.overlay) {
                (Source::Image, _) => self.export.image.read_exact_at(&mut buf[at], piece.start),
                (Source::NbdOverlay, Some(overlay)) => overlay.read_at(&mut buf[at], piece.start),
                _ => Ok(()),
            };
            if let Err(e) = read {
                return self.fail(request, e);
            }
        }
        self.counts
            .read
            .fetch_add(u64::from(request.length), Ordering::Relaxed);
        if !self.session.structured {
            let head = simple_header(0, request.cookie);
            return self.send(&[&head, &buf]);
        }

        // Holes go as hole chunks, everything else as data chunks: a
        // client copying the disk need not write the holes.
        let mut chunks: Vec<(Range<u64>, bool)> = Vec::new();
        for (piece, source) in pieces {
            let data = source != Source::Zero;
            match chunks.last_mut() {
                Some((last, d)) if *d == data && last.end == piece.start => last.end = piece.end,
                _ => chunks.push((piece, data)),
            }
        }
        if chunks.is_empty() {
            let head = chunk_header(REPLY_FLAG_DONE, REPLY_TYPE_NONE, request.cookie, 0);
            return self.send(&[&head]);
        }
        let count = chunks.len();
        let mut heads = Vec::with_capacity(count);
        for (i, (piece, data)) in chunks.iter().enumerate() {
            let flags = if i + 1 == count { REPLY_FLAG_DONE } else { 0 };
            let len = piece.end - piece.start;
            let mut head = Vec::with_capacity(32);
            if *data {
                head.extend_from_slice(&chunk_header(
                    flags,
                    REPLY_TYPE_OFFSET_DATA,
                    request.cookie,
                    8 + len as u32,
                ));
                head.extend_from_slice(&piece.start.to_be_bytes());
            } else {
                head.extend_from_slice(&chunk_header(
                    flags,
                    REPLY_TYPE_OFFSET_HOLE,
                    request.cookie,
                    12,
                ));
                head.extend_from_slice(&piece.start.to_be_bytes());
                head.extend_from_slice(&(len as u32).to_be_bytes());
            }
            heads.push(head);
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * count);
        for ((piece, data), head) in chunks.iter().zip(&heads) {
            parts.push(head);
            if *data {
                parts.push(
                    &buf[(piece.start - range.start) as usize..(piece.end - range.start) as usize],
                );
            }
        }
        self.send(&parts);
    }

    fn handle_block_status(&self, request: &Request, range: Range<u64>) {
        let pieces = match self.export.plan(range) {
            Ok(pieces) => pieces,
            Err(e) => return self.fail(request, e),
        };
        let mut extents: Vec<(u64, u32)> = Vec::new();
        for (piece, source) in pieces {
            let flags = if source == Source::Zero {
                STATE_HOLE | STATE_ZERO
            } else {
                0
            };
            let len = piece.end - piece.start;
            match extents.last_mut() {
                Some((l, f)) if *f == flags => *l += len,
                _ => extents.push((len, flags)),
            }
        }
        let limit = if request.flags & CMD_FLAG_REQ_ONE != 0 {
            1
        } else {
            MAX_EXTENTS
        };
        extents.truncate(limit);
        let mut payload = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
        for (len, flags) in extents {
            // Within one request of at most u32::MAX bytes.
            payload.extend_from_slice(&(len as u32).to_be_bytes());
            payload.extend_from_slice(&flags.to_be_bytes());
        }
        let head = chunk_header(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            request.cookie,
            payload.len() as u32,
        );
        self.send(&[&head, &payload]);
    }

    /// Answers a request that failed on the server's side with EIO, and
    /// says why to whoever runs the server.
    fn fail(&self, request: &Request, e: crate::Error) {
        let message = format!(
            "{} of {} bytes at offset {} failed: {e}",
            command_name(request.kind),
            request.length,
            request.offset
        );
        (self.failed)(message.clone());
        // The client sees the errno; the message is for its log.
        let _ = self.reply_error(request, EIO, &message);
    }

    fn reply_ok(&self, cookie: u64) {
        let head = simple_header(0, cookie);
        self.send(&[&head]);
    }

    /// Sends an error reply: a structured error chunk where the protocol
    /// asks for one (reads and block status once structured replies are
    /// negotiated), a simple reply otherwise.
    fn reply_error(&self, request: &Request, errno: u32, message: &str) -> io::Result<()> {
        let structured =
            self.session.structured && matches!(request.kind, CMD_READ | CMD_BLOCK_STATUS);
        if !structured {
            let head = simple_header(errno, request.cookie);
            return self.try_send(&[&head]);
        }
        let text = &message.as_bytes()[..message.len().min(MAX_STRING)];
        let mut payload = errno.to_be_bytes().to_vec();
        payload.extend_from_slice(&(text.len() as u16).to_be_bytes());
        payload.extend_from_slice(text);
        let head = chunk_header(
            REPLY_FLAG_DONE,
            REPLY_TYPE_ERROR,
            request.cookie,
            payload.len() as u32,
        );
        self.try_send(&[&head, &payload])
    }

    /// Sends one whole reply; a failure is remembered (see [`Self::try_send`]).
    fn send(&self, parts: &[&[u8]]) {
        let _ = self.try_send(parts);
    }

    /// Sends one whole reply under the writer lock. When the client is
    /// gone, the connection is marked broken and shut down, so the reader
    /// stops too.
    fn try_send(&self, parts: &[&[u8]]) -> io::Result<()> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let result = write_all_parts(&mut *writer, parts);
        if result.is_err() {
            self.broken.store(true, Ordering::Relaxed);
            let _ = writer.shutdown(Shutdown::Both);
        }
        result
    }
}

/// Writes `parts` back to back, in as few system calls as the socket takes.
fn write_all_parts(w: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match w.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn simple_header(error: u32, cookie: u64) -> [u8; 16] {
    let mut b = [0; 16];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..].copy_from_slice(&cookie.to_be_bytes());
    b
}

fn chunk_header(flags: u16, kind: u16, cookie: u64, length: u32) -> [u8; 20] {
    let mut b = [0; 20];
    b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..].copy_from_slice(&length.to_be_bytes());
    b
}

fn command_name(kind: u16) -> &'static str {
    match kind {
        CMD_READ => "read",
        CMD_WRITE => "write",
        CMD_WRITE_ZEROES => "write-zeroes",
        CMD_FLUSH => "flush",
        CMD_BLOCK_STATUS => "block status",
        _ => "request",
    }
}

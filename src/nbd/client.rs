//! The NBD client: one connection, read-only, with pipelined reads and block
//! status queries.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::handshake::{negotiate, BlockSizes};
use super::proto::*;
use super::url::{NbdEndpoint, NbdUrl};

/// How long a silent server may keep us waiting before a call fails.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes asked for by one read request (less if the server's maximum is
/// smaller): large enough to amortise the per-request cost, small enough to
/// keep several in flight.
const READ_REQUEST_BYTES: u32 = 2 << 20;
/// Read requests sent before waiting for the first reply.
const READS_IN_FLIGHT: usize = 16;
/// Bytes asked about by one block status request.
const STATUS_REQUEST_BYTES: u64 = 1 << 30;
/// The most extents we accept in one block status chunk; qemu sends far
/// fewer per reply and answers the rest on the next request.
const MAX_EXTENTS_PER_CHUNK: u32 = 1 << 20;

/// A read-only connection to one export of an NBD server (qemu-nbd, a
/// running QEMU's NBD export, nbdkit). Calls are serialised on one
/// connection; reads pipeline several requests internally.
pub(crate) struct NbdClient {
    /// The URL, for messages.
    url: String,
    /// Export size in bytes.
    size: u64,
    /// The server's block size constraints.
    block_sizes: BlockSizes,
    /// Bytes per read request: a multiple of the minimum block size.
    read_request_bytes: u32,
    /// Negotiated metadata contexts and their ids.
    contexts: Vec<(String, u32)>,
    /// The socket and its state.
    connection: Mutex<Connection>,
}

/// A socket to the server, TCP or Unix.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The transmission-phase connection.
struct Connection {
    reader: BufReader<Stream>,
    writer: BufWriter<Stream>,
    /// Whether the server replies to reads and block status in chunks.
    structured: bool,
    /// The cookie for the next request.
    next_cookie: u64,
    /// Why the connection can no longer be used, if it cannot.
    unusable: Option<String>,
}

/// One read request awaiting its reply.
struct PendingRead {
    cookie: u64,
    /// Where its bytes go in the caller's buffer.
    at: usize,
    /// Offset on the export.
    offset: u64,
    len: u32,
    /// Ranges of the request filled so far (relative start, length), to
    /// prove at the end that every byte was written exactly once.
    filled: Vec<(u32, u32)>,
    filled_total: u64,
    /// Whether an error chunk came for it.
    failed: bool,
}

impl Stream {
    fn open(url: &NbdUrl) -> io::Result<Stream> {
        let stream = match url.endpoint() {
            NbdEndpoint::Tcp { host, port } => {
                let mut last_error = None;
                let mut connected = None;
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last_error = Some(e),
                    }
                }
                let s = connected.ok_or_else(|| {
                    last_error.unwrap_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "the host has no address")
                    })
                })?;
                // Requests are small and we wait for their replies.
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Stream::Tcp(s)
            }
            NbdEndpoint::Unix { socket } => {
                let s = UnixStream::connect(socket)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Stream::Unix(s)
            }
        };
        Ok(stream)
    }

    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        // Best effort: the peer may already be gone.
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Rewords socket errors so the user sees what happened: a timeout says the
/// server is silent, an early end says it hung up.
fn explain_io(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the NBD server sent nothing for {} s", IO_TIMEOUT.as_secs()),
        ),
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the NBD server closed the connection",
        ),
        _ => e,
    }
}

/// Prefixes an error with where it happened, keeping its kind.
fn context(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn align_down(x: u64, to: u64) -> u64 {
    x - x % to
}

fn align_up(x: u64, to: u64) -> u64 {
    align_down(x.saturating_add(to - 1), to)
}

impl NbdClient {
    /// Connects to the export at `url` with fixed newstyle negotiation:
    /// structured replies, the metadata `contexts` (e.g. `base:allocation`,
    /// `qemu:dirty-bitmap:bm0`) and the export's block sizes. Fails with a
    /// message naming the problem if the server is not fixed newstyle, has
    /// no such export, or lacks one of the contexts. Never writes to the
    /// export.
    pub fn connect(url: &NbdUrl, contexts: &[&str]) -> io::Result<NbdClient> {
        let stream =
            Stream::open(url).map_err(|e| context(e, format!("cannot connect to {url}")))?;
        let mut reader =
            BufReader::with_capacity(64 * 1024, stream.try_clone().map_err(|e| context(e, url))?);
        let mut writer = BufWriter::new(stream);
        let negotiated = negotiate(&mut reader, &mut writer, url.export(), contexts)
            .map_err(|e| context(explain_io(e), format!("NBD negotiation with {url}")))?;
        let b = negotiated.block_sizes;
        let max_request = b.maximum.min(READ_REQUEST_BYTES);
        let read_request_bytes = (max_request - max_request % b.minimum).max(b.minimum);
        Ok(NbdClient {
            url: url.to_string(),
            size: negotiated.size,
            block_sizes: b,
            read_request_bytes,
            contexts: negotiated.contexts,
            connection: Mutex::new(Connection {
                reader,
                writer,
                structured: negotiated.structured,
                next_cookie: 1,
                unusable: None,
            }),
        })
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads exactly `buf.len()` bytes at `offset`; an error if the range
    /// goes past the end of the export. Large reads are split into requests
    /// the server accepts, several in flight at once.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = self.check_range(offset, buf.len() as u64, "read")?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock()?;
        let min = u64::from(self.block_sizes.minimum);
        // Requests must be aligned to the minimum block size: the unaligned
        // head and tail go through a small bounce buffer.
        let head_end = align_up(offset, min).min(end);
        let tail_start = align_down(end, min).max(head_end);
        let pieces = [
            (offset, head_end),
            (head_end, tail_start),
            (tail_start, end),
        ];
        for (start, stop) in pieces {
            if start == stop {
                continue;
            }
            let dst = &mut buf[(start - offset) as usize..(stop - offset) as usize];
            let block_start = align_down(start, min);
            let block_end = align_up(stop, min).min(self.size);
            if block_start == start && block_end == stop {
                self.read_aligned(&mut conn, dst, start)?;
            } else {
                let mut bounce = vec![0; (block_end - block_start) as usize];
                self.read_aligned(&mut conn, &mut bounce, block_start)?;
                let from = (start - block_start) as usize;
                dst.copy_from_slice(&bounce[from..from + dst.len()]);
            }
        }
        Ok(())
    }

    /// Block status (NBD_CMD_BLOCK_STATUS) of `context` over
    /// `[offset, offset + len)`: extents `(start, end, flags)` in order,
    /// covering exactly that range, adjacent extents with equal flags
    /// merged. Asks again where the server answered for only part of the
    /// range. For `base:allocation` flag 1 is a hole and 2 reads as zeroes;
    /// for `qemu:dirty-bitmap:*` flag 1 is dirty. An error if `context` was
    /// not given to [`NbdClient::connect`].
    pub fn block_status(
        &self,
        context: &str,
        offset: u64,
        len: u64,
    ) -> io::Result<Vec<(u64, u64, u32)>> {
        let Some(&(_, id)) = self.contexts.iter().find(|(name, _)| name == context) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "meta context {context} was not negotiated with {}; pass it to \
                     NbdClient::connect",
                    self.url
                ),
            ));
        };
        let end = self.check_range(offset, len, "block status")?;
        let known_ids: Vec<u32> = self.contexts.iter().map(|&(_, id)| id).collect();
        let mut conn = self.lock()?;
        let min = u64::from(self.block_sizes.minimum);
        let mut extents: Vec<(u64, u64, u32)> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let start = align_down(pos, min);
            let stop = (start + STATUS_REQUEST_BYTES)
                .min(align_up(end, min))
                .min(self.size);
            let answered = self.run(&mut conn, |c| {
                c.block_status_once(id, &known_ids, start, stop - start)
            })?;
            // Each answer starts at `start` and covers at least one byte, but
            // a server answering less than the alignment would loop forever.
            if answered.last().is_none_or(|&(_, e, _)| e <= pos) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: block status at offset {start} answered for less than the \
                         {min}-byte minimum block size",
                        self.url
                    ),
                ));
            }
            for (s, e, flags) in answered {
                let (s, e) = (s.max(pos), e.min(end));
                if s >= e {
                    continue;
                }
                match extents.last_mut() {
                    Some(last) if last.1 == s && last.2 == flags => last.1 = e,
                    _ => extents.push((s, e, flags)),
                }
                pos = e;
            }
        }
        Ok(extents)
    }

    /// Sends NBD_CMD_DISC and closes the connection; later calls fail. Best
    /// effort, also done on drop.
    pub fn disconnect(&self) {
        // A poisoned lock means a call panicked mid-protocol: just close.
        let mut conn = match self.connection.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if conn.unusable.is_none() {
            let request = encode_request(CMD_DISC, 0, conn.take_cookie(), 0, 0);
            let _ = conn.writer.write_all(&request);
            let _ = conn.writer.flush();
        }
        conn.writer.get_ref().shutdown();
        conn.unusable = Some("it was closed by disconnect()".into());
    }

    /// Checks `[offset, offset + len)` lies within the export; returns the end.
    fn check_range(&self, offset: u64, len: u64, what: &str) -> io::Result<u64> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(end),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{what} of {len} bytes at offset {offset} goes past the end of {} \
                     ({} bytes)",
                    self.url, self.size
                ),
            )),
        }
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, Connection>> {
        let conn = self.connection.lock().map_err(|_| {
            io::Error::other(format!(
                "the connection to {} is unusable: a thread panicked while using it",
                self.url
            ))
        })?;
        if let Some(why) = &conn.unusable {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("the connection to {} is unusable: {why}", self.url),
            ));
        }
        Ok(conn)
    }

    /// Runs one exchange. The outer error breaks the connection (socket
    /// failure, protocol violation) and is remembered; the inner one is the
    /// server failing the request, after which the connection is still in
    /// step.
    fn run<T>(
        &self,
        conn: &mut Connection,
        exchange: impl FnOnce(&mut Connection) -> io::Result<io::Result<T>>,
    ) -> io::Result<T> {
        match exchange(conn) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(context(e, &self.url)),
            Err(e) => {
                let e = explain_io(e);
                conn.unusable = Some(e.to_string());
                conn.writer.get_ref().shutdown();
                Err(context(e, &self.url))
            }
        }
    }

    /// Reads `buf.len()` bytes at `offset`, both aligned to the minimum
    /// block size (or ending at the end of the export).
    fn read_aligned(&self, conn: &mut Connection, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let step = self.read_request_bytes as usize;
        self.run(conn, |c| c.read_pipelined(buf, offset, step))
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        self.disconnect();
    }
}

impl Connection {
    fn take_cookie(&mut self) -> u64 {
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        cookie
    }

    /// Queues one request (sent on the next flush); returns its cookie.
    fn queue_request(&mut self, command: u16, offset: u64, len: u32) -> io::Result<u64> {
        let cookie = self.take_cookie();
        self.writer
            .write_all(&encode_request(command, 0, cookie, offset, len))?;
        Ok(cookie)
    }

    /// Reads into `buf` from `offset` with requests of at most `step` bytes,
    /// keeping up to [`READS_IN_FLIGHT`] of them outstanding. Replies are
    /// matched by cookie and may come in any order and in chunks.
    fn read_pipelined(
        &mut self,
        buf: &mut [u8],
        offset: u64,
        step: usize,
    ) -> io::Result<io::Result<()>> {
        let mut pending: Vec<PendingRead> = Vec::with_capacity(READS_IN_FLIGHT);
        let mut next = 0usize;
        let mut failure: Option<io::Error> = None;
        loop {
            // After a failure, stop asking and only drain what is in flight.
            while failure.is_none() && next < buf.len() && pending.len() < READS_IN_FLIGHT {
                let len = step.min(buf.len() - next);
                let at_offset = offset + next as u64;
                // `step` is at most READ_REQUEST_BYTES, so it fits.
                let len32 = len as u32;
                let cookie = self.queue_request(CMD_READ, at_offset, len32)?;
                pending.push(PendingRead {
                    cookie,
                    at: next,
                    offset: at_offset,
                    len: len32,
                    filled: Vec::new(),
                    filled_total: 0,
                    failed: false,
                });
                next += len;
            }
            self.writer.flush()?;
            if pending.is_empty() {
                return Ok(match failure {
                    Some(e) => Err(e),
                    None => Ok(()),
                });
            }
            if let Some(e) = self.receive_read_reply(&mut pending, buf)? {
                failure.get_or_insert(e);
            }
        }
    }

    /// Reads one reply (or reply chunk) to a pending read and puts its bytes
    /// in place. Returns the server's error if it failed the request.
    fn receive_read_reply(
        &mut self,
        pending: &mut Vec<PendingRead>,
        buf: &mut [u8],
    ) -> io::Result<Option<io::Error>> {
        let header = read_reply_header(&mut self.reader)?;
        let cookie = match header {
            ReplyHeader::Simple { cookie, .. } | ReplyHeader::Chunk { cookie, .. } => cookie,
        };
        let Some(index) = pending.iter().position(|p| p.cookie == cookie) else {
            return Err(protocol_error(format!(
                "reply for cookie {cookie}, which no pending request has"
            )));
        };
        let p = &mut pending[index];
        let dst = &mut buf[p.at..p.at + p.len as usize];
        match header {
            ReplyHeader::Simple { error, .. } => {
                let p = pending.swap_remove(index);
                if error != 0 {
                    return Ok(Some(read_failed(&p, &errno_name(error))));
                }
                // A simple reply to a read carries the whole data.
                self.reader.read_exact(dst)?;
                Ok(None)
            }
            ReplyHeader::Chunk {
                flags,
                kind,
                length,
                ..
            } => {
                let mut failure = None;
                match kind {
                    REPLY_TYPE_OFFSET_DATA | REPLY_TYPE_OFFSET_HOLE => {
                        let (at, n) = self.receive_read_chunk(p, kind, length, dst)?;
                        p.filled_total += u64::from(n);
                        if p.filled_total > u64::from(p.len) {
                            return Err(protocol_error(format!(
                                "more than {} bytes in the reply to a read at offset {}",
                                p.len, p.offset
                            )));
                        }
                        p.filled.push((at, n));
                    }
                    REPLY_TYPE_NONE if length == 0 && flags & REPLY_FLAG_DONE != 0 => {}
                    kind if kind & REPLY_TYPE_ERROR_BIT != 0 => {
                        let text = read_error_chunk(&mut self.reader, kind, length)?;
                        p.failed = true;
                        failure = Some(read_failed(p, &text));
                    }
                    kind => {
                        return Err(protocol_error(format!(
                            "chunk type {kind} ({length} bytes) in the reply to a read"
                        )))
                    }
                }
                if flags & REPLY_FLAG_DONE != 0 {
                    let mut p = pending.swap_remove(index);
                    if !p.failed {
                        check_filled(&mut p)?;
                    }
                }
                Ok(failure)
            }
        }
    }

    /// Reads an OFFSET_DATA or OFFSET_HOLE chunk of request `p` into `dst`
    /// (the request's part of the buffer); returns the range it filled,
    /// relative to the request.
    fn receive_read_chunk(
        &mut self,
        p: &PendingRead,
        kind: u16,
        length: u32,
        dst: &mut [u8],
    ) -> io::Result<(u32, u32)> {
        let (chunk_offset, n) = if kind == REPLY_TYPE_OFFSET_DATA {
            if length <= 8 || length - 8 > p.len {
                return Err(protocol_error(format!(
                    "data chunk of {length} bytes for a read of {} bytes",
                    p.len
                )));
            }
            (read_u64(&mut self.reader)?, length - 8)
        } else {
            if length != 12 {
                return Err(protocol_error(format!("hole chunk of {length} bytes")));
            }
            let chunk_offset = read_u64(&mut self.reader)?;
            (chunk_offset, read_u32(&mut self.reader)?)
        };
        let inside = chunk_offset >= p.offset
            && n > 0
            && chunk_offset - p.offset + u64::from(n) <= u64::from(p.len);
        if !inside {
            return Err(protocol_error(format!(
                "chunk for [{chunk_offset}, +{n}) in the reply to a read of [{}, +{})",
                p.offset, p.len
            )));
        }
        // Inside the request, so below its u32 length.
        let at = (chunk_offset - p.offset) as u32;
        let range = &mut dst[at as usize..(at + n) as usize];
        if kind == REPLY_TYPE_OFFSET_DATA {
            self.reader.read_exact(range)?;
        } else {
            range.fill(0);
        }
        Ok((at, n))
    }

    /// Sends one block status request for `[offset, offset + len)` and
    /// returns the extents of context `id` (`known_ids` are all negotiated
    /// contexts, which the server answers for too), clipped to the request. They
    /// start at `offset` and may cover only a prefix of the range.
    fn block_status_once(
        &mut self,
        id: u32,
        known_ids: &[u32],
        offset: u64,
        len: u64,
    ) -> io::Result<io::Result<Vec<(u64, u64, u32)>>> {
        if !self.structured {
            return Err(protocol_error("block status without structured replies"));
        }
        // At most STATUS_REQUEST_BYTES, which fits in u32.
        let len32 = len as u32;
        let cookie = self.queue_request(CMD_BLOCK_STATUS, offset, len32)?;
        self.writer.flush()?;
        let end = offset + len;
        let mut extents: Option<Vec<(u64, u64, u32)>> = None;
        let mut failure = None;
        loop {
            let header = read_reply_header(&mut self.reader)?;
            let (flags, kind, length) = match header {
                ReplyHeader::Simple { error, cookie: c } if c == cookie => {
                    if error == 0 {
                        return Err(protocol_error(
                            "simple success reply to block status, which needs a structured one",
                        ));
                    }
                    return Ok(Err(status_failed(offset, len, &errno_name(error))));
                }
                ReplyHeader::Chunk {
                    flags,
                    kind,
                    cookie: c,
                    length,
                } if c == cookie => (flags, kind, length),
                ReplyHeader::Simple { cookie: c, .. } | ReplyHeader::Chunk { cookie: c, .. } => {
                    return Err(protocol_error(format!(
                        "reply for cookie {c}, while only {cookie} is pending"
                    )))
                }
            };
            match kind {
                REPLY_TYPE_BLOCK_STATUS => {
                    let descriptors = length
                        .checked_sub(4)
                        .filter(|n| n % 8 == 0 && *n > 0)
                        .map(|n| n / 8)
                        .filter(|&n| n <= MAX_EXTENTS_PER_CHUNK)
                        .ok_or_else(|| {
                            protocol_error(format!(
                                "block status chunk of {length} bytes (4 + 8 per extent, at \
                                 most {MAX_EXTENTS_PER_CHUNK} extents)"
                            ))
                        })?;
                    let chunk_id = read_u32(&mut self.reader)?;
                    if !known_ids.contains(&chunk_id) {
                        return Err(protocol_error(format!(
                            "block status for context id {chunk_id}, which was not negotiated"
                        )));
                    } else if chunk_id != id {
                        // Another negotiated context: the server answers for
                        // all of them on every request.
                        skip(&mut self.reader, u64::from(descriptors) * 8)?;
                    } else if extents.is_some() {
                        return Err(protocol_error(format!(
                            "two block status chunks for context id {id}"
                        )));
                    } else {
                        extents = Some(self.read_extents(descriptors, offset, end)?);
                    }
                }
                REPLY_TYPE_NONE if length == 0 && flags & REPLY_FLAG_DONE != 0 => {}
                kind if kind & REPLY_TYPE_ERROR_BIT != 0 => {
                    let text = read_error_chunk(&mut self.reader, kind, length)?;
                    failure.get_or_insert(status_failed(offset, len, &text));
                }
                kind => {
                    return Err(protocol_error(format!(
                        "chunk type {kind} ({length} bytes) in the reply to block status"
                    )))
                }
            }
            if flags & REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        if let Some(e) = failure {
            return Ok(Err(e));
        }
        match extents {
            Some(e) => Ok(Ok(e)),
            None => Err(protocol_error(format!(
                "the block status reply has no extents for context id {id}"
            ))),
        }
    }

    /// Reads `count` extent descriptors answering a request for
    /// `[offset, end)`. Only the last may reach past `end` (the protocol
    /// allows it); it is clipped.
    fn read_extents(
        &mut self,
        count: u32,
        offset: u64,
        end: u64,
    ) -> io::Result<Vec<(u64, u64, u32)>> {
        let mut extents = Vec::new();
        let mut pos = offset;
        for i in 0..count {
            let len = read_u32(&mut self.reader)?;
            let flags = read_u32(&mut self.reader)?;
            if len == 0 {
                return Err(protocol_error("block status extent of length 0"));
            }
            if pos >= end {
                return Err(protocol_error(format!(
                    "block status extents go past the end of the request [{offset}, {end}) \
                     ({} more after reaching it)",
                    count - i
                )));
            }
            let stop = (pos + u64::from(len)).min(end);
            extents.push((pos, stop, flags));
            pos = stop;
        }
        Ok(extents)
    }
}

/// Proves the chunks of a finished read covered every byte exactly once.
fn check_filled(p: &mut PendingRead) -> io::Result<()> {
    p.filled.sort_unstable();
    let mut pos = 0u64;
    for &(at, n) in &p.filled {
        if u64::from(at) != pos {
            break;
        }
        pos += u64::from(n);
    }
    if pos != u64::from(p.len) || p.filled_total != u64::from(p.len) {
        return Err(protocol_error(format!(
            "the reply to a read of [{}, +{}) left bytes unfilled or filled twice",
            p.offset, p.len
        )));
    }
    Ok(())
}

fn read_failed(p: &PendingRead, what: &str) -> io::Error {
    io::Error::other(format!(
        "the NBD server failed to read {} bytes at offset {}: {what}",
        p.len, p.offset
    ))
}

fn status_failed(offset: u64, len: u64, what: &str) -> io::Error {
    io::Error::other(format!(
        "the NBD server failed block status of {len} bytes at offset {offset}: {what}"
    ))
}

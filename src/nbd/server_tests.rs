//! The server against real clients (qemu-img, qemu-io, and our own
//! client), and against raw TCP clients that misbehave.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::proto::*;
use super::tests::{qemu_available, run};
use super::{serve_nbd, NbdClient, NbdEvent, NbdExport, NbdOverlay, NbdUrl};
use crate::error::Result;
use crate::image::{FileImage, ImageRead};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;
/// The ranges the test image declares as holes (and that read as zeroes).
const HOLES: [Range<u64>; 3] = [MIB..3 * MIB, 8 * MIB..8 * MIB + 64 * 1024, 15 * MIB..SIZE];

/// An image in memory that declares some ranges as holes, as a disk in a
/// recovery point does for its zero chunks.
struct MemImage {
    bytes: Vec<u8>,
    holes: Vec<Range<u64>>,
}

impl ImageRead for MemImage {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        crate::image::check_bounds(&|| self.describe(), offset, buf.len(), self.size())?;
        buf.copy_from_slice(&self.bytes[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn zero_ranges(&self, range: Range<u64>) -> Result<Vec<Range<u64>>> {
        Ok(self
            .holes
            .iter()
            .map(|h| h.start.max(range.start)..h.end.min(range.end))
            .filter(|h| h.start < h.end)
            .collect())
    }
    fn describe(&self) -> String {
        "the test image".into()
    }
}

/// Deterministic noise: data no hole detection could mistake for zeroes.
fn noise(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// 16 MiB of noise with [`HOLES`] zeroed and declared.
fn test_image() -> Arc<MemImage> {
    let mut bytes = noise(SIZE, 42);
    for h in &HOLES {
        bytes[h.start as usize..h.end as usize].fill(0);
    }
    Arc::new(MemImage {
        bytes,
        holes: HOLES.to_vec(),
    })
}

/// A server running on a thread, stopped and joined when dropped.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<NbdEvent>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Server {
    fn start(name: &str, image: Arc<dyn ImageRead>, writable: Option<NbdOverlay>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let export = NbdExport {
            name: name.into(),
            description: "a test disk".into(),
            image,
            writable,
        };
        let (s, e) = (stop.clone(), events.clone());
        let thread = std::thread::spawn(move || {
            serve_nbd(listener, export, &s, &move |ev| e.lock().unwrap().push(ev))
        });
        Server {
            addr,
            stop,
            events,
            thread: Some(thread),
        }
    }

    fn url(&self, name: &str) -> String {
        if name.is_empty() {
            format!("nbd://{}", self.addr)
        } else {
            format!("nbd://{}/{name}", self.addr)
        }
    }

    fn stop(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().expect("the server thread panicked"),
            None => Ok(()),
        }
    }

    fn events(&self) -> Vec<NbdEvent> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn qemu_img_convert(url: &str, out: &Path) -> Command {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", "raw", "-O", "raw", url])
        .arg(out);
    cmd
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: size differs");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {at}");
    }
}

#[test]
fn nbd_server_qemu_img_convert_copies_the_disk_byte_for_byte() {
    if !qemu_available() {
        return;
    }
    let image = test_image();
    let server = Server::start("root", image.clone(), None);
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.raw");
    std::fs::write(&original, &image.bytes).unwrap();

    // By the disk's name, and by the empty name (the default export).
    for (name, file) in [("root", "named.raw"), ("", "default.raw")] {
        let out = dir.path().join(file);
        let done = qemu_img_convert(&server.url(name), &out).output().unwrap();
        assert_success("qemu-img convert", &done);
        assert_same_bytes(&std::fs::read(&out).unwrap(), &image.bytes, file);
    }
    // qemu-img compare reads the export itself and agrees.
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            &server.url("root"),
            original.to_str().unwrap(),
        ],
    );
}

#[test]
fn nbd_server_qemu_img_map_shows_the_declared_holes() {
    if !qemu_available() {
        return;
    }
    let server = Server::start("root", test_image(), None);
    let out = Command::new("qemu-img")
        .args(["map", "-f", "raw", "--output=json", &server.url("root")])
        .output()
        .unwrap();
    assert_success("qemu-img map", &out);
    let map: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    // Every byte of the map, with whether it is data, says what we declared.
    let mut pos = 0;
    for entry in &map {
        let start = entry["start"].as_u64().unwrap();
        let length = entry["length"].as_u64().unwrap();
        let data = entry["data"].as_bool().unwrap();
        assert_eq!(start, pos, "the map has a gap: {map:?}");
        let in_hole = HOLES
            .iter()
            .any(|h| h.start <= start && start + length <= h.end);
        let in_data = HOLES
            .iter()
            .all(|h| start + length <= h.start || h.end <= start);
        if data {
            assert!(
                in_data,
                "{start}+{length} is data in the map but a declared hole"
            );
        } else {
            assert!(
                in_hole,
                "{start}+{length} is a hole in the map but holds data"
            );
            assert_eq!(entry["zero"], serde_json::Value::Bool(true));
        }
        pos = start + length;
    }
    assert_eq!(pos, SIZE);
    let holes = map.iter().filter(|e| e["data"] == false).count();
    assert_eq!(
        holes,
        HOLES.len(),
        "each declared hole is one entry: {map:?}"
    );
}

#[test]
fn nbd_server_serves_two_copies_at_once() {
    if !qemu_available() {
        return;
    }
    let image = test_image();
    let server = Server::start("root", image.clone(), None);
    let dir = tempfile::tempdir().unwrap();
    let outs = [dir.path().join("a.raw"), dir.path().join("b.raw")];
    let children: Vec<_> = outs
        .iter()
        .map(|out| qemu_img_convert(&server.url("root"), out).spawn().unwrap())
        .collect();
    for child in children {
        assert_success("qemu-img convert", &child.wait_with_output().unwrap());
    }
    for out in &outs {
        assert_same_bytes(&std::fs::read(out).unwrap(), &image.bytes, "parallel copy");
    }
}

#[test]
fn nbd_server_reads_and_block_status_agree_with_our_client() {
    let image = test_image();
    let server = Server::start("root", image.clone(), None);
    let url = NbdUrl::parse(&server.url("root")).unwrap();
    let client = NbdClient::connect(&url, &[BASE_ALLOCATION]).unwrap();
    assert_eq!(client.size(), SIZE);
    let mut whole = vec![0xaa; SIZE as usize];
    client.read_at(&mut whole, 0).unwrap();
    assert_same_bytes(&whole, &image.bytes, "whole read");
    let mut odd = vec![0; 3 * MIB as usize + 5];
    client.read_at(&mut odd, MIB - 7).unwrap();
    assert_same_bytes(
        &odd,
        &image.bytes[MIB as usize - 7..][..odd.len()],
        "odd read",
    );

    let extents = client.block_status(BASE_ALLOCATION, 0, SIZE).unwrap();
    let want = vec![
        (0, MIB, 0),
        (MIB, 3 * MIB, STATE_HOLE | STATE_ZERO),
        (3 * MIB, 8 * MIB, 0),
        (8 * MIB, 8 * MIB + 65536, STATE_HOLE | STATE_ZERO),
        (8 * MIB + 65536, 15 * MIB, 0),
        (15 * MIB, SIZE, STATE_HOLE | STATE_ZERO),
    ];
    assert_eq!(extents, want);
}

/// An image whose every read waits, as a read of a recovery point waits
/// for storage and decryption.
struct SlowImage {
    inner: Arc<MemImage>,
    delay: Duration,
}

impl ImageRead for SlowImage {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        std::thread::sleep(self.delay);
        self.inner.read_exact_at(buf, offset)
    }
    fn describe(&self) -> String {
        "the slow test image".into()
    }
}

#[test]
fn nbd_server_serves_the_requests_of_one_connection_in_parallel() {
    let image = test_image();
    let delay = Duration::from_millis(50);
    let slow = Arc::new(SlowImage {
        inner: image.clone(),
        delay,
    });
    let server = Server::start("root", slow, None);
    let url = NbdUrl::parse(&server.url("root")).unwrap();
    let client = NbdClient::connect(&url, &[]).unwrap();
    // Eight 2 MiB requests, sent together by the client: one after the
    // other they would take 8 x 50 ms.
    let mut whole = vec![0; SIZE as usize];
    let started = Instant::now();
    client.read_at(&mut whole, 0).unwrap();
    let took = started.elapsed();
    assert_same_bytes(&whole, &image.bytes, "read of a slow image");
    assert!(
        took < delay * 4,
        "8 slow reads took {took:?}: the connection's requests were not served in parallel"
    );
}

// Raw TCP clients: each speaks just enough NBD to misbehave.

/// Connects and reads the greeting, answering with fixed newstyle and no
/// zeroes.
fn greet(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(read_u64(&mut s).unwrap(), NBD_MAGIC);
    assert_eq!(read_u64(&mut s).unwrap(), IHAVEOPT);
    let flags = read_u16(&mut s).unwrap();
    assert_eq!(flags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    s.write_all(&(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES).to_be_bytes())
        .unwrap();
    s
}

fn go_data(name: &str) -> Vec<u8> {
    let mut data = (name.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    data
}

/// Negotiates up to transmission (structured replies if asked); returns
/// the export size and transmission flags.
fn enter_transmission(s: &mut TcpStream, structured: bool) -> (u64, u16) {
    if structured {
        write_option(s, OPT_STRUCTURED_REPLY, &[]).unwrap();
        assert_eq!(
            read_option_reply(s, OPT_STRUCTURED_REPLY).unwrap().kind,
            REP_ACK
        );
    }
    write_option(s, OPT_GO, &go_data("root")).unwrap();
    let mut export = None;
    loop {
        let reply = read_option_reply(s, OPT_GO).unwrap();
        if reply.kind == REP_ACK {
            break;
        }
        assert_eq!(reply.kind, REP_INFO);
        if reply.data[..2] == INFO_EXPORT.to_be_bytes() {
            let size = u64::from_be_bytes(reply.data[2..10].try_into().unwrap());
            let flags = u16::from_be_bytes(reply.data[10..12].try_into().unwrap());
            export = Some((size, flags));
        }
    }
    export.expect("NBD_INFO_EXPORT was sent")
}

/// Sends a request and reads a simple reply: the error code, and the data
/// of a successful read of `read_len` bytes.
fn simple_request(
    s: &mut TcpStream,
    command: u16,
    offset: u64,
    len: u32,
    read_len: usize,
) -> (u32, Vec<u8>) {
    s.write_all(&encode_request(command, 0, 77, offset, len))
        .unwrap();
    match read_reply_header(s).unwrap() {
        ReplyHeader::Simple { error, cookie } => {
            assert_eq!(cookie, 77);
            let data = if error == 0 {
                read_vec(s, read_len).unwrap()
            } else {
                Vec::new()
            };
            (error, data)
        }
        other => panic!("expected a simple reply, got {other:?}"),
    }
}

/// Whether the server closed the connection (reads end) within a while.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn nbd_server_refuses_bad_requests_and_keeps_the_connection() {
    let image = test_image();
    let server = Server::start("root", image.clone(), None);
    let mut s = greet(server.addr);
    let (size, flags) = enter_transmission(&mut s, false);
    assert_eq!(size, SIZE);
    assert_ne!(flags & TFLAG_READ_ONLY, 0, "a read-only export says so");

    // Past the end: EINVAL, and the connection goes on.
    assert_eq!(simple_request(&mut s, CMD_READ, SIZE - 10, 20, 0).0, 22);
    // 4 GiB - 1 bytes: refused before anything is allocated.
    assert_eq!(simple_request(&mut s, CMD_READ, 0, u32::MAX, 0).0, 22);
    // A write to a read-only export: EPERM, its data read past.
    s.write_all(&encode_request(CMD_WRITE, 0, 5, 0, 4)).unwrap();
    s.write_all(b"abcd").unwrap();
    match read_reply_header(&mut s).unwrap() {
        ReplyHeader::Simple { error, cookie } => assert_eq!((error, cookie), (1, 5)),
        other => panic!("{other:?}"),
    }
    // An unknown command: EINVAL.
    assert_eq!(simple_request(&mut s, 42, 0, 0, 0).0, 22);
    // Block status without the context negotiated: EINVAL.
    assert_eq!(simple_request(&mut s, CMD_BLOCK_STATUS, 0, 4096, 0).0, 22);

    let (error, data) = simple_request(&mut s, CMD_READ, 3 * MIB - 100, 300, 300);
    assert_eq!(error, 0);
    assert_same_bytes(
        &data,
        &image.bytes[3 * MIB as usize - 100..][..300],
        "read after errors",
    );
    // A flush of a read-only export is fine.
    assert_eq!(simple_request(&mut s, CMD_FLUSH, 0, 0, 0).0, 0);
}

#[test]
fn nbd_server_structured_reads_send_holes_as_hole_chunks() {
    let image = test_image();
    let server = Server::start("root", image.clone(), None);
    let mut s = greet(server.addr);
    enter_transmission(&mut s, true);
    // 1 MiB - 4096 .. 3 MiB + 4096: data, hole, data.
    let (offset, len) = (MIB - 4096, 2 * MIB as u32 + 8192);
    s.write_all(&encode_request(CMD_READ, 0, 9, offset, len))
        .unwrap();
    let mut got = vec![0xaa; len as usize];
    let mut kinds = Vec::new();
    loop {
        let ReplyHeader::Chunk {
            flags,
            kind,
            cookie,
            length,
        } = read_reply_header(&mut s).unwrap()
        else {
            panic!("a simple reply to a read after structured replies were negotiated");
        };
        assert_eq!(cookie, 9);
        let at = read_u64(&mut s).unwrap();
        let pos = (at - offset) as usize;
        match kind {
            REPLY_TYPE_OFFSET_DATA => {
                let n = (length - 8) as usize;
                s.read_exact(&mut got[pos..pos + n]).unwrap();
            }
            REPLY_TYPE_OFFSET_HOLE => {
                let n = read_u32(&mut s).unwrap() as usize;
                got[pos..pos + n].fill(0);
            }
            other => panic!("chunk type {other}"),
        }
        kinds.push(kind);
        if flags & REPLY_FLAG_DONE != 0 {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            REPLY_TYPE_OFFSET_DATA,
            REPLY_TYPE_OFFSET_HOLE,
            REPLY_TYPE_OFFSET_DATA
        ]
    );
    assert_same_bytes(
        &got,
        &image.bytes[offset as usize..][..len as usize],
        "structured read",
    );

    // A read past the end gets a structured error chunk.
    s.write_all(&encode_request(CMD_READ, 0, 10, SIZE, 1))
        .unwrap();
    match read_reply_header(&mut s).unwrap() {
        ReplyHeader::Chunk {
            kind,
            cookie,
            length,
            ..
        } => {
            assert_eq!((kind, cookie), (REPLY_TYPE_ERROR, 10));
            let message = read_error_chunk(&mut s, kind, length).unwrap();
            assert!(message.starts_with("EINVAL"), "{message}");
            assert!(message.contains("past the end"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Over the maximum block size: EOVERFLOW.
    s.write_all(&encode_request(CMD_READ, 0, 11, 0, 64 << 20))
        .unwrap();
    match read_reply_header(&mut s).unwrap() {
        ReplyHeader::Chunk { kind, length, .. } => {
            let message = read_error_chunk(&mut s, kind, length).unwrap();
            assert!(message.starts_with("EOVERFLOW"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nbd_server_block_status_honours_req_one() {
    let server = Server::start("root", test_image(), None);
    let mut s = greet(server.addr);
    write_option(&mut s, OPT_STRUCTURED_REPLY, &[]).unwrap();
    assert_eq!(
        read_option_reply(&mut s, OPT_STRUCTURED_REPLY)
            .unwrap()
            .kind,
        REP_ACK
    );
    let mut query = go_data("root");
    query.truncate(query.len() - 2);
    query.extend_from_slice(&1u32.to_be_bytes());
    query.extend_from_slice(&(BASE_ALLOCATION.len() as u32).to_be_bytes());
    query.extend_from_slice(BASE_ALLOCATION.as_bytes());
    write_option(&mut s, OPT_SET_META_CONTEXT, &query).unwrap();
    let reply = read_option_reply(&mut s, OPT_SET_META_CONTEXT).unwrap();
    assert_eq!(reply.kind, REP_META_CONTEXT);
    assert_eq!(&reply.data[4..], BASE_ALLOCATION.as_bytes());
    assert_eq!(
        read_option_reply(&mut s, OPT_SET_META_CONTEXT)
            .unwrap()
            .kind,
        REP_ACK
    );
    write_option(&mut s, OPT_GO, &go_data("")).unwrap();
    while read_option_reply(&mut s, OPT_GO).unwrap().kind != REP_ACK {}

    s.write_all(&encode_request(
        CMD_BLOCK_STATUS,
        CMD_FLAG_REQ_ONE,
        3,
        0,
        SIZE as u32,
    ))
    .unwrap();
    let ReplyHeader::Chunk {
        kind,
        length,
        flags,
        ..
    } = read_reply_header(&mut s).unwrap()
    else {
        panic!("block status needs a structured reply");
    };
    assert_eq!(
        (kind, flags, length),
        (REPLY_TYPE_BLOCK_STATUS, REPLY_FLAG_DONE, 12)
    );
    let _context = read_u32(&mut s).unwrap();
    assert_eq!(
        (read_u32(&mut s).unwrap(), read_u32(&mut s).unwrap()),
        (MIB as u32, 0)
    );
}

#[test]
fn nbd_server_negotiation_refuses_what_it_does_not_offer() {
    let server = Server::start("root", test_image(), None);
    let mut s = greet(server.addr);
    // An option it does not know (and TLS, which it does not offer).
    for option in [99, OPT_STARTTLS] {
        write_option(&mut s, option, b"ignored").unwrap();
        let reply = read_option_reply(&mut s, option).unwrap();
        assert_eq!(reply.kind, REP_ERR_UNSUP, "option {option}");
    }
    // An export that does not exist: the message names the one that does.
    write_option(&mut s, OPT_GO, &go_data("boot")).unwrap();
    let reply = read_option_reply(&mut s, OPT_GO).unwrap();
    assert_eq!(reply.kind, REP_ERR_UNKNOWN);
    let message = String::from_utf8(reply.data).unwrap();
    assert!(
        message.contains("'boot'") && message.contains("'root'"),
        "{message}"
    );
    // Listing shows the one export.
    write_option(&mut s, OPT_LIST, &[]).unwrap();
    let reply = read_option_reply(&mut s, OPT_LIST).unwrap();
    assert_eq!(reply.kind, REP_SERVER);
    assert_eq!(&reply.data[4..], b"root");
    assert_eq!(read_option_reply(&mut s, OPT_LIST).unwrap().kind, REP_ACK);
    // Malformed GO data: invalid, and the negotiation goes on.
    write_option(&mut s, OPT_GO, &[0, 0, 0, 200, b'x']).unwrap();
    assert_eq!(
        read_option_reply(&mut s, OPT_GO).unwrap().kind,
        REP_ERR_INVALID
    );
    // Then a polite goodbye.
    write_option(&mut s, OPT_ABORT, &[]).unwrap();
    assert_eq!(read_option_reply(&mut s, OPT_ABORT).unwrap().kind, REP_ACK);
    assert!(closed_by_server(&mut s));

    // An option claiming 4 GiB of data: disconnected, nothing allocated.
    let mut s = greet(server.addr);
    let mut head = IHAVEOPT.to_be_bytes().to_vec();
    head.extend_from_slice(&OPT_GO.to_be_bytes());
    head.extend_from_slice(&u32::MAX.to_be_bytes());
    s.write_all(&head).unwrap();
    assert!(closed_by_server(&mut s));

    // Garbage instead of an option: disconnected.
    let mut s = greet(server.addr);
    s.write_all(&[0x55; 16]).unwrap();
    assert!(closed_by_server(&mut s));

    // The old-style entry with an unknown name: closed (it has no error reply).
    let mut s = greet(server.addr);
    write_option(&mut s, OPT_EXPORT_NAME, b"boot").unwrap();
    assert!(closed_by_server(&mut s));
    // With the right name: size, flags, and no padding (NO_ZEROES).
    let mut s = greet(server.addr);
    write_option(&mut s, OPT_EXPORT_NAME, b"root").unwrap();
    assert_eq!(read_u64(&mut s).unwrap(), SIZE);
    let _flags = read_u16(&mut s).unwrap();
    assert_eq!(
        simple_request(&mut s, CMD_READ, 0, 4, 4).1,
        test_image().bytes[..4]
    );

    // The server still serves well-behaved clients.
    let url = NbdUrl::parse(&server.url("root")).unwrap();
    let mut first = [0; 4096];
    NbdClient::connect(&url, &[])
        .unwrap()
        .read_at(&mut first, 0)
        .unwrap();
}

#[test]
fn nbd_server_bad_request_magic_closes_only_that_connection() {
    let server = Server::start("root", test_image(), None);
    let mut bad = greet(server.addr);
    enter_transmission(&mut bad, false);
    let mut good = greet(server.addr);
    enter_transmission(&mut good, false);
    bad.write_all(&[0xff; 28]).unwrap();
    assert!(closed_by_server(&mut bad));
    assert_eq!(simple_request(&mut good, CMD_READ, 0, 16, 16).0, 0);
}

#[test]
fn nbd_server_survives_a_client_that_vanishes_mid_read() {
    let image = test_image();
    let server = Server::start("root", image.clone(), None);
    for structured in [false, true] {
        let mut s = greet(server.addr);
        enter_transmission(&mut s, structured);
        for i in 0..8 {
            s.write_all(&encode_request(CMD_READ, 0, i, 0, SIZE as u32))
                .unwrap();
        }
        let mut some = [0; 1000];
        s.read_exact(&mut some).unwrap();
        drop(s);
    }
    // Nothing else is disturbed.
    let url = NbdUrl::parse(&server.url("root")).unwrap();
    let mut whole = vec![0; SIZE as usize];
    NbdClient::connect(&url, &[])
        .unwrap()
        .read_at(&mut whole, 0)
        .unwrap();
    assert_same_bytes(&whole, &image.bytes, "read after a client vanished");
    if qemu_available() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("copy.raw");
        assert_success(
            "qemu-img convert",
            &qemu_img_convert(&server.url("root"), &out)
                .output()
                .unwrap(),
        );
        assert_same_bytes(&std::fs::read(&out).unwrap(), &image.bytes, "qemu-img copy");
    }
    // The vanished clients were reported, without panic or error.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gone = server
            .events()
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    NbdEvent::Disconnected {
                        reason: Some(_),
                        ..
                    }
                )
            })
            .count();
        if gone >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "events: {:?}", server.events());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nbd_server_stops_when_asked_even_with_clients_connected() {
    let mut server = Server::start("root", test_image(), None);
    let mut idle = greet(server.addr);
    enter_transmission(&mut idle, false);
    let _negotiating = TcpStream::connect(server.addr).unwrap();
    // Make sure the server has accepted both before stopping it.
    assert_eq!(simple_request(&mut idle, CMD_READ, 0, 1, 1).0, 0);
    let started = Instant::now();
    server.stop().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(closed_by_server(&mut idle));
    assert!(server.events().iter().any(|e| matches!(
        e,
        NbdEvent::Disconnected { reason: Some(r), .. } if r.contains("stopping")
    )));
}

// Writable exports.

#[test]
fn nbd_server_writes_go_to_the_overlay_never_the_image() {
    if !qemu_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let original = noise(SIZE, 7);
    std::fs::write(&path, &original).unwrap();
    let image = Arc::new(FileImage::open(&path).unwrap());
    let overlay_path = dir.path().join("overlay");
    let overlay = NbdOverlay::create(Some(&overlay_path), SIZE).unwrap();
    let server = Server::start("root", image, Some(overlay));
    let url = server.url("root");

    // Whole blocks, a partial block, and zeroes across a block boundary.
    for cmd in [
        "write -P 0xab 4096 8192",
        "write -P 0xcd 100 10",
        "write -z 20000 10000",
    ] {
        run("qemu-io", &["-f", "raw", "-c", cmd, &url]);
    }
    let mut want = original.clone();
    want[4096..12288].fill(0xab);
    want[100..110].fill(0xcd);
    want[20000..30000].fill(0);

    let out = dir.path().join("copy.raw");
    assert_success(
        "qemu-img convert",
        &qemu_img_convert(&url, &out).output().unwrap(),
    );
    assert_same_bytes(
        &std::fs::read(&out).unwrap(),
        &want,
        "read back through NBD",
    );
    assert_same_bytes(&std::fs::read(&path).unwrap(), &original, "the image file");
    // The overlay is sparse: it holds the written blocks only.
    use std::os::unix::fs::MetadataExt;
    let used = std::fs::metadata(&overlay_path).unwrap().blocks() * 512;
    assert!(used < MIB, "overlay uses {used} bytes on disk");
}

#[test]
fn nbd_server_read_only_export_refuses_qemu_io_writes() {
    if !qemu_available() {
        return;
    }
    let image = test_image();
    let server = Server::start("root", image, None);
    let out = Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0xab 0 4096",
            &server.url("root"),
        ])
        .output()
        .unwrap();
    // qemu sees the read-only flag and will not open the export for writing.
    assert!(
        !out.status.success(),
        "qemu-io wrote to a read-only export: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn nbd_overlay_merges_writes_with_the_image_at_any_alignment() {
    // A size that is not a whole number of blocks: the last block is short.
    let size = 3 * 4096 + 1000;
    let image = MemImage {
        bytes: noise(size, 3),
        holes: Vec::new(),
    };
    let overlay = NbdOverlay::create(None, size).unwrap();
    let mut want = image.bytes.clone();
    let writes: [(u64, usize); 5] = [
        (10, 5),
        (4090, 20),
        (8192, 4096),
        (12280, 16),
        (size - 3, 3),
    ];
    for (i, &(offset, len)) in writes.iter().enumerate() {
        let data = vec![i as u8 + 1; len];
        overlay.write_at(&image, &data, offset).unwrap();
        want[offset as usize..offset as usize + len].copy_from_slice(&data);
    }
    overlay.write_zeroes_at(&image, 4000, 200).unwrap();
    want[4000..4200].fill(0);

    assert_eq!(overlay.bytes_held(), size);

    // Served, the export reads as the image with the writes on top.
    let image: Arc<dyn ImageRead> = Arc::new(image);
    let server = Server::start("odd", image, Some(overlay));
    let url = NbdUrl::parse(&server.url("odd")).unwrap();
    let client = NbdClient::connect(&url, &[]).unwrap();
    let mut got = vec![0; size as usize];
    client.read_at(&mut got, 0).unwrap();
    assert_same_bytes(&got, &want, "merged read");
}

#[test]
fn nbd_overlay_partial_writes_into_one_block_from_many_threads_all_land() {
    let image = MemImage {
        bytes: noise(4096, 9),
        holes: Vec::new(),
    };
    let overlay = NbdOverlay::create(None, 4096).unwrap();
    std::thread::scope(|s| {
        for t in 0..16u64 {
            let (image, overlay) = (&image, &overlay);
            s.spawn(move || {
                overlay
                    .write_at(image, &[t as u8 + 100; 16], t * 256)
                    .unwrap();
            });
        }
    });
    let mut got = vec![0; 4096];
    overlay.read_at(&mut got, 0).unwrap();
    let mut want = image.bytes.clone();
    for t in 0..16usize {
        want[t * 256..t * 256 + 16].fill(t as u8 + 100);
    }
    assert_same_bytes(&got, &want, "block written by 16 threads");
}

#[test]
fn nbd_overlay_refuses_an_existing_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overlay");
    std::fs::write(&path, b"precious").unwrap();
    let e = NbdOverlay::create(Some(&path), 4096)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("already exists"),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

/// The figure the issue asks for: `qemu-img convert` of a 1 GiB disk
/// through the server, against `cp` of the same file and against qemu-nbd
/// serving it, in one run. Slow and disk-hungry, so run by hand:
/// `cargo test --lib nbd::server_tests::nbd_server_throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn nbd_server_throughput() {
    if !qemu_available() {
        return;
    }
    // In memory (tmpfs) when there is one, so the disk's writeback does not
    // decide the figures.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let path = dir.path().join("disk.raw");
    run(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", path.display()),
            "bs=1M",
            "count=1024",
            "status=none",
        ],
    );
    let out = dir.path().join("out.raw");
    // The median of five runs: the machine is shared.
    let time = |what: &str, cmd: &mut Command| {
        let mut runs: Vec<f64> = (0..5)
            .map(|_| {
                let _ = std::fs::remove_file(&out);
                let start = Instant::now();
                assert_success(what, &cmd.output().unwrap());
                start.elapsed().as_secs_f64()
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        let secs = runs[2];
        println!(
            "{what}: {secs:.2} s, {:.0} MiB/s (runs {runs:.2?})",
            1024.0 / secs
        );
        secs
    };
    let cp = time("cp", Command::new("cp").arg(&path).arg(&out));

    let server = Server::start("root", Arc::new(FileImage::open(&path).unwrap()), None);
    let url = server.url("root");
    let ours = time(
        "qemu-img convert via serve_nbd",
        &mut qemu_img_convert(&url, &out),
    );
    let ours_w = time(
        "qemu-img convert -m 16 -W via serve_nbd",
        qemu_img_convert(&url, &out).args(["-m", "16", "-W"]),
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut qemu_nbd = Command::new("qemu-nbd")
        .args([
            "-r",
            "-t",
            "-f",
            "raw",
            "-x",
            "root",
            "-e",
            "4",
            "-b",
            "127.0.0.1",
        ])
        .args(["-p", &port.to_string()])
        .arg(&path)
        .spawn()
        .unwrap();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let reference = time(
        "qemu-img convert via qemu-nbd",
        &mut qemu_img_convert(&format!("nbd://127.0.0.1:{port}/root"), &out),
    );
    let _ = qemu_nbd.kill();
    let _ = qemu_nbd.wait();
    println!(
        "serve_nbd / cp time: {:.2} (-m 16 -W: {:.2}); qemu-nbd / cp: {:.2}",
        ours / cp,
        ours_w / cp,
        reference / cp
    );
}

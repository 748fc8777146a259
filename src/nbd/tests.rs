//! The client against a real server (qemu-nbd serving a qcow2 disk built
//! with qemu-img and qemu-io), and against a fake server that sends hostile
//! replies.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::proto::*;
use super::{NbdClient, NbdUrl};

const MIB: u64 = 1 << 20;
const DISK_SIZE: u64 = 64 * MIB;
const HOLE: u32 = 1;
const ZERO: u32 = 2;
const DIRTY: u32 = 1;

/// Whether qemu-nbd and friends can run here. Without them the tests skip,
/// except in CI, which installs them and must not skip silently.
pub(super) fn qemu_available() -> bool {
    let found = Command::new("qemu-nbd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "qemu-nbd is not installed, and CI is set: install qemu-utils"
        );
        println!("skipping: qemu-nbd is not on PATH (install qemu-utils)");
    }
    found
}

pub(super) fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 64 MiB qcow2 disk as a VM would leave it between two backups: written
/// data, then a dirty bitmap added (the last backup), then more writes.
struct Disk {
    dir: tempfile::TempDir,
    qcow2: PathBuf,
    /// What the guest sees, byte for byte (`qemu-img convert -O raw`).
    raw: Vec<u8>,
}

/// The ranges written after the bitmap was added, at its 64 KiB granularity.
const CHANGED: [(u64, u64); 3] = [
    (20 * MIB, 21 * MIB),
    (40 * MIB, 41 * MIB),
    (50 * MIB, 50 * MIB + 64 * 1024),
];

fn build_disk() -> Disk {
    let dir = tempfile::tempdir().unwrap();
    let qcow2 = dir.path().join("disk.qcow2");
    let q = qcow2.to_str().unwrap();
    run("qemu-img", &["create", "-q", "-f", "qcow2", q, "64M"]);
    let write = |cmd: &str| run("qemu-io", &["-f", "qcow2", "-c", cmd, q]);
    write("write -P 0x11 0 8M");
    run("qemu-img", &["bitmap", "--add", q, "bm0"]);
    write("write -P 0x22 20M 1M");
    write("write -z 40M 1M");
    // Unaligned and inside one bitmap granule: 50 MiB + 100, 5000 bytes.
    write("write -P 0x33 52428900 5000");
    let raw_path = dir.path().join("disk.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            q,
            raw_path.to_str().unwrap(),
        ],
    );
    let raw = std::fs::read(&raw_path).unwrap();
    assert_eq!(raw.len() as u64, DISK_SIZE);
    Disk { dir, qcow2, raw }
}

/// A qemu-nbd process, killed when dropped.
struct QemuNbd {
    child: Child,
    /// The export, as a user would write it.
    url: NbdUrl,
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How qemu-nbd should listen.
enum Listen {
    Tcp,
    Unix,
}

/// Serves `disk` read-only as export `name`, with bitmap bm0, and waits
/// (boundedly) until it accepts connections.
fn serve(disk: &Disk, name: &str, listen: Listen) -> QemuNbd {
    start_qemu_nbd(disk, name, Some("bm0"), listen)
}

/// Serves `disk` over TCP as export "vm", without a bitmap.
fn serve_without_bitmap(disk: &Disk) -> QemuNbd {
    start_qemu_nbd(disk, "vm", None, Listen::Tcp)
}

fn start_qemu_nbd(disk: &Disk, name: &str, bitmap: Option<&str>, listen: Listen) -> QemuNbd {
    let mut cmd = Command::new("qemu-nbd");
    cmd.args(["-r", "-f", "qcow2", "-t", "-e", "4", "-x", name]);
    if let Some(bitmap) = bitmap {
        cmd.args(["-B", bitmap]);
    }
    let (url, ready): (String, Box<dyn Fn() -> bool>) = match listen {
        Listen::Tcp => {
            // Ask the kernel for a free port; qemu-nbd binds it next.
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            cmd.args(["-b", "127.0.0.1", "-p", &port.to_string()]);
            (
                format!("nbd://127.0.0.1:{port}/{name}"),
                Box::new(move || TcpStream::connect(("127.0.0.1", port)).is_ok()),
            )
        }
        Listen::Unix => {
            let socket = disk.dir.path().join("nbd.sock");
            cmd.arg("-k").arg(&socket);
            let url = format!("nbd+unix:///{name}?socket={}", socket.display());
            (
                url,
                Box::new(move || std::os::unix::net::UnixStream::connect(&socket).is_ok()),
            )
        }
    };
    let child = cmd
        .arg(&disk.qcow2)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-nbd");
    let mut server = QemuNbd {
        child,
        url: NbdUrl::parse(&url).unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        if let Some(status) = server.child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = server.child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("qemu-nbd exited ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "qemu-nbd did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// The flags of the extent holding `offset`.
fn flags_at(extents: &[(u64, u64, u32)], offset: u64) -> u32 {
    extents
        .iter()
        .find(|&&(s, e, _)| s <= offset && offset < e)
        .unwrap_or_else(|| panic!("no extent holds {offset}: {extents:?}"))
        .2
}

/// Extents must follow each other without gaps over exactly [start, end).
fn assert_covers(extents: &[(u64, u64, u32)], start: u64, end: u64) {
    let mut pos = start;
    for &(s, e, _) in extents {
        assert_eq!(s, pos, "gap or overlap in {extents:?}");
        assert!(e > s, "empty extent in {extents:?}");
        pos = e;
    }
    assert_eq!(pos, end, "extents {extents:?} do not end at {end}");
}

/// A small deterministic generator, for reproducible "random" ranges.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn nbd_client_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<NbdClient>();
}

#[test]
fn nbd_reads_the_same_bytes_as_qemu_img_convert() {
    if !qemu_available() {
        return;
    }
    let disk = build_disk();
    let server = serve(&disk, "vm", Listen::Tcp);
    let client = NbdClient::connect(&server.url, &[]).unwrap();
    assert_eq!(client.size(), DISK_SIZE);

    // The whole disk in one call: many requests in flight.
    let mut whole = vec![0xaa; DISK_SIZE as usize];
    client.read_at(&mut whole, 0).unwrap();
    assert!(
        whole == disk.raw,
        "the whole-disk read differs from qemu-img convert"
    );

    // Unaligned ranges of all sizes, including across data/hole borders.
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let len = 1 + rng.below(3 * MIB);
        let offset = rng.below(DISK_SIZE - len + 1);
        let mut buf = vec![0xaa; len as usize];
        client.read_at(&mut buf, offset).unwrap();
        let want = &disk.raw[offset as usize..(offset + len) as usize];
        assert!(buf == want, "read of {len} bytes at {offset} differs");
    }
    let mut last = [0u8; 1];
    client.read_at(&mut last, DISK_SIZE - 1).unwrap();
    client.read_at(&mut [], DISK_SIZE).unwrap();
}

#[test]
fn nbd_threads_share_one_client() {
    if !qemu_available() {
        return;
    }
    let disk = build_disk();
    let server = serve(&disk, "vm", Listen::Tcp);
    let client = NbdClient::connect(&server.url, &[]).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (client, raw) = (&client, &disk.raw);
            s.spawn(move || {
                let mut buf = vec![0; 3 * MIB as usize + 17];
                for i in 0..5 {
                    let offset = (t * 5 + i) * MIB + 13;
                    client.read_at(&mut buf, offset).unwrap();
                    assert!(buf == raw[offset as usize..offset as usize + buf.len()]);
                }
            });
        }
    });
}

#[test]
fn nbd_base_allocation_marks_holes_and_data() {
    if !qemu_available() {
        return;
    }
    let disk = build_disk();
    let server = serve(&disk, "vm", Listen::Tcp);
    let client = NbdClient::connect(&server.url, &["base:allocation"]).unwrap();
    let extents = client
        .block_status("base:allocation", 0, DISK_SIZE)
        .unwrap();
    assert_covers(&extents, 0, DISK_SIZE);
    // Written data is data; never-written ranges are holes reading as zero;
    // the zero write reads as zero.
    for at in [0, 8 * MIB - 1, 20 * MIB, 21 * MIB - 1, 50 * MIB + 100] {
        assert_eq!(
            flags_at(&extents, at) & (HOLE | ZERO),
            0,
            "at {at}: {extents:?}"
        );
    }
    for at in [8 * MIB, 19 * MIB, 30 * MIB, 60 * MIB, DISK_SIZE - 1] {
        assert_eq!(flags_at(&extents, at), HOLE | ZERO, "at {at}: {extents:?}");
    }
    for at in [40 * MIB, 41 * MIB - 1] {
        assert_ne!(flags_at(&extents, at) & ZERO, 0, "at {at}: {extents:?}");
    }
    // Every byte the server calls zero reads as zero.
    for &(s, e, flags) in &extents {
        if flags & ZERO != 0 {
            assert!(disk.raw[s as usize..e as usize].iter().all(|&b| b == 0));
        }
    }

    // An unaligned sub-range is covered exactly, no more.
    let (start, end) = (7 * MIB + 123, 21 * MIB + 5);
    let part = client
        .block_status("base:allocation", start, end - start)
        .unwrap();
    assert_covers(&part, start, end);
    assert_eq!(flags_at(&part, start) & HOLE, 0);
    assert_eq!(flags_at(&part, 10 * MIB), HOLE | ZERO);
    assert_eq!(flags_at(&part, 20 * MIB) & HOLE, 0);
    assert_eq!(flags_at(&part, end - 1), HOLE | ZERO);
}

#[test]
fn nbd_dirty_bitmap_lists_exactly_the_ranges_written_since_it_was_added() {
    if !qemu_available() {
        return;
    }
    let disk = build_disk();
    let server = serve(&disk, "vm", Listen::Tcp);
    let bitmap = "qemu:dirty-bitmap:bm0";
    // Both contexts: the server answers for both on every request.
    let client = NbdClient::connect(&server.url, &["base:allocation", bitmap]).unwrap();
    let extents = client.block_status(bitmap, 0, DISK_SIZE).unwrap();
    assert_covers(&extents, 0, DISK_SIZE);
    let dirty: Vec<(u64, u64)> = extents
        .iter()
        .filter(|e| e.2 & DIRTY != 0)
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(dirty, CHANGED);
    // The other context still answers on the same connection.
    let alloc = client.block_status("base:allocation", 0, MIB).unwrap();
    assert_eq!(alloc, vec![(0, MIB, 0)]);
}

#[test]
fn nbd_unix_socket_reads_and_reports_status() {
    if !qemu_available() {
        return;
    }
    let disk = build_disk();
    let server = serve(&disk, "disk 0", Listen::Unix);
    assert!(server
        .url
        .to_string()
        .starts_with("nbd+unix:///disk%200?socket="));
    let client = NbdClient::connect(&server.url, &["qemu:dirty-bitmap:bm0"]).unwrap();
    let mut buf = vec![0; 2 * MIB as usize];
    client.read_at(&mut buf, 19 * MIB + 1).unwrap();
    assert!(buf == disk.raw[(19 * MIB + 1) as usize..(21 * MIB + 1) as usize]);
    let extents = client
        .block_status("qemu:dirty-bitmap:bm0", 0, DISK_SIZE)
        .unwrap();
    assert_eq!(flags_at(&extents, 20 * MIB), DIRTY);
    assert_eq!(flags_at(&extents, 0), 0);
    client.disconnect();
    let err = client.read_at(&mut buf, 0).unwrap_err();
    assert!(err.to_string().contains("disconnect"), "{err}");
}

#[test]
fn nbd_missing_bitmap_is_a_clear_error() {
    if !qemu_available() {
        return;
    }
    let disk = build_disk();
    let server = serve(&disk, "vm", Listen::Tcp);
    let err = NbdClient::connect(&server.url, &["base:allocation", "qemu:dirty-bitmap:gone"])
        .err()
        .expect("a bitmap the export lacks");
    let msg = err.to_string();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{msg}");
    assert!(
        msg.contains("has no meta context qemu:dirty-bitmap:gone")
            && msg.contains("bitmap does not exist")
            && msg.contains("qemu-img info"),
        "{msg}"
    );
}

#[test]
fn nbd_wrong_export_name_is_named_in_the_error() {
    if !qemu_available() {
        return;
    }
    let disk = build_disk();
    let server = serve(&disk, "vm", Listen::Tcp);
    let url = NbdUrl::parse(&server.url.to_string().replace("/vm", "/nosuch")).unwrap();
    for contexts in [&[][..], &["base:allocation"][..]] {
        let err = NbdClient::connect(&url, contexts)
            .err()
            .expect("an export the server lacks");
        let msg = err.to_string();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{msg}");
        assert!(msg.contains("no export \"nosuch\""), "{msg}");
    }
}

#[test]
fn nbd_out_of_range_requests_are_errors_and_the_connection_survives() {
    if !qemu_available() {
        return;
    }
    let disk = build_disk();
    let server = serve(&disk, "vm", Listen::Tcp);
    let client = NbdClient::connect(&server.url, &["base:allocation"]).unwrap();
    let mut buf = vec![0; 4096];
    for offset in [DISK_SIZE - 100, DISK_SIZE, u64::MAX - 10] {
        let err = client.read_at(&mut buf, offset).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("past the end"), "{err}");
    }
    let err = client
        .block_status("base:allocation", DISK_SIZE - 1, 2)
        .unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
    let err = client
        .block_status("qemu:dirty-bitmap:bm0", 0, 1)
        .unwrap_err();
    assert!(err.to_string().contains("was not negotiated"), "{err}");
    client.read_at(&mut buf, 0).unwrap();
    assert!(buf == disk.raw[..4096]);
}

// ---------------------------------------------------------------------------
// A fake server that negotiates correctly, then answers the first request
// with hostile bytes. The client must fail cleanly: an error, no panic, no
// huge allocation, no hang.

/// Export size the fake server announces.
const FAKE_SIZE: u64 = 4 * MIB;

/// One request as the fake server sees it.
struct FakeRequest {
    command: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

/// Starts a server on a free port that runs `session` on the accepted
/// socket, then reads until the client hangs up. Returns its URL.
fn fake_server_raw(session: impl FnOnce(&mut TcpStream) + Send + 'static) -> NbdUrl {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        session(&mut socket);
        let _ = io::copy(&mut socket, &mut io::sink());
    });
    NbdUrl::parse(&format!("nbd://127.0.0.1:{port}/fake")).unwrap()
}

fn option_reply(option: u32, kind: u32, data: &[u8]) -> Vec<u8> {
    let mut b = OPTION_REPLY_MAGIC.to_be_bytes().to_vec();
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Plays a correct server's negotiation: structured replies, context id 1
/// for base:allocation, a 1 MiB export, block sizes 1 / 4 KiB / 1 MiB.
fn fake_negotiation(s: &mut TcpStream) {
    fake_negotiation_with_block_sizes(s, [1, 4096, MIB as u32]);
}

/// [`fake_negotiation`] announcing `block_sizes` (minimum, preferred,
/// maximum).
fn fake_negotiation_with_block_sizes(s: &mut TcpStream, block_sizes: [u32; 3]) {
    s.write_all(&NBD_MAGIC.to_be_bytes()).unwrap();
    s.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
    s.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())
        .unwrap();
    read_u32(s).unwrap();
    loop {
        assert_eq!(read_u64(s).unwrap(), IHAVEOPT);
        let option = read_u32(s).unwrap();
        let len = read_u32(s).unwrap();
        skip(s, len.into()).unwrap();
        match option {
            OPT_STRUCTURED_REPLY => s.write_all(&option_reply(option, REP_ACK, &[])).unwrap(),
            OPT_SET_META_CONTEXT => {
                let mut data = 1u32.to_be_bytes().to_vec();
                data.extend_from_slice(b"base:allocation");
                s.write_all(&option_reply(option, REP_META_CONTEXT, &data))
                    .unwrap();
                s.write_all(&option_reply(option, REP_ACK, &[])).unwrap();
            }
            OPT_GO => {
                let mut export = INFO_EXPORT.to_be_bytes().to_vec();
                export.extend_from_slice(&FAKE_SIZE.to_be_bytes());
                export.extend_from_slice(&1u16.to_be_bytes());
                s.write_all(&option_reply(option, REP_INFO, &export))
                    .unwrap();
                let mut sizes = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                for v in block_sizes {
                    sizes.extend_from_slice(&v.to_be_bytes());
                }
                s.write_all(&option_reply(option, REP_INFO, &sizes))
                    .unwrap();
                s.write_all(&option_reply(option, REP_ACK, &[])).unwrap();
                return;
            }
            other => panic!("unexpected option {other}"),
        }
    }
}

/// A fake server that negotiates, then hands the first request to `answer`.
fn fake_server(answer: impl FnOnce(&mut TcpStream, FakeRequest) + Send + 'static) -> NbdUrl {
    fake_server_raw(move |s| {
        fake_negotiation(s);
        let mut request = [0; 28];
        s.read_exact(&mut request).unwrap();
        answer(s, parse_request(&request));
    })
}

fn parse_request(b: &[u8]) -> FakeRequest {
    assert_eq!(b[..4], REQUEST_MAGIC.to_be_bytes());
    FakeRequest {
        command: u16::from_be_bytes(b[6..8].try_into().unwrap()),
        cookie: u64::from_be_bytes(b[8..16].try_into().unwrap()),
        offset: u64::from_be_bytes(b[16..24].try_into().unwrap()),
        len: u32::from_be_bytes(b[24..28].try_into().unwrap()),
    }
}

/// A structured reply chunk claiming `length` bytes of payload (which may
/// be a lie), followed by `payload`.
fn chunk(flags: u16, kind: u16, cookie: u64, length: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec();
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&length.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

fn data_chunk(flags: u16, cookie: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = offset.to_be_bytes().to_vec();
    payload.extend_from_slice(data);
    chunk(
        flags,
        REPLY_TYPE_OFFSET_DATA,
        cookie,
        payload.len() as u32,
        &payload,
    )
}

fn extents_payload(context: u32, extents: &[(u32, u32)]) -> Vec<u8> {
    let mut p = context.to_be_bytes().to_vec();
    for (len, flags) in extents {
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&flags.to_be_bytes());
    }
    p
}

/// Connects to a fake server answering with `answer`, reads 4 KiB at 0,
/// and returns the error message.
fn hostile_read(answer: impl FnOnce(&mut TcpStream, FakeRequest) + Send + 'static) -> String {
    let url = fake_server(move |s, r| {
        assert_eq!(r.command, CMD_READ);
        answer(s, r)
    });
    let client = NbdClient::connect(&url, &[]).unwrap();
    let mut buf = vec![0; 4096];
    let err = client.read_at(&mut buf, 0).expect_err("a hostile reply");
    // Once the stream is out of step, the connection stays refused.
    if err.kind() == io::ErrorKind::InvalidData {
        let again = client.read_at(&mut buf, 0).unwrap_err();
        assert!(again.to_string().contains("unusable"), "{again}");
    }
    err.to_string()
}

/// Like [`hostile_read`] for block status of 8 KiB at 0.
fn hostile_status(answer: impl FnOnce(&mut TcpStream, FakeRequest) + Send + 'static) -> String {
    let url = fake_server(move |s, r| {
        assert_eq!(r.command, CMD_BLOCK_STATUS);
        assert_eq!((r.offset, r.len), (0, 8192));
        answer(s, r)
    });
    let client = NbdClient::connect(&url, &["base:allocation"]).unwrap();
    let err = client
        .block_status("base:allocation", 0, 8192)
        .expect_err("a hostile reply");
    err.to_string()
}

fn assert_mentions(msg: &str, what: &str) {
    assert!(msg.contains(what), "expected {what:?} in: {msg}");
}

#[test]
fn nbd_fake_server_sanity_check_reads_fine() {
    let url = fake_server(|s, r| {
        let data = vec![0x5a; r.len as usize / 2];
        let mut reply = data_chunk(0, r.cookie, r.offset + u64::from(r.len) / 2, &data);
        let mut hole = r.offset.to_be_bytes().to_vec();
        hole.extend_from_slice(&(r.len / 2).to_be_bytes());
        reply.extend(chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_OFFSET_HOLE,
            r.cookie,
            12,
            &hole,
        ));
        s.write_all(&reply).unwrap();
    });
    let client = NbdClient::connect(&url, &["base:allocation"]).unwrap();
    let mut buf = vec![0xff; 4096];
    client.read_at(&mut buf, 0).unwrap();
    assert!(buf[..2048].iter().all(|&b| b == 0) && buf[2048..].iter().all(|&b| b == 0x5a));
}

#[test]
fn nbd_hostile_read_replies_are_errors() {
    // A chunk claiming 4 GiB of data for a 4 KiB read: refused before
    // reading or allocating anything.
    let msg = hostile_read(|s, r| {
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_OFFSET_DATA,
            r.cookie,
            u32::MAX,
            &[],
        ))
        .unwrap();
    });
    assert_mentions(&msg, "data chunk of 4294967295 bytes");

    let msg = hostile_read(|s, r| {
        s.write_all(&data_chunk(REPLY_FLAG_DONE, r.cookie + 1000, 0, &[0; 4096]))
            .unwrap();
    });
    assert_mentions(&msg, "which no pending request has");

    // Data for bytes outside the request.
    let msg = hostile_read(|s, r| {
        s.write_all(&data_chunk(REPLY_FLAG_DONE, r.cookie, 2048, &[0; 4096]))
            .unwrap();
    });
    assert_mentions(&msg, "chunk for [2048, +4096)");

    let msg = hostile_read(|s, r| {
        let mut hole = 4000u64.to_be_bytes().to_vec();
        hole.extend_from_slice(&u32::MAX.to_be_bytes());
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_OFFSET_HOLE,
            r.cookie,
            12,
            &hole,
        ))
        .unwrap();
    });
    assert_mentions(&msg, "chunk for [4000, +4294967295)");

    // The same bytes twice, so the sum matches nothing.
    let msg = hostile_read(|s, r| {
        s.write_all(&data_chunk(0, r.cookie, 0, &[1; 4096]))
            .unwrap();
        s.write_all(&data_chunk(REPLY_FLAG_DONE, r.cookie, 0, &[1; 4096]))
            .unwrap();
    });
    assert_mentions(&msg, "more than 4096 bytes");

    // Overlapping halves adding up to the right total leave a gap.
    let msg = hostile_read(|s, r| {
        s.write_all(&data_chunk(0, r.cookie, 0, &[1; 2048]))
            .unwrap();
        s.write_all(&data_chunk(REPLY_FLAG_DONE, r.cookie, 1024, &[1; 2048]))
            .unwrap();
    });
    assert_mentions(&msg, "unfilled or filled twice");

    // Done without any data.
    let msg = hostile_read(|s, r| {
        s.write_all(&chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, r.cookie, 0, &[]))
            .unwrap();
    });
    assert_mentions(&msg, "unfilled");

    // Block status extents in reply to a read.
    let msg = hostile_read(|s, r| {
        let p = extents_payload(1, &[(4096, 0)]);
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            r.cookie,
            12,
            &p,
        ))
        .unwrap();
    });
    assert_mentions(&msg, "chunk type 5");

    // An error message longer than its chunk.
    let msg = hostile_read(|s, r| {
        let mut p = 5u32.to_be_bytes().to_vec();
        p.extend_from_slice(&1000u16.to_be_bytes());
        p.extend_from_slice(b"short");
        let len = p.len() as u32;
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_ERROR_BIT | 1,
            r.cookie,
            len,
            &p,
        ))
        .unwrap();
    });
    assert_mentions(&msg, "error message of 1000 bytes");

    let msg = hostile_read(|s, _| s.write_all(b"HTTP/1.1 400 Bad Request\r\n").unwrap());
    assert_mentions(&msg, "bad reply magic");

    // The server hangs up mid-reply.
    let msg = hostile_read(|s, r| {
        let mut reply = data_chunk(REPLY_FLAG_DONE, r.cookie, 0, &[0; 4096]);
        reply.truncate(100);
        s.write_all(&reply).unwrap();
        s.shutdown(std::net::Shutdown::Both).unwrap();
    });
    assert_mentions(&msg, "closed the connection");
}

#[test]
fn nbd_server_errors_carry_the_servers_message() {
    let msg = hostile_read(|s, r| {
        let mut p = 5u32.to_be_bytes().to_vec();
        p.extend_from_slice(&12u16.to_be_bytes());
        p.extend_from_slice(b"disk on fire");
        let len = p.len() as u32;
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_ERROR_BIT | 1,
            r.cookie,
            len,
            &p,
        ))
        .unwrap();
    });
    assert_mentions(&msg, "failed to read 4096 bytes at offset 0: EIO");
    assert_mentions(&msg, "disk on fire");

    let msg = hostile_read(|s, r| {
        let mut reply = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
        reply.extend_from_slice(&22u32.to_be_bytes());
        reply.extend_from_slice(&r.cookie.to_be_bytes());
        s.write_all(&reply).unwrap();
    });
    assert_mentions(&msg, "EINVAL");
}

#[test]
fn nbd_hostile_block_status_replies_are_errors() {
    // More extents than any request could need: refused by size alone.
    let msg = hostile_status(|s, r| {
        let length = 4 + 8 * (1 << 21);
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            r.cookie,
            length,
            &[],
        ))
        .unwrap();
    });
    assert_mentions(&msg, "block status chunk of 16777220 bytes");

    // Three 4 KiB extents for an 8 KiB request.
    let msg = hostile_status(|s, r| {
        let p = extents_payload(1, &[(4096, 0), (4096, 3), (4096, 0)]);
        let len = p.len() as u32;
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            r.cookie,
            len,
            &p,
        ))
        .unwrap();
    });
    assert_mentions(&msg, "go past the end of the request");

    let msg = hostile_status(|s, r| {
        let p = extents_payload(1, &[(0, 0)]);
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            r.cookie,
            12,
            &p,
        ))
        .unwrap();
    });
    assert_mentions(&msg, "extent of length 0");

    let msg = hostile_status(|s, r| {
        let p = extents_payload(7, &[(8192, 0)]);
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            r.cookie,
            12,
            &p,
        ))
        .unwrap();
    });
    assert_mentions(&msg, "context id 7, which was not negotiated");

    let msg = hostile_status(|s, r| {
        let p = extents_payload(1, &[(8192, 0)]);
        s.write_all(&chunk(0, REPLY_TYPE_BLOCK_STATUS, r.cookie, 12, &p))
            .unwrap();
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            r.cookie,
            12,
            &p,
        ))
        .unwrap();
    });
    assert_mentions(&msg, "two block status chunks");

    let msg = hostile_status(|s, r| {
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_NONE,
            r.cookie + 1,
            0,
            &[],
        ))
        .unwrap();
    });
    assert_mentions(&msg, "cookie");

    let msg = hostile_status(|s, r| {
        s.write_all(&chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, r.cookie, 0, &[]))
            .unwrap();
    });
    assert_mentions(&msg, "no extents");
}

#[test]
fn nbd_block_status_tolerates_a_last_extent_past_the_request() {
    // The protocol lets the last extent run past the request; it is clipped.
    let url = fake_server(|s, r| {
        let p = extents_payload(1, &[(4096, 0), (1 << 20, 3)]);
        s.write_all(&chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            r.cookie,
            20,
            &p,
        ))
        .unwrap();
    });
    let client = NbdClient::connect(&url, &["base:allocation"]).unwrap();
    let extents = client.block_status("base:allocation", 0, 8192).unwrap();
    assert_eq!(extents, vec![(0, 4096, 0), (4096, 8192, 3)]);
}

#[test]
fn nbd_hostile_negotiation_is_an_error() {
    let connect = |session: fn(&mut TcpStream)| {
        let url = fake_server_raw(session);
        NbdClient::connect(&url, &["base:allocation"])
            .err()
            .expect("a hostile server")
            .to_string()
    };
    let msg = connect(|s| {
        s.write_all(&NBD_MAGIC.to_be_bytes()).unwrap();
        s.write_all(&OLDSTYLE_MAGIC.to_be_bytes()).unwrap();
    });
    assert_mentions(&msg, "oldstyle");

    let msg = connect(|s| {
        s.write_all(&NBD_MAGIC.to_be_bytes()).unwrap();
        s.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
        s.write_all(&0u16.to_be_bytes()).unwrap();
    });
    assert_mentions(&msg, "fixed newstyle");

    let msg = connect(|s| s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap());
    assert_mentions(&msg, "does not greet like an NBD server");

    // An option reply claiming 4 GiB.
    let msg = connect(|s| {
        s.write_all(&NBD_MAGIC.to_be_bytes()).unwrap();
        s.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
        s.write_all(&FLAG_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
        read_u32(s).unwrap();
        let mut reply = option_reply(OPT_STRUCTURED_REPLY, REP_ACK, &[]);
        reply[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        s.write_all(&reply).unwrap();
    });
    assert_mentions(&msg, "option reply of 4294967295 bytes");

    // A meta context name longer than the protocol allows.
    let msg = connect(|s| {
        s.write_all(&NBD_MAGIC.to_be_bytes()).unwrap();
        s.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
        s.write_all(&FLAG_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
        read_u32(s).unwrap();
        skip(s, 16).unwrap();
        s.write_all(&option_reply(OPT_STRUCTURED_REPLY, REP_ACK, &[]))
            .unwrap();
        let mut data = 1u32.to_be_bytes().to_vec();
        data.extend(std::iter::repeat_n(b'x', 10_000));
        s.write_all(&option_reply(OPT_SET_META_CONTEXT, REP_META_CONTEXT, &data))
            .unwrap();
    });
    assert_mentions(&msg, "meta context reply of 10004 bytes");

    // The export is refused, with the server's reason.
    let url = fake_server_raw(|s| {
        s.write_all(&NBD_MAGIC.to_be_bytes()).unwrap();
        s.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
        s.write_all(&FLAG_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
        read_u32(s).unwrap();
        skip(s, 16).unwrap();
        s.write_all(&option_reply(OPT_STRUCTURED_REPLY, REP_ACK, &[]))
            .unwrap();
        skip(s, 16).unwrap();
        s.write_all(&option_reply(
            OPT_GO,
            REP_ERR_UNKNOWN,
            b"export 'fake' not present",
        ))
        .unwrap();
    });
    let msg = NbdClient::connect(&url, &[]).err().unwrap().to_string();
    assert_mentions(&msg, "no export \"fake\": export 'fake' not present");
}

#[test]
fn nbd_block_status_spans_several_requests_and_many_extents() {
    if !qemu_available() {
        return;
    }
    // A 3 GiB disk: 4096 data extents alternating with holes, data across
    // the 1 GiB request boundary, and data far away; all whole 64 KiB
    // clusters, since qcow2 reports allocation per cluster.
    let dir = tempfile::tempdir().unwrap();
    let qcow2 = dir.path().join("big.qcow2");
    let q = qcow2.to_str().unwrap();
    run("qemu-img", &["create", "-q", "-f", "qcow2", q, "3G"]);
    let mut want = Vec::new();
    let mut script = String::new();
    for i in 0..4096u64 {
        script.push_str(&format!("write -P 1 {} 64k\n", i * 128 * 1024));
        want.push((i * 128 * 1024, i * 128 * 1024 + 64 * 1024));
    }
    for (start, len) in [((1 << 30) - 65536, 131072), (2560 * MIB, 65536)] {
        script.push_str(&format!("write -P 2 {start} {len}\n"));
        want.push((start, start + len));
    }
    let mut qemu_io = Command::new("qemu-io")
        .args(["-f", "qcow2", q])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    qemu_io
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(qemu_io.wait().unwrap().success());

    let disk = Disk {
        dir,
        qcow2,
        raw: Vec::new(),
    };
    let server = serve_without_bitmap(&disk);
    let client = NbdClient::connect(&server.url, &["base:allocation"]).unwrap();
    assert_eq!(client.size(), 3 << 30);
    let extents = client
        .block_status("base:allocation", 0, client.size())
        .unwrap();
    assert_covers(&extents, 0, client.size());
    let data: Vec<(u64, u64)> = extents
        .iter()
        .filter(|e| e.2 & HOLE == 0)
        .map(|e| (e.0, e.1))
        .collect();
    // Compared piecewise: a failing assert_eq! would print 4098 pairs.
    assert_eq!(data.len(), want.len());
    if let Some(i) = (0..want.len()).find(|&i| data[i] != want[i]) {
        panic!("data extent {i} is {:?}, expected {:?}", data[i], want[i]);
    }
}

/// Waits for a request, then takes every request the client pipelined
/// behind it. Empty when the client hung up.
fn read_request_batch(s: &mut TcpStream) -> Vec<FakeRequest> {
    let mut bytes = vec![0; 28];
    if s.read_exact(&mut bytes).is_err() {
        return Vec::new();
    }
    std::thread::sleep(Duration::from_millis(30));
    s.set_nonblocking(true).unwrap();
    let mut more = [0; 4096];
    loop {
        match s.read(&mut more) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&more[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    let partial = bytes.len() % 28;
    if partial != 0 {
        let mut rest = vec![0; 28 - partial];
        s.read_exact(&mut rest).unwrap();
        bytes.extend(rest);
    }
    bytes.chunks(28).map(parse_request).collect()
}

/// The byte a strict fake server holds at `offset`.
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// A server that requires 4 KiB alignment and takes at most 64 KiB per
/// read. It answers each batch of pipelined reads in reverse order, each
/// read as two chunks, second half first; it answers block status for at
/// most 8 KiB at a time (4 KiB data, 4 KiB hole, alternating).
fn strict_server(s: &mut TcpStream) {
    fake_negotiation_with_block_sizes(s, [4096, 4096, 64 * 1024]);
    loop {
        let batch = read_request_batch(s);
        if batch.is_empty() {
            return;
        }
        for r in batch.iter().rev() {
            let aligned = r.offset % 4096 == 0
                && (r.len % 4096 == 0 || r.offset + u64::from(r.len) == FAKE_SIZE);
            let fits = r.offset + u64::from(r.len) <= FAKE_SIZE;
            let reply = match r.command {
                CMD_DISC => return,
                _ if !aligned || !fits || r.len == 0 => {
                    let mut p = 22u32.to_be_bytes().to_vec();
                    p.extend_from_slice(&9u16.to_be_bytes());
                    p.extend_from_slice(b"unaligned");
                    let len = p.len() as u32;
                    chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR_BIT | 1, r.cookie, len, &p)
                }
                CMD_READ => {
                    assert!(r.len <= 64 * 1024, "read of {} bytes", r.len);
                    let data: Vec<u8> = (r.offset..r.offset + u64::from(r.len))
                        .map(pattern)
                        .collect();
                    let half = data.len() / 2;
                    let mut reply = data_chunk(0, r.cookie, r.offset + half as u64, &data[half..]);
                    reply.extend(data_chunk(
                        REPLY_FLAG_DONE,
                        r.cookie,
                        r.offset,
                        &data[..half],
                    ));
                    reply
                }
                CMD_BLOCK_STATUS => {
                    let mut extents = Vec::new();
                    let mut at = r.offset;
                    while at < (r.offset + u64::from(r.len)).min(r.offset + 8192) {
                        let flags = if (at / 4096) % 2 == 0 { 0 } else { HOLE | ZERO };
                        extents.push((4096, flags));
                        at += 4096;
                    }
                    let p = extents_payload(1, &extents);
                    chunk(
                        REPLY_FLAG_DONE,
                        REPLY_TYPE_BLOCK_STATUS,
                        r.cookie,
                        p.len() as u32,
                        &p,
                    )
                }
                other => panic!("command {other}"),
            };
            s.write_all(&reply).unwrap();
        }
    }
}

#[test]
fn nbd_reads_are_aligned_split_and_reassembled_from_out_of_order_replies() {
    let url = fake_server_raw(strict_server);
    let client = NbdClient::connect(&url, &["base:allocation"]).unwrap();
    let mut rng = XorShift(42);
    for _ in 0..50 {
        let len = 1 + rng.below(300 * 1024);
        let offset = rng.below(FAKE_SIZE - len + 1);
        let mut buf = vec![0xee; len as usize];
        client.read_at(&mut buf, offset).unwrap();
        let want: Vec<u8> = (offset..offset + len).map(pattern).collect();
        assert!(buf == want, "read of {len} bytes at {offset} differs");
    }
    let mut whole = vec![0; FAKE_SIZE as usize];
    client.read_at(&mut whole, 0).unwrap();
    assert!(whole
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern(i as u64)));
}

#[test]
fn nbd_block_status_asks_again_when_the_server_answers_a_prefix() {
    let url = fake_server_raw(strict_server);
    let client = NbdClient::connect(&url, &["base:allocation"]).unwrap();
    let (start, end) = (5000, 30000);
    let extents = client
        .block_status("base:allocation", start, end - start)
        .unwrap();
    let mut want = vec![(5000, 8192, HOLE | ZERO)];
    for block in 2..7u64 {
        let flags = if block % 2 == 0 { 0 } else { HOLE | ZERO };
        want.push((block * 4096, (block + 1) * 4096, flags));
    }
    want.push((28672, 30000, HOLE | ZERO));
    assert_eq!(extents, want);
}

#[test]
fn nbd_simple_replies_serve_reads_when_structured_replies_are_refused() {
    // An old server: no structured replies, so reads come back as simple
    // replies with the data after them, and there is no block status.
    fn old_server(s: &mut TcpStream) {
        s.write_all(&NBD_MAGIC.to_be_bytes()).unwrap();
        s.write_all(&IHAVEOPT.to_be_bytes()).unwrap();
        s.write_all(&FLAG_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
        read_u32(s).unwrap();
        loop {
            // The client hangs up here when it needs block status.
            let Ok(IHAVEOPT) = read_u64(s) else {
                return;
            };
            let option = read_u32(s).unwrap();
            let len = read_u32(s).unwrap();
            skip(s, len.into()).unwrap();
            if option != OPT_GO {
                s.write_all(&option_reply(option, REP_ERR_UNSUP, &[]))
                    .unwrap();
                continue;
            }
            let mut export = INFO_EXPORT.to_be_bytes().to_vec();
            export.extend_from_slice(&FAKE_SIZE.to_be_bytes());
            export.extend_from_slice(&1u16.to_be_bytes());
            s.write_all(&option_reply(option, REP_INFO, &export))
                .unwrap();
            s.write_all(&option_reply(option, REP_ACK, &[])).unwrap();
            break;
        }
        loop {
            let batch = read_request_batch(s);
            for r in &batch {
                if r.command == CMD_DISC {
                    return;
                }
                let mut reply = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
                reply.extend_from_slice(&0u32.to_be_bytes());
                reply.extend_from_slice(&r.cookie.to_be_bytes());
                reply.extend((r.offset..r.offset + u64::from(r.len)).map(pattern));
                s.write_all(&reply).unwrap();
            }
            if batch.is_empty() {
                return;
            }
        }
    }
    let client = NbdClient::connect(&fake_server_raw(old_server), &[]).unwrap();
    let mut buf = vec![0; 5 * MIB as usize / 2 + 3];
    client.read_at(&mut buf, 7).unwrap();
    assert!(buf.iter().zip(7..).all(|(&b, i)| b == pattern(i)));

    let err = NbdClient::connect(&fake_server_raw(old_server), &["base:allocation"])
        .err()
        .unwrap();
    assert_mentions(&err.to_string(), "refused structured replies");
}

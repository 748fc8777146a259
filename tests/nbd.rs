//! Backups of NBD exports, against a real server: `qemu-nbd` serving a
//! qcow2 disk with a persistent dirty bitmap, as QEMU exports a live VM's
//! disk for backup.
//!
//! Skipped (with a message) where qemu-utils is not installed, except in
//! CI (`CI` set), which installs it: there a missing tool fails the test.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

/// Why the tests cannot run here, if they cannot.
fn missing_qemu() -> Option<String> {
    for tool in ["qemu-nbd", "qemu-img", "qemu-io"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let why = format!("{tool} is not installed (Debian package qemu-utils)");
            assert!(std::env::var_os("CI").is_none(), "{why}, and CI needs it");
            return Some(why);
        }
    }
    None
}

fn qemu(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `pattern` bytes (or zeros with `None`) at `offset` of the qcow2.
fn qemu_write(disk: &Path, pattern: Option<u8>, offset: u64, len: u64) {
    let cmd = match pattern {
        Some(p) => format!("write -P {p:#x} {offset} {len}"),
        None => format!("write -z {offset} {len}"),
    };
    qemu(
        "qemu-io",
        &["-f", "qcow2", "-c", &cmd, disk.to_str().unwrap()],
    );
}

/// The disk's contents, as QEMU reads them.
fn raw_of(disk: &Path, out: &Path) -> Vec<u8> {
    qemu(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            disk.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(out).unwrap()
}

/// A `qemu-nbd` serving `disk` read-only on 127.0.0.1, stopped on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(disk: &Path, export: &str, bitmap: Option<&str>) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new("qemu-nbd");
        cmd.args(["-r", "-t", "-f", "qcow2", "-b", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-x", export]);
        if let Some(b) = bitmap {
            cmd.args(["-B", b]);
        }
        let child = cmd
            .arg(disk)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "qemu-nbd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn url(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{export}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    disk: PathBuf,
    vault: PathBuf,
}

/// A 64 MiB qcow2 disk with 8 MiB of data, a bitmap `bm0` added after it,
/// and a vault.
fn setup() -> Option<Setup> {
    if let Some(why) = missing_qemu() {
        eprintln!("skipping: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let disk = path.join("disk.qcow2");
    qemu(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", disk.to_str().unwrap(), "64M"],
    );
    qemu_write(&disk, Some(0x11), 0, 8 * MIB);
    qemu_write(&disk, Some(0x5a), 30 * MIB, 3 * MIB);
    let vault = path.join("v");
    init_repo(&vault);
    Some(Setup {
        _dir: dir,
        dir: path,
        disk,
        vault,
    })
}

fn add_bitmap(disk: &Path) {
    qemu(
        "qemu-img",
        &["bitmap", "--add", disk.to_str().unwrap(), "bm0"],
    );
}

fn cli(args: &[&str]) -> Run {
    Cli::new().run(args)
}

fn backup_json(v: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["backup", v.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push("--json");
    let r = cli(&args);
    r.expect_ok("backup over NBD");
    r.json()
}

fn restore(v: &Path, point: &str, out: &Path) {
    cli(&["restore", v.to_str().unwrap(), point, out.to_str().unwrap()]).expect_ok("restore");
}

fn disk_figure(report: &serde_json::Value, field: &str) -> u64 {
    report["body"]["disks"][0][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {report}"))
}

#[test]
fn a_full_backup_over_nbd_equals_the_disk_and_skips_its_holes() {
    let Some(s) = setup() else { return };
    let server = Server::start(&s.disk, "vm1-disk0", None);
    let url = server.url("vm1-disk0");
    let report = backup_json(&s.vault, &[&url, "--disk", "root"]);
    // Only the 11 MiB QEMU holds were read: the rest is unallocated.
    let read = disk_figure(&report, "bytes_read");
    assert!(
        read <= 12 * MIB,
        "read {read} bytes of a 64 MiB disk with 11 MiB of data"
    );
    let out = s.dir.join("restored.img");
    restore(&s.vault, "latest", &out);
    let expected = raw_of(&s.disk, &s.dir.join("expected.raw"));
    assert!(std::fs::read(&out).unwrap() == expected, "restore differs");
    // The holes QEMU reported are holes of the restored file.
    assert!(
        allocated_bytes(&out) <= 16 * MIB,
        "the restore allocates {} bytes",
        allocated_bytes(&out)
    );
    let show = cli(&["show", s.vault.to_str().unwrap(), "latest", "--json"]);
    let show = show.json();
    assert_eq!(show["disks"][0]["origin"]["kind"], "nbd", "{show}");
    assert!(show["source"].as_str().unwrap().contains(&url), "{show}");
}

#[test]
fn an_incremental_backup_reads_only_what_the_dirty_bitmap_marks() {
    let Some(s) = setup() else { return };
    add_bitmap(&s.disk);
    let first = {
        let server = Server::start(&s.disk, "d", Some("bm0"));
        backup_json(&s.vault, &[&server.url("d"), "--disk", "root"])
    };
    // The guest writes 1.25 MiB, and zeroes 1 MiB of its data.
    qemu_write(&s.disk, Some(0x22), 20 * MIB, MIB);
    qemu_write(&s.disk, Some(0x33), 4 * MIB + 4096, 256 << 10);
    qemu_write(&s.disk, None, 31 * MIB, MIB);
    let server = Server::start(&s.disk, "d", Some("bm0"));
    let parent = first["point"].as_str().unwrap().to_string();
    let report = backup_json(
        &s.vault,
        &[
            &server.url("d"),
            "--disk",
            "root",
            "--dirty-bitmap",
            "bm0",
            "--parent",
            &parent,
        ],
    );
    let read = disk_figure(&report, "bytes_read");
    assert!(
        read <= 3 * MIB,
        "read {read} bytes for about 2.3 MiB marked dirty"
    );
    let out = s.dir.join("day2.img");
    restore(&s.vault, "latest", &out);
    let expected = raw_of(&s.disk, &s.dir.join("expected.raw"));
    assert!(std::fs::read(&out).unwrap() == expected, "restore differs");
    let show = cli(&["show", s.vault.to_str().unwrap(), "latest", "--json"]).json();
    assert_eq!(show["disks"][0]["origin"]["kind"], "changed-blocks");
    assert_eq!(show["disks"][0]["origin"]["parent"], parent.as_str());
    // The same point as a full read of the new state gives.
    let full = backup_json(&s.vault, &[&server.url("d"), "--disk", "root"]);
    assert_eq!(
        report["body"]["disks"][0]["image_blake3"], full["body"]["disks"][0]["image_blake3"],
        "the incremental and the full backup disagree"
    );
}

#[test]
fn a_bitmap_that_missed_writes_is_caught_by_verify_unchanged() {
    let Some(s) = setup() else { return };
    add_bitmap(&s.disk);
    let first = {
        let server = Server::start(&s.disk, "d", None);
        backup_json(&s.vault, &[&server.url("d"), "--disk", "root"])
    };
    let parent = first["point"].as_str().unwrap().to_string();
    // A write the bitmap records, then the bitmap is lost and recreated
    // (as after a VM restart with a transient bitmap): it misses the write.
    qemu_write(&s.disk, Some(0x44), 40 * MIB, 64 << 10);
    let d = s.disk.to_str().unwrap();
    qemu("qemu-img", &["bitmap", "--remove", d, "bm0"]);
    add_bitmap(&s.disk);
    qemu_write(&s.disk, Some(0x55), 50 * MIB, 64 << 10);
    let server = Server::start(&s.disk, "d", Some("bm0"));
    let url = server.url("d");
    let args = |verify: bool| {
        let mut a = vec![
            "backup".to_string(),
            s.vault.to_str().unwrap().to_string(),
            url.clone(),
            "--disk".into(),
            "root".into(),
            "--dirty-bitmap".into(),
            "bm0".into(),
            "--parent".into(),
            parent.clone(),
        ];
        if verify {
            a.push("--verify-unchanged".into());
        }
        a
    };
    let r = Cli::new().run(&args(true));
    r.expect_code(1, "a bitmap that missed a write")
        .expect_mentions("root", "names the disk")
        .expect_mentions(&format!("{}", 40 * MIB), "names the range that differs");
    // No point was written by the refused backup.
    let points = cli(&["points", s.vault.to_str().unwrap(), "--json"]).json();
    assert_eq!(points.as_array().map(Vec::len), Some(1), "{points}");
}

#[test]
fn nbd_refusals_name_what_is_wrong() {
    let Some(s) = setup() else { return };
    let server = Server::start(&s.disk, "d", None);
    let v = s.vault.to_str().unwrap();
    // A bitmap the export does not have.
    cli(&[
        "backup",
        v,
        &server.url("d"),
        "--disk",
        "root",
        "--dirty-bitmap",
        "nosuch",
        "--parent",
        "latest",
    ])
    .expect_mentions("qemu:dirty-bitmap:nosuch", "names the bitmap");
    // An export the server does not have.
    let r = cli(&["backup", v, &server.url("other"), "--disk", "root"]);
    assert_ne!(r.code, 0);
    r.expect_mentions("other", "names the export");
    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = cli(&[
        "backup",
        v,
        &format!("nbd://127.0.0.1:{port}/d"),
        "--disk",
        "root",
    ]);
    assert_ne!(r.code, 0);
    r.expect_mentions(&format!("127.0.0.1:{port}"), "names the server");
    // An NBD disk needs a name; --dirty-bitmap needs --parent and NBD.
    cli(&["backup", v, &server.url("d")]).expect_code(2, "unnamed NBD disk");
    cli(&[
        "backup",
        v,
        &server.url("d"),
        "--disk",
        "root",
        "--dirty-bitmap",
        "bm0",
    ])
    .expect_code(2, "bitmap without parent");
    cli(&[
        "backup",
        v,
        s.disk.to_str().unwrap(),
        "--dirty-bitmap",
        "bm0",
        "--parent",
        "latest",
    ])
    .expect_code(2, "bitmap of a file");
    // Nothing was written by any of them.
    let points = cli(&["points", v, "--json"]).json();
    assert_eq!(points.as_array().map(Vec::len), Some(0), "{points}");
}

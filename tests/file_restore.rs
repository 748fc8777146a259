//! File-level restore from the command line: a GPT disk with two ext4
//! partitions is backed up; `partitions`, `ls`, `cat` and `extract` read
//! files out of the recovery point, and what they give equals what
//! `debugfs -R rdump` gives from the original partitions.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Whether the tools that build the disk are here. Without them the tests
/// skip, except in CI, which installs them and must not skip silently.
fn tools_available(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{missing:?} not installed, and CI is set: install fdisk, e2fsprogs and ntfs-3g"
        );
        println!("skipping: {missing:?} not on PATH");
        return false;
    }
    true
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

const SECTOR: u64 = 512;
/// Partition 1 (`root`) and 2 (`data`): 16 MiB each.
const PARTS: [(u64, u64, &str); 2] = [(2048, 32768, "root"), (34816, 32768, "data")];

/// A desk with the source trees, their partition images and the GPT disk
/// holding both, backed up into a vault as disk `vm`.
struct Desk {
    dir: tempfile::TempDir,
    parts: Vec<PathBuf>,
    big: Vec<u8>,
    tool: Vec<u8>,
}

impl Desk {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn vault(&self) -> String {
        s(&self.path("vault"))
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn build_desk() -> Desk {
    let dir = scratch_dir();
    let mut rng = Xorshift::new(13);
    // Partition 1: a small root file system.
    let root = dir.path().join("src-root");
    let tool = rng.bytes(1_048_576 + 333);
    write_file(&root.join("etc/hostname"), b"vm-42\n", 0o644);
    write_file(
        &root.join("etc/fstab"),
        b"/dev/vda2 / ext4 defaults 0 1\n",
        0o644,
    );
    write_file(&root.join("etc/empty"), b"", 0o600);
    write_file(&root.join("usr/bin/tool"), &tool, 0o755);
    write_file(
        &root.join("home/u/notes.txt"),
        b"remember the milk\n",
        0o640,
    );
    std::fs::create_dir_all(root.join("root/private")).unwrap();
    std::fs::set_permissions(
        root.join("root/private"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::os::unix::fs::symlink("../usr/bin/tool", root.join("etc/tool-link")).unwrap();
    // Partition 2: data.
    let data = dir.path().join("src-data");
    let big = rng.bytes(3 * 1_048_576 + 17);
    write_file(&data.join("data/big.bin"), &big, 0o644);
    write_file(&data.join("data/sub/a.txt"), b"alpha\n", 0o644);

    let mut parts = Vec::new();
    for (src, (_, sectors, label)) in [&root, &data].into_iter().zip(PARTS) {
        let img = dir.path().join(format!("{label}.img"));
        run(
            "mke2fs",
            &[
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                label,
                "-d",
                &s(src),
                &s(&img),
                &format!("{}k", sectors * SECTOR / 1024),
            ],
        );
        parts.push(img);
    }
    let disk = dir.path().join("disk.img");
    let disk_sectors = PARTS[1].0 + PARTS[1].1 + 2048;
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(disk_sectors * SECTOR)
        .unwrap();
    let script: String = std::iter::once("label: gpt\n".to_string())
        .chain(
            PARTS
                .iter()
                .map(|(start, size, name)| format!("start={start}, size={size}, name={name}\n")),
        )
        .collect();
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", &s(&disk)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk");
    for (img, (start, _, _)) in parts.iter().zip(PARTS) {
        write_at(&disk, start * SECTOR, &std::fs::read(img).unwrap());
    }
    let desk = Desk {
        dir,
        parts,
        big,
        tool,
    };
    let cli = Cli::new();
    cli.run(&["init", &desk.vault()]).expect_ok("init");
    cli.run(&["backup", &desk.vault(), &s(&disk), "--disk", "vm"])
        .expect_ok("backup");
    desk
}

#[test]
fn partitions_lists_the_table_and_the_file_systems() {
    if !tools_available(&["sfdisk", "mke2fs"]) {
        return;
    }
    let desk = build_desk();
    let cli = Cli::new();
    let run = cli.run(&["partitions", &desk.vault(), "latest"]);
    run.expect_ok("partitions")
        .expect_mentions("GPT", "the table kind")
        .expect_mentions("root", "the first label")
        .expect_mentions("data", "the second label")
        .expect_mentions("ext4", "the file systems");
    let doc = cli
        .run(&["partitions", &desk.vault(), "latest", "--json"])
        .json();
    let parts = doc["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    for (p, (start, size, label)) in parts.iter().zip(PARTS) {
        assert_eq!(p["start"], start * SECTOR);
        assert_eq!(p["size"], size * SECTOR);
        assert_eq!(p["label"], label);
        assert_eq!(p["file_system"], "ext4");
    }
}

#[test]
fn ls_and_cat_read_files_by_partition_number_or_label() {
    if !tools_available(&["sfdisk", "mke2fs"]) {
        return;
    }
    let desk = build_desk();
    let cli = Cli::new();
    let v = desk.vault();
    let run = cli.run(&["ls", &v, "latest", "--part", "1", "/etc"]);
    run.expect_ok("ls /etc");
    for name in ["hostname", "fstab", "empty", "tool-link -> ../usr/bin/tool"] {
        run.expect_mentions(name, "ls /etc");
    }
    assert!(run.stdout.contains("-rw-r--r--"), "{}", run.stdout);
    let doc = cli
        .run(&["ls", &v, "latest", "--part", "root", "/", "-R", "--json"])
        .json();
    let paths: Vec<&str> = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in [
        "/etc/hostname",
        "/usr/bin/tool",
        "/home/u/notes.txt",
        "/root/private",
    ] {
        assert!(paths.contains(&p), "{p} in {paths:?}");
    }

    let out = cli
        .command(&["cat", &v, "latest", "--part", "data", "/data/big.bin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == desk.big, "cat gives the file's bytes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("from the repository"), "{stderr}");

    let out = cli
        .command(&["cat", &v, "latest", "--part", "1", "/usr/bin/tool"])
        .output()
        .unwrap();
    assert!(out.stdout == desk.tool);

    // A small file reads a small part of the disk.
    let doc = cli
        .run(&["ls", &v, "latest", "--part", "1", "/etc/hostname", "--json"])
        .json();
    let fetched = doc["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched < 8 * MIB,
        "listing one file fetched {fetched} bytes"
    );
}

#[test]
fn wrong_choices_are_refused_by_name() {
    if !tools_available(&["sfdisk", "mke2fs"]) {
        return;
    }
    let desk = build_desk();
    let cli = Cli::new();
    let v = desk.vault();
    // Two file systems and no --part: which one?
    cli.run(&["ls", &v, "latest", "/"])
        .expect_mentions("--part", "the choice is asked for");
    cli.run(&["ls", &v, "latest", "--part", "7", "/"])
        .expect_code(5, "no partition 7")
        .expect_mentions("1 (root)", "the partitions are listed");
    cli.run(&["ls", &v, "latest", "--part", "1", "/no/such/file"])
        .expect_code(5, "no such path")
        .expect_mentions("/no/such/file", "the path is named");
    cli.run(&["cat", &v, "latest", "--part", "1", "/etc"])
        .expect_mentions("not a regular file", "a directory is not catted");
    cli.run(&["ls", &v, "latest", "--disk", "nope", "--part", "1", "/"])
        .expect_code(5, "no such disk")
        .expect_mentions("vm", "the disks are listed");
}

/// Every entry under `dir`: relative path -> (kind, mode, mtime, bytes or
/// link target).
fn tree(dir: &Path) -> std::collections::BTreeMap<String, (char, u32, i64, Vec<u8>)> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = s(p.strip_prefix(dir).unwrap());
            let (kind, content) = if m.file_type().is_symlink() {
                ('l', s(&std::fs::read_link(&p).unwrap()).into_bytes())
            } else if m.is_dir() {
                stack.push(p.clone());
                ('d', Vec::new())
            } else {
                ('f', std::fs::read(&p).unwrap())
            };
            // Link modes are not kept by every tool; their targets are.
            let mode = if kind == 'l' { 0 } else { m.mode() & 0o7777 };
            let mtime = if kind == 'l' { 0 } else { m.mtime() };
            out.insert(rel, (kind, mode, mtime, content));
        }
    }
    out
}

#[test]
fn extract_equals_debugfs_rdump_of_the_original_partitions() {
    if !tools_available(&["sfdisk", "mke2fs", "debugfs"]) {
        return;
    }
    let desk = build_desk();
    let cli = Cli::new();
    let v = desk.vault();
    for (n, part) in desk.parts.iter().enumerate() {
        let want = desk.path(&format!("rdump-{n}"));
        std::fs::create_dir(&want).unwrap();
        run(
            "debugfs",
            &["-R", &format!("rdump / {}", s(&want)), &s(part)],
        );
        let got = desk.path(&format!("extract-{n}"));
        let number = (n + 1).to_string();
        cli.run(&[
            "extract",
            &v,
            "latest",
            "--part",
            &number,
            "/",
            "--to",
            &s(&got),
        ])
        .expect_ok("extract /")
        .expect_mentions("from the repository", "what was read is reported");
        let (mut want, got) = (tree(&want), tree(&got));
        // lost+found is made by mke2fs, and rdump leaves it out or not
        // depending on its version: compare everything else.
        want.retain(|k, _| !k.starts_with("lost+found"));
        let got: std::collections::BTreeMap<_, _> = got
            .into_iter()
            .filter(|(k, _)| !k.starts_with("lost+found"))
            .collect();
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>(),
            "partition {number}: the same entries"
        );
        for (path, w) in &want {
            assert!(got[path] == *w, "partition {number}: {path} differs");
        }
    }

    // Chosen paths land at their full paths, and nothing else is written.
    let some = desk.path("some");
    cli.run(&[
        "extract",
        &v,
        "latest",
        "--part",
        "root",
        "/etc/hostname",
        "/home/u",
        "--to",
        &s(&some),
    ])
    .expect_ok("extract two paths");
    assert_eq!(
        std::fs::read(some.join("etc/hostname")).unwrap(),
        b"vm-42\n"
    );
    assert_eq!(
        std::fs::read(some.join("home/u/notes.txt")).unwrap(),
        b"remember the milk\n"
    );
    assert!(!some.join("etc/fstab").exists());
    assert!(!some.join("usr").exists());

    // Existing files are not overwritten without --force.
    cli.run(&[
        "extract",
        &v,
        "latest",
        "--part",
        "root",
        "/etc/hostname",
        "--to",
        &s(&some),
    ])
    .expect_mentions("already exists", "no silent overwrite");
    std::fs::write(some.join("etc/hostname"), b"changed").unwrap();
    cli.run(&[
        "extract",
        &v,
        "latest",
        "--part",
        "root",
        "/etc/hostname",
        "--to",
        &s(&some),
        "--force",
    ])
    .expect_ok("extract --force");
    assert_eq!(
        std::fs::read(some.join("etc/hostname")).unwrap(),
        b"vm-42\n"
    );
}

/// `serve-nbd`: qemu-img copies the disk of a point through the server,
/// and the copy is the image, byte for byte.
#[test]
fn serve_nbd_gives_qemu_img_the_identical_disk() {
    if !tools_available(&["qemu-img"]) {
        return;
    }
    let dir = scratch_dir();
    let image = dir.path().join("disk.img");
    let size = 12 * MIB + 512;
    let mut rng = Xorshift::new(21);
    write_sparse_image(
        &image,
        size,
        &[(0, rng.bytes(3_000_000)), (8 * MIB, rng.bytes(2_000_000))],
    );
    let vault = dir.path().join("vault");
    let cli = Cli::new();
    cli.run(&["init", &s(&vault)]).expect_ok("init");
    cli.run(&["backup", &s(&vault), &s(&image), "--disk", "root"])
        .expect_ok("backup");
    // A free port: bind, learn it, release it for the server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let mut server = cli
        .command(&["serve-nbd", &s(&vault), "latest", "--bind", &bind])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(&bind).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for url in [format!("nbd://{bind}/root"), format!("nbd://{bind}")] {
        let out = dir.path().join("copy.raw");
        let _ = std::fs::remove_file(&out);
        run(
            "qemu-img",
            &["convert", "-f", "raw", "-O", "raw", &url, &s(&out)],
        );
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&image).unwrap(),
            "{url}: the copy equals the image"
        );
        run("qemu-img", &["compare", "-f", "raw", &url, &s(&image)]);
    }
    let map = run(
        "qemu-img",
        &[
            "map",
            "--output=json",
            "-f",
            "raw",
            &format!("nbd://{bind}/root"),
        ],
    );
    assert!(map.contains("\"data\": false"), "holes are reported: {map}");
    // SIGTERM stops it cleanly.
    terminate(server.id());
    let status = server.wait().unwrap();
    let mut stderr = String::new();
    use std::io::Read;
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "serve-nbd exit: {status:?}\n{stderr}");
    assert!(stderr.contains("read "), "{stderr}");
}

fn terminate(pid: u32) {
    run("kill", &["-TERM", &pid.to_string()]);
}

/// A Windows disk: an NTFS volume made with mkntfs and filled with ntfscp
/// (no mount), as partition 1 of an MBR disk. ls, cat and extract give
/// what ntfscat gives from the original volume.
#[test]
fn ntfs_files_come_back_like_ntfscat_gives_them() {
    if !tools_available(&["mkntfs", "ntfscp", "ntfscat", "sfdisk"]) {
        return;
    }
    let dir = scratch_dir();
    let vol = dir.path().join("ntfs.img");
    std::fs::File::create(&vol)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    run("mkntfs", &["-F", "-Q", "-q", &s(&vol)]);
    let mut rng = Xorshift::new(77);
    let files = [
        ("Report.docx", rng.bytes(1_048_576 + 5)),
        ("hosts", b"127.0.0.1 localhost\r\n".to_vec()),
        ("résumé.txt", b"curriculum vitae\r\n".to_vec()),
    ];
    for (name, bytes) in &files {
        let local = dir.path().join("local");
        std::fs::write(&local, bytes).unwrap();
        run("ntfscp", &["-q", &s(&vol), &s(&local), &format!("/{name}")]);
    }
    let disk = dir.path().join("windows.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(34 * MIB)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", &s(&disk)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=65536, type=7\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk");
    write_at(&disk, MIB, &std::fs::read(&vol).unwrap());

    let cli = Cli::new();
    let v = s(&dir.path().join("vault"));
    cli.run(&["init", &v]).expect_ok("init");
    cli.run(&["backup", &v, &s(&disk), "--disk", "c"])
        .expect_ok("backup");
    cli.run(&["partitions", &v, "latest"])
        .expect_ok("partitions")
        .expect_mentions("ntfs", "the NTFS partition is recognised");
    // One file system on the disk: no --part needed.
    let listing = cli.run(&["ls", &v, "latest", "/"]);
    listing.expect_ok("ls /");
    for (name, bytes) in &files {
        listing.expect_mentions(name, "ls lists the file");
        let want = Command::new("ntfscat")
            .args([&s(&vol), &format!("/{name}")])
            .output()
            .unwrap();
        assert!(want.stdout == *bytes, "ntfscat of the volume gives {name}");
        let out = cli
            .command(&["cat", &v, "latest", &format!("/{}", name.to_uppercase())])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == *bytes, "cat {name} (any case)");
    }
    let to = dir.path().join("out");
    cli.run(&["extract", &v, "latest", "--part", "1", "/", "--to", &s(&to)])
        .expect_ok("extract /");
    for (name, bytes) in &files {
        assert!(std::fs::read(to.join(name)).unwrap() == *bytes, "{name}");
    }
}

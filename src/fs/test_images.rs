//! Real disk images for the tests of partition tables, ext4 and extract,
//! built with e2fsprogs and util-linux: a source tree, `mke2fs -d` of it,
//! and GPT or MBR disks holding such file systems.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bytes per partition image (and sectors of 512 bytes in it).
pub const PART_BYTES: u64 = 16 << 20;
pub const PART_SECTORS: u64 = PART_BYTES / 512;

/// True when every tool is on PATH; otherwise prints "skipping", or
/// fails when `CI` is set (CI must run these tests).
pub fn tools_available(tools: &[&str]) -> bool {
    for tool in tools {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "{tool} is not installed, and CI is set: install e2fsprogs and fdisk"
            );
            println!("skipping: {tool} is not on PATH (install e2fsprogs and fdisk)");
            return false;
        }
    }
    true
}

pub fn run(program: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name that is not UTF-8 ("café" in Latin-1).
pub const LATIN1_NAME: &[u8] = b"caf\xe9.txt";

/// Pseudo-random bytes, the same for the same seed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes the tree a user would back up: nested directories, a 1 MiB
/// file of noise, a small text file, an empty file, a setuid program, a
/// symlink, a non-UTF-8 name and a sparse file with a hole. `tag` makes
/// two trees differ.
pub fn make_tree(root: &Path, tag: &str) {
    let p = |rel: &str| root.join(rel);
    std::fs::create_dir_all(p("etc/conf.d")).unwrap();
    std::fs::create_dir_all(p("home/user/docs/deep")).unwrap();
    std::fs::write(p("big.bin"), noise(tag.len() as u64 + 7, 1 << 20)).unwrap();
    std::fs::write(p("etc/hostname"), format!("{tag}\n")).unwrap();
    std::fs::write(p("etc/conf.d/net"), format!("iface {tag} dhcp\n")).unwrap();
    std::fs::write(p("home/user/docs/deep/notes.txt"), "deep notes\n").unwrap();
    std::fs::write(p("empty"), b"").unwrap();
    std::fs::write(p("setuid-tool"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(p("setuid-tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(p("etc/secret"), b"s3cret\n").unwrap();
    std::fs::set_permissions(p("etc/secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    symlink("etc/hostname", p("hostname-link")).unwrap();
    symlink("/nowhere/absolute", p("dangling")).unwrap();
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(LATIN1_NAME)),
        b"latin-1\n",
    )
    .unwrap();
    let sparse = std::fs::File::create(p("sparse.img")).unwrap();
    sparse.set_len(4 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"the end", (4 << 20) - 7).unwrap();
    sparse.write_all_at(b"start", 0).unwrap();
}

/// `mke2fs -d SRC` of a new tree: the partition image and its source.
pub fn make_ext4(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let src = dir.join(format!("src-{tag}"));
    make_tree(&src, tag);
    let img = dir.join(format!("{tag}.img"));
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            tag,
            "-d",
            src.to_str().unwrap(),
            img.to_str().unwrap(),
            "16M",
        ],
        None,
    );
    (img, src)
}

/// Copies `part` into `disk` at sector `start`.
pub fn place(disk: &Path, part: &Path, start_sector: u64) {
    use std::os::unix::fs::FileExt;
    let bytes = std::fs::read(part).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.write_all_at(&bytes, start_sector * 512).unwrap();
}

/// A zero-filled disk of `bytes` with the partition table `script`
/// written by `sfdisk`.
pub fn make_disk(path: &Path, bytes: u64, script: &str) {
    std::fs::File::create(path).unwrap().set_len(bytes).unwrap();
    run("sfdisk", &["-q", path.to_str().unwrap()], Some(script));
}

/// First sectors of the two partitions of [`make_gpt_disk`].
pub const GPT_STARTS: [u64; 2] = [2048, 2048 + PART_SECTORS];

/// A GPT disk with two ext4 partitions, named `alpha` and `beta`; returns
/// the disk and each partition's image and source tree.
pub fn make_gpt_disk(dir: &Path) -> (PathBuf, Vec<(PathBuf, PathBuf)>) {
    let disk = dir.join("gpt-disk.img");
    let script = format!(
        "label: gpt\n\
         start={}, size={PART_SECTORS}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=alpha\n\
         start={}, size={PART_SECTORS}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=beta\n",
        GPT_STARTS[0], GPT_STARTS[1]
    );
    make_disk(&disk, (2048 + 2 * PART_SECTORS + 2048) * 512, &script);
    let parts: Vec<_> = ["alpha", "beta"]
        .iter()
        .zip(GPT_STARTS)
        .map(|(tag, start)| {
            let (img, src) = make_ext4(dir, tag);
            place(&disk, &img, start);
            (img, src)
        })
        .collect();
    (disk, parts)
}

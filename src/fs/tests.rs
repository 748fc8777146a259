//! ext4 browsing and extraction, on file systems made by `mke2fs -d`
//! from trees written here, compared with those trees and with what
//! `debugfs rdump` extracts.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::extract::{extract, ExtractOptions};
use super::test_images::*;
use super::*;
use crate::image::FileImage;
use crate::Error;

fn open(img: &Path) -> Box<dyn FileSystem> {
    open_filesystem(Box::new(FileImage::open(img).unwrap())).unwrap()
}

fn kind_of(m: &std::fs::Metadata) -> EntryKind {
    let t = m.file_type();
    if t.is_symlink() {
        EntryKind::Symlink
    } else if t.is_dir() {
        EntryKind::Dir
    } else if t.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

/// What a user compares between two trees: per relative path, the kind,
/// the mode, the contents (or link target) and the mtime to the second.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: EntryKind,
    mode: u32,
    content: Vec<u8>,
    mtime: i64,
}

fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Node>) {
    for item in std::fs::read_dir(dir).unwrap() {
        let path = item.unwrap().path();
        let m = std::fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        if rel == b"lost+found" {
            continue;
        }
        let kind = kind_of(&m);
        let content = match kind {
            EntryKind::File => std::fs::read(&path).unwrap(),
            EntryKind::Symlink => std::fs::read_link(&path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec(),
            _ => Vec::new(),
        };
        if kind == EntryKind::Dir {
            walk(root, &path, out);
        }
        out.insert(
            rel,
            Node {
                kind,
                mode: if kind == EntryKind::Symlink {
                    0
                } else {
                    m.mode() & 0o7777
                },
                content,
                mtime: m.mtime(),
            },
        );
    }
}

fn opts_no_owner() -> ExtractOptions {
    ExtractOptions {
        overwrite: false,
        restore_owner: false,
    }
}

fn quiet() -> impl FnMut(&str) {
    |_| {}
}

fn opts(overwrite: bool) -> ExtractOptions {
    // Owners are those of the test's own files, so restoring them needs
    // no privilege, and keeps the setuid bit.
    ExtractOptions {
        overwrite,
        restore_owner: true,
    }
}

#[test]
fn ls_shows_the_source_tree_with_kinds_sizes_modes_and_times() {
    if !tools_available(&["mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, src) = make_ext4(dir.path(), "alpha");
    let fs = open(&img);
    assert_eq!(fs.kind(), "ext4");
    for sub in ["/", "/etc", "/etc/", "/home/user/docs"] {
        let listed: Vec<_> = fs
            .read_dir(sub)
            .unwrap()
            .into_iter()
            .filter(|e| e.name != b"lost+found")
            .collect();
        let local = src.join(sub.trim_start_matches('/'));
        let mut expected: Vec<_> = std::fs::read_dir(&local)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                let kind = kind_of(&m);
                (
                    e.file_name().as_bytes().to_vec(),
                    kind,
                    if kind == EntryKind::Dir { 0 } else { m.len() },
                    m.mode() & 0o7777,
                    (m.uid(), m.gid()),
                    // mke2fs -d copies whole seconds only.
                    m.mtime(),
                )
            })
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        let got: Vec<_> = listed
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.kind,
                    e.size,
                    e.mode,
                    (e.uid, e.gid),
                    e.modified.unwrap().secs,
                )
            })
            .collect();
        assert_eq!(got, expected, "listing of {sub}");
    }
    let root = fs.metadata("/").unwrap();
    assert_eq!(
        (root.name.as_slice(), root.kind),
        (&b"/"[..], EntryKind::Dir)
    );
    let link = fs.metadata("/hostname-link").unwrap();
    assert_eq!(
        link.kind,
        EntryKind::Symlink,
        "the last component is not followed"
    );
    assert_eq!(fs.read_link("/hostname-link").unwrap(), b"etc/hostname");
    assert_eq!(fs.metadata("/setuid-tool").unwrap().mode, 0o4755);
}

#[test]
fn cat_gives_the_source_bytes_including_holes_and_odd_names() {
    if !tools_available(&["mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, src) = make_ext4(dir.path(), "alpha");
    let fs = open(&img);
    for rel in [
        "big.bin",
        "etc/hostname",
        "empty",
        "sparse.img",
        "hostname-link",
    ] {
        let mut out = Vec::new();
        let n = fs.copy_file(&format!("/{rel}"), &mut out).unwrap();
        let expected = std::fs::read(src.join(rel)).unwrap();
        assert_eq!(n, expected.len() as u64, "{rel}");
        assert!(out == expected, "contents of {rel} differ");
    }
    let mut path = b"/".to_vec();
    path.extend_from_slice(LATIN1_NAME);
    let mut out = Vec::new();
    fs.copy_file_bytes(&path, &mut out).unwrap();
    assert_eq!(out, b"latin-1\n");
    let names: Vec<_> = fs
        .read_dir("/")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        names.contains(&LATIN1_NAME.to_vec()),
        "names are kept as bytes"
    );
}

#[test]
fn wrong_paths_are_refused_by_name() {
    if !tools_available(&["mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = make_ext4(dir.path(), "alpha");
    let fs = open(&img);
    let err = fs.metadata("etc/hostname").err().unwrap();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(
        err.to_string()
            .contains("'etc/hostname' is not an absolute path"),
        "{err}"
    );

    let err = fs.metadata("/etc/nope").err().unwrap();
    match &err {
        Error::PathNotFound { path, place } => {
            assert_eq!(path, "/etc/nope");
            assert!(
                place.starts_with("ext4 in ") && place.contains("alpha.img"),
                "{place}"
            );
        }
        other => panic!("expected PathNotFound, got {other}"),
    }
    let err = fs.copy_file("/etc", &mut Vec::new()).err().unwrap();
    assert!(
        err.to_string().contains("/etc in ext4 in") && err.to_string().contains("is a directory"),
        "{err}"
    );
    let err = fs.read_dir("/etc/hostname").err().unwrap();
    assert!(err.to_string().contains("is not a directory"), "{err}");
}

#[test]
fn extract_of_the_root_equals_debugfs_rdump_and_the_source() {
    if !tools_available(&["mke2fs", "sfdisk", "debugfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, parts) = make_gpt_disk(dir.path());
    for (number, (img, src)) in parts.iter().enumerate() {
        let part = (number + 1).to_string();
        let chosen =
            crate::image::partition::select_partition(FileImage::open(&disk).unwrap(), Some(&part))
                .unwrap();
        let fs = open_filesystem(Box::new(chosen.image)).unwrap();
        let to = dir.path().join(format!("restored-{part}"));
        let mut seen = Vec::new();
        let report = extract(&*fs, &["/".into()], &to, &opts(false), &mut |p| {
            seen.push(p.to_string())
        })
        .unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert!(seen.contains(&"/etc/hostname".to_string()), "{seen:?}");
        assert_eq!(report.symlinks, 2);
        assert!(report.bytes > 5 << 20);

        let rdump = dir.path().join(format!("rdump-{part}"));
        std::fs::create_dir(&rdump).unwrap();
        run(
            "debugfs",
            &[
                "-R",
                &format!("rdump / {}", rdump.display()),
                img.to_str().unwrap(),
            ],
            None,
        );
        let ours = snapshot(&to);
        let theirs = snapshot(&rdump);
        // Names, kinds, bytes and link targets as debugfs extracts them.
        let strip = |t: &BTreeMap<Vec<u8>, Node>| -> Vec<_> {
            t.iter()
                .map(|(k, n)| (k.clone(), n.kind, n.content.clone()))
                .collect()
        };
        assert!(strip(&ours) == strip(&theirs), "extract and rdump differ");
        // Modes (setuid included) and mtimes as the source had them,
        // which mke2fs -d copied (rdump keeps neither setuid nor times).
        assert_eq!(ours, snapshot(src));
        let sparse = std::fs::metadata(to.join("sparse.img")).unwrap();
        assert_eq!(sparse.len(), 4 << 20);
    }
}

#[test]
fn extract_of_one_file_and_one_directory_lands_at_their_full_paths() {
    if !tools_available(&["mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, src) = make_ext4(dir.path(), "alpha");
    let fs = open(&img);
    let to = dir.path().join("out");
    let report = extract(
        &*fs,
        &["/etc/hostname".into(), "/home/user/docs/".into()],
        &to,
        &opts(false),
        &mut quiet(),
    )
    .unwrap();
    assert_eq!((report.files, report.dirs), (2, 2));
    let mut found: Vec<PathBuf> = Vec::new();
    for e in walkdir(&to) {
        found.push(e.strip_prefix(&to).unwrap().to_path_buf());
    }
    found.sort();
    let expected: Vec<PathBuf> = [
        "etc",
        "etc/hostname",
        "home",
        "home/user",
        "home/user/docs",
        "home/user/docs/deep",
        "home/user/docs/deep/notes.txt",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(found, expected);
    assert_eq!(std::fs::read(to.join("etc/hostname")).unwrap(), b"alpha\n");
    // Parents made on the way take the source directories' modes and times.
    let made = std::fs::metadata(to.join("home/user")).unwrap();
    let source = std::fs::metadata(src.join("home/user")).unwrap();
    assert_eq!((made.mode(), made.mtime()), (source.mode(), source.mtime()));
}

fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(root).unwrap() {
        let path = item.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walkdir(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn extract_never_writes_through_a_symlink_already_in_the_destination() {
    if !tools_available(&["mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = make_ext4(dir.path(), "alpha");
    let fs = open(&img);
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let to = dir.path().join("out");
    std::fs::create_dir(&to).unwrap();
    std::os::unix::fs::symlink(&outside, to.join("etc")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), to.join("empty")).unwrap();

    let err = extract(
        &*fs,
        &["/etc/hostname".into()],
        &to,
        &opts(false),
        &mut quiet(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(&err, Error::OutputExists(p) if p == &to.join("etc")),
        "{err}"
    );
    let err = extract(&*fs, &["/empty".into()], &to, &opts(false), &mut quiet())
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::OutputExists(p) if p == &to.join("empty")),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // With overwrite the links are replaced, still never followed.
    extract(
        &*fs,
        &["/etc/hostname".into(), "/empty".into()],
        &to,
        &opts(true),
        &mut quiet(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing lands outside"
    );
    assert!(std::fs::symlink_metadata(to.join("etc")).unwrap().is_dir());
    assert!(std::fs::symlink_metadata(to.join("empty"))
        .unwrap()
        .is_file());
}

#[test]
fn an_existing_file_is_kept_unless_overwrite_is_asked() {
    if !tools_available(&["mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = make_ext4(dir.path(), "alpha");
    let fs = open(&img);
    let to = dir.path().join("out");
    std::fs::create_dir_all(to.join("etc")).unwrap();
    std::fs::write(to.join("etc/hostname"), b"mine\n").unwrap();
    let err = extract(
        &*fs,
        &["/etc/hostname".into()],
        &to,
        &opts(false),
        &mut quiet(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(&err, Error::OutputExists(p) if p == &to.join("etc/hostname")),
        "{err}"
    );
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(to.join("etc/hostname")).unwrap(), b"mine\n");
    extract(
        &*fs,
        &["/etc/hostname".into()],
        &to,
        &opts(true),
        &mut quiet(),
    )
    .unwrap();
    assert_eq!(std::fs::read(to.join("etc/hostname")).unwrap(), b"alpha\n");
}

#[test]
fn setuid_bits_are_dropped_when_owners_are_not_restored() {
    if !tools_available(&["mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = make_ext4(dir.path(), "alpha");
    let fs = open(&img);
    let to = dir.path().join("out");
    let no_owner = opts_no_owner();
    extract(
        &*fs,
        &["/setuid-tool".into(), "/etc/secret".into()],
        &to,
        &no_owner,
        &mut quiet(),
    )
    .unwrap();
    let mode = |p: &str| std::fs::metadata(to.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("setuid-tool"), 0o755);
    assert_eq!(mode("etc/secret"), 0o600);
}

/// A file system that lies: names that would climb out of the
/// destination, a device, and one honest file.
struct HostileNames;

impl FileSystem for HostileNames {
    fn kind(&self) -> &'static str {
        "hostile"
    }
    fn metadata(&self, path: &str) -> crate::Result<Entry> {
        Ok(entry(
            path.rsplit('/').next().unwrap_or("/").as_bytes(),
            if path == "/" {
                EntryKind::Dir
            } else {
                EntryKind::File
            },
        ))
    }
    fn read_dir(&self, _: &str) -> crate::Result<Vec<Entry>> {
        Ok(vec![
            entry(b"", EntryKind::File),
            entry(b".", EntryKind::Dir),
            entry(b"..", EntryKind::Dir),
            entry(b"../escape", EntryKind::File),
            entry(b"a\0b", EntryKind::File),
            entry(b"dev-null", EntryKind::Other),
            entry(b"honest", EntryKind::File),
        ])
    }
    fn read_link(&self, _: &str) -> crate::Result<Vec<u8>> {
        Ok(b"/etc/passwd".to_vec())
    }
    fn copy_file(&self, _: &str, out: &mut dyn std::io::Write) -> crate::Result<u64> {
        out.write_all(b"ok").unwrap();
        Ok(2)
    }
}

fn entry(name: &[u8], kind: EntryKind) -> Entry {
    Entry {
        name: name.to_vec(),
        kind,
        size: 2,
        mode: 0o644,
        uid: 0,
        gid: 0,
        modified: None,
        accessed: None,
    }
}

#[test]
fn hostile_names_are_skipped_and_reported_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("out");
    let report = extract(
        &HostileNames,
        &["/".into()],
        &to,
        &opts_no_owner(),
        &mut quiet(),
    )
    .unwrap();
    assert_eq!(report.files, 1);
    let skipped: Vec<_> = report.skipped.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        skipped,
        ["/", "/.", "/..", "/../escape", "/a\0b", "/dev-null"]
    );
    assert!(
        report.skipped[5].1.contains("device"),
        "{:?}",
        report.skipped[5]
    );
    let names: Vec<_> = std::fs::read_dir(&to)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [OsStr::new("honest")]);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing beside the destination"
    );
}

#[test]
fn damaged_ext4_images_give_errors_never_panics() {
    if !tools_available(&["mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = make_ext4(dir.path(), "alpha");
    let pristine = std::fs::read(&img).unwrap();
    let damaged = dir.path().join("damaged.img");
    let mut panics = Vec::new();
    for seed in 0..40u64 {
        let mut bytes = pristine.clone();
        let flips = noise(seed + 100, 64);
        for pair in flips.chunks(8) {
            // Half the seeds hit the superblock, half the first 512 KiB
            // (group descriptors, bitmaps, inode tables, directories).
            let span = if seed % 2 == 0 {
                1024..2048
            } else {
                1024..(512 << 10)
            };
            let at = span.start
                + (u64::from_le_bytes(pair.try_into().unwrap()) as usize) % (span.end - span.start);
            bytes[at] ^= pair[0] | 1;
        }
        std::fs::write(&damaged, &bytes).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let fs = match open_filesystem(Box::new(FileImage::open(&damaged).unwrap())) {
                Ok(fs) => fs,
                Err(_) => return,
            };
            let to = tempfile::tempdir().unwrap();
            let _ = extract(&*fs, &["/".into()], to.path(), &opts(false), &mut |_| {});
        }));
        if let Err(p) = result {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panics.push(format!("seed {seed}: {msg}"));
        }
    }
    assert!(panics.is_empty(), "panics on damaged images: {panics:#?}");
}

/// The shapes a real root file system has and the small test tree lacks:
/// a directory of 3000 entries indexed as an htree (`e2fsck -D` builds
/// it), a symlink too long to sit in its inode, and a file of 300
/// extents, which needs an extent tree below the inode. `extract /` must
/// equal the source, and lookups in the big directory must find each
/// entry.
#[test]
fn htree_directories_long_symlinks_and_deep_extent_trees_extract_like_the_source() {
    if !tools_available(&["mke2fs", "e2fsck", "debugfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let big_dir = src.join("var/spool/many");
    std::fs::create_dir_all(&big_dir).unwrap();
    const ENTRIES: usize = 3000;
    let entry = |i: usize| format!("message-{i:05}-with-a-name-of-some-length.eml");
    for i in 0..ENTRIES {
        std::fs::write(big_dir.join(entry(i)), format!("message {i}\n")).unwrap();
    }
    let target = format!("/{}", "long-directory-name/".repeat(12)) + "end";
    std::os::unix::fs::symlink(&target, src.join("slow-link")).unwrap();
    // 4 KiB of data every 64 KiB: one extent each, 300 in all.
    let fragmented = std::fs::File::create(src.join("fragmented.db")).unwrap();
    for i in 0..300u64 {
        use std::os::unix::fs::FileExt;
        fragmented
            .write_all_at(&noise(i + 1, 4096), i * 65536)
            .unwrap();
    }
    drop(fragmented);

    let img = dir.path().join("shapes.img");
    let img_s = img.to_str().unwrap();
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-d",
            src.to_str().unwrap(),
            img_s,
            "64M",
        ],
        None,
    );
    // Index every directory (mke2fs -d writes them linear), then confirm
    // the big one is an htree and the file's extent tree has depth > 0.
    let status = std::process::Command::new("e2fsck")
        .args(["-f", "-y", "-D", img_s])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.code().unwrap_or(8) < 4, "e2fsck -D: {status}");
    let debugfs = |request: &str| {
        let out = std::process::Command::new("debugfs")
            .args(["-R", request, img_s])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        debugfs("htree /var/spool/many").contains("Number of entries"),
        "the directory is an htree"
    );
    assert!(
        debugfs("stat /fragmented.db").contains("(ETB0)"),
        "the file has an extent tree below its inode"
    );

    let fs = open(&img);
    let names: Vec<Vec<u8>> = fs
        .read_dir("/var/spool/many")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let mut expected: Vec<Vec<u8>> = (0..ENTRIES).map(|i| entry(i).into_bytes()).collect();
    expected.sort();
    assert!(names == expected, "each of the {ENTRIES} entries once");
    for i in (0..ENTRIES).step_by(37) {
        let mut out = Vec::new();
        fs.copy_file(&format!("/var/spool/many/{}", entry(i)), &mut out)
            .unwrap();
        assert_eq!(out, format!("message {i}\n").as_bytes());
    }
    assert_eq!(fs.read_link("/slow-link").unwrap(), target.as_bytes());

    let to = dir.path().join("restored");
    let report = extract(&*fs, &["/".into()], &to, &opts(false), &mut quiet()).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(snapshot(&to), snapshot(&src));
}

//! NTFS images built with mkntfs and filled with ntfscp (ntfs-3g's tools,
//! which need no mounting), read back through `NtfsFileSystem` and
//! compared with the source files and with ntfsls/ntfscat; then damaged
//! and truncated copies, which must give errors and never panic.
//!
//! ntfs-3g has no tool that makes a directory without mounting, so the
//! files sit in the root; `$Extend` (made by mkntfs, hidden from the
//! root listing) is the subdirectory read.

use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::image::{FileImage, ImageSlice};

const MIB: usize = 1 << 20;

/// Whether ntfs-3g's tools can run here. Without them the tests skip,
/// except in CI, which installs them and must not skip silently.
fn ntfs_tools_available() -> bool {
    let found = ["mkntfs", "ntfscp", "ntfsls", "ntfscat", "ntfsfallocate"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().is_ok());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "mkntfs/ntfscp/ntfsls/ntfscat/ntfsfallocate are not installed, and CI is set: install ntfs-3g"
        );
        println!("skipping: ntfs-3g's tools (mkntfs, ntfscp, ntfsls, ntfscat, ntfsfallocate) are not on PATH");
    }
    found
}

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Deterministic bytes that do not compress or repeat.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The files copied into the test volume, in the order they are copied
/// (so `random.bin` has file record 64, `notes.txt` 65, ...).
const SOURCE_NAMES: [&str; 5] = [
    "random.bin",
    "notes.txt",
    "empty.txt",
    "r\u{e9}sum\u{e9}.txt",
    "large.bin",
];

/// The files copied into the test volume: name and contents.
fn source_files() -> Vec<(&'static str, Vec<u8>)> {
    let contents = [
        pseudo_random(MIB, 1),
        b"Backups are only as good as the restores you have tried.\n".to_vec(),
        Vec::new(),
        b"Curriculum vitae\n".to_vec(),
        pseudo_random(5 * MIB, 2),
    ];
    SOURCE_NAMES.into_iter().zip(contents).collect()
}

/// Modification time given to `notes.txt` (ntfscp -t copies it).
const NOTES_MTIME: u64 = 981_173_106; // 2001-02-03T04:05:06Z

/// A 64 MiB NTFS volume holding `source_files()` at its root, plus an
/// alternate data stream `notes.txt:secret`.
struct Volume {
    _dir: tempfile::TempDir,
    image: PathBuf,
    files: Vec<(&'static str, Vec<u8>)>,
}

fn build_volume() -> Volume {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ntfs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 * MIB as u64)
        .unwrap();
    run("mkntfs", &["-F", "-Q", "-q", image.to_str().unwrap()]);
    let files = source_files();
    for (name, bytes) in &files {
        let local = dir.path().join("source");
        std::fs::write(&local, bytes).unwrap();
        let mut args = vec!["-q"];
        if *name == "notes.txt" {
            std::fs::File::options()
                .write(true)
                .open(&local)
                .unwrap()
                .set_modified(UNIX_EPOCH + Duration::from_secs(NOTES_MTIME))
                .unwrap();
            args.push("-t");
        }
        let dest = format!("/{name}");
        args.extend([image.to_str().unwrap(), local.to_str().unwrap(), &dest]);
        run("ntfscp", &args);
    }
    let stream = dir.path().join("stream");
    std::fs::write(&stream, b"not part of the file's contents").unwrap();
    run(
        "ntfscp",
        &[
            "-q",
            "-N",
            "secret",
            image.to_str().unwrap(),
            stream.to_str().unwrap(),
            "/notes.txt",
        ],
    );
    Volume {
        _dir: dir,
        image,
        files,
    }
}

fn open_file(path: &Path) -> NtfsFileSystem<'static> {
    NtfsFileSystem::open(Box::new(FileImage::open(path).unwrap())).unwrap()
}

fn names(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8(e.name.clone()).unwrap())
        .collect()
}

fn contents(fs: &dyn FileSystem, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = fs.copy_file(path, &mut out).unwrap();
    assert_eq!(n, out.len() as u64, "{path}: copy_file's count");
    out
}

#[test]
fn root_listing_shows_the_copied_files_with_their_sizes_and_hides_metadata() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    let fs = open_file(&volume.image);
    assert_eq!(fs.kind(), "ntfs");

    let listing = fs.read_dir("/").unwrap();
    let mut expected: Vec<&str> = volume.files.iter().map(|(n, _)| *n).collect();
    expected.sort();
    assert_eq!(names(&listing), expected, "no $MFT, $Extend, . or ..");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for entry in &listing {
        let name = String::from_utf8(entry.name.clone()).unwrap();
        let (_, bytes) = volume.files.iter().find(|(n, _)| *n == name).unwrap();
        assert_eq!(entry.kind, EntryKind::File, "{name}");
        assert_eq!(entry.size, bytes.len() as u64, "{name}");
        assert_eq!(entry.mode, 0o644, "{name}");
        assert_eq!((entry.uid, entry.gid), (0, 0), "{name}");
        let modified = entry.modified.unwrap().secs;
        if name == "notes.txt" {
            assert_eq!(modified, NOTES_MTIME as i64, "ntfscp -t kept the time");
        } else {
            assert!((modified - now).abs() < 3600, "{name}: written just now");
        }
        assert!(entry.accessed.is_some(), "{name}");
        // metadata() of each path says what the listing says.
        assert_eq!(&fs.metadata(&format!("/{name}")).unwrap(), entry);
    }

    let root = fs.metadata("/").unwrap();
    assert_eq!(root.name, b"/");
    assert_eq!(root.kind, EntryKind::Dir);
    assert_eq!(root.mode, 0o755);
}

#[test]
fn files_copy_out_byte_for_byte_as_ntfscat_reads_them() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    let fs = open_file(&volume.image);
    for (name, bytes) in &volume.files {
        let path = format!("/{name}");
        let copied = contents(&fs, &path);
        assert!(copied == *bytes, "{path}: bytes differ from the source");
        let ntfscat = run("ntfscat", &[volume.image.to_str().unwrap(), &path]);
        assert!(copied == ntfscat, "{path}: bytes differ from ntfscat's");
    }
}

#[test]
fn listings_agree_with_ntfsls() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    let fs = open_file(&volume.image);
    let image = volume.image.to_str().unwrap();
    for dir in ["/", "/$Extend"] {
        let out = run("ntfsls", &["-a", "-p", dir, image]);
        let mut theirs: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        theirs.sort();
        assert_eq!(names(&fs.read_dir(dir).unwrap()), theirs, "{dir}");
    }
}

#[test]
fn lookups_ignore_case_as_windows_does() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    let fs = open_file(&volume.image);
    // The stored name comes back, whatever case was asked for; é is
    // upcased to É by the volume's $UpCase table.
    for (asked, stored) in [
        ("/NOTES.TXT", "notes.txt"),
        ("/Random.Bin", "random.bin"),
        ("/R\u{c9}SUM\u{c9}.TXT", "r\u{e9}sum\u{e9}.txt"),
        ("\\large.bin", "large.bin"),
        ("/./x/../EMPTY.txt", "empty.txt"),
    ] {
        let entry = fs.metadata(asked).unwrap();
        assert_eq!(entry.name, stored.as_bytes(), "{asked}");
    }
    assert_eq!(contents(&fs, "/NOTES.txt"), volume.files[1].1);
    // Metadata files are hidden from the listing, not from lookups.
    let extend = fs.metadata("/$extend").unwrap();
    assert_eq!(extend.name, b"$Extend");
    assert_eq!(extend.kind, EntryKind::Dir);
}

#[test]
fn missing_paths_and_wrong_kinds_are_refused_by_name() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    let fs = open_file(&volume.image);

    let err = fs.metadata("/does/not/exist").unwrap_err();
    assert!(
        matches!(&err, Error::PathNotFound { path, .. } if path == "/does/not/exist"),
        "{err}"
    );
    assert!(err.to_string().contains("/does/not/exist"), "{err}");
    assert!(err.to_string().contains("NTFS in"), "{err}");
    assert!(matches!(
        fs.copy_file("/nothing.txt", &mut io::sink()),
        Err(Error::PathNotFound { .. })
    ));

    let err = fs.metadata("/notes.txt/inside").unwrap_err().to_string();
    assert!(
        err.contains("/notes.txt is a file, not a directory"),
        "{err}"
    );
    let err = fs.read_dir("/notes.txt").unwrap_err().to_string();
    assert!(
        err.contains("/notes.txt is a file, not a directory"),
        "{err}"
    );
    let err = fs.copy_file("/", &mut io::sink()).unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
    let err = fs.read_link("/notes.txt").unwrap_err().to_string();
    assert!(
        err.contains("/notes.txt") && err.contains("not a symbolic link"),
        "{err}"
    );
    let err = fs.metadata("notes.txt").unwrap_err().to_string();
    assert!(err.contains("absolute"), "{err}");
}

#[test]
fn alternate_data_streams_are_not_part_of_the_contents() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    let fs = open_file(&volume.image);
    let notes = &volume.files[1].1;
    assert_eq!(fs.metadata("/notes.txt").unwrap().size, notes.len() as u64);
    assert_eq!(contents(&fs, "/notes.txt"), *notes);
}

#[test]
fn a_partition_inside_a_bigger_disk_reads_at_its_offset() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    let ntfs = std::fs::read(&volume.image).unwrap();
    let start = 3 * MIB + 512;
    let mut disk = pseudo_random(start, 9);
    disk.extend_from_slice(&ntfs);
    disk.extend_from_slice(&pseudo_random(MIB, 10));
    let disk_path = volume.image.with_file_name("disk.img");
    std::fs::write(&disk_path, &disk).unwrap();

    let file = FileImage::open(&disk_path).unwrap();
    assert!(!looks_like_ntfs(&file), "the disk itself is not NTFS");
    let part = ImageSlice::new(
        file,
        start as u64,
        ntfs.len() as u64,
        "partition 2 of disk.img".into(),
    )
    .unwrap();
    // As open_filesystem sees it: a boxed image, a boxed file system.
    let part: Box<dyn ImageRead> = Box::new(part);
    assert!(looks_like_ntfs(&*part));
    let fs: Box<dyn FileSystem> = Box::new(NtfsFileSystem::open(part).unwrap());
    assert_eq!(fs.read_dir("/").unwrap().len(), volume.files.len());
    for (name, bytes) in &volume.files {
        assert!(contents(&*fs, &format!("/{name}")) == *bytes, "{name}");
    }
    let err = fs.metadata("/gone").unwrap_err().to_string();
    assert!(err.contains("partition 2 of disk.img"), "{err}");
}

#[test]
fn something_that_is_not_ntfs_is_refused_naming_the_image() {
    let image = MemImage::new(pseudo_random(MIB, 3), "disk 'root' of point 1a2b3c4d");
    assert!(!looks_like_ntfs(&image));
    let err = NtfsFileSystem::open(Box::new(image)).err().unwrap();
    assert!(matches!(err, Error::FileSystem { .. }), "{err}");
    assert!(
        err.to_string().contains("disk 'root' of point 1a2b3c4d"),
        "{err}"
    );
    assert!(!looks_like_ntfs(&MemImage::new(vec![0; 5], "tiny")));
}

/// Flips the `$DATA` attribute flags of `path` in a copy of the image,
/// where the crate reads them.
fn with_data_flags(volume: &Volume, path: &str, flags: u16) -> MemImage {
    let mut bytes = std::fs::read(&volume.image).unwrap();
    let offset = {
        let fs = open_file(&volume.image);
        let mut r = fs.reader.lock().unwrap();
        r.set_budget(u64::MAX);
        let (file, _) = fs.resolve(&mut r, path).unwrap();
        let item = file.data(&mut *r, "").unwrap().unwrap();
        let attribute = item.to_attribute().unwrap();
        attribute.position().value().unwrap().get() + 12
    };
    assert!(
        offset % 512 < 508,
        "flags clear of the sector's fixup bytes"
    );
    let at = offset as usize;
    let old = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    bytes[at..at + 2].copy_from_slice(&(old | flags).to_le_bytes());
    MemImage::new(bytes, "patched.img")
}

#[test]
fn compressed_and_encrypted_files_are_refused_naming_the_file() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    for (flag, says) in [(0x0001, "compressed"), (0x4000, "encrypted")] {
        let image = with_data_flags(&volume, "/large.bin", flag);
        let fs = NtfsFileSystem::open(Box::new(image)).unwrap();
        let err = fs.copy_file("/large.bin", &mut io::sink()).unwrap_err();
        assert!(matches!(err, Error::FileSystem { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("/large.bin") && text.contains(says), "{text}");
        // Listing it still works: only the contents cannot be read.
        assert_eq!(fs.metadata("/large.bin").unwrap().size, 5 * MIB as u64);
    }
}

#[test]
fn bytes_past_the_valid_data_length_read_as_zeros() {
    if !ntfs_tools_available() {
        return;
    }
    // A preallocated file: 6 bytes written, 100000 bytes long (its valid
    // data length stays 6). Its clusters are then filled with stale bytes,
    // as a reused disk would hold: Windows reads zeros past byte 6.
    let volume = build_volume();
    let image = volume.image.to_str().unwrap();
    let local = volume.image.with_file_name("hello");
    std::fs::write(&local, b"hello\n").unwrap();
    run(
        "ntfscp",
        &["-q", image, local.to_str().unwrap(), "/prealloc.bin"],
    );
    run("ntfsfallocate", &["-l", "100000", image, "/prealloc.bin"]);
    let (start, runs) = {
        let fs = open_file(&volume.image);
        let mut r = fs.reader.lock().unwrap();
        r.set_budget(u64::MAX);
        let (file, _) = fs.resolve(&mut r, "/prealloc.bin").unwrap();
        let item = file.data(&mut *r, "").unwrap().unwrap();
        let attribute = item.to_attribute().unwrap();
        let value = attribute.value(&mut *r).unwrap();
        let ntfs::attribute_value::NtfsAttributeValue::NonResident(value) = value else {
            panic!("preallocated data is non-resident");
        };
        let start = value.data_position().value().unwrap().get();
        (start, value.data_runs().count())
    };
    assert_eq!(runs, 1, "one run, so the stale bytes go where its data is");
    let mut bytes = std::fs::read(&volume.image).unwrap();
    let start = start as usize;
    bytes[start + 6..start + 100_000].fill(0xAA);
    std::fs::write(&volume.image, &bytes).unwrap();

    let fs = open_file(&volume.image);
    assert_eq!(fs.metadata("/prealloc.bin").unwrap().size, 100_000);
    let mut expected = b"hello\n".to_vec();
    expected.resize(100_000, 0);
    let copied = contents(&fs, "/prealloc.bin");
    assert!(copied == expected, "stale bytes past the valid data length");
    assert!(
        copied == run("ntfscat", &[image, "/prealloc.bin"]),
        "as ntfscat reads it"
    );
}

#[test]
fn symbolic_links_and_other_reparse_points_in_a_volume() {
    if !ntfs_tools_available() {
        return;
    }
    // ntfscp -a 0xC0 writes a $REPARSE_POINT attribute: a relative
    // symbolic link, and a file whose contents WOF compression holds.
    let volume = build_volume();
    let image = volume.image.to_str().unwrap();
    let local = volume.image.with_file_name("local");
    let put = |dest: &str, attribute: Option<&[u8]>| {
        std::fs::write(&local, b"stub").unwrap();
        run("ntfscp", &["-q", image, local.to_str().unwrap(), dest]);
        if let Some(bytes) = attribute {
            std::fs::write(&local, bytes).unwrap();
            run(
                "ntfscp",
                &["-q", "-a", "0xC0", image, local.to_str().unwrap(), dest],
            );
        }
    };
    let target = r"..\docs\a.txt";
    let link = reparse_buffer(IO_REPARSE_TAG_SYMLINK, target, target, Some(1));
    put("/link.txt", Some(&link));
    put("/compact.dll", Some(&[0x17, 0, 0, 0x80, 0, 0, 0, 0]));

    let fs = open_file(&volume.image);
    let entry = fs.metadata("/link.txt").unwrap();
    assert_eq!(entry.kind, EntryKind::Symlink);
    assert_eq!(entry.size, b"../docs/a.txt".len() as u64);
    assert_eq!(fs.read_link("/LINK.TXT").unwrap(), b"../docs/a.txt");
    let err = fs.copy_file("/link.txt", &mut io::sink()).unwrap_err();
    assert!(err.to_string().contains("is a symbolic link"), "{err}");

    let entry = fs.metadata("/compact.dll").unwrap();
    assert_eq!(entry.kind, EntryKind::Other);
    let err = fs.copy_file("/compact.dll", &mut io::sink()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("/compact.dll") && text.contains("WOF"),
        "{text}"
    );
    let err = fs.read_link("/compact.dll").unwrap_err().to_string();
    assert!(err.contains("not a symbolic link or junction"), "{err}");

    let listing = fs.read_dir("/").unwrap();
    let kinds: Vec<_> = listing
        .iter()
        .filter(|e| e.name == b"link.txt" || e.name == b"compact.dll")
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [EntryKind::Other, EntryKind::Symlink]);
}

#[test]
fn read_only_files_show_mode_0444() {
    if !ntfs_tools_available() {
        return;
    }
    // Set FILE_ATTRIBUTE_READONLY in notes.txt's $STANDARD_INFORMATION
    // (at byte 0x20 of its value), as Windows' attrib +r does.
    let volume = build_volume();
    let mut bytes = std::fs::read(&volume.image).unwrap();
    let header = {
        let fs = open_file(&volume.image);
        let mut r = fs.reader.lock().unwrap();
        r.set_budget(u64::MAX);
        let (file, _) = fs.resolve(&mut r, "/notes.txt").unwrap();
        let attribute = file.attributes_raw().next().unwrap().unwrap();
        assert_eq!(
            attribute.ty().unwrap(),
            NtfsAttributeType::StandardInformation
        );
        attribute.position().value().unwrap().get() as usize
    };
    let value_at =
        header + u16::from_le_bytes([bytes[header + 0x14], bytes[header + 0x15]]) as usize;
    let flags_at = value_at + 0x20;
    assert!(flags_at % 512 < 508, "clear of the fixup bytes");
    bytes[flags_at] |= 0x01;
    let fs = NtfsFileSystem::open(Box::new(MemImage::new(bytes, "attrib.img"))).unwrap();
    assert_eq!(fs.metadata("/notes.txt").unwrap().mode, 0o444);
    assert_eq!(fs.metadata("/empty.txt").unwrap().mode, 0o644);
}

/// A disk image in memory, for damaged copies: shared bytes, cut to
/// `len`, with a few bytes changed (copying 64 MiB per case would be
/// most of the test's time).
struct MemImage {
    bytes: Arc<Vec<u8>>,
    len: usize,
    changes: Vec<(usize, u8)>,
    name: String,
}

impl MemImage {
    fn new(bytes: Vec<u8>, name: &str) -> Self {
        MemImage::damaged(&Arc::new(bytes), usize::MAX, Vec::new(), name)
    }

    fn damaged(bytes: &Arc<Vec<u8>>, len: usize, changes: Vec<(usize, u8)>, name: &str) -> Self {
        MemImage {
            bytes: bytes.clone(),
            len: len.min(bytes.len()),
            changes,
            name: name.to_string(),
        }
    }
}

impl ImageRead for MemImage {
    fn size(&self) -> u64 {
        self.len as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        crate::image::check_bounds(&|| self.describe(), offset, buf.len(), self.size())?;
        let at = offset as usize;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        for &(pos, byte) in &self.changes {
            if (at..at + buf.len()).contains(&pos) {
                buf[pos - at] = byte;
            }
        }
        Ok(())
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Reads everything a user could ask for (the contents of files up to
/// `max_copy` bytes); returns how many calls failed. A panic escaping
/// here fails the test.
fn walk_everything(image: MemImage) -> usize {
    walk(image, u64::MAX)
}

fn walk(image: MemImage, max_copy: u64) -> usize {
    let copy = |fs: &NtfsFileSystem<'_>, path: &str| match fs.metadata(path) {
        Ok(entry) if entry.size > max_copy => 0,
        _ => fs.copy_file(path, &mut io::sink()).is_err() as usize,
    };
    let fs = match NtfsFileSystem::open(Box::new(image)) {
        Ok(fs) => fs,
        Err(err) => {
            assert!(matches!(err, Error::FileSystem { .. }), "{err}");
            return 1;
        }
    };
    let mut failures = 0;
    for dir in ["/", "/$Extend"] {
        match fs.read_dir(dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = join(dir, std::str::from_utf8(&entry.name).unwrap());
                    failures += fs.metadata(&path).is_err() as usize;
                    failures += copy(&fs, &path);
                }
            }
            Err(_) => failures += 1,
        }
    }
    for name in SOURCE_NAMES {
        let path = format!("/{name}");
        failures += fs.metadata(&path).is_err() as usize;
        failures += copy(&fs, &path);
        failures += fs.read_link(&path).is_err() as usize;
    }
    failures
}

/// Bytes `range` of the volume, where its MFT starts (from the boot
/// sector's MFT LCN), as the hostile tests damage them.
fn mft_area(image: &[u8], records: usize) -> Range<usize> {
    let sector = u16::from_le_bytes([image[0x0B], image[0x0C]]) as usize;
    let cluster = sector * image[0x0D] as usize;
    let lcn = u64::from_le_bytes(image[0x30..0x38].try_into().unwrap()) as usize;
    let start = lcn * cluster;
    start..start + records * 1024
}

#[test]
fn a_damaged_mft_gives_errors_never_a_panic() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    let pristine = Arc::new(std::fs::read(&volume.image).unwrap());
    let healthy = MemImage::damaged(&pristine, usize::MAX, Vec::new(), "ok");
    assert_eq!(walk_everything(healthy), 5, "only read_link fails");
    // Records 0..70: the metadata files, the root, and the copied files.
    let area = mft_area(&pristine, 70);
    let mut failing = 0;
    for seed in 1..=40u64 {
        let noise = pseudo_random(64 * 8, seed);
        let changes = noise
            .chunks(8)
            .map(|hit| {
                let at =
                    area.start + u64::from_le_bytes(hit.try_into().unwrap()) as usize % area.len();
                (at, pristine[at] ^ (hit[0] | 1).rotate_left(seed as u32))
            })
            .collect();
        let image = MemImage::damaged(&pristine, usize::MAX, changes, &format!("seed {seed}"));
        failing += (walk_everything(image) > 5) as usize;
    }
    assert!(failing > 0, "some damage is noticed");
}

#[test]
fn damage_aimed_at_sizes_and_offsets_gives_errors() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    let pristine = Arc::new(std::fs::read(&volume.image).unwrap());
    let area = mft_area(&pristine, 70);
    // Each 2-byte field of the records of the root, random.bin (data
    // runs) and notes.txt (resident data and a named stream) set to
    // hostile values, one at a time. large.bin is not copied: its record
    // is not damaged here.
    let mut failing = 0;
    for record in [5usize, 64, 65] {
        let base = area.start + record * 1024;
        for field in (0..512).step_by(2) {
            if field >= 508 {
                continue; // the fixup bytes: any change only fails the check
            }
            for value in [0u16, 0xFFFF, 0x8000, 7] {
                let [lo, hi] = value.to_le_bytes();
                let at = base + field;
                let changes = vec![(at, lo), (at + 1, hi)];
                let image = MemImage::damaged(&pristine, usize::MAX, changes, "aimed");
                failing += (walk(image, 2 << 20) > 5) as usize;
            }
        }
    }
    assert!(failing > 0);
}

#[test]
fn truncated_images_give_errors_never_a_panic() {
    if !ntfs_tools_available() {
        return;
    }
    let volume = build_volume();
    let pristine = Arc::new(std::fs::read(&volume.image).unwrap());
    let mft = mft_area(&pristine, 70);
    // Cut before the MFT's system files are read: opening fails.
    for len in [0, 11, 100, 512, 4096, mft.start, mft.start + 1500] {
        let image = MemImage::damaged(&pristine, len, Vec::new(), &format!("first {len} bytes"));
        let err = NtfsFileSystem::open(Box::new(image)).err().unwrap();
        assert!(
            err.to_string().contains(&format!("first {len} bytes")),
            "{err}"
        );
    }
    // Cut anywhere else: whatever lies past the cut fails, nothing panics.
    for len in [
        mft.end,
        pristine.len() / 4,
        pristine.len() / 2,
        pristine.len() - 1,
    ] {
        walk_everything(MemImage::damaged(&pristine, len, Vec::new(), "cut"));
    }

    // Cut inside large.bin's data: the listing works, the copy says why not.
    let fs = open_file(&volume.image);
    let (start, _) = {
        let mut r = fs.reader.lock().unwrap();
        r.set_budget(u64::MAX);
        let (file, _) = fs.resolve(&mut r, "/large.bin").unwrap();
        let item = file.data(&mut *r, "").unwrap().unwrap();
        let attribute = item.to_attribute().unwrap();
        let mut value = attribute.value(&mut *r).unwrap();
        value.seek(&mut *r, SeekFrom::Start(MIB as u64)).unwrap();
        (value.data_position().value().unwrap().get(), ())
    };
    let cut = MemImage::damaged(&pristine, start as usize, Vec::new(), "cut.img");
    let fs = NtfsFileSystem::open(Box::new(cut)).unwrap();
    assert_eq!(fs.metadata("/large.bin").unwrap().size, 5 * MIB as u64);
    let mut out = Vec::new();
    let err = fs
        .copy_file("/large.bin", &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/large.bin") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn writing_out_fails_as_an_output_error() {
    if !ntfs_tools_available() {
        return;
    }
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let volume = build_volume();
    let fs = open_file(&volume.image);
    let err = fs.copy_file("/random.bin", &mut Full).unwrap_err();
    assert!(matches!(err, Error::Output { .. }), "{err}");
}

#[test]
fn ntfs_times_convert_to_unix_times() {
    assert_eq!(unix_time(NtfsTime::from(0)), None, "0: not set");
    assert_eq!(
        unix_time(NtfsTime::from(116_444_736_000_000_000)),
        Some(Timestamp { secs: 0, nanos: 0 })
    );
    assert_eq!(
        unix_time(NtfsTime::from(116_444_736_000_000_000 + 12_345_678)),
        Some(Timestamp {
            secs: 1,
            nanos: 234_567_800
        })
    );
    // Before 1970: negative seconds, nanos still counted forward.
    assert_eq!(
        unix_time(NtfsTime::from(1)),
        Some(Timestamp {
            secs: -11_644_473_600,
            nanos: 100
        })
    );
    assert!(unix_time(NtfsTime::from(u64::MAX)).is_some());
}

/// A `REPARSE_DATA_BUFFER` for a link: substitute and print names.
fn reparse_buffer(tag: u32, substitute: &str, print: &str, flags: Option<u32>) -> Vec<u8> {
    let sub: Vec<u8> = substitute
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let prt: Vec<u8> = print.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut body = Vec::new();
    for v in [0, sub.len(), sub.len(), prt.len()] {
        body.extend_from_slice(&(v as u16).to_le_bytes());
    }
    if let Some(flags) = flags {
        body.extend_from_slice(&flags.to_le_bytes());
    }
    body.extend_from_slice(&sub);
    body.extend_from_slice(&prt);
    let mut data = tag.to_le_bytes().to_vec();
    data.extend_from_slice(&(body.len() as u16).to_le_bytes());
    data.extend_from_slice(&[0, 0]);
    data.extend_from_slice(&body);
    data
}

#[test]
fn symbolic_links_and_junctions_give_their_targets() {
    let link = |target: &str| Ok(Reparse::Link(target.as_bytes().to_vec()));
    assert_eq!(
        parse_reparse_point(&reparse_buffer(
            IO_REPARSE_TAG_SYMLINK,
            r"..\docs\a.txt",
            r"..\docs\a.txt",
            Some(SYMLINK_FLAG_RELATIVE)
        )),
        link("../docs/a.txt")
    );
    assert_eq!(
        parse_reparse_point(&reparse_buffer(
            IO_REPARSE_TAG_SYMLINK,
            r"\??\C:\Users\me",
            r"C:\Users\me",
            Some(0)
        )),
        link(r"C:\Users\me")
    );
    assert_eq!(
        parse_reparse_point(&reparse_buffer(
            IO_REPARSE_TAG_MOUNT_POINT,
            r"\??\D:\data",
            "",
            None
        )),
        link(r"D:\data"),
        "a junction without a print name shows its substitute name"
    );
    assert_eq!(
        parse_reparse_point(&[0x17, 0, 0, 0x80, 0, 0, 0, 0]),
        Ok(Reparse::Other(0x8000_0017))
    );
    assert!(reparse_tag_name(0x8000_0017).contains("WOF"));
}

#[test]
fn hostile_reparse_points_are_errors() {
    let good = reparse_buffer(IO_REPARSE_TAG_SYMLINK, "a", "a", Some(1));
    for len in 0..good.len() {
        assert!(parse_reparse_point(&good[..len]).is_err(), "cut at {len}");
    }
    let mut far = good.clone();
    far[12..14].copy_from_slice(&0xFFF0u16.to_le_bytes()); // print name offset
    assert!(parse_reparse_point(&far).is_err());
    let mut odd = good.clone();
    odd[14..16].copy_from_slice(&1u16.to_le_bytes()); // print name length
    assert!(parse_reparse_point(&odd).is_err());
    let mut surrogate = reparse_buffer(IO_REPARSE_TAG_SYMLINK, "a", "b", Some(1));
    let at = surrogate.len() - 2;
    surrogate[at..].copy_from_slice(&0xD800u16.to_le_bytes());
    assert!(parse_reparse_point(&surrogate).is_err());
}

#[test]
fn paths_split_on_either_slash() {
    assert_eq!(split_path("/").unwrap(), Vec::<&str>::new());
    assert_eq!(
        split_path(r"\Windows/System32\\drivers/").unwrap(),
        ["Windows", "System32", "drivers"]
    );
    assert_eq!(split_path("/a/../../b/./c").unwrap(), ["b", "c"]);
    assert!(split_path("relative").is_err());
    assert!(split_path("").is_err());
}

/// A directory too big for its index root: 600 entries spread over dozens of
/// index blocks in `$INDEX_ALLOCATION`, a B+ tree of more than one level.
/// Every name must be listed once, the same names as ntfsls lists, and
/// every one must be found by lookup, in any case, with its own contents.
#[test]
fn a_directory_spanning_many_index_blocks_lists_and_finds_every_entry() {
    if !ntfs_tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("big-dir.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 * MIB as u64)
        .unwrap();
    let image_s = image.to_str().unwrap();
    run("mkntfs", &["-F", "-Q", "-q", image_s]);
    // Long names fill 4 KiB index blocks after about 20 entries; some are
    // not ASCII, so that collation goes through $UpCase.
    let name = |i: usize| match i % 3 {
        0 => format!("entry-{i:04}-a-name-long-enough-to-fill-index-blocks.txt"),
        1 => format!("\u{c9}t\u{e9}-{i:04}-r\u{e9}sum\u{e9}-d\u{2019}un-\u{e9}l\u{e8}ve.doc"),
        _ => format!("Mixed-Case-{i:04}-\u{3b1}\u{3b2}\u{3b3}-GREEK-and-more.bin"),
    };
    let body = |i: usize| format!("contents of entry {i}\n").repeat(i % 7);
    let source = dir.path().join("source");
    const ENTRIES: usize = 600;
    for i in 0..ENTRIES {
        std::fs::write(&source, body(i)).unwrap();
        run(
            "ntfscp",
            &[
                "-q",
                image_s,
                source.to_str().unwrap(),
                &format!("/{}", name(i)),
            ],
        );
    }

    let fs = open_file(&image);
    let listing = names(&fs.read_dir("/").unwrap());
    assert_eq!(listing.len(), ENTRIES, "each entry once, no metadata files");
    let mut ntfsls: Vec<String> = String::from_utf8(run("ntfsls", &[image_s]))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    ntfsls.sort();
    assert_eq!(listing, ntfsls, "the same names as ntfsls, sorted");

    for i in 0..ENTRIES {
        let stored = name(i);
        let asked = if i % 2 == 0 {
            stored.to_uppercase()
        } else {
            stored.to_lowercase()
        };
        let entry = fs.metadata(&format!("/{asked}")).unwrap();
        assert_eq!(entry.name, stored.as_bytes(), "{asked}");
        assert_eq!(entry.size, body(i).len() as u64, "{stored}");
        assert_eq!(contents(&fs, &format!("/{asked}")), body(i).as_bytes());
    }
    assert!(matches!(
        fs.metadata("/entry-0600-a-name-long-enough-to-fill-index-blocks.txt"),
        Err(Error::PathNotFound { .. })
    ));
}

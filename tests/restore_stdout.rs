//! `diskvault restore VAULT POINT - --disk NAME`: the raw image on standard
//! output, as a user pipes it to `dd` on another machine. Standard output
//! carries the image's bytes and nothing else; the report and every error
//! go to standard error, and a restore that goes wrong after bytes went out
//! says that they must not be used and exits non-zero.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::*;
use diskvault::{restore_to_writer, Error, PointId, RestoreOptions};

const EXIT_USAGE: i32 = 2;
const EXIT_DAMAGED: i32 = 4;
const EXIT_REFUSED: i32 = 7;

/// Writes a disk image at the path given.
type MakeImage<'a> = &'a dyn Fn(&Path);

/// A working directory with a vault holding one point of the disks given.
struct Desk {
    dir: tempfile::TempDir,
    vault: PathBuf,
    point: PointId,
}

impl Desk {
    /// Backs up `images` (disk name, image file under the desk) as one point.
    fn new(images: &[(&str, MakeImage<'_>)]) -> Desk {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        let repo = init_repo(&vault);
        let paths: Vec<(&str, PathBuf)> = images
            .iter()
            .map(|(name, make)| {
                let path = dir.path().join(format!("{name}.img"));
                make(&path);
                (*name, path)
            })
            .collect();
        let disks: Vec<(&str, &Path)> = paths.iter().map(|(n, p)| (*n, p.as_path())).collect();
        let point = backup_disks(&repo, &disks).point;
        Desk { dir, vault, point }
    }

    fn image(&self, disk: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(format!("{disk}.img"))).unwrap()
    }

    /// `diskvault restore VAULT <args...>`, its raw output.
    fn restore(&self, args: &[&str]) -> Output {
        let mut all = vec!["restore".to_string(), self.vault.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let out = Cli::new().command(&all).output().expect("run diskvault");
        assert_no_panic(&out);
        out
    }

    /// Every file of the desk but the vault's own objects: a restore to
    /// standard output must not leave anything beside them.
    fn files(&self) -> Vec<PathBuf> {
        files_under(self.dir.path())
            .into_iter()
            .filter(|p| !p.starts_with("vault"))
            .collect()
    }
}

fn assert_no_panic(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some(),
        "diskvault was killed by a signal: {:?}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("panicked"),
        "diskvault panicked:\n{stderr}"
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A sparse image: holes, a run of written zeros, and data, not a whole
/// number of chunks long.
fn sparse_image(path: &Path) {
    let size = 6 * MIB + 12_345;
    let mut rng = Xorshift::new(41);
    write_sparse_image(
        path,
        size,
        &[
            (0, rng.bytes(300_000)),
            // Zeros written out: the chunker finds them as it finds holes.
            (MIB, vec![0u8; 2 * MIB as usize]),
            (3 * MIB + 777, rng.bytes(500_000)),
            (size - 40_000, rng.bytes(40_000)),
        ],
    );
}

fn random_image(len: u64, seed: u64) -> impl Fn(&Path) {
    move |path: &Path| {
        write_random_image(path, len, seed);
    }
}

#[test]
fn the_image_on_standard_output_is_byte_identical_and_the_report_goes_to_stderr() {
    let desk = Desk::new(&[("root", &sparse_image)]);
    let before = desk.files();

    let out = desk.restore(&["latest", "-", "--disk", "root"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let image = desk.image("root");
    assert_eq!(
        out.stdout.len(),
        image.len(),
        "one image's bytes, nothing else"
    );
    if let Some(at) = out.stdout.iter().zip(&image).position(|(a, b)| a != b) {
        panic!("standard output differs from the image first at byte {at}");
    }
    let report = stderr(&out);
    assert!(
        report.contains("restored disk root to standard output") && report.contains("verified"),
        "the report is on standard error: {report}"
    );
    assert_eq!(desk.files(), before, "no file was written");

    // A point of one disk needs no --disk.
    let out = desk.restore(&[&desk.point.short(), "-"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout == image, "the same image without --disk");
}

#[test]
fn the_library_streams_into_any_writer() {
    let desk = Desk::new(&[("root", &sparse_image)]);
    let repo = open_repo(&desk.vault);
    let mut sink: Vec<u8> = Vec::new();
    let opts = RestoreOptions {
        point: "latest".into(),
        ..Default::default()
    };
    let report = restore_to_writer(&repo, &opts, &mut sink).expect("restore to a writer");
    let image = desk.image("root");
    assert!(sink == image, "the writer holds the image");
    let disk = &report.disks[0];
    assert_eq!(
        (disk.name.as_str(), disk.size, disk.bytes_written),
        ("root", image.len() as u64, image.len() as u64),
        "zero runs are written too"
    );

    // A stream cannot be updated in place.
    let into = RestoreOptions {
        into_existing: true,
        ..opts
    };
    match restore_to_writer(&repo, &into, &mut Vec::new()) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("--into"), "{m}"),
        other => panic!("expected --into to be refused, got {other:?}"),
    }
}

#[test]
fn a_point_of_two_disks_needs_disk_and_into_is_refused() {
    let desk = Desk::new(&[
        ("boot", &random_image(200_000, 1)),
        ("data", &random_image(300_000, 2)),
    ]);

    let out = desk.restore(&["latest", "-"]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "nothing on standard output");
    let message = stderr(&out);
    assert!(
        message.contains("boot") && message.contains("data") && message.contains("--disk"),
        "the refusal names the disks and the way out: {message}"
    );

    let out = desk.restore(&["latest", "-", "--disk", "data"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout == desk.image("data"), "the disk chosen");

    let out = desk.restore(&["latest", "-", "--disk", "swap"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("boot, data"), "{}", stderr(&out));

    let existing = desk.dir.path().join("boot.img");
    let out = desk.restore(&[
        "latest",
        "-",
        "--into",
        existing.to_str().unwrap(),
        "--disk",
        "boot",
    ]);
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_reader_that_goes_away_ends_the_restore_with_a_clear_error() {
    let desk = Desk::new(&[("root", &random_image(8 * MIB, 3))]);
    let before = desk.files();
    let args = [
        "restore",
        desk.vault.to_str().unwrap(),
        "latest",
        "-",
        "--disk",
        "root",
    ];
    // diskvault restore VAULT latest - --disk root | head -c 1000
    let mut restore = Cli::new()
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start diskvault");
    let pipe = restore.stdout.take().expect("a pipe");
    let head = std::process::Command::new("head")
        .args(["-c", "1000"])
        .stdin(pipe)
        .output()
        .expect("run head");
    let mut message = String::new();
    restore
        .stderr
        .take()
        .expect("a pipe")
        .read_to_string(&mut message)
        .unwrap();
    let status = restore.wait().unwrap();

    assert!(
        head.stdout == desk.image("root")[..1000],
        "head got the start"
    );
    assert!(
        status.code().is_some(),
        "killed by a signal (SIGPIPE?): {status:?}\n{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    assert_ne!(status.code(), Some(0), "the image did not all go out");
    assert!(
        message.contains("standard output")
            && message.contains("reader went away")
            && message.contains("must not be used"),
        "the error names the output and why: {message}"
    );
    assert_eq!(desk.files(), before, "no stray files");
}

#[test]
fn a_damaged_chunk_after_the_first_batch_fails_the_stream() {
    // Restores fetch 16 MiB batches: damage in the second one fails the
    // stream after the first went out.
    let size = 18 * MIB;
    let desk = Desk::new(&[("root", &random_image(size, 4))]);
    let image = desk.image("root");
    let repo = open_repo(&desk.vault);
    let pack = damage_chunk_at(&repo, &desk.vault, &image, 17 * MIB as usize);

    let out = desk.restore(&["latest", "-", "--disk", "root"]);
    assert_eq!(out.status.code(), Some(EXIT_DAMAGED), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        out.stdout.len() >= 16 * MIB as usize && out.stdout.len() < size as usize,
        "the first batch went out, not the whole image ({} bytes)",
        out.stdout.len()
    );
    assert!(
        out.stdout[..] == image[..out.stdout.len()],
        "what went out is right"
    );
    assert!(
        message.contains("must not be used")
            && message.contains(&format!("received {} bytes", out.stdout.len()))
            && message.contains(&pack),
        "the error says the output is unusable and names the damaged pack: {message}"
    );
}

#[test]
fn a_point_whose_image_hash_differs_fails_at_the_end() {
    // Every chunk is intact and matches the manifest; only the whole-image
    // hash recorded in the point is wrong, which nothing but the final
    // check can see.
    let desk = Desk::new(&[("root", &sparse_image)]);
    let repo = open_repo(&desk.vault);
    let mut body = repo.read_point(&desk.point).unwrap();
    body.disks[0].image_hash[0] ^= 1;
    let wrong = repo.write_point(&body).unwrap();

    let out = desk.restore(&[&wrong.to_hex(), "-"]);
    assert_eq!(out.status.code(), Some(EXIT_DAMAGED), "{}", stderr(&out));
    assert!(
        out.stdout == desk.image("root"),
        "the image went out whole before the check"
    );
    let message = stderr(&out);
    assert!(
        message.contains("does not match the recovery point")
            && message.contains("not a faithful copy")
            && message.contains("must not be used"),
        "{message}"
    );
}

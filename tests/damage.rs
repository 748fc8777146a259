//! What a user sees when something is wrong: a wrong passphrase, a damaged
//! or missing object, a repository from the future. Each case runs the
//! `diskvault` command and checks its exit code (see `src/cli/mod.rs`) and
//! that its message names the problem. The runner fails any test whose
//! output contains "panicked".

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use diskvault::{ChunkId, PointId};

const EXIT_PASSPHRASE: i32 = 3;
const EXIT_DAMAGED: i32 = 4;
const EXIT_NOT_FOUND: i32 = 5;
const EXIT_NEWER: i32 = 6;

/// A repository holding one backed-up 1 MiB disk, made through the library
/// (with a cheap key derivation, so each command below opens it quickly).
struct Vault {
    _dir: tempfile::TempDir,
    path: PathBuf,
    image: PathBuf,
    point: PointId,
    /// Where the user restores to.
    out: PathBuf,
}

impl Vault {
    fn new() -> Vault {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        let image = dir.path().join("disk.img");
        write_random_image(&image, MIB, 200);
        let repo = init_repo(&path);
        let point = backup_one(&repo, "disk", &image).point;
        let out = dir.path().join("restored.img");
        Vault {
            _dir: dir,
            path,
            image,
            point,
            out,
        }
    }

    fn arg(&self) -> &Path {
        &self.path
    }

    /// `diskvault restore VAULT latest OUT` as the user with the passphrase.
    fn restore_latest(&self) -> Run {
        Cli::new().run(&[
            "restore".as_ref(),
            self.arg().as_os_str(),
            "latest".as_ref(),
            self.out.as_os_str(),
        ])
    }

    fn check(&self, extra: &[&str]) -> Run {
        let mut args = vec!["check".to_string(), self.path.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Cli::new().run(&args)
    }

    /// Asserts that a failed restore left nothing at the output path (nor a
    /// half-written temporary next to it).
    fn assert_no_output(&self) {
        assert!(
            !self.out.exists(),
            "a failed restore must not leave {} behind",
            self.out.display()
        );
        let parent = self.out.parent().unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("restored"))
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    }

    fn pack(&self) -> PathBuf {
        only_object(&self.path, "packs/")
    }

    /// The repository key of a file inside it, e.g. `packs/ab/ab12...`.
    fn key_of(&self, file: &Path) -> String {
        file.strip_prefix(&self.path)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The data chunk stored first in the pack, right after its header.
    fn first_chunk(&self) -> ChunkId {
        let repo = open_repo(&self.path);
        let index = repo.load_index().unwrap();
        // The blob right after the pack header; in format 2 a group, whose
        // first member is the image's first chunk.
        let first = index
            .iter()
            .filter(|(_, loc)| loc.offset == 8)
            .min_by_key(|(_, loc)| loc.member)
            .map(|(id, _)| id)
            .expect("a chunk right after the pack header");
        first
    }
}

fn flip_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
}

fn truncate_to(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn wrong_passphrase_is_refused() {
    let v = Vault::new();

    let run = Cli::with_password("not the passphrase").run(&[
        "restore".as_ref(),
        v.arg().as_os_str(),
        "latest".as_ref(),
        v.out.as_os_str(),
    ]);

    run.expect_code(EXIT_PASSPHRASE, "restore with a wrong passphrase")
        .expect_mentions("passphrase", "wrong passphrase");
    v.assert_no_output();
}

#[test]
fn missing_passphrase_without_a_terminal_is_refused() {
    let v = Vault::new();

    // No DISKVAULT_PASSWORD, stdin is not a terminal: nobody to ask.
    let run = Cli::without_password().run(&["points".as_ref(), v.arg().as_os_str()]);

    run.expect_code(EXIT_PASSPHRASE, "points without a passphrase")
        .expect_mentions("DISKVAULT_PASSWORD", "missing passphrase");
}

#[test]
fn password_file_that_does_not_exist_is_named() {
    let v = Vault::new();
    let missing = v.path.parent().unwrap().join("no-such-password-file");

    let run = Cli::without_password().run(&[
        "points".as_ref(),
        v.arg().as_os_str(),
        "--password-file".as_ref(),
        missing.as_os_str(),
    ]);

    assert_ne!(run.code, 0);
    run.expect_mentions("no-such-password-file", "missing password file");
}

#[test]
fn corrupted_chunk_fails_restore_and_is_found_by_check_read_data() {
    let v = Vault::new();
    let chunk = v.first_chunk();
    // One bit of rot inside the first chunk, after the 8-byte pack header.
    flip_byte(&v.pack(), 8 + 1000);

    let run = v.restore_latest();
    run.expect_code(EXIT_DAMAGED, "restore over a rotten chunk")
        .expect_mentions(&chunk.short(), "restore names the damaged chunk");
    v.assert_no_output();

    // The structure is intact (the index still matches the pack's size), so
    // only reading the data finds the rot.
    let run = v.check(&["--read-data"]);
    run.expect_code(EXIT_DAMAGED, "check --read-data")
        .expect_mentions(&chunk.to_hex(), "check names the damaged chunk")
        .expect_mentions(&v.point.short(), "check names the affected point");

    let run = v.check(&["--read-data", "--json"]);
    run.expect_code(EXIT_DAMAGED, "check --read-data --json");
    let report = run.json();
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().unwrap();
    let about_chunk = problems
        .iter()
        .find(|p| p["object"].as_str().unwrap().contains(&chunk.to_hex()))
        .unwrap_or_else(|| panic!("no problem names chunk {chunk}: {report}"));
    assert_eq!(
        about_chunk["affected_points"],
        serde_json::json!([v.point.to_hex()])
    );
}

#[test]
fn check_of_a_healthy_repository_passes() {
    let v = Vault::new();

    let run = v.check(&["--read-data"]);

    run.expect_ok("check --read-data of a healthy repository")
        .expect_mentions("no problems found", "healthy check");
}

#[test]
fn missing_pack_is_reported_by_check_and_fails_restore() {
    let v = Vault::new();
    let pack = v.pack();
    let key = v.key_of(&pack);
    std::fs::remove_file(&pack).unwrap();

    let run = v.check(&[]);
    run.expect_code(EXIT_DAMAGED, "check with a missing pack")
        .expect_mentions(&key, "check names the missing pack")
        .expect_mentions(&v.point.short(), "check names the affected point");

    let run = v.restore_latest();
    run.expect_code(EXIT_DAMAGED, "restore with a missing pack")
        .expect_mentions(&key, "restore names the missing pack");
    v.assert_no_output();
}

#[test]
fn truncated_pack_is_reported_by_check_and_fails_restore() {
    let v = Vault::new();
    let pack = v.pack();
    let key = v.key_of(&pack);
    // Cut the table, the footer and the last chunks: an interrupted copy.
    truncate_to(&pack, file_len(&pack) / 2);

    let run = v.check(&[]);
    run.expect_code(EXIT_DAMAGED, "check with a truncated pack")
        .expect_mentions(&key, "check names the truncated pack")
        .expect_mentions("truncated", "check says what is wrong");

    let run = v.check(&["--read-data"]);
    run.expect_code(EXIT_DAMAGED, "check --read-data with a truncated pack")
        .expect_mentions(&key, "check --read-data names the truncated pack");

    let run = v.restore_latest();
    run.expect_code(EXIT_DAMAGED, "restore from a truncated pack")
        .expect_mentions(&key, "restore names the truncated pack");
    v.assert_no_output();
}

#[test]
fn truncated_index_file_is_named() {
    let v = Vault::new();
    let index = only_object(&v.path, "index/");
    truncate_to(&index, file_len(&index) / 2);

    let run = v.restore_latest();
    run.expect_code(EXIT_DAMAGED, "restore with a truncated index")
        .expect_mentions("index/", "restore names the index file");
    v.assert_no_output();

    let run = v.check(&[]);
    run.expect_code(EXIT_DAMAGED, "check with a truncated index")
        .expect_mentions(&v.key_of(&index), "check names the index file");

    let run = Cli::new().run(&["stats".as_ref(), v.arg().as_os_str()]);
    run.expect_code(EXIT_DAMAGED, "stats with a truncated index")
        .expect_mentions("index/", "stats names the index file");
}

#[test]
fn corrupted_point_file_is_named() {
    let v = Vault::new();
    let point = only_object(&v.path, "points/");
    flip_byte(&point, file_len(&point) - 3);

    let run = Cli::new().run(&["points".as_ref(), v.arg().as_os_str()]);
    run.expect_code(EXIT_DAMAGED, "points with a damaged point file")
        .expect_mentions("points/", "points names the damaged point");

    let run = v.check(&[]);
    run.expect_code(EXIT_DAMAGED, "check with a damaged point file")
        .expect_mentions(&format!("points/{}", v.point.to_hex()), "check");

    // Asked for by id, the point is found but cannot be read.
    let run = Cli::new().run(&[
        "restore".as_ref(),
        v.arg().as_os_str(),
        v.point.to_hex()[..12].as_ref(),
        v.out.as_os_str(),
    ]);
    run.expect_code(EXIT_DAMAGED, "restore of a damaged point")
        .expect_mentions("points/", "restore names the damaged point");
    v.assert_no_output();
}

#[test]
fn damaged_key_file_is_not_mistaken_for_a_wrong_passphrase() {
    let v = Vault::new();
    let key = only_object(&v.path, "keys/");
    flip_byte(&key, file_len(&key) / 2);

    let run = Cli::new().run(&["points".as_ref(), v.arg().as_os_str()]);

    run.expect_code(EXIT_DAMAGED, "points with a damaged key file")
        .expect_mentions("keys/", "names the damaged key file");
}

#[test]
fn unknown_point_is_named() {
    let v = Vault::new();
    let unknown = if v.point.to_hex().starts_with("0123") {
        "4567abcd"
    } else {
        "0123abcd"
    };

    let run = Cli::new().run(&[
        "restore".as_ref(),
        v.arg().as_os_str(),
        unknown.as_ref(),
        v.out.as_os_str(),
    ]);
    run.expect_code(EXIT_NOT_FOUND, "restore of an unknown point")
        .expect_mentions(unknown, "names the unknown point");
    v.assert_no_output();

    let run = Cli::new().run(&["show", &v.path.display().to_string(), "yesterday"]);
    run.expect_code(EXIT_NOT_FOUND, "show of a point spec that is not an id")
        .expect_mentions("yesterday", "names the unknown point");
}

#[test]
fn unknown_disk_is_named() {
    let v = Vault::new();

    let run = Cli::new().run(&[
        "restore".as_ref(),
        v.arg().as_os_str(),
        "latest".as_ref(),
        v.out.as_os_str(),
        "--disk".as_ref(),
        "sdz".as_ref(),
    ]);

    run.expect_code(EXIT_NOT_FOUND, "restore of an unknown disk")
        .expect_mentions("sdz", "names the unknown disk")
        .expect_mentions("disk", "lists the disks there are");
    v.assert_no_output();
}

#[test]
fn repository_from_a_newer_version_is_refused() {
    let v = Vault::new();
    let config = v.path.join("config");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"major\": 2"), "config: {text}");
    std::fs::write(&config, text.replace("\"major\": 2", "\"major\": 3")).unwrap();

    let run = v.restore_latest();
    run.expect_code(EXIT_NEWER, "restore from a newer repository")
        .expect_mentions("newer", "says the repository is newer");
    v.assert_no_output();

    // It does not even ask for a passphrase first.
    let run = Cli::without_password().run(&["points".as_ref(), v.arg().as_os_str()]);
    run.expect_code(EXIT_NEWER, "points on a newer repository")
        .expect_mentions("newer", "says the repository is newer");
}

#[test]
fn damaged_config_is_named() {
    let v = Vault::new();
    std::fs::write(v.path.join("config"), b"{\"format\": ").unwrap();

    let run = Cli::new().run(&["points".as_ref(), v.arg().as_os_str()]);

    run.expect_code(EXIT_DAMAGED, "points with a damaged config")
        .expect_mentions("config", "names the config");
}

#[test]
fn not_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let nowhere = dir.path().join("nowhere");
    // Arguments swapped: `backup disk.img VAULT` makes the image the vault.
    let image = dir.path().join("disk.img");
    std::fs::write(&image, b"not a vault").unwrap();

    let run = Cli::new().run(&["backup".as_ref(), image.as_os_str(), empty.as_os_str()]);
    run.expect_code(EXIT_NOT_FOUND, "backup with the arguments swapped")
        .expect_mentions("no diskvault repository at", "says it is no vault");

    for path in [&empty, &nowhere, &image] {
        let run = Cli::new().run(&["points".as_ref(), path.as_os_str()]);
        run.expect_code(EXIT_NOT_FOUND, "points on a directory without a repository")
            .expect_mentions(&path.display().to_string(), "names the path")
            .expect_mentions("diskvault init", "says how to create one");
    }
}

#[test]
fn unreadable_source_image_is_named_and_nothing_is_recorded() {
    let v = Vault::new();
    let missing = v.path.parent().unwrap().join("sdb.img");

    let run = Cli::new().run(&[
        "backup".as_ref(),
        v.arg().as_os_str(),
        v.image.as_os_str(),
        missing.as_os_str(),
    ]);

    run.expect_code(EXIT_NOT_FOUND, "backup of a missing image")
        .expect_mentions("sdb.img", "names the missing image");
    assert_eq!(
        run.stderr.matches("No such file").count(),
        1,
        "the cause is said once: {}",
        run.stderr
    );
    assert_eq!(
        objects(&v.path, "points/").len(),
        1,
        "a failed backup records no point"
    );
}

#[test]
fn damaged_manifest_is_found_without_reading_data() {
    let v = Vault::new();
    let repo = open_repo(&v.path);
    let root = repo.read_point(&v.point).unwrap().disks[0].manifest_root;
    let at = repo.load_index().unwrap().get(&root).unwrap().offset;
    flip_byte(&v.pack(), at as u64 + 40);

    let run = v.check(&[]);
    run.expect_code(EXIT_DAMAGED, "check with a damaged manifest")
        .expect_mentions("manifest of disk 'disk'", "names the manifest")
        .expect_mentions(&v.point.short(), "names the point");

    v.restore_latest()
        .expect_code(EXIT_DAMAGED, "restore with a damaged manifest")
        .expect_mentions(&root.short(), "names the damaged node");
    v.assert_no_output();
}

#[test]
fn empty_vault_has_no_latest_point() {
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault");
    init_repo(&vault);

    let run = Cli::new().run(&[
        "restore".as_ref(),
        vault.as_os_str(),
        "latest".as_ref(),
        dir.path().join("out.img").as_os_str(),
    ]);

    run.expect_code(EXIT_NOT_FOUND, "restore latest from an empty vault")
        .expect_mentions("no points", "says there are none");
    Cli::new()
        .run(&["points".as_ref(), vault.as_os_str()])
        .expect_ok("points of an empty vault")
        .expect_mentions("no recovery points", "says there are none");
}

/// A point whose recorded image hash or size disagrees with its chunks
/// (as a bug in an old diskvault or a forged point could make): the
/// restore's final check catches it and no output is left.
#[test]
fn restore_verifies_the_whole_image() {
    let v = Vault::new();
    let repo = open_repo(&v.path);
    let mut body = repo.read_point(&v.point).unwrap();
    body.disks[0].image_hash[0] ^= 1;
    let wrong_hash = repo.write_point(&body).unwrap();
    body.disks[0].image_hash[0] ^= 1;
    body.disks[0].size += 4096;
    let wrong_size = repo.write_point(&body).unwrap();

    for point in [wrong_hash, wrong_size] {
        let run = Cli::new().run(&[
            "restore".as_ref(),
            v.arg().as_os_str(),
            point.to_hex().as_ref(),
            v.out.as_os_str(),
        ]);
        run.expect_code(
            EXIT_DAMAGED,
            "restore of a point that does not match its data",
        )
        .expect_mentions("disk", "names the disk");
        v.assert_no_output();
    }

    // The genuine point still restores.
    Cli::new()
        .run(&[
            "restore".as_ref(),
            v.arg().as_os_str(),
            v.point.to_hex().as_ref(),
            v.out.as_os_str(),
        ])
        .expect_ok("restore of the genuine point");
    assert_same_bytes(&v.out, &v.image);
}

#[test]
fn damaged_chunk_shared_by_two_points_names_both() {
    let v = Vault::new();
    let second = backup_one(&open_repo(&v.path), "disk", &v.image).point;
    let chunk = v.first_chunk();
    flip_byte(&v.pack(), 8 + 10);

    let run = v.check(&["--read-data"]);

    run.expect_code(EXIT_DAMAGED, "check --read-data")
        .expect_mentions(&v.point.short(), "names the first point")
        .expect_mentions(&second.short(), "names the second point");
    let report = v.check(&["--read-data", "--json"]).json();
    let problem = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["object"].as_str().unwrap().contains(&chunk.to_hex()))
        .unwrap_or_else(|| panic!("no problem names chunk {chunk}: {report}"))
        .clone();
    let mut expected = vec![v.point.to_hex(), second.to_hex()];
    expected.sort();
    assert_eq!(problem["affected_points"], serde_json::json!(expected));
}

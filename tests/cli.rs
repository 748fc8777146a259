//! The `diskvault` command as a user drives it: create a vault, back up,
//! look at what is there, restore, manage passphrases.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const EXIT_USAGE: i32 = 2;
const EXIT_PASSPHRASE: i32 = 3;
const EXIT_REFUSED: i32 = 7;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A working directory with a disk image in it.
struct Desk {
    dir: tempfile::TempDir,
    image: PathBuf,
}

impl Desk {
    fn new(image_bytes: u64, seed: u64) -> Desk {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        write_random_image(&image, image_bytes, seed);
        Desk { dir, image }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn vault(&self) -> String {
        s(&self.path("vault"))
    }
}

#[test]
fn readme_walkthrough() {
    let desk = Desk::new(2 * MIB + 100, 300);
    let vault = desk.vault();
    let cli = Cli::new();

    // diskvault init VAULT
    cli.run(&["init", &vault])
        .expect_ok("init")
        .expect_mentions("created repository", "init reports");

    // diskvault backup VAULT disk.img --tag nightly --tag pre-upgrade
    let run = cli.run(&[
        "backup",
        &vault,
        &s(&desk.image),
        "--tag",
        "nightly",
        "--tag",
        "pre-upgrade",
    ]);
    run.expect_ok("backup")
        .expect_mentions("recovery point", "backup names the new point");
    let first = cli.run(&["points", &vault, "--json"]).json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(first.len(), 64);
    run.expect_mentions(&first, "backup prints the point id");

    // An edit, and a second backup, this time asking for JSON.
    let v1 = desk.path("v1.img");
    std::fs::copy(&desk.image, &v1).unwrap();
    write_at(&desk.image, 5000, b"a day of changes");
    let run = cli.run(&["backup", &vault, &s(&desk.image), "--json"]);
    run.expect_ok("second backup");
    let report = run.json();
    let second = report["point"].as_str().unwrap().to_string();
    assert_eq!(report["logical_bytes"], 2 * MIB + 100);
    let stored = report["stored_bytes"].as_u64().unwrap();
    assert!(stored < 200 * KIB, "a 16-byte edit stored {stored} bytes");

    // diskvault points VAULT
    let run = cli.run(&["points", &vault]);
    run.expect_ok("points")
        .expect_mentions(&first[..8], "points lists the first point")
        .expect_mentions(&second[..8], "points lists the second point")
        .expect_mentions("nightly,pre-upgrade", "points shows the tags")
        .expect_mentions("2 recovery points", "points counts");

    let points = cli.run(&["points", &vault, "--json"]).json();
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["id"], first.as_str());
    assert_eq!(
        points[0]["tags"],
        serde_json::json!(["nightly", "pre-upgrade"])
    );
    assert_eq!(points[1]["id"], second.as_str());
    assert_eq!(points[1]["disks"][0]["name"], "disk.img");
    assert_eq!(points[1]["disks"][0]["size"], 2 * MIB + 100);

    // diskvault show VAULT latest
    let run = cli.run(&["show", &vault, "latest"]);
    run.expect_ok("show latest")
        .expect_mentions(&second, "show latest is the second point")
        .expect_mentions("disk.img", "show names the disk");
    let shown = cli.run(&["show", &vault, &first[..8], "--json"]).json();
    assert_eq!(shown["id"], first.as_str());
    assert_eq!(shown["tags"][0], "nightly");

    // diskvault stats VAULT --json
    let stats = cli.run(&["stats", &vault, "--json"]).json();
    assert_eq!(stats["points"], 2);
    assert_eq!(stats["logical_bytes"], 2 * (2 * MIB + 100));
    let dedup = stats["dedup_ratio"].as_f64().unwrap();
    assert!(dedup > 1.8, "two near-identical backups dedup {dedup}x");
    assert!(stats["compression_ratio"].as_f64().is_some(), "{stats}");
    assert!(stats["repository_bytes"].as_u64().unwrap() > 2 * MIB);
    cli.run(&["stats", &vault])
        .expect_ok("stats")
        .expect_mentions("dedup ratio", "stats text");

    // diskvault restore VAULT latest OUT, and the older point by id prefix
    let out = desk.path("restored.img");
    cli.run(&["restore", &vault, "latest", &s(&out)])
        .expect_ok("restore latest")
        .expect_mentions("verified", "restore says it verified");
    assert_same_bytes(&out, &desk.image);
    let out1 = desk.path("restored-v1.img");
    cli.run(&["restore", &vault, &first[..8], &s(&out1)])
        .expect_ok("restore by prefix");
    assert_same_bytes(&out1, &v1);

    // diskvault check VAULT --read-data
    cli.run(&["check", &vault, "--read-data"])
        .expect_ok("check")
        .expect_mentions("no problems found", "check");
    let check = cli.run(&["check", &vault, "--json"]).json();
    assert_eq!(check["ok"], true);
    assert_eq!(check["points"], 2);
}

#[test]
fn passphrases_can_be_added_removed_and_changed() {
    let desk = Desk::new(64 * KIB, 301);
    let vault = desk.vault();
    let first = Cli::with_password("first passphrase");
    first.run(&["init", &vault]).expect_ok("init");
    first
        .run(&["backup", &vault, &s(&desk.image)])
        .expect_ok("backup");

    // A second passphrase, for a colleague.
    first
        .new_password("second passphrase")
        .run(&["key", "add", &vault])
        .expect_ok("key add")
        .expect_mentions("added key", "key add");
    let second = Cli::with_password("second passphrase");
    second
        .run(&["points", &vault])
        .expect_ok("points with the added passphrase");

    let keys = first.run(&["key", "list", &vault, "--json"]).json();
    let keys = keys.as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let text = first.run(&["key", "list", &vault]);
    assert_eq!(text.stdout.lines().count(), 2, "{}", text.stdout);
    assert_eq!(
        text.stdout.lines().filter(|l| l.starts_with('*')).count(),
        1,
        "one key is marked as in use:\n{}",
        text.stdout
    );
    let key_of = |current: bool| {
        keys.iter().find(|k| k["current"] == current).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first_key = key_of(true);
    let second_key = key_of(false);

    // The key in use cannot remove itself.
    first
        .run(&["key", "remove", &vault, &first_key[..8]])
        .expect_code(EXIT_REFUSED, "removing the key in use")
        .expect_mentions("in use", "says why");
    assert_eq!(objects(&desk.path("vault"), "keys/").len(), 2);

    // The colleague leaves: remove their key, their passphrase stops working.
    first
        .run(&["key", "remove", &vault, &second_key[..8]])
        .expect_ok("key remove");
    second
        .run(&["points", &vault])
        .expect_code(EXIT_PASSPHRASE, "a removed passphrase");

    // Change the remaining passphrase: the old one no longer opens the vault.
    first
        .new_password("third passphrase")
        .run(&["key", "passwd", &vault])
        .expect_ok("key passwd");
    first
        .run(&["points", &vault])
        .expect_code(EXIT_PASSPHRASE, "the old passphrase after passwd")
        .expect_mentions("passphrase", "says the passphrase is wrong");
    let third = Cli::with_password("third passphrase");
    let out = desk.path("restored.img");
    third
        .run(&["restore", &vault, "latest", &s(&out)])
        .expect_ok("restore with the new passphrase");
    assert_same_bytes(&out, &desk.image);
    let keys = third.run(&["key", "list", &vault, "--json"]).json();
    assert_eq!(keys.as_array().unwrap().len(), 1);
}

#[test]
fn password_file_is_read() {
    let desk = Desk::new(64 * KIB, 302);
    let vault = desk.vault();
    let pass_file = desk.path("pass.txt");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();
    let nobody = Cli::without_password();

    nobody
        .run(&["init", &vault, "--password-file", &s(&pass_file)])
        .expect_ok("init with a password file");
    nobody
        .run(&[
            "backup",
            &vault,
            &s(&desk.image),
            "--password-file",
            &s(&pass_file),
        ])
        .expect_ok("backup with a password file");

    // The trailing newline is not part of the passphrase.
    Cli::new()
        .run(&["points", &vault])
        .expect_ok("the same passphrase from the environment");
}

#[test]
fn unencrypted_vault_needs_no_passphrase() {
    let desk = Desk::new(300 * KIB, 303);
    let vault = desk.vault();
    let nobody = Cli::without_password();

    nobody
        .run(&[
            "init",
            &vault,
            "--encryption",
            "none",
            "--chunker",
            "fastcdc",
            "--compression",
            "none",
        ])
        .expect_ok("init --encryption none")
        .expect_mentions("fastcdc:4K/16K/64K", "init reports the chunker");
    nobody
        .run(&["backup", &vault, &s(&desk.image), "--disk", "sda"])
        .expect_ok("backup without a passphrase");
    let out = desk.path("restored.img");
    nobody
        .run(&["restore", &vault, "latest", &s(&out), "--disk", "sda"])
        .expect_ok("restore without a passphrase");
    assert_same_bytes(&out, &desk.image);
    assert!(objects(&desk.path("vault"), "keys/").is_empty());
}

#[test]
fn encrypted_init_without_a_passphrase_is_refused() {
    let desk = Desk::new(0, 304);
    let vault = desk.vault();

    Cli::without_password()
        .run(&["init", &vault])
        .expect_code(EXIT_PASSPHRASE, "init with nobody to ask")
        .expect_mentions("DISKVAULT_PASSWORD", "says how to give one");
    assert!(!desk.path("vault").join("config").exists());
}

#[test]
fn init_refuses_a_directory_in_use() {
    let desk = Desk::new(0, 305);
    let not_empty = desk.path("photos");
    std::fs::create_dir(&not_empty).unwrap();
    std::fs::write(not_empty.join("cat.jpg"), b"meow").unwrap();

    Cli::without_password()
        .run(&["init", &s(&not_empty), "--encryption", "none"])
        .expect_code(EXIT_REFUSED, "init over a non-empty directory")
        .expect_mentions("not empty", "says why");
    assert_eq!(std::fs::read(not_empty.join("cat.jpg")).unwrap(), b"meow");
}

#[test]
fn several_disks_by_name() {
    let desk = Desk::new(200 * KIB, 306);
    let second = desk.path("second.img");
    write_random_image(&second, 300 * KIB, 307);
    let vault = desk.vault();
    let cli = Cli::without_password();
    cli.run(&["init", &vault, "--encryption", "none"])
        .expect_ok("init");

    cli.run(&[
        "backup",
        &vault,
        &s(&desk.image),
        &s(&second),
        "--disk",
        "boot",
        "--disk",
        "root",
    ])
    .expect_ok("backup of two disks");

    let shown = cli.run(&["show", &vault, "latest", "--json"]).json();
    assert_eq!(shown["disks"][0]["name"], "boot");
    assert_eq!(shown["disks"][1]["name"], "root");
    let all = desk.path("all");
    cli.run(&["restore", &vault, "latest", &s(&all)])
        .expect_ok("restore all disks into a directory");
    assert_same_bytes(&all.join("boot.img"), &desk.image);
    assert_same_bytes(&all.join("root.img"), &second);
    let root = desk.path("root-only.img");
    cli.run(&["restore", &vault, "latest", &s(&root), "--disk", "root"])
        .expect_ok("restore one disk");
    assert_same_bytes(&root, &second);

    // One --disk name for two images is a mistake, caught before any work.
    cli.run(&[
        "backup",
        &vault,
        &s(&desk.image),
        &s(&second),
        "--disk",
        "boot",
    ])
    .expect_code(EXIT_USAGE, "two images, one name: a usage error")
    .expect_mentions("one name per image", "says what to do");
    let points = cli.run(&["points", &vault, "--json"]).json();
    assert_eq!(points.as_array().unwrap().len(), 1);
}

#[test]
fn restore_over_an_existing_file_needs_force() {
    let desk = Desk::new(500 * KIB, 308);
    let vault = desk.vault();
    let cli = Cli::without_password();
    cli.run(&["init", &vault, "--encryption", "none"])
        .expect_ok("init");
    cli.run(&["backup", &vault, &s(&desk.image)])
        .expect_ok("backup");
    let out = desk.path("out.img");
    std::fs::write(&out, b"yesterday's restore").unwrap();

    cli.run(&["restore", &vault, "latest", &s(&out)])
        .expect_code(EXIT_REFUSED, "restore over an existing file")
        .expect_mentions("--force", "says how to overwrite")
        .expect_mentions(&s(&out), "names the file");
    assert_eq!(std::fs::read(&out).unwrap(), b"yesterday's restore");

    cli.run(&["restore", &vault, "latest", &s(&out), "--force"])
        .expect_ok("restore --force");
    assert_same_bytes(&out, &desk.image);

    // A directory is no place for one disk, with or without --force, and
    // the user learns it before the restore runs.
    let dir = desk.path("restores");
    std::fs::create_dir(&dir).unwrap();
    for force in [false, true] {
        let mut args = vec!["restore", &vault, "latest"];
        let dir_arg = s(&dir);
        args.push(&dir_arg);
        if force {
            args.push("--force");
        }
        cli.run(&args)
            .expect_code(EXIT_REFUSED, "restore of one disk onto a directory")
            .expect_mentions("names a directory", "says why");
        assert!(dir.is_dir());
        assert!(!desk.path("restores.partial").exists());
    }
    // Nor is a path that ends in '/' (a directory the user meant to create).
    let new_dir = format!("{}/", s(&desk.path("new-dir")));
    cli.run(&["restore", &vault, "latest", &new_dir])
        .expect_code(EXIT_REFUSED, "restore of one disk to 'dir/'")
        .expect_mentions("names a directory", "says why");
    assert!(!desk.path("new-dir.partial").exists());
    assert!(!desk.path("new-dir").exists());
}

#[test]
fn point_id_prefixes_must_be_unique() {
    // Seventeen points: two of them must share a first hex digit.
    let desk = Desk::new(16 * KIB, 309);
    let vault_path = desk.path("vault");
    let repo = init_repo(&vault_path);
    let mut ids = Vec::new();
    for i in 0..17u8 {
        write_at(&desk.image, 0, &[i]);
        ids.push(backup_one(&repo, "disk", &desk.image).point.to_hex());
    }
    let vault = desk.vault();
    let cli = Cli::new();
    let shared = ids
        .iter()
        .find(|a| ids.iter().filter(|b| b[..1] == a[..1]).count() > 1)
        .unwrap()[..1]
        .to_string();

    cli.run(&["show", &vault, &shared])
        .expect_code(EXIT_REFUSED, "an ambiguous prefix")
        .expect_mentions("matches", "says it is ambiguous")
        .expect_mentions("more characters", "says what to do");

    for id in &ids {
        let shown = cli.run(&["show", &vault, &id[..12], "--json"]).json();
        assert_eq!(shown["id"], id.as_str());
        // Upper case works too.
        if id == &ids[0] {
            let upper = id[..12].to_ascii_uppercase();
            let shown = cli.run(&["show", &vault, &upper, "--json"]).json();
            assert_eq!(shown["id"], id.as_str());
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    let cli = Cli::without_password();

    let run = cli.run::<&str>(&[]);
    run.expect_code(EXIT_USAGE, "no subcommand");
    cli.run(&["backup"])
        .expect_code(EXIT_USAGE, "backup without arguments")
        .expect_mentions("Usage", "prints usage");
    cli.run(&["init", "/nonexistent/vault", "--chunker", "rabin"])
        .expect_code(EXIT_USAGE, "an unknown chunker")
        .expect_mentions("rabin", "names the bad value");
    cli.run(&["init", "/nonexistent/vault", "--chunker", "fixed:1"])
        .expect_code(EXIT_USAGE, "a chunk size out of range")
        .expect_mentions("out of range", "says why");
    cli.run(&["init", "/nonexistent/vault", "--compression", "zstd:99"])
        .expect_code(EXIT_USAGE, "a zstd level out of range");

    cli.run(&["--help"])
        .expect_ok("--help")
        .expect_mentions("restore", "lists the commands");
    cli.run(&["--version"])
        .expect_ok("--version")
        .expect_mentions(env!("CARGO_PKG_VERSION"), "prints the version");
}

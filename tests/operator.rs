//! Operator features of `backup`: consistency scripts, changed-block
//! input with a parent point, and images read from standard input.

mod common;

#[allow(dead_code)]
#[path = "../examples/mkimages.rs"]
mod mkimages;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const MIB: u64 = 1 << 20;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_diskvault"));
    c.env("DISKVAULT_PASSWORD", PASSPHRASE)
        .env_remove("DISKVAULT_NEW_PASSWORD");
    c
}

/// A vault at `dir/v` made by the CLI, fast key derivation not needed:
/// the library's init with test costs.
fn vault(dir: &Path) -> std::path::PathBuf {
    let v = dir.join("v");
    init_repo(&v);
    v
}

/// An image of `mib` MiB: random data with zero runs and a hole.
fn image(path: &Path, mib: u64, seed: u64) -> Vec<u8> {
    let mut rng = Xorshift::new(seed);
    let mut bytes = rng.bytes((mib * MIB) as usize);
    // Zero runs the backup must turn into holes.
    for z in (0..bytes.len()).step_by(3 * MIB as usize) {
        let end = (z + 256 * 1024).min(bytes.len());
        bytes[z..end].fill(0);
    }
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn show_json(v: &Path, point: &str) -> serde_json::Value {
    let r = Cli::new().run(&[
        "show".as_ref(),
        v.as_os_str(),
        point.as_ref(),
        "--json".as_ref(),
    ]);
    r.expect_ok("show");
    r.json()
}

#[test]
fn a_point_read_from_standard_input_equals_the_file_backup() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    // Sizes around the stream peek and the hash block: tiny, one block,
    // just past the peek, and not a multiple of anything.
    for (i, len) in [0u64, 1000, 64 << 10, 8 * MIB, 8 * MIB + 1, 13 * MIB + 4097]
        .into_iter()
        .enumerate()
    {
        let img = dir.path().join(format!("img{i}"));
        let mut bytes = Xorshift::new(i as u64).bytes(len as usize);
        if bytes.len() > 2 * MIB as usize {
            bytes[MIB as usize..2 * MIB as usize].fill(0);
        }
        std::fs::write(&img, &bytes).unwrap();
        Cli::new()
            .run(&[
                "backup".as_ref(),
                v.as_os_str(),
                img.as_os_str(),
                "--disk".as_ref(),
                "file".as_ref(),
            ])
            .expect_ok("file backup");
        let file_point = show_json(&v, "latest");

        let mut child = bin()
            .args(["backup".as_ref(), v.as_os_str(), "-".as_ref()])
            .args(["--disk", "piped"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feed = std::thread::spawn(move || {
            // Small writes, as a pipe from qemu-img gives them.
            for piece in bytes.chunks(100_003) {
                stdin.write_all(piece).unwrap();
            }
        });
        let out = child.wait_with_output().unwrap();
        feed.join().unwrap();
        assert!(
            out.status.success(),
            "stdin backup of {len} bytes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let piped = show_json(&v, "latest");
        let (f, p) = (&file_point["disks"][0], &piped["disks"][0]);
        assert_eq!(p["size"], len, "size of the stream of {len} bytes");
        for field in ["image_blake3", "manifest_root", "zero_bytes", "chunks"] {
            assert_eq!(f[field], p[field], "{field} for {len} bytes");
        }
        // The zero run became a hole, as from a file.
        if len > 2 * MIB {
            assert!(p["zero_bytes"].as_u64().unwrap() >= MIB);
        }
        let out = dir.path().join(format!("out{i}"));
        Cli::new()
            .run(&[
                "restore".as_ref(),
                v.as_os_str(),
                "latest".as_ref(),
                out.as_os_str(),
            ])
            .expect_ok("restore of the piped point");
        assert_same_bytes(&out, &img);
    }
    // Standard input needs a name.
    Cli::new()
        .run(&["backup".as_ref(), v.as_os_str(), "-".as_ref()])
        .expect_code(2, "unnamed stdin")
        .expect_mentions("--disk", "unnamed stdin");
}

fn backup_with(v: &Path, img: &Path, extra: &[&str]) -> common::Run {
    let mut args: Vec<std::ffi::OsString> = vec!["backup".into(), v.into(), img.into()];
    args.extend(["--disk".into(), "root".into()]);
    args.extend(extra.iter().map(|a| a.into()));
    Cli::new().run(&args)
}

#[test]
fn scripts_make_a_point_application_consistent_or_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let img = dir.path().join("root.img");
    image(&img, 4, 1);
    let log = dir.path().join("log");
    let logged = |name: &str| {
        format!(
            "echo {name} $DISKVAULT_HOOK $DISKVAULT_DISKS $DISKVAULT_OUTCOME >> {}",
            log.display()
        )
    };
    let post = logged("post");

    // Success: application-consistent; the scripts saw the disk names.
    let pre = logged("pre");
    backup_with(&v, &img, &["--pre-script", &pre, "--post-script", &post])
        .expect_ok("scripts succeed");
    let p = show_json(&v, "latest");
    assert_eq!(p["consistency"]["level"], "application");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, "pre pre root\npost post root ok\n");

    // A failing pre script: crash-consistent with the reason; post ran.
    std::fs::remove_file(&log).unwrap();
    backup_with(
        &v,
        &img,
        &["--pre-script", "exit 3", "--post-script", &post],
    )
    .expect_ok("failing pre script still backs up");
    let p = show_json(&v, "latest");
    assert_eq!(p["consistency"]["level"], "crash");
    assert!(p["consistency"]["reason"]
        .as_str()
        .unwrap()
        .contains("exit status: 3"));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "post post root ok\n"
    );

    // A hanging pre script is killed at the timeout.
    std::fs::remove_file(&log).unwrap();
    let started = std::time::Instant::now();
    backup_with(
        &v,
        &img,
        &[
            "--pre-script",
            "sleep 30",
            "--post-script",
            &post,
            "--script-timeout",
            "1s",
        ],
    )
    .expect_ok("hanging pre script");
    assert!(
        started.elapsed().as_secs() < 20,
        "the timeout did not kill it"
    );
    let p = show_json(&v, "latest");
    assert_eq!(p["consistency"]["level"], "crash");
    assert!(p["consistency"]["reason"]
        .as_str()
        .unwrap()
        .contains("timed out"));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "post post root ok\n"
    );

    // Required consistency: no point, the post script still runs.
    std::fs::remove_file(&log).unwrap();
    let before = objects(&v, "points").len();
    backup_with(
        &v,
        &img,
        &[
            "--pre-script",
            "false",
            "--post-script",
            &post,
            "--require-app-consistent",
        ],
    )
    .expect_code(7, "required consistency")
    .expect_mentions("application-consistent", "required consistency");
    assert_eq!(objects(&v, "points").len(), before, "a point was written");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "post post root failed\n"
    );

    // Without scripts, show says crash and why.
    backup_with(&v, &img, &[]).expect_ok("plain backup");
    Cli::new()
        .run(&["show".as_ref(), v.as_os_str(), "latest".as_ref()])
        .expect_ok("show")
        .expect_mentions("no consistency scripts", "show");
}

#[test]
fn sigint_during_the_read_still_runs_the_post_script() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let log = dir.path().join("log");
    let post = format!("echo $DISKVAULT_OUTCOME > {}", log.display());
    // A stream that never ends: the backup is reading when the signal comes.
    let mut child = bin()
        .args(["backup".as_ref(), v.as_os_str(), "-".as_ref()])
        .args([
            "--disk",
            "root",
            "--pre-script",
            "true",
            "--post-script",
            &post,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = std::thread::spawn(move || {
        let block = vec![7u8; 1 << 20];
        while stdin.write_all(&block).is_ok() {}
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on our child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    feed.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), "interrupted");
    assert!(
        objects(&v, "points").is_empty(),
        "an interrupted backup wrote a point"
    );
}

/// A 4 KiB-block list of the differences between two images.
fn changed_blocks(a: &[u8], b: &[u8]) -> String {
    let mut list = String::from("# offset length\n");
    for (i, (x, y)) in a.chunks(4096).zip(b.chunks(4096)).enumerate() {
        if x != y {
            list.push_str(&format!("{} {}\n", i * 4096, x.len()));
        }
    }
    list
}

#[test]
fn changed_block_input_reads_only_the_changes_and_restores_the_new_image() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    let img = dir.path().join("root.img");
    let old = image(&img, 24, 2);
    backup_with(&v, &img, &[]).expect_ok("first backup");

    // A day of changes: scattered blocks, one in a zero run, one at the end.
    let mut new = old.clone();
    let mut rng = Xorshift::new(9);
    for _ in 0..40 {
        let at = rng.below(new.len() as u64 / 4096) as usize * 4096;
        rng.fill(&mut new[at..at + 4096]);
    }
    new[3 * MIB as usize + 8192..3 * MIB as usize + 12288].fill(0x55);
    let last = new.len() - 100;
    new[last..].fill(1);
    std::fs::write(&img, &new).unwrap();
    let list = dir.path().join("changed.txt");
    std::fs::write(&list, changed_blocks(&old, &new)).unwrap();

    let r = backup_with(
        &v,
        &img,
        &[
            "--changed-blocks",
            list.to_str().unwrap(),
            "--parent",
            "latest",
            "--json",
        ],
    );
    r.expect_ok("changed-block backup");
    let j = r.json();
    let read = j["bytes_read"].as_u64().unwrap();
    // 42 blocks of 4 KiB changed: at most one 16 KiB chunk read for each.
    assert!(
        read <= 42 * 16384,
        "read {read} bytes for 42 changed blocks"
    );
    assert!(
        read >= 42 * 4096,
        "read {read} bytes: fewer than the changes"
    );
    let p = show_json(&v, "latest");
    assert_eq!(p["disks"][0]["origin"]["kind"], "changed-blocks");
    assert_eq!(
        p["disks"][0]["image_blake3"].as_str().unwrap(),
        blake3::hash(&new).to_hex().as_str()
    );
    let out = dir.path().join("out.img");
    Cli::new()
        .run(&[
            "restore".as_ref(),
            v.as_os_str(),
            "latest".as_ref(),
            out.as_os_str(),
        ])
        .expect_ok("restore");
    assert_eq!(std::fs::read(&out).unwrap(), new);
    Cli::new()
        .run(&["check".as_ref(), v.as_os_str(), "--read-data".as_ref()])
        .expect_ok("check");

    // --verify-unchanged accepts a true list and catches a change the list
    // misses.
    backup_with(
        &v,
        &img,
        &[
            "--changed-blocks",
            list.to_str().unwrap(),
            "--parent",
            "latest",
            "--verify-unchanged",
        ],
    )
    .expect_ok("verify a true (over-wide) list");
    let mut newer = new.clone();
    newer[5 * MIB as usize + 123] ^= 0xff;
    std::fs::write(&img, &newer).unwrap();
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let points = objects(&v, "points").len();
    backup_with(
        &v,
        &img,
        &[
            "--changed-blocks",
            empty.to_str().unwrap(),
            "--parent",
            "latest",
            "--verify-unchanged",
        ],
    )
    .expect_code(1, "a change outside the list")
    .expect_mentions("changed outside the changed-block list", "missed change");
    assert_eq!(objects(&v, "points").len(), points);

    // Hostile or mistaken lists get a usage error naming the problem.
    for (body, says) in [
        ("0 999999999999", "past the disk's end"),
        ("12", "line 1"),
        ("[{\"offset\": 1}]", "JSON"),
    ] {
        std::fs::write(&list, body).unwrap();
        backup_with(
            &v,
            &img,
            &[
                "--changed-blocks",
                list.to_str().unwrap(),
                "--parent",
                "latest",
            ],
        )
        .expect_code(2, says)
        .expect_mentions(says, says);
    }
    // A list without its parent point.
    backup_with(&v, &img, &["--changed-blocks", empty.to_str().unwrap()])
        .expect_code(2, "no parent")
        .expect_mentions("--parent", "no parent");
    // A parent without that disk.
    let other = dir.path().join("other.img");
    std::fs::write(&other, vec![1u8; 1 << 20]).unwrap();
    Cli::new()
        .run(&[
            "backup".as_ref(),
            v.as_os_str(),
            other.as_os_str(),
            "--disk".as_ref(),
            "data".as_ref(),
        ])
        .expect_ok("other disk");
    backup_with(
        &v,
        &img,
        &[
            "--changed-blocks",
            empty.to_str().unwrap(),
            "--parent",
            "latest",
        ],
    )
    .expect_code(7, "parent lacks the disk")
    .expect_mentions("no disk named 'root'", "parent lacks the disk");
}

/// The case: the generator's ext4 disk and its next day, the list
/// of changed 4 KiB blocks, a point that restores to the new day while
/// reading little more than the changed bytes.
#[test]
fn an_ext4_day_of_churn_backs_up_from_its_changed_blocks() {
    if let Some(why) = mkimages::missing_tool() {
        eprintln!("skipping: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut opts = mkimages::Options::new(dir.path().join("images"), 128);
    opts.versions = 2;
    let made = mkimages::generate(&opts).unwrap();
    let (v1, v2) = (&made.images[0], &made.images[1]);
    let (old, new) = (std::fs::read(v1).unwrap(), std::fs::read(v2).unwrap());
    let list = changed_blocks(&old, &new);
    let changed =
        diskvault::format::changes::ChangedRanges::parse(list.as_bytes(), new.len() as u64)
            .unwrap();
    assert!(changed.bytes() > 0, "a day of churn changed nothing");

    let repo = init_repo(&dir.path().join("v"));
    let first = backup_one(&repo, "root", v1);
    let report = diskvault::backup(
        &repo,
        &diskvault::BackupOptions {
            disks: vec![diskvault::BackupDisk {
                changed: Some(changed.clone()),
                ..diskvault::BackupDisk::file("root", v2).unwrap()
            }],
            parent: Some(first.point.to_hex()),
            ..Default::default()
        },
    )
    .unwrap();
    let read = report.totals().bytes_read;
    eprintln!(
        "changed {} bytes, read {read} of {}, read back {}",
        changed.bytes(),
        new.len(),
        report.bytes_from_repository
    );
    assert!(read >= changed.bytes() && read <= 4 * changed.bytes());
    let disk = &report.body.disks[0];
    assert_eq!(disk.origin.kind, diskvault::SourceKind::ChangedBlocks);
    assert_eq!(disk.origin.parent, Some(first.point));
    // Everything not read was taken from the parent (or was a hole).
    assert!(disk.origin.bytes_from_parent > new.len() as u64 / 2);
    assert!(disk.origin.bytes_from_parent + read <= new.len() as u64);
    let out = dir.path().join("out.img");
    restore_to(&repo, &report.point.to_hex(), &out);
    assert_same_bytes(&out, v2);
    assert_reads_clean(&repo, "after a changed-block backup");
}

//! Hardening, one class of problem at a time, each tried with many
//! variants: restore writes only its output; memory stays bounded on any
//! input; output failures are errors, not panics; one bad object hides only
//! itself; messages and exit codes follow the README.

mod common;

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use diskvault::{restore, RestoreOptions};

const EXIT_DAMAGED: i32 = 4;
const EXIT_USAGE: i32 = 2;
const EXIT_REFUSED: i32 = 7;

/// A vault with one point of a 2 MiB disk (`root`) and the image.
struct Vault {
    dir: tempfile::TempDir,
    path: PathBuf,
    image: PathBuf,
    point: String,
}

impl Vault {
    fn new() -> Vault {
        let dir = scratch_dir();
        let path = dir.path().join("vault");
        let repo = init_repo(&path);
        let image = dir.path().join("disk.img");
        write_random_image(&image, 2 * MIB, 11);
        let point = backup_one(&repo, "root", &image).point.to_hex();
        Vault {
            dir,
            path,
            image,
            point,
        }
    }

    fn v(&self) -> &str {
        self.path.to_str().unwrap()
    }

    fn at(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn restore_to(&self, out: &Path, extra: &[&str]) -> Run {
        let mut args = vec!["restore", self.v(), "latest", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        Cli::new().run(&args)
    }

    /// Names of the files beside `out` that a restore may have left.
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".partial"))
            .collect()
    }
}

// ---- 1. restore never harms what is not its output -------------------------

#[test]
fn restore_writes_only_new_files_replaced_files_and_block_devices() {
    let v = Vault::new();
    // A FIFO, a socket, a directory, a character device, dangling and
    // looping links: refused with or without --force, and left as they were.
    let fifo = v.at("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let socket = v.at("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let dir = v.at("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let dangling = v.at("dangling");
    std::os::unix::fs::symlink(v.at("nowhere"), &dangling).unwrap();
    let looping = v.at("loop");
    std::os::unix::fs::symlink(&looping, &looping).unwrap();
    let to_fifo = v.at("link-to-fifo");
    std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
    let cases: [(&Path, &str); 7] = [
        (Path::new("/dev/null"), "character device"),
        (&fifo, "FIFO"),
        (&socket, "socket"),
        (&dir, "directory"),
        (&dangling, "dangling"),
        (&to_fifo, "FIFO"),
        (&looping, ""),
    ];
    for (path, what) in cases {
        for force in [false, true] {
            let extra: &[&str] = if force { &["--force"] } else { &[] };
            let run = v.restore_to(path, extra);
            assert_ne!(run.code, 0, "{}: {}", path.display(), run.text());
            if path != looping.as_path() {
                run.expect_code(EXIT_REFUSED, &format!("restore onto {}", path.display()))
                    .expect_mentions(what, "says what the output is");
            }
        }
    }
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    assert!(std::fs::symlink_metadata(&dangling)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!v.at("nowhere").exists());

    // A new file is created; an existing one is replaced only with --force.
    let new = v.at("new.img");
    v.restore_to(&new, &[]).expect_ok("restore to a new file");
    assert_same_bytes(&new, &v.image);
    std::fs::write(&new, b"precious").unwrap();
    v.restore_to(&new, &[])
        .expect_code(EXIT_REFUSED, "an existing file without --force");
    assert_eq!(std::fs::read(&new).unwrap(), b"precious");
    v.restore_to(&new, &["--force"])
        .expect_ok("--force replaces it");
    assert_same_bytes(&new, &v.image);

    // A link to a regular file: the file it points to is written (with
    // --force), and the link stays a link.
    let target = v.at("target.img");
    std::fs::write(&target, b"old").unwrap();
    let link = v.at("link.img");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    v.restore_to(&link, &[])
        .expect_code(EXIT_REFUSED, "a link to a file without --force");
    v.restore_to(&link, &["--force"])
        .expect_ok("a link to a file with --force");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_same_bytes(&target, &v.image);
    assert!(v.leftovers().is_empty(), "{:?}", v.leftovers());
}

#[test]
fn a_file_named_like_a_temporary_is_never_touched() {
    let v = Vault::new();
    let out = v.at("out.img");
    for name in ["out.img.partial", "out.img.diskvault-000000000000.partial"] {
        std::fs::write(v.at(name), b"mine").unwrap();
    }
    v.restore_to(&out, &[]).expect_ok("restore");
    assert_same_bytes(&out, &v.image);
    for name in ["out.img.partial", "out.img.diskvault-000000000000.partial"] {
        assert_eq!(std::fs::read(v.at(name)).unwrap(), b"mine", "{name}");
    }
}

/// A restore that was killed leaves its temporary behind. The next restore
/// to the same output names it (library report and a CLI warning), so its
/// space can be freed, and still touches nothing but its output: not the
/// stale temporary (a user's file could have its name), not one a running
/// restore holds (locked), not one just made, not a link named like one,
/// not one of another output.
#[test]
fn temporaries_of_killed_restores_are_named_and_nothing_else_is() {
    use std::os::unix::io::AsRawFd;
    let v = Vault::new();
    let out = v.at("out.img");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(600);
    let make = |name: &str, old: bool| {
        let path = v.at(name);
        std::fs::write(&path, name.as_bytes()).unwrap();
        if old {
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(long_ago).unwrap();
        }
        path
    };
    let killed = make("out.img.diskvault-0123456789ab.partial", true);
    let running = make("out.img.diskvault-aaaaaaaaaaaa.partial", true);
    let just_made = make("out.img.diskvault-bbbbbbbbbbbb.partial", false);
    let not_ours = [
        make("out.img.diskvault-0123.partial", true),
        make("out.img.diskvault-0123456789ag.partial", true),
        make("other.img.diskvault-0123456789ab.partial", true),
        make("out.img.partial", true),
    ];
    let elsewhere = make("elsewhere.img", true);
    let link = v.at("out.img.diskvault-cccccccccccc.partial");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    // A running restore holds its temporary locked.
    let held = std::fs::File::open(&running).unwrap();
    // SAFETY: flock on an open descriptor.
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );

    let report = restore(&open_repo(&v.path), &restore_opts("latest", &out)).unwrap();
    assert_same_bytes(&out, &v.image);
    assert_eq!(report.disks[0].stale_temporaries, vec![killed.clone()]);
    let mut all = vec![killed.clone(), running.clone(), just_made, elsewhere];
    all.extend(not_ours);
    for path in &all {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), name.as_bytes(), "{name}");
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // The command says so on standard error, and succeeds.
    let run = v.restore_to(&out, &["--force"]);
    run.expect_ok("restore over the first");
    assert!(
        run.stderr.contains("warning: ")
            && run
                .stderr
                .contains("out.img.diskvault-0123456789ab.partial")
            && run.stderr.contains("remove it to free the space"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("aaaaaaaaaaaa"), "{}", run.stderr);
    drop(held);
}

#[test]
fn restore_into_a_damaged_vault_leaves_the_old_copy_untouched() {
    let v = Vault::new();
    let repo = open_repo(&v.path);
    // Day 2 rewrites the end of the disk; the copy to update is day 1.
    let day2 = v.at("day2.img");
    std::fs::copy(&v.image, &day2).unwrap();
    write_at(&day2, MIB + 512 * KIB, &Xorshift::new(12).bytes(512 * 1024));
    let point2 = backup_one(&repo, "root", &day2).point.to_hex();
    let copy = v.at("copy.img");
    std::fs::copy(&v.image, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();

    // Rot the last chunk day 2 needs: its pack is the newest.
    let newest = objects(&v.path, "packs/")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let len = std::fs::metadata(&newest).unwrap().len();
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = (len / 2) as usize;
    bytes[at] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();

    let run = Cli::new().run(&[
        "restore",
        v.v(),
        &point2[..12],
        "--into",
        copy.to_str().unwrap(),
    ]);
    run.expect_code(EXIT_DAMAGED, "restore --into from a damaged vault");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "the old copy is untouched"
    );

    // A copy of another size needs --force; the library says so too.
    let small = v.at("small.img");
    write_random_image(&small, MIB, 13);
    let e = restore(
        &repo,
        &RestoreOptions {
            into_existing: true,
            ..restore_opts(&v.point, &small)
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(std::fs::metadata(&small).unwrap().len(), MIB);
}

/// SIGINT or SIGTERM in the middle of a restore: the temporary is removed,
/// the output never appears, and the exit status says which signal.
#[test]
fn an_interrupted_restore_leaves_nothing_behind() {
    let dir = scratch_dir();
    let vault = dir.path().join("vault");
    let repo = init_repo(&vault);
    let image = dir.path().join("big.img");
    write_random_image(&image, 96 * MIB, 21);
    backup_one(&repo, "root", &image);
    for (signal, status) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let out = dir.path().join("out.img");
        let mut child = Command::new(env!("CARGO_BIN_EXE_diskvault"))
            .args([
                "restore",
                vault.to_str().unwrap(),
                "latest",
                out.to_str().unwrap(),
            ])
            .env("DISKVAULT_PASSWORD", PASSPHRASE)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Once the temporary exists, the restore is writing.
        let started = std::time::Instant::now();
        let partial = || {
            std::fs::read_dir(dir.path()).unwrap().any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".partial")
            })
        };
        while !partial() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let code = child.wait().unwrap().code();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        if code == Some(0) {
            // It finished first: a fast machine. The output is whole.
            assert_same_bytes(&out, &image);
            std::fs::remove_file(&out).unwrap();
            continue;
        }
        assert_eq!(code, Some(status), "signal {signal}: {err}");
        assert!(err.contains("interrupted"), "{err}");
        assert!(!out.exists());
        assert!(!partial(), "the temporary was removed");
    }
}

// ---- 2. memory bounded on any input ----------------------------------------

/// Peak resident memory of the largest child process waited for so far.
fn children_peak_rss() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as u64 * 1024
}

/// Runs diskvault and asserts its exit code, its message, and that no
/// child so far used more than `bound` bytes of memory.
fn bounded(args: &[&str], password_file: Option<&Path>, code: i32, says: &str, bound: u64) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_diskvault"));
    cmd.args(args).stdin(Stdio::null());
    match password_file {
        Some(p) => cmd.arg("--password-file").arg(p),
        None => cmd.env("DISKVAULT_PASSWORD", PASSPHRASE),
    };
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
    assert!(text.contains(says), "{args:?}: expected {says:?} in {text}");
    assert!(!text.contains("panicked"), "{args:?}: {text}");
    let peak = children_peak_rss();
    assert!(
        peak <= bound,
        "{args:?}: a run peaked at {} MiB of memory, more than {} MiB",
        peak >> 20,
        bound >> 20
    );
}

/// A sparse file of 8 GiB of zeros at `path`, in place of what was there.
fn huge(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    f.set_len(8 << 30).unwrap();
}

#[test]
fn endless_and_oversized_inputs_keep_memory_bounded() {
    // Argon2 takes 64 MiB; nothing else may take much.
    const BOUND: u64 = 256 << 20;
    let v = Vault::new();
    let vault = v.v().to_string();
    for pass in ["/dev/zero".to_string(), {
        let p = v.at("huge-password");
        huge(&p);
        p.display().to_string()
    }] {
        bounded(
            &["points", &vault],
            Some(Path::new(&pass)),
            EXIT_USAGE,
            "longer than 4096",
            BOUND,
        );
    }
    for args in [
        ["check", &vault, "--threads", "100000"],
        ["check", &vault, "--connections", "100000"],
        ["--connections", "0", "check", &vault],
    ] {
        bounded(&args, None, EXIT_USAGE, "1 to 256", BOUND);
    }

    // Each kind of object, replaced by 8 GiB: each command names it and
    // stays bounded.
    let copy = |name: &str| {
        let to = v.at(name);
        copy_dir(&v.path, &to);
        to
    };
    let c = copy("config-vault");
    huge(&c.join("config"));
    bounded(
        &["points", c.to_str().unwrap()],
        None,
        EXIT_DAMAGED,
        "config",
        BOUND,
    );

    let k = copy("key-vault");
    huge(&only_object(&k, "keys/"));
    bounded(
        &["points", k.to_str().unwrap()],
        None,
        EXIT_DAMAGED,
        "keys/",
        BOUND,
    );

    let p = copy("point-vault");
    huge(&only_object(&p, "points/"));
    bounded(
        &["points", p.to_str().unwrap()],
        None,
        EXIT_DAMAGED,
        "points/",
        BOUND,
    );
    bounded(
        &["check", p.to_str().unwrap()],
        None,
        EXIT_DAMAGED,
        "points/",
        BOUND,
    );

    let i = copy("index-vault");
    huge(&only_object(&i, "index/"));
    bounded(
        &["check", i.to_str().unwrap()],
        None,
        EXIT_DAMAGED,
        "index/",
        BOUND,
    );
    bounded(
        &[
            "restore",
            i.to_str().unwrap(),
            "latest",
            v.at("i.img").to_str().unwrap(),
        ],
        None,
        EXIT_DAMAGED,
        "index/",
        BOUND,
    );

    let k = copy("pack-vault");
    huge(&only_object(&k, "packs/"));
    bounded(
        &["check", k.to_str().unwrap(), "--read-data"],
        None,
        EXIT_DAMAGED,
        "packs/",
        BOUND,
    );
    bounded(
        &[
            "sync",
            k.to_str().unwrap(),
            v.at("replica").to_str().unwrap(),
        ],
        None,
        EXIT_DAMAGED,
        "packs/",
        BOUND,
    );
    bounded(
        &["repair", k.to_str().unwrap(), "--from", v.v()],
        None,
        0,
        "packs/",
        BOUND,
    );
}

// ---- 3. output failures are errors, not panics -------------------------------

#[test]
fn a_closed_or_full_standard_output_is_not_a_panic() {
    let v = Vault::new();
    let image = v.image.to_str().unwrap().to_string();
    for args in [
        vec!["points", v.v()],
        vec!["points", v.v(), "--json"],
        vec!["show", v.v(), "latest"],
        vec!["stats", v.v()],
        vec!["check", v.v()],
        vec!["backup", v.v(), &image, "--disk", "root"],
    ] {
        // A pipe whose reader is gone: ends quietly with the operation's
        // status.
        let mut child = Command::new(env!("CARGO_BIN_EXE_diskvault"))
            .args(&args)
            .env("DISKVAULT_PASSWORD", PASSPHRASE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(0), "{args:?} into a closed pipe: {err}");
        assert!(
            err.is_empty(),
            "{args:?} into a closed pipe says nothing: {err}"
        );

        // A full disk: one line, no backtrace, the operation's status.
        let full = std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_diskvault"))
            .args(&args)
            .env("DISKVAULT_PASSWORD", PASSPHRASE)
            .stdin(Stdio::null())
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?} > /dev/full: {err}");
        assert!(
            err.contains("cannot write the output") && err.contains("No space"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    }
    // The backups above all made their points, whatever their output did.
    assert_eq!(open_repo(&v.path).list_points().unwrap().len(), 3);
}

// ---- 4. one bad object never hides the rest ---------------------------------

#[test]
fn a_damaged_index_file_hides_only_its_chunks_and_repair_index_rebuilds_it() {
    let v = Vault::new();
    let repo = open_repo(&v.path);
    let other = v.at("other.img");
    write_random_image(&other, MIB, 14);
    let second = backup_one(&repo, "other", &other).point.to_hex();
    // The first point's index file (the older one) goes bad.
    let first_index = objects(&v.path, "index/")
        .into_iter()
        .min_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let mut bytes = std::fs::read(&first_index).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&first_index, bytes).unwrap();
    let name = first_index
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // The other point still restores, with a warning naming the file.
    let out = v.at("other.out");
    Cli::new()
        .run(&["restore", v.v(), &second[..12], out.to_str().unwrap()])
        .expect_ok("restore of a point that does not need the damaged file")
        .expect_mentions(&name, "names the damaged index file");
    assert_same_bytes(&out, &other);
    // The first one fails naming the file and the cure.
    Cli::new()
        .run(&[
            "restore",
            v.v(),
            &v.point[..12],
            v.at("first.out").to_str().unwrap(),
        ])
        .expect_code(EXIT_DAMAGED, "restore of a point that needs it")
        .expect_mentions(&name, "names it")
        .expect_mentions("repair REPO --index", "says how to mend it");
    // A backup goes on.
    Cli::new()
        .run(&["backup", v.v(), other.to_str().unwrap(), "--disk", "other"])
        .expect_ok("backup beside a damaged index file")
        .expect_mentions(&name, "names it");

    Cli::new()
        .run(&["repair", v.v(), "--index"])
        .expect_ok("repair --index")
        .expect_mentions(&name, "removes it");
    assert!(!first_index.exists());
    let report = assert_reads_clean(&open_repo(&v.path), "after repair --index");
    assert_eq!(report.unindexed_packs, 0);
    Cli::new()
        .run(&[
            "restore",
            v.v(),
            &v.point[..12],
            v.at("first.out").to_str().unwrap(),
        ])
        .expect_ok("the first point restores again");
    assert_same_bytes(&v.at("first.out"), &v.image);
}

#[test]
fn a_damaged_point_hides_only_itself() {
    let v = Vault::new();
    let repo = open_repo(&v.path);
    let other = v.at("other.img");
    write_random_image(&other, MIB, 15);
    let second = backup_one(&repo, "other", &other).point.to_hex();
    // The newest point object is damaged: 'latest' is the other one.
    let bad = v.path.join("points").join(&second);
    let mut bytes = std::fs::read(&bad).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&bad, bytes).unwrap();
    let run = Cli::new().run(&["points", v.v(), "--json"]);
    run.expect_code(EXIT_DAMAGED, "points with a damaged point")
        .expect_mentions(&second, "names it");
    let listed = serde_json::from_str::<serde_json::Value>(run.stdout.trim()).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "the other point is listed"
    );
    let out = v.at("latest.img");
    Cli::new()
        .run(&["restore", v.v(), "latest", out.to_str().unwrap()])
        .expect_ok("latest is the readable point");
    assert_same_bytes(&out, &v.image);
}

#[test]
fn check_reports_stale_temporaries_and_strays_and_sync_removes_its_temporaries() {
    let v = Vault::new();
    let tmp = v.path.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let stale = tmp.join("0123.tmp");
    std::fs::write(&stale, b"half a pack").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let pack = only_object(&v.path, "packs/");
    let misplaced = v.path.join("packs/zz").join(pack.file_name().unwrap());
    std::fs::create_dir_all(misplaced.parent().unwrap()).unwrap();
    std::fs::copy(&pack, &misplaced).unwrap();
    let upper = v.path.join("points").join(v.point.to_uppercase());
    std::fs::write(&upper, b"x").unwrap();
    let run = Cli::new().run(&["check", v.v(), "--json"]);
    run.expect_ok("check: strays and litter are notes, not problems");
    let j = run.json();
    assert_eq!(j["stale_temporaries"], 1);
    let strays: Vec<String> = j["strays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(strays.len(), 2, "{strays:?}");

    // A sync into the vault (as the destination) removes the stale
    // temporary it finds there.
    let source = v.at("source");
    Cli::new()
        .run(&["sync", v.v(), source.to_str().unwrap()])
        .expect_ok("sync out");
    let tmp_src = source.join("tmp");
    std::fs::create_dir_all(&tmp_src).unwrap();
    let litter = tmp_src.join("dead.tmp");
    std::fs::write(&litter, b"x").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&litter)
        .unwrap()
        .set_modified(old)
        .unwrap();
    Cli::new()
        .run(&["sync", v.v(), source.to_str().unwrap()])
        .expect_ok("sync again");
    assert!(!litter.exists(), "sync removed the stale temporary");
}

// ---- 5. messages and exit codes ----------------------------------------------

#[test]
fn messages_name_what_is_wrong_and_exit_codes_follow_the_table() {
    let v = Vault::new();
    let img = v.image.to_str().unwrap();
    Cli::new()
        .run(&["backup", v.v(), img, img, "--disk", "one"])
        .expect_code(EXIT_USAGE, "a --disk count that does not match");
    Cli::with_password("")
        .run(&["points", v.v()])
        .expect_code(EXIT_USAGE, "an empty passphrase")
        .expect_mentions("empty", "says so");
    Cli::new()
        .run(&["sync", v.v(), img])
        .expect_code(EXIT_REFUSED, "sync into a file")
        .expect_mentions("is a file, not a directory", "says what is wrong")
        .expect_mentions(img, "names it");
    Cli::new()
        .run(&["backup", v.v(), img, "--disk", "a/b"])
        .expect_code(EXIT_REFUSED, "a disk name with '/'")
        .expect_mentions("plain name", "says what a name may be");

    // The passphrase is the first line, from a file or the environment.
    let pass_file = v.at("pass");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\r\nsecond line\n")).unwrap();
    Cli::without_password()
        .run(&[
            "points",
            v.v(),
            "--password-file",
            pass_file.to_str().unwrap(),
        ])
        .expect_ok("first line of the file, without CR LF");
    Cli::with_password(&format!("{PASSPHRASE}\nignored"))
        .run(&["points", v.v()])
        .expect_ok("first line of the variable");

    // Settings as users write them.
    let other = v.at("plain");
    diskvault::Repository::init(
        &other,
        None,
        &diskvault::InitOptions {
            encryption: diskvault::Encryption::None,
            ..fast_init()
        },
    )
    .unwrap();
    let run = Cli::new().run(&["sync", v.v(), other.to_str().unwrap()]);
    assert!(!run.text().contains("Aes256Gcm"), "{}", run.text());

    // check does not tell its user to run check.
    let index = only_object(&v.path, "index/");
    std::fs::write(&index, b"not an index").unwrap();
    let run = Cli::new().run(&["check", v.v()]);
    run.expect_code(EXIT_DAMAGED, "check with a damaged index file")
        .expect_mentions("repair REPO --index", "says what mends it");
    assert!(
        !run.text().contains("run 'diskvault check'"),
        "{}",
        run.text()
    );
}

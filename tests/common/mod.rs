//! Shared arrangements for the integration tests: synthetic disk images from
//! a seeded generator, repositories with a cheap key derivation, and a
//! runner for the `diskvault` command.
//!
//! Every test crate compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod emulators;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use diskvault::{
    backup, check, restore, BackupOptions, BackupReport, CheckOptions, CheckReport, InitOptions,
    KdfCost, Repository, RestoreOptions, RestoreReport,
};

/// The passphrase of every encrypted test repository.
pub const PASSPHRASE: &str = "correct horse battery staple";

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// Default chunk size of a repository (fixed 16 KiB chunks).
pub const DEFAULT_CHUNK: u64 = 16 * KIB;

/// A tiny xorshift64* generator: deterministic image contents without a
/// dependency, so a failing test fails the same way every time.
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves; mix the seed so that
        // small seeds give unrelated streams.
        Xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

/// Writes `len` incompressible bytes from `seed` to `path`.
pub fn write_random_image(path: &Path, len: u64, seed: u64) -> Vec<u8> {
    let data = Xorshift::new(seed).bytes(len as usize);
    std::fs::write(path, &data).expect("write image");
    data
}

/// Creates a sparse file of `size` bytes holding `pieces` (offset, bytes)
/// and holes everywhere else.
pub fn write_sparse_image(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) {
    let f = File::create(path).expect("create sparse image");
    f.set_len(size).expect("set_len");
    for (off, bytes) in pieces {
        f.write_all_at(bytes, *off)
            .expect("write into sparse image");
    }
    f.sync_all().expect("sync sparse image");
}

/// Overwrites `bytes` at `offset` in an existing file.
pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    f.write_all_at(bytes, offset).expect("write_at");
}

/// Bytes the file system really allocated for `path`.
pub fn allocated_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").blocks() * 512
}

/// Asserts `restored` holds the same bytes as `original`; on a difference,
/// says where, so a failure explains itself without dumping megabytes.
pub fn assert_same_bytes(restored: &Path, original: &Path) {
    let a = File::open(restored).expect("open restored image");
    let b = File::open(original).expect("open original image");
    let (len_a, len_b) = (a.metadata().unwrap().len(), b.metadata().unwrap().len());
    assert_eq!(
        len_a,
        len_b,
        "{} has {len_a} bytes, the original {} has {len_b}",
        restored.display(),
        original.display(),
    );
    let mut buf_a = vec![0u8; MIB as usize];
    let mut buf_b = vec![0u8; MIB as usize];
    let mut pos = 0u64;
    while pos < len_a {
        let n = (len_a - pos).min(MIB) as usize;
        a.read_exact_at(&mut buf_a[..n], pos)
            .expect("read restored image");
        b.read_exact_at(&mut buf_b[..n], pos)
            .expect("read original image");
        if let Some(i) = buf_a[..n].iter().zip(&buf_b[..n]).position(|(x, y)| x != y) {
            panic!(
                "{} differs from {} first at byte {}",
                restored.display(),
                original.display(),
                pos + i as u64
            );
        }
        pos += n as u64;
    }
}

/// Init options with a cheap key derivation (tests only).
pub fn fast_init() -> InitOptions {
    InitOptions {
        kdf: KdfCost::insecure_fast(),
        ..InitOptions::default()
    }
}

/// Creates an encrypted repository at `path` with [`PASSPHRASE`].
pub fn init_repo(path: &Path) -> Repository {
    init_repo_with(path, &fast_init())
}

pub fn init_repo_with(path: &Path, opts: &InitOptions) -> Repository {
    Repository::init(path, Some(PASSPHRASE.as_bytes()), opts).expect("init repository")
}

pub fn open_repo(path: &Path) -> Repository {
    Repository::open(path, Some(PASSPHRASE.as_bytes())).expect("open repository")
}

/// Backs up one image under the disk name `name`.
pub fn backup_one(repo: &Repository, name: &str, image: &Path) -> BackupReport {
    backup_disks(repo, &[(name, image)])
}

/// Backs up several images as one recovery point.
pub fn backup_disks(repo: &Repository, disks: &[(&str, &Path)]) -> BackupReport {
    backup(
        repo,
        &BackupOptions {
            disks: disks
                .iter()
                .map(|(name, path)| diskvault::BackupDisk::file(name.to_string(), path).unwrap())
                .collect(),
            ..BackupOptions::default()
        },
    )
    .expect("backup")
}

pub fn restore_opts(point: &str, output: &Path) -> RestoreOptions {
    RestoreOptions {
        point: point.to_string(),
        disk: None,
        output: output.to_path_buf(),
        force: false,
        threads: None,
        ..Default::default()
    }
}

/// Restores every disk of `point` to `output`.
pub fn restore_to(repo: &Repository, point: &str, output: &Path) -> RestoreReport {
    restore(repo, &restore_opts(point, output)).expect("restore")
}

/// Runs `check --read-data` and asserts it finds nothing wrong; `what`
/// says which case, in the failure message.
pub fn assert_reads_clean(repo: &Repository, what: &str) -> CheckReport {
    let report = check(
        repo,
        &CheckOptions {
            read_data: true,
            threads: None,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{what}: check --read-data: {e}"));
    assert!(report.is_ok(), "{what}: {:?}", report.problems);
    report
}

/// Every file under `dir`, relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let p = entry.expect("dir entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Path of one object file in a repository, by key prefix (`packs/`,
/// `index/`, `points/`, `keys/`), panicking unless exactly one exists.
pub fn only_object(repo: &Path, prefix: &str) -> PathBuf {
    let found = objects(repo, prefix);
    assert_eq!(
        found.len(),
        1,
        "expected one object under {prefix}, found {found:?}"
    );
    found.into_iter().next().expect("one object")
}

/// Paths of the object files under a key prefix.
pub fn objects(repo: &Path, prefix: &str) -> Vec<PathBuf> {
    let dir = repo.join(prefix.trim_end_matches('/'));
    if !dir.exists() {
        return Vec::new();
    }
    files_under(&dir).into_iter().map(|p| dir.join(p)).collect()
}

/// The outcome of one `diskvault` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(args: &[String], out: Output) -> Run {
        let run = Run {
            code: out.status.code().expect("diskvault was killed by a signal"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !run.stdout.contains("panicked") && !run.stderr.contains("panicked"),
            "diskvault {args:?} panicked:\n{}{}",
            run.stdout,
            run.stderr
        );
        run
    }

    /// Both streams, for messages that may go to either.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn expect_code(&self, code: i32, what: &str) -> &Run {
        assert_eq!(
            self.code, code,
            "{what}: expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn expect_ok(&self, what: &str) -> &Run {
        self.expect_code(0, what)
    }

    /// Asserts the output mentions `needle`.
    pub fn expect_mentions(&self, needle: &str, what: &str) -> &Run {
        assert!(
            self.text().contains(needle),
            "{what}: expected the output to mention {needle:?}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}):\n{}", self.stdout);
        })
    }
}

/// Runs the `diskvault` binary with a clean passphrase environment and
/// stdin that is not a terminal (so it never prompts).
#[derive(Clone)]
pub struct Cli {
    password: Option<String>,
    new_password: Option<String>,
    env: Vec<(String, String)>,
}

impl Cli {
    /// A user who has exported `DISKVAULT_PASSWORD=<PASSPHRASE>`.
    pub fn new() -> Cli {
        Cli::with_password(PASSPHRASE)
    }

    pub fn with_password(password: &str) -> Cli {
        Cli {
            password: Some(password.to_string()),
            new_password: None,
            env: Vec::new(),
        }
    }

    /// A user with no passphrase in the environment.
    pub fn without_password() -> Cli {
        Cli {
            password: None,
            new_password: None,
            env: Vec::new(),
        }
    }

    /// Also sets these environment variables (storage settings, say).
    pub fn with_env(&self, env: &[(String, String)]) -> Cli {
        let mut c = self.clone();
        c.env.extend(env.iter().cloned());
        c
    }

    /// Also sets `DISKVAULT_NEW_PASSWORD` (for `key add` / `key passwd`).
    pub fn new_password(&self, password: &str) -> Cli {
        Cli {
            new_password: Some(password.to_string()),
            ..self.clone()
        }
    }

    /// The `diskvault` command with this user's environment, not yet run:
    /// for tests that need its raw output or a pipe.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_diskvault"));
        cmd.args(args)
            .env_remove("DISKVAULT_PASSWORD")
            .env_remove("DISKVAULT_NEW_PASSWORD")
            .stdin(Stdio::null());
        if let Some(p) = &self.password {
            cmd.env("DISKVAULT_PASSWORD", p);
        }
        if let Some(p) = &self.new_password {
            cmd.env("DISKVAULT_NEW_PASSWORD", p);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        let mut cmd = self.command(args);
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let out = cmd.output().expect("run diskvault");
        Run::from_output(&shown, out)
    }
}

/// A temporary directory in memory (`/dev/shm`) when the machine has one,
/// for tests that copy or rewrite whole vaults many times. What they test
/// does not depend on durability (a killed process loses nothing the
/// kernel accepted), and tmpfs keeps them fast.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("create a temporary directory")
}

/// Copies the directory tree `from` (a vault, say) to `to`, replacing
/// whatever was there.
pub fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).expect("remove the old copy");
    }
    std::fs::create_dir_all(to).expect("create the copy");
    for rel in files_under(from) {
        let dest = to.join(&rel);
        std::fs::create_dir_all(dest.parent().expect("a parent")).expect("create directories");
        std::fs::copy(from.join(&rel), dest).expect("copy a file");
    }
}

/// Flips a bit in the middle of the stored chunk that holds `image` bytes
/// `at..at + DEFAULT_CHUNK` (fixed chunking), in the pack file under
/// `vault`; returns the pack's id in hex, which errors must name.
pub fn damage_chunk_at(repo: &Repository, vault: &Path, image: &[u8], at: usize) -> String {
    let chunk = repo
        .sealer()
        .chunk_id(&image[at..at + DEFAULT_CHUNK as usize]);
    let index = repo.load_index().unwrap();
    let loc = index.get(&chunk).expect("the chunk is indexed");
    let pack = index.pack_id(loc.pack).to_hex();
    let pack_file = objects(vault, "packs/")
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == pack))
        .expect("the pack holding the chunk");
    let middle = loc.offset as u64 + loc.length as u64 / 2;
    let byte = std::fs::read(&pack_file).unwrap()[middle as usize];
    write_at(&pack_file, middle, &[byte ^ 0x40]);
    pack
}

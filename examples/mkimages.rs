//! The project's own disk-image generator, for the ext4 tests and the
//! benchmarks (`benches/e2e.sh`):
//!
//! ```text
//! cargo run --release --example mkimages -- OUTDIR [SIZE_MIB] [--seed N] [--versions N] [--force]
//! ```
//!
//! It writes `OUTDIR/disk_v1.img`, `disk_v2.img`, `disk_v3.img` (three by
//! default): sparse raw images of SIZE_MIB (default 2048) holding an ext4
//! file system about 60 % full, as a small Linux machine's root disk would be,
//! and each next version is the one before after a day of use. It needs only
//! e2fsprogs (`mke2fs`, `debugfs`, `e2fsck`) and no privilege: nothing is
//! mounted. `mke2fs` makes an empty file system and `debugfs -w` fills it,
//! removes and replaces files; pages rewritten in place inside database files
//! are written straight into the image at the blocks `debugfs bmap` names.
//!
//! **What is in a disk.** Files are made up, from a seed, to look like the
//! real thing to a compressor and a deduplicator: executables and libraries
//! (machine-code-like bytes, string tables, symbol tables, zero padding to
//! 4 KiB), headers and source code, prose documents and configuration, logs,
//! compressed files (packages, man pages, photos, downloads: incompressible),
//! database files of 4 KiB pages partly filled, a mostly empty VM image, and
//! some files twice (a backup copy, a vendored library).
//!
//! **A day of churn** (3 % of the data by default, like the night's changes on
//! a real machine): packages installed and photos or downloads added (1.5 %),
//! files replaced by a new version (1 %: programs upgraded, documents edited,
//! logs grown), database pages rewritten in place (0.5 %), files deleted (1 %),
//! and the metadata all that touches (inodes, bitmaps, directories).
//!
//! **Deterministic**: the same seed, size and e2fsprogs version give the same
//! bytes on any machine (a fixed UUID, hash seed, `mke2fs.conf` and clock; no
//! floating point in the content). Images are cached: a second run with the
//! same parameters only prints the report of the first.
//!
//! **Report** (printed, and kept in `OUTDIR/mkimages.txt`): each image's
//! files and BLAKE3 hash, what each day did, and the 4 KiB blocks that differ
//! between consecutive versions, e.g.
//! `changed disk_v1.img -> disk_v2.img: 11733 of 524288 4 KiB blocks (45.8 MiB, 2.24 %)`
//! for the 2 GiB images.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// Bump when the images change for the same parameters (drops the cache).
const GENERATOR_VERSION: u32 = 1;
const BLOCK: u64 = 4096;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// The first day's clock (2023-11-14 22:13:20 UTC); each version is a day on.
const EPOCH: u64 = 1_700_000_000;
const DAY: u64 = 86_400;
const UUID: &str = "d15c7a17-0000-4000-8000-00000000b001";
const HASH_SEED: &str = "d15c7a17-0000-4000-8000-0000000ba5ed";
/// Our own mke2fs.conf, so the distribution's defaults do not change the
/// image (the features of e2fsprogs 1.46/1.47's ext4).
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";
/// Staged files are handed to one `debugfs` run this many bytes at a time.
const BATCH_BYTES: u64 = 256 * MIB;
const TOOLS: [&str; 3] = ["mke2fs", "debugfs", "e2fsck"];

/// What to make.
#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    pub size_mib: u64,
    pub seed: u64,
    /// How many images: v1, then one day of churn each.
    pub versions: u32,
    /// Per cent of the disk holding file data in v1.
    pub used_pct: u64,
    /// Per mille of the file data one day changes.
    pub churn_permille: u64,
    /// Rebuild even when cached images match.
    pub force: bool,
}

impl Options {
    pub fn new(out: impl Into<PathBuf>, size_mib: u64) -> Options {
        Options {
            out: out.into(),
            size_mib,
            seed: 1,
            versions: 3,
            used_pct: 60,
            churn_permille: 30,
            force: false,
        }
    }

    fn params(&self, mke2fs_version: &str) -> String {
        format!(
            "mkimages {GENERATOR_VERSION} size={} seed={} versions={} used={}% churn={}permille {mke2fs_version}",
            self.size_mib, self.seed, self.versions, self.used_pct, self.churn_permille
        )
    }
}

/// The 4 KiB blocks that differ between two consecutive images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    pub from: String,
    pub to: String,
    pub blocks: u64,
    pub of: u64,
}

/// What was made: the images, in order, and the changes between them.
#[derive(Clone, Debug)]
pub struct Summary {
    pub images: Vec<PathBuf>,
    pub changed: Vec<Changed>,
    pub report: String,
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let (mut seed, mut versions, mut force) = (None, None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => seed = Some(args.next().context("--seed N")?.parse()?),
            "--versions" => versions = Some(args.next().context("--versions N")?.parse()?),
            "--force" => force = true,
            "-h" | "--help" => {
                println!("usage: mkimages OUTDIR [SIZE_MIB] [--seed N] [--versions N] [--force]");
                return Ok(());
            }
            _ => positional.push(arg),
        }
    }
    let out = positional
        .first()
        .context("usage: mkimages OUTDIR [SIZE_MIB] [--seed N] [--versions N] [--force]")?;
    let size = match positional.get(1) {
        Some(s) => s.parse().context("SIZE_MIB")?,
        None => 2048,
    };
    let mut opts = Options::new(out, size);
    opts.seed = seed.unwrap_or(opts.seed);
    opts.versions = versions.unwrap_or(opts.versions);
    opts.force = force;
    let summary = generate(&opts)?;
    print!("{}", summary.report);
    Ok(())
}

/// Which e2fsprogs tool is missing (looked for in PATH and sbin), if any.
pub fn missing_tool() -> Option<String> {
    TOOLS
        .iter()
        .find(|t| tool(t).is_none())
        .map(|t| format!("{t} (e2fsprogs) is not installed"))
}

fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run_tool(name: &str, args: &[&str], clock: u64) -> Result<String> {
    let exe = tool(name).with_context(|| format!("{name} not found (install e2fsprogs)"))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("E2FSPROGS_FAKE_TIME", clock.to_string())
        .env("LC_ALL", "C")
        .env("TZ", "UTC");
    let out = cmd.output().with_context(|| format!("running {name}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // debugfs reports failed commands on stderr and still exits 0; its only
    // other stderr line is its version banner.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(&format!("{name} 1.")))
        .collect();
    if !out.status.success() || (name == "debugfs" && !errors.is_empty()) {
        bail!(
            "{name} {args:?} failed ({}):\n{}",
            out.status,
            errors.join("\n")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes the images (or finds them made with the same parameters).
pub fn generate(opts: &Options) -> Result<Summary> {
    ensure!(opts.size_mib >= 32, "SIZE_MIB must be at least 32");
    ensure!(opts.versions >= 1, "--versions must be at least 1");
    if let Some(t) = missing_tool() {
        bail!("{t}: mkimages needs mke2fs, debugfs and e2fsck");
    }
    fs::create_dir_all(&opts.out)?;
    // `mke2fs -V` names its version on stderr.
    let version = Command::new(tool("mke2fs").context("mke2fs")?)
        .arg("-V")
        .output()?;
    let mke2fs_version = String::from_utf8_lossy(&version.stderr)
        .lines()
        .next()
        .unwrap_or("?")
        .to_string();
    let params = opts.params(&mke2fs_version);
    let images: Vec<PathBuf> = (1..=opts.versions)
        .map(|v| opts.out.join(format!("disk_v{v}.img")))
        .collect();
    let stamp = opts.out.join(".mkimages.params");
    let report_path = opts.out.join("mkimages.txt");
    if !opts.force
        && images.iter().all(|p| p.is_file())
        && fs::read_to_string(&stamp).ok().as_deref() == Some(params.as_str())
    {
        if let Ok(report) = fs::read_to_string(&report_path) {
            let changed = parse_changed(&report);
            if changed.len() + 1 == images.len() {
                return Ok(Summary {
                    images,
                    changed,
                    report,
                });
            }
        }
    }
    let _ = fs::remove_file(&stamp);
    let mut g = Generator::new(opts)?;
    let mut report = format!("{params}\n");
    let mut changed = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let version = i as u64 + 1;
        let tmp = opts.out.join(format!(".disk_v{version}.img.tmp"));
        let clock = EPOCH + (version - 1) * DAY;
        if version == 1 {
            g.make_first(&tmp)?;
        } else {
            sparse_copy(&images[i - 1], &tmp)?;
            let day = g.make_next_day(&tmp, clock)?;
            writeln!(report, "day {version}: {day}")?;
        }
        // e2fsck -n exits 0 on a clean file system and changes nothing.
        run_tool("e2fsck", &["-fn", path_str(&tmp)?], clock)
            .with_context(|| format!("the file system in {} is not clean", tmp.display()))?;
        let hash = sparse_copy(&tmp, image)?;
        fs::remove_file(&tmp)?;
        let data: u64 = g.files.values().map(|f| f.size).sum();
        writeln!(
            report,
            "{}: {} bytes, {} files, {:.1} MiB of file data, blake3 {}",
            file_name(image),
            opts.size_mib * MIB,
            g.files.len(),
            data as f64 / MIB as f64,
            &hash[..16]
        )?;
        if i > 0 {
            let (blocks, of) = count_changed_blocks(&images[i - 1], image)?;
            let c = Changed {
                from: file_name(&images[i - 1]),
                to: file_name(image),
                blocks,
                of,
            };
            writeln!(report, "{}", changed_line(&c))?;
            changed.push(c);
        }
    }
    let _ = fs::remove_dir_all(g.stage_dir());
    for scratch in [".debugfs.cmds", ".mke2fs.conf"] {
        let _ = fs::remove_file(opts.out.join(scratch));
    }
    fs::write(&report_path, &report)?;
    fs::write(&stamp, &params)?;
    Ok(Summary {
        images,
        changed,
        report,
    })
}

fn changed_line(c: &Changed) -> String {
    format!(
        "changed {} -> {}: {} of {} 4 KiB blocks ({:.1} MiB, {:.2} %)",
        c.from,
        c.to,
        c.blocks,
        c.of,
        (c.blocks * BLOCK) as f64 / MIB as f64,
        100.0 * c.blocks as f64 / c.of as f64
    )
}

fn parse_changed(report: &str) -> Vec<Changed> {
    report
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("changed ")?;
            let (from, rest) = rest.split_once(" -> ")?;
            let (to, rest) = rest.split_once(": ")?;
            let mut words = rest.split(' ');
            let blocks = words.next()?.parse().ok()?;
            let of = words.nth(1)?.parse().ok()?;
            Some(Changed {
                from: from.into(),
                to: to.into(),
                blocks,
                of,
            })
        })
        .collect()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("paths must be UTF-8")
}

/// Copies `from` to `to` leaving every all-zero 4 KiB block a hole, as
/// `cp --sparse=always` would; returns the BLAKE3 of the bytes.
fn sparse_copy(from: &Path, to: &Path) -> Result<String> {
    let mut src = File::open(from)?;
    let len = src.metadata()?.len();
    let _ = fs::remove_file(to);
    let dst = File::create(to)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut src, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        for (i, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
            if block.iter().any(|&b| b != 0) {
                dst.write_all_at(block, offset + i as u64 * BLOCK)?;
            }
        }
        offset += n as u64;
    }
    dst.set_len(len)?;
    dst.sync_all()?;
    Ok(hasher.finalize().to_hex().to_string())
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The 4 KiB blocks that differ between two images, and the blocks in all.
pub fn count_changed_blocks(a: &Path, b: &Path) -> Result<(u64, u64)> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let len = fa.metadata()?.len().max(fb.metadata()?.len());
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut changed = 0;
    loop {
        let (n, m) = (read_full(&mut fa, &mut x)?, read_full(&mut fb, &mut y)?);
        if n == 0 && m == 0 {
            break;
        }
        let k = n.max(m);
        x[n..k].fill(0);
        y[m..k].fill(0);
        changed += x[..k]
            .chunks(BLOCK as usize)
            .zip(y[..k].chunks(BLOCK as usize))
            .filter(|(p, q)| p != q)
            .count() as u64;
    }
    Ok((changed, len.div_ceil(BLOCK)))
}

// ---------------------------------------------------------------- randomness

/// SplitMix64: small, fast, and the same on every machine. No floating point
/// anywhere in the content, so no libm can change a byte.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn permille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }

    /// An index in 0..n where index i comes about as often as 1/(i+1): the
    /// frequency of words in text, of opcodes in code.
    fn zipf(&mut self, n: usize) -> usize {
        let bits = 64 - (n as u64).leading_zeros() as u64;
        let band = 1u64 << self.below(bits);
        ((band - 1 + self.below(band)) as usize).min(n - 1)
    }

    /// About log-normal around `median`: median * 2^(x/8), x the sum of
    /// three uniform steps of up to `octaves` octaves each way.
    fn spread(&mut self, median: u64, octaves: u64) -> u64 {
        const STEPS: [u64; 8] = [256, 279, 304, 332, 362, 395, 431, 470];
        let w = octaves * 8;
        let x: i64 = (0..3)
            .map(|_| self.below(2 * w + 1) as i64 - w as i64)
            .sum();
        let v = median * STEPS[x.rem_euclid(8) as usize] / 256;
        let oct = x.div_euclid(8);
        if oct >= 0 {
            v << oct
        } else {
            v >> -oct
        }
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }

    /// Incompressible bytes, fast (BLAKE3 in XOF mode keyed by this stream).
    fn fill_random(&mut self, out: &mut Vec<u8>, len: usize) {
        let mut key = [0u8; 32];
        for k in key.chunks_mut(8) {
            k.copy_from_slice(&self.next().to_le_bytes());
        }
        let start = out.len();
        out.resize(start + len, 0);
        blake3::Hasher::new_keyed(&key)
            .finalize_xof()
            .fill(&mut out[start..]);
    }
}

// ------------------------------------------------------------------ content

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Prose and configuration.
    Text,
    /// Source code and headers.
    Code,
    /// Executables, libraries, bytecode.
    Binary,
    /// Already compressed: packages, man pages, photos, archives.
    Packed,
    /// 4 KiB pages partly filled with records; rewritten in place.
    Database,
    /// Timestamped lines; grows every day.
    Log,
    /// A VM image or preallocated file: mostly zeros.
    Sparse,
}

/// A change applied to a file's bytes by a new version of it.
#[derive(Clone, Copy, Debug)]
enum Edit {
    /// New lines or records at the end.
    Append { seed: u64, len: u64 },
    /// A few regions rewritten (a document edited).
    Patch { seed: u64 },
    /// A new build: most stretches kept, some rewritten, offsets shifted.
    Upgrade { seed: u64 },
    /// Entirely new bytes of about the same size (a compressed file).
    Rebuild { seed: u64 },
}

/// A file: its bytes are made again from these fields whenever needed.
#[derive(Clone, Debug)]
struct Entry {
    kind: Kind,
    seed: u64,
    base_size: u64,
    edits: Vec<Edit>,
    executable: bool,
    /// Its size now (after the edits).
    size: u64,
}

/// The shared material content is drawn from: a vocabulary and an opcode
/// table, the same for every file (so files resemble each other, as real
/// ones do, without being copies).
struct Material {
    seed: u64,
    words: Vec<String>,
    opcodes: Vec<Vec<u8>>,
}

impl Material {
    fn new(seed: u64) -> Material {
        let mut rng = Rng::new(seed, 0x0076_6f63_6162);
        const ONSET: [&str; 24] = [
            "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
            "st", "tr", "pl", "gr", "ch", "sh", "br",
        ];
        const VOWEL: [&str; 8] = ["a", "e", "i", "o", "u", "ai", "ou", "ea"];
        const CODA: [&str; 10] = ["", "", "", "n", "r", "s", "l", "x", "m", "t"];
        let mut seen = BTreeSet::new();
        let mut words = Vec::new();
        while words.len() < 3000 {
            let syllables = 1 + rng.zipf(4);
            let mut w = String::new();
            for _ in 0..syllables {
                w.push_str(ONSET[rng.below(24) as usize]);
                w.push_str(VOWEL[rng.below(8) as usize]);
                w.push_str(CODA[rng.below(10) as usize]);
            }
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        // Frequent words are short ones.
        words.sort_by_key(|w| w.len());
        let opcodes = (0..160)
            .map(|_| {
                let n = rng.range(1, 7) as usize;
                (0..n).map(|_| rng.below(256) as u8).collect()
            })
            .collect();
        Material {
            seed,
            words,
            opcodes,
        }
    }

    fn word(&self, rng: &mut Rng) -> &str {
        &self.words[rng.zipf(self.words.len())]
    }

    /// A name for a package, program or directory.
    fn name(&self, rng: &mut Rng) -> String {
        let w = &self.words[200 + rng.below(self.words.len() as u64 - 200) as usize];
        if rng.permille(300) {
            format!("{w}-{}", self.word(rng))
        } else {
            w.clone()
        }
    }

    /// The bytes of `e`, made from its seed and edits.
    fn bytes(&self, e: &Entry) -> Vec<u8> {
        let mut rng = Rng::new(self.seed, e.seed);
        let mut data = Vec::with_capacity(e.base_size as usize);
        self.fill(e.kind, &mut rng, &mut data, e.base_size as usize);
        for edit in &e.edits {
            data = self.apply(e.kind, edit, data);
        }
        data
    }

    fn apply(&self, kind: Kind, edit: &Edit, mut data: Vec<u8>) -> Vec<u8> {
        match *edit {
            Edit::Append { seed, len } => {
                let mut rng = Rng::new(self.seed, seed);
                self.fill(kind, &mut rng, &mut data, len as usize);
                data
            }
            Edit::Patch { seed } => {
                let mut rng = Rng::new(self.seed, seed);
                for _ in 0..rng.range(1, 6) {
                    let len = rng.range(64, 64 * KIB) as usize;
                    let at = rng.below(data.len() as u64 + 1) as usize;
                    let end = (at + len).min(data.len());
                    // A rewritten passage, a little longer or shorter.
                    let mut new = Vec::new();
                    let new_len = rng.spread(len as u64, 1) as usize;
                    self.fill(kind, &mut rng, &mut new, new_len);
                    data.splice(at..end, new);
                }
                data
            }
            Edit::Upgrade { seed } => {
                let mut rng = Rng::new(self.seed, seed);
                let mut out = Vec::with_capacity(data.len() + data.len() / 16);
                let mut at = 0;
                while at < data.len() {
                    let n = (rng.spread(16 * KIB, 1) as usize).min(data.len() - at);
                    let piece = &data[at..at + n];
                    match rng.below(20) {
                        // Unchanged code and data.
                        0..=12 => out.extend_from_slice(piece),
                        // Relocated: addresses inside change every so often.
                        13..=16 => {
                            let start = out.len();
                            out.extend_from_slice(piece);
                            let mut i = start + rng.below(64) as usize;
                            while i + 4 <= out.len() {
                                out[i] = out[i].wrapping_add(rng.range(1, 16) as u8);
                                i += rng.range(16, 128) as usize;
                            }
                        }
                        // Rewritten code, a little longer or shorter.
                        17..=18 => {
                            let len = rng.spread(n as u64, 1) as usize;
                            self.fill(Kind::Binary, &mut rng, &mut out, len)
                        }
                        // Removed.
                        _ => {}
                    }
                    at += n;
                }
                out
            }
            Edit::Rebuild { seed } => {
                let mut rng = Rng::new(self.seed, seed);
                let old = data.len() as u64;
                let len = (old + old / 10 - rng.below(old / 5 + 1)) as usize;
                let mut out = Vec::with_capacity(len);
                self.fill(kind, &mut rng, &mut out, len);
                out
            }
        }
    }

    /// Appends `len` bytes of `kind` to `out`.
    fn fill(&self, kind: Kind, rng: &mut Rng, out: &mut Vec<u8>, len: usize) {
        let end = out.len() + len;
        match kind {
            Kind::Text => self.prose(rng, out, end),
            Kind::Code => self.code(rng, out, end),
            Kind::Binary => self.binary(rng, out, end),
            Kind::Packed => {
                const MAGIC: [&[u8]; 4] = [
                    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
                    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
                    b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
                    b"\x28\xb5\x2f\xfd\x64\x00",
                ];
                if out.is_empty() {
                    out.extend_from_slice(MAGIC[rng.below(4) as usize]);
                }
                let n = end.saturating_sub(out.len());
                rng.fill_random(out, n);
            }
            Kind::Database => self.pages(rng, out, end),
            Kind::Log => self.log(rng, out, end),
            Kind::Sparse => {
                // 1 MiB extents, one in eight written.
                while out.len() < end {
                    let extent_end = (out.len() + MIB as usize).min(end);
                    if rng.permille(125) {
                        let data = rng.range(64 * KIB, MIB) as usize;
                        self.binary(rng, out, (out.len() + data).min(extent_end));
                    }
                    out.resize(extent_end, 0);
                }
            }
        }
        out.truncate(end);
    }

    fn prose(&self, rng: &mut Rng, out: &mut Vec<u8>, end: usize) {
        let mut line = 0;
        let mut sentence_start = true;
        while out.len() < end {
            let w = self.word(rng).as_bytes();
            if sentence_start {
                out.push(w[0].to_ascii_uppercase());
                out.extend_from_slice(&w[1..]);
            } else {
                out.extend_from_slice(w);
            }
            line += w.len() + 1;
            sentence_start = rng.permille(90);
            if sentence_start {
                out.push(b'.');
            } else if rng.permille(40) {
                out.push(b',');
            }
            if line > 64 + rng.below(12) as usize {
                out.push(b'\n');
                if sentence_start && rng.permille(200) {
                    out.push(b'\n');
                }
                line = 0;
            } else {
                out.push(b' ');
            }
        }
    }

    fn code(&self, rng: &mut Rng, out: &mut Vec<u8>, end: usize) {
        let mut depth = 0usize;
        while out.len() < end {
            out.extend(std::iter::repeat_n(b' ', 4 * depth));
            let (a, b, c) = (self.word(rng), self.word(rng), self.word(rng));
            let line = match rng.below(10) {
                0 if depth < 3 => {
                    depth += 1;
                    format!("static int {a}_{b}(struct {c} *{a}, size_t n) {{")
                }
                1 if depth > 0 => {
                    depth -= 1;
                    "}".to_string()
                }
                2 => format!("/* {a} {b} {c} {} */", self.word(rng)),
                3 => format!(
                    "if ({a}->{b} != {}) return -E{};",
                    rng.below(64),
                    c.to_uppercase()
                ),
                4 => format!(
                    "#define {}_{} {}",
                    a.to_uppercase(),
                    b.to_uppercase(),
                    rng.below(4096)
                ),
                5 => format!("for (i = 0; i < {a}_{b}; i++) {c}[i] = 0;"),
                _ => format!("{a} = {b}_{c}({a}, {});", rng.below(256)),
            };
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }

    fn binary(&self, rng: &mut Rng, out: &mut Vec<u8>, end: usize) {
        if out.is_empty() {
            out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\x3e\0\x01\0\0\0");
            out.resize(64, 0);
        }
        while out.len() < end {
            let section = rng.spread(12 * KIB, 1) as usize;
            let stop = (out.len() + section).min(end);
            match rng.below(10) {
                // Machine code: opcodes by frequency, small operands.
                0..=5 => {
                    while out.len() < stop {
                        out.extend_from_slice(&self.opcodes[rng.zipf(self.opcodes.len())]);
                        match rng.below(4) {
                            0 => out.push(rng.below(16) as u8 * 8),
                            1 => out.extend_from_slice(&(rng.below(1 << 20) as u32).to_le_bytes()),
                            _ => {}
                        }
                    }
                }
                // Read-only strings.
                6..=7 => {
                    while out.len() < stop {
                        let (a, b) = (self.word(rng), self.word(rng));
                        match rng.below(3) {
                            0 => out.extend_from_slice(format!("{a}_{b}").as_bytes()),
                            1 => out.extend_from_slice(format!("{a}: {b} %s (%d)\n").as_bytes()),
                            _ => out.extend_from_slice(format!("/usr/lib/{a}/{b}").as_bytes()),
                        }
                        out.push(0);
                    }
                }
                // A symbol table: 24-byte records of small numbers.
                8 => {
                    let (mut name, mut value) = (1u32, 0x1000u64 + rng.below(1 << 16) * 16);
                    while out.len() < stop {
                        out.extend_from_slice(&name.to_le_bytes());
                        out.extend_from_slice(&[0x12, 0, rng.range(10, 30) as u8, 0]);
                        out.extend_from_slice(&value.to_le_bytes());
                        out.extend_from_slice(&rng.below(2048).to_le_bytes());
                        name += rng.range(4, 40) as u32;
                        value += rng.range(1, 256) * 16;
                    }
                }
                // Alignment to the next page.
                _ => out.resize((out.len().div_ceil(4096) * 4096).min(end), 0),
            }
        }
        out.truncate(end);
    }

    fn pages(&self, rng: &mut Rng, out: &mut Vec<u8>, end: usize) {
        while out.len() < end {
            let page = out.len() / BLOCK as usize;
            let start = out.len();
            self.page(rng, out, page as u32);
            debug_assert_eq!(out.len(), start + BLOCK as usize);
        }
    }

    /// One database page: a header, records up to a fill level, zeros.
    fn page(&self, rng: &mut Rng, out: &mut Vec<u8>, number: u32) {
        let start = out.len();
        let fill = rng.range(BLOCK / 2, BLOCK - 200) as usize;
        out.extend_from_slice(&[0x0d, 0, 0, 0]);
        out.extend_from_slice(&number.to_le_bytes());
        while out.len() - start < fill {
            self.record(rng, out);
        }
        out.truncate(start + fill);
        out.resize(start + BLOCK as usize, 0);
    }

    fn record(&self, rng: &mut Rng, out: &mut Vec<u8>) {
        out.extend_from_slice(&(rng.below(1 << 24) as u32).to_le_bytes());
        for _ in 0..rng.range(2, 12) {
            out.extend_from_slice(self.word(rng).as_bytes());
            out.push(b'|');
        }
        out.extend_from_slice(&(EPOCH + rng.below(DAY * 400)).to_le_bytes());
    }

    fn log(&self, rng: &mut Rng, out: &mut Vec<u8>, end: usize) {
        let mut clock = EPOCH - DAY * 30 + rng.below(DAY);
        let host = &self.words[300];
        while out.len() < end {
            clock += rng.below(120);
            let (y, mo, d) = civil_from_days((clock / DAY) as i64);
            let s = clock % DAY;
            let (a, b) = (self.word(rng), self.word(rng));
            let msg: Vec<&str> = (0..rng.range(3, 12)).map(|_| self.word(rng)).collect();
            let line = format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}+00:00 {host} {a}[{}]: {b}: {}\n",
                s / 3600,
                s / 60 % 60,
                s % 60,
                100 + rng.below(30000),
                msg.join(" ")
            );
            out.extend_from_slice(line.as_bytes());
        }
    }
}

/// (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

// ------------------------------------------------------------ the disk's life

struct Generator {
    opts: Options,
    material: Material,
    rng: Rng,
    /// Every file on the disk now, by absolute path.
    files: BTreeMap<String, Entry>,
    /// Symbolic links: path to target.
    links: BTreeMap<String, String>,
    /// Directories made so far.
    dirs: BTreeSet<String>,
    /// Seeds for new content, never reused.
    next_seed: u64,
    /// No file is larger than this (a tenth of the data).
    max_file: u64,
    /// The paths the last `add_something` made (to take them back).
    just_added: Vec<String>,
}

/// What one day did, for the report.
#[derive(Default)]
struct Day {
    new: (u64, u64),
    replaced: (u64, u64),
    in_place: (u64, u64, u64),
    deleted: (u64, u64),
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = |b: u64| b as f64 / MIB as f64;
        write!(
            f,
            "new {} files {:.1} MiB; replaced {} files {:.1} MiB; rewritten in place {} pages in {} files {:.1} MiB; deleted {} files {:.1} MiB",
            self.new.0,
            m(self.new.1),
            self.replaced.0,
            m(self.replaced.1),
            self.in_place.0,
            self.in_place.1,
            m(self.in_place.2),
            self.deleted.0,
            m(self.deleted.1)
        )
    }
}

/// The commands of one `debugfs -w` run, and the staged files they write.
struct Batch {
    commands: String,
    staged: u64,
}

impl Generator {
    fn new(opts: &Options) -> Result<Generator> {
        let used = opts.size_mib * MIB * opts.used_pct / 100;
        Ok(Generator {
            opts: opts.clone(),
            material: Material::new(opts.seed),
            rng: Rng::new(opts.seed, 1),
            files: BTreeMap::new(),
            links: BTreeMap::new(),
            dirs: BTreeSet::new(),
            next_seed: 1000,
            max_file: (used / 10).max(256 * KIB),
            just_added: Vec::new(),
        })
    }

    fn used_target(&self) -> u64 {
        self.opts.size_mib * MIB * self.opts.used_pct / 100
    }

    fn stage_dir(&self) -> PathBuf {
        self.opts.out.join(".mkimages-stage")
    }

    fn seed(&mut self) -> u64 {
        self.next_seed += 1;
        self.next_seed
    }

    /// Adds a new file of `kind` about `median` bytes long at `path` (made
    /// unique), returning its size.
    fn add(&mut self, path: String, kind: Kind, median: u64, octaves: u64) -> u64 {
        let mut path = path;
        while self.files.contains_key(&path) || self.links.contains_key(&path) {
            path = format!("{path}.{}", self.rng.below(10));
        }
        if !self.free(&path) {
            return 0;
        }
        let mut size = self.rng.spread(median, octaves).clamp(1, self.max_file);
        if kind == Kind::Database {
            size = size.div_ceil(BLOCK) * BLOCK;
        }
        let executable = kind == Kind::Binary && path.contains("/bin/");
        let entry = Entry {
            kind,
            seed: self.seed(),
            base_size: size,
            edits: Vec::new(),
            executable,
            size,
        };
        self.files.insert(path.clone(), entry);
        self.just_added.push(path);
        size
    }

    /// Whether a file can be made at `path`: no file where a directory must
    /// be, no directory where the file would be.
    fn free(&self, path: &str) -> bool {
        let taken = |p: &str| self.files.contains_key(p) || self.links.contains_key(p);
        let parent_is_file = path
            .match_indices('/')
            .skip(1)
            .any(|(i, _)| taken(&path[..i]));
        let inside = format!("{path}/");
        let is_dir = self.dirs.contains(path)
            || self
                .files
                .range(inside.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&inside));
        !parent_is_file && !is_dir
    }

    /// One thing a machine gains: a package, photos, a service, a download...
    /// `what` (0..1000) picks which: the odds are set so that the bytes of
    /// a disk are about 40 % programs and libraries, 15 % databases, 12 %
    /// photos, 10 % downloads, the rest documents, source, caches, a VM
    /// image and copies. Returns the bytes added.
    fn add_something(&mut self, what: u64) -> u64 {
        let m = &self.material;
        let r = &mut self.rng;
        let name = m.name(r);
        let mut plan: Vec<(String, Kind, u64, u64)> = Vec::new();
        let mut link = None;
        match what {
            // A system package.
            0..=579 => {
                let v = r.range(1, 9);
                plan.push((format!("/usr/bin/{name}"), Kind::Binary, 120 * KIB, 1));
                if r.permille(600) {
                    let lib = format!("/usr/lib/x86_64-linux-gnu/lib{name}.so.{v}");
                    link = Some((
                        format!("/usr/lib/x86_64-linux-gnu/lib{name}.so"),
                        lib.clone(),
                    ));
                    plan.push((lib, Kind::Binary, 300 * KIB, 1));
                }
                let doc = format!("/usr/share/doc/{name}");
                plan.push((format!("{doc}/copyright"), Kind::Text, 4 * KIB, 1));
                plan.push((
                    format!("{doc}/changelog.Debian.gz"),
                    Kind::Packed,
                    6 * KIB,
                    1,
                ));
                plan.push((
                    format!("/usr/share/man/man1/{name}.1.gz"),
                    Kind::Packed,
                    3 * KIB,
                    1,
                ));
                for _ in 0..r.range(0, 8) {
                    let h = m.word(r);
                    plan.push((format!("/usr/include/{name}/{h}.h"), Kind::Code, 8 * KIB, 1));
                }
                for _ in 0..r.range(0, 6) {
                    let (f, kind) = if r.permille(500) {
                        (format!("{}.dat", m.word(r)), Kind::Packed)
                    } else {
                        (format!("{}.conf", m.word(r)), Kind::Text)
                    };
                    plan.push((format!("/usr/share/{name}/{f}"), kind, 24 * KIB, 2));
                }
            }
            // Photos.
            580..=583 => {
                let album = format!("/home/user/Pictures/{name}");
                for _ in 0..r.range(2, 12) {
                    let f = format!("{album}/IMG_{:04}.jpg", r.below(10_000));
                    plan.push((f, Kind::Packed, 2 * MIB + 512 * KIB, 1));
                }
            }
            // Documents.
            584..=629 => {
                for _ in 0..r.range(1, 8) {
                    let w = m.word(r);
                    let (f, kind, size) = match r.below(3) {
                        0 => (format!("{name}-{w}.md"), Kind::Text, 12 * KIB),
                        1 => (format!("{name}-{w}.odt"), Kind::Packed, 60 * KIB),
                        _ => (format!("{name}-{w}.pdf"), Kind::Packed, 300 * KIB),
                    };
                    plan.push((format!("/home/user/Documents/{f}"), kind, size, 1));
                }
            }
            // A source tree.
            630..=719 => {
                for _ in 0..r.range(4, 30) {
                    let (d, f) = (m.word(r), m.word(r));
                    let p = format!("/home/user/src/{name}/{d}/{f}.c");
                    plan.push((p, Kind::Code, 10 * KIB, 1));
                }
            }
            // A service: its database, log and configuration.
            720..=733 => {
                plan.push((
                    format!("/var/lib/{name}/{name}.db"),
                    Kind::Database,
                    6 * MIB,
                    1,
                ));
                plan.push((format!("/var/log/{name}.log"), Kind::Log, 96 * KIB, 1));
                plan.push((format!("/etc/{name}/{name}.conf"), Kind::Text, 3 * KIB, 1));
            }
            // A download.
            734..=735 => {
                let f = format!("/home/user/Downloads/{name}-{}.tar.gz", r.range(1, 20));
                plan.push((f, Kind::Packed, 24 * MIB, 1));
            }
            // Python modules and their bytecode.
            736..=909 => {
                let d = format!("/usr/lib/python3/dist-packages/{name}");
                for _ in 0..r.range(2, 20) {
                    let w = m.word(r);
                    plan.push((format!("{d}/{w}.py"), Kind::Code, 8 * KIB, 1));
                    plan.push((
                        format!("{d}/__pycache__/{w}.cpython-311.pyc"),
                        Kind::Binary,
                        6 * KIB,
                        1,
                    ));
                }
            }
            // A VM image, mostly empty.
            910 => {
                let f = format!("/var/lib/libvirt/images/{name}.img");
                plan.push((f, Kind::Sparse, 48 * MIB, 1));
            }
            // A browser's or a build's cache: many small files.
            911..=939 => {
                for _ in 0..r.range(8, 60) {
                    let f = format!("/home/user/.cache/{name}/{:08x}", r.below(1 << 32));
                    let kind = if r.permille(500) {
                        Kind::Packed
                    } else {
                        Kind::Binary
                    };
                    plan.push((f, kind, 16 * KIB, 2));
                }
            }
            // A copy of some file already on the disk (a backup, a vendored
            // library): same bytes, another place.
            _ => {
                let paths: Vec<&String> = self.files.keys().collect();
                if paths.is_empty() {
                    return 0;
                }
                let src = paths[r.below(paths.len() as u64) as usize].clone();
                let entry = self.files[&src].clone();
                if entry.kind == Kind::Database {
                    return 0;
                }
                let dst = format!("/home/user/Backup{src}");
                if self.files.contains_key(&dst) || !self.free(&dst) {
                    return 0;
                }
                let size = entry.size;
                self.files.insert(dst.clone(), entry);
                self.just_added.push(dst);
                return size;
            }
        }
        let mut added = 0;
        for (path, kind, median, octaves) in plan {
            added += self.add(path, kind, median, octaves);
        }
        if let Some((from, to)) = link {
            if self.free(&from) && !self.files.contains_key(&from) {
                self.just_added.push(from.clone());
                self.links.insert(from, to);
            }
        }
        added
    }

    /// Adds things until `budget` bytes were added; returns (files, bytes).
    /// A thing that would overshoot the budget by more than a quarter is
    /// taken back (a small disk's day has no room for an album of photos).
    fn add_until(&mut self, budget: u64) -> (u64, u64) {
        let before: BTreeSet<String> = self.files.keys().cloned().collect();
        let mut added = 0;
        let mut tries = 0;
        while added < budget && tries < 10_000 {
            tries += 1;
            self.just_added.clear();
            let what = self.rng.below(1000);
            let bytes = self.add_something(what);
            if added + bytes > budget + budget / 4 && bytes > 0 {
                for p in std::mem::take(&mut self.just_added) {
                    self.files.remove(&p);
                    self.links.remove(&p);
                }
                continue;
            }
            added += bytes;
        }
        let new = self.files.keys().filter(|p| !before.contains(*p)).count();
        (new as u64, added)
    }

    fn make_first(&mut self, image: &Path) -> Result<()> {
        // The skeleton of a root file system, then one service at least (so
        // a small disk has a database too), then whatever comes.
        for (p, size) in [
            ("/etc/hostname", 8),
            ("/etc/fstab", 600),
            ("/etc/passwd", 1800),
        ] {
            self.add(p.into(), Kind::Text, size, 0);
        }
        self.add_something(725);
        let target = self.used_target();
        let have: u64 = self.files.values().map(|f| f.size).sum();
        self.add_until(target.saturating_sub(have));

        let conf = self.opts.out.join(".mke2fs.conf");
        fs::write(&conf, MKE2FS_CONF)?;
        let _ = fs::remove_file(image);
        File::create(image)?.set_len(self.opts.size_mib * MIB)?;
        let mut cmd = Command::new(tool("mke2fs").context("mke2fs not found")?);
        let out = cmd
            .args(["-q", "-F", "-t", "ext4", "-L", "diskvault-bench", "-U", UUID])
            .arg("-E")
            .arg(format!(
                "hash_seed={HASH_SEED},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard"
            ))
            .arg(image)
            .env("MKE2FS_CONFIG", &conf)
            .env("E2FSPROGS_FAKE_TIME", EPOCH.to_string())
            .output()?;
        ensure!(
            out.status.success(),
            "mke2fs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let paths: Vec<String> = self.files.keys().cloned().collect();
        let mut batch = self.batch();
        for path in &paths {
            self.stage_write(&mut batch, image, path, EPOCH)?;
        }
        self.write_links(&mut batch, &BTreeSet::new());
        self.run_batch(batch, image, EPOCH)
    }

    /// `symlink` commands for the links not in `old`.
    fn write_links(&mut self, batch: &mut Batch, old: &BTreeSet<String>) {
        for (from, to) in self.links.clone() {
            if !old.contains(&from) {
                self.mkdirs(&mut batch.commands, &from);
                let _ = writeln!(batch.commands, "symlink {from} {to}");
            }
        }
    }

    fn batch(&self) -> Batch {
        Batch {
            commands: String::new(),
            staged: 0,
        }
    }

    /// `mkdir` commands for the parents of `path` not made yet.
    fn mkdirs(&mut self, commands: &mut String, path: &str) {
        for (i, _) in path.match_indices('/').skip(1) {
            let dir = &path[..i];
            if self.dirs.insert(dir.to_string()) {
                let _ = writeln!(commands, "mkdir {dir}");
            }
        }
    }

    /// Stages the file at `path` and adds the command writing it; runs the
    /// batch when it is big enough.
    fn stage_write(
        &mut self,
        batch: &mut Batch,
        image: &Path,
        path: &str,
        clock: u64,
    ) -> Result<()> {
        let entry = &self.files[path];
        let bytes = self.material.bytes(entry);
        let executable = entry.executable;
        let stage = self.stage_dir();
        fs::create_dir_all(&stage)?;
        let staged = stage.join(format!("{:06}", batch.commands.len()));
        fs::write(&staged, &bytes)?;
        let mode = if executable { 0o755 } else { 0o644 };
        fs::set_permissions(&staged, fs::Permissions::from_mode(mode))?;
        self.mkdirs(&mut batch.commands, path);
        writeln!(batch.commands, "write {} {path}", path_str(&staged)?)?;
        batch.staged += bytes.len() as u64;
        if batch.staged >= BATCH_BYTES {
            let full = std::mem::replace(batch, self.batch());
            self.run_batch(full, image, clock)?;
        }
        Ok(())
    }

    fn run_batch(&self, batch: Batch, image: &Path, clock: u64) -> Result<()> {
        if batch.commands.is_empty() {
            return Ok(());
        }
        let script = self.opts.out.join(".debugfs.cmds");
        fs::write(&script, &batch.commands)?;
        run_tool(
            "debugfs",
            &["-w", "-f", path_str(&script)?, path_str(image)?],
            clock,
        )?;
        let _ = fs::remove_dir_all(self.stage_dir());
        Ok(())
    }

    /// A day on `image` (a copy of the day before): pages rewritten in
    /// place, files replaced, deleted and added.
    fn make_next_day(&mut self, image: &Path, clock: u64) -> Result<Day> {
        let data: u64 = self.files.values().map(|f| f.size).sum();
        let budget = data * self.opts.churn_permille / 1000;
        let mut day = Day::default();
        let mut order: Vec<String> = self.files.keys().cloned().collect();
        self.rng.shuffle(&mut order);
        let mut taken = BTreeSet::new();

        // 1. Database pages rewritten in place (1/6 of the day), in runs of
        // 1 to 16 pages, straight into the blocks debugfs says they are at.
        let databases: Vec<String> = order
            .iter()
            .filter(|p| self.files[*p].kind == Kind::Database)
            .cloned()
            .collect();
        let mut pages: BTreeSet<(String, u64)> = BTreeSet::new();
        let page_budget = budget / 6 / BLOCK;
        if !databases.is_empty() {
            let mut guard = 0;
            while (pages.len() as u64) < page_budget && guard < 1_000_000 {
                guard += 1;
                let db = &databases[self.rng.zipf(databases.len())];
                let n = self.files[db].size / BLOCK;
                let run = self.rng.range(1, 16).min(n);
                let first = self.rng.below(n - run + 1);
                for p in first..first + run {
                    pages.insert((db.clone(), p));
                }
            }
        }
        let mut bmap = String::new();
        for (db, p) in &pages {
            writeln!(bmap, "bmap {db} {p}")?;
        }
        let script = self.opts.out.join(".debugfs.cmds");
        fs::write(&script, &bmap)?;
        let out = if pages.is_empty() {
            String::new()
        } else {
            run_tool(
                "debugfs",
                &["-f", path_str(&script)?, path_str(image)?],
                clock,
            )?
        };
        let physical: Vec<u64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        ensure!(
            physical.len() == pages.len(),
            "debugfs bmap answered {} of {} pages",
            physical.len(),
            pages.len()
        );
        let disk = fs::OpenOptions::new().read(true).write(true).open(image)?;
        let mut touched = BTreeSet::new();
        let mut page = vec![0u8; BLOCK as usize];
        for ((db, _), &block) in pages.iter().zip(&physical) {
            if block == 0 {
                continue;
            }
            disk.read_exact_at(&mut page, block * BLOCK)?;
            self.rewrite_page(&mut page);
            disk.write_all_at(&page, block * BLOCK)?;
            touched.insert(db.clone());
            day.in_place.0 += 1;
            day.in_place.2 += BLOCK;
        }
        disk.sync_all()?;
        day.in_place.1 = touched.len() as u64;
        let mut batch = self.batch();
        for db in &touched {
            writeln!(batch.commands, "sif {db} mtime @{clock}")?;
            taken.insert(db.clone());
        }

        // 2. Files replaced by a new version (1/3): every log grows, then
        // programs are upgraded, documents edited, archives rebuilt.
        let mut replaced = Vec::new();
        let mut replaced_bytes = 0;
        for p in &order {
            let kind = self.files[p].kind;
            let size = self.files[p].size;
            let wanted = if kind == Kind::Log {
                true
            } else {
                replaced_bytes + size <= budget / 3 && kind != Kind::Database && size >= 4 * KIB
            };
            if !wanted || taken.contains(p) {
                continue;
            }
            let seed = self.seed();
            let edit = match kind {
                Kind::Log => Edit::Append {
                    seed,
                    len: self.rng.spread(8 * KIB, 1),
                },
                Kind::Binary => Edit::Upgrade { seed },
                Kind::Packed => Edit::Rebuild { seed },
                _ if self.rng.permille(300) => Edit::Append {
                    seed,
                    len: self.rng.spread(size / 10 + 1, 1),
                },
                _ => Edit::Patch { seed },
            };
            let entry = self.files.get_mut(p).expect("listed");
            entry.edits.push(edit);
            entry.size = self.material.bytes(entry).len() as u64;
            replaced_bytes += entry.size;
            replaced.push(p.clone());
            taken.insert(p.clone());
        }
        day.replaced = (replaced.len() as u64, replaced_bytes);

        // 3. Files deleted (1/3): anything but databases and logs.
        for p in &order {
            if day.deleted.1 >= budget / 3 {
                break;
            }
            if taken.contains(p)
                || matches!(self.files[p].kind, Kind::Database | Kind::Log)
                || day.deleted.1 + self.files[p].size > budget / 3 + budget / 12
            {
                continue;
            }
            let entry = self.files.remove(p).expect("listed");
            writeln!(batch.commands, "rm {p}")?;
            day.deleted.0 += 1;
            day.deleted.1 += entry.size;
            taken.insert(p.clone());
        }
        for p in &replaced {
            writeln!(batch.commands, "rm {p}")?;
        }

        // 4. New files (1/2): packages installed, photos, downloads...
        let before: BTreeSet<String> = self.files.keys().cloned().collect();
        let old_links: BTreeSet<String> = self.links.keys().cloned().collect();
        day.new = self.add_until(budget / 2);
        let new: Vec<String> = self
            .files
            .keys()
            .filter(|p| !before.contains(*p))
            .cloned()
            .collect();
        for p in replaced.iter().chain(&new) {
            self.stage_write(&mut batch, image, p, clock)?;
        }
        self.write_links(&mut batch, &old_links);
        self.run_batch(batch, image, clock)?;
        Ok(day)
    }

    /// A database page update: some records rewritten, the header's change
    /// counter bumped.
    fn rewrite_page(&mut self, page: &mut [u8]) {
        let mut record = Vec::new();
        let at = self.rng.range(8, BLOCK - 64) as usize;
        let len = self.rng.range(64, 1500) as usize;
        while record.len() < len {
            self.material.record(&mut self.rng, &mut record);
        }
        let n = record.len().min(page.len() - at);
        page[at..at + n].copy_from_slice(&record[..n]);
        page[2] = page[2].wrapping_add(1);
    }
}

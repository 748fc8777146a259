//! The command-line front end: the parts every command shares (passphrase
//! sources, opening repositories, locks, exit codes, writing output) and
//! the dispatcher. Each command lives in its own file under `cmd/`.

/// Writes a line to standard output without ever panicking (see
/// [`write_out`]).
macro_rules! out {
    () => {
        $crate::cli::write_out(format_args!(""))
    };
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!($($t)*))
    };
}

/// Writes a line to standard error, ignoring failure: there is nowhere
/// left to report it.
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

mod args;
mod bar;
mod cmd;
mod human;
mod output;
mod signals;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context};
use clap::Parser;
use zeroize::Zeroizing;

use args::{Cli, Command, LockArgs, PassArgs};
use diskvault::{
    Encryption, Error, ErrorCategory, LockEvent, LockOptions, RepoLocation, Repository,
};

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const PASSPHRASE: i32 = 3;
    pub const DAMAGED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const UNSUPPORTED: i32 = 6;
    pub const REFUSED: i32 = 7;
    pub const LOCKED: i32 = 8;
    pub const STORAGE: i32 = 9;
}

/// Parses arguments, runs the command and returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    if let Some(n) = cli.connections {
        // Checked by the parser: within 1..=MAX_THREADS.
        let _ = diskvault::exec::set_requests_in_flight(n);
    }
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            note!("error: {}", message(&e));
            exit_code(&e)
        }
    };
    for (name, r) in remote_requests() {
        note!("{}", output::requests_line(&name, &r));
    }
    finish_output(code)
}

/// The first failure to write standard output; later writes are skipped.
static OUTPUT_FAILURE: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Writes one line to standard output. A failure (a closed pipe, a full
/// disk) is kept for [`finish_output`] instead of panicking as `println!`
/// would, and later output is skipped.
pub(crate) fn write_out(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut failure = OUTPUT_FAILURE.lock().unwrap_or_else(|e| e.into_inner());
    if failure.is_some() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(line).and_then(|_| stdout.write_all(b"\n")) {
        *failure = Some(e);
    }
}

/// Flushes standard output and reports a failure to write it: a closed
/// pipe (`diskvault points V | head -1`) ends the command quietly, as other
/// Unix tools do; any other failure is one line on standard error. The
/// exit status stays that of the operation itself, which has completed.
fn finish_output(code: i32) -> i32 {
    use std::io::Write;
    let mut failure = OUTPUT_FAILURE.lock().unwrap_or_else(|e| e.into_inner());
    if failure.is_none() {
        if let Err(e) = std::io::stdout().lock().flush() {
            *failure = Some(e);
        }
    }
    match failure.take() {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Some(e) => note!(
            "error: cannot write the output: {e} (the command itself {})",
            if code == exit::OK {
                "completed"
            } else {
                "failed, as said above"
            }
        ),
        None => {}
    }
    code
}

/// The error and its causes, leaving out a cause the message already
/// quotes (library errors include their source in their own text).
fn message(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<UsageError>().is_some() {
        return exit::USAGE;
    }
    match e.downcast_ref::<Error>().map(Error::category) {
        Some(ErrorCategory::Passphrase) => exit::PASSPHRASE,
        Some(ErrorCategory::Damaged) => exit::DAMAGED,
        Some(ErrorCategory::NotFound) => exit::NOT_FOUND,
        Some(ErrorCategory::Unsupported) => exit::UNSUPPORTED,
        Some(ErrorCategory::Refused) => exit::REFUSED,
        Some(ErrorCategory::Locked) => exit::LOCKED,
        Some(ErrorCategory::Storage) => exit::STORAGE,
        Some(ErrorCategory::Interrupted) => signals::interrupted_status(),
        _ => exit::ERROR,
    }
}

pub(crate) type Passphrase = Zeroizing<Vec<u8>>;

/// The passphrase from --password-file, DISKVAULT_PASSWORD, or a prompt.
pub(crate) fn passphrase(pass: &PassArgs, confirm: bool) -> anyhow::Result<Option<Passphrase>> {
    passphrase_from(
        pass.password_file.as_deref(),
        "DISKVAULT_PASSWORD",
        "Passphrase",
        confirm,
    )
}

/// Longest passphrase accepted, in bytes.
const MAX_PASSPHRASE: usize = 4096;

/// A mistake in how the command was called: exit code 2, like clap's own.
#[derive(Debug)]
pub(crate) struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The passphrase in `text` by the one rule for every source: its first
/// line, without the line ending (`\n` or `\r\n`), not empty, at most
/// [`MAX_PASSPHRASE`] bytes. `from` names the source in messages.
fn first_line(text: &[u8], complete: bool, from: &str) -> anyhow::Result<Passphrase> {
    let line = match text.iter().position(|&b| b == b'\n') {
        Some(end) => &text[..end],
        None if complete => text,
        None => &text[..0],
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_PASSPHRASE || (!complete && !text.contains(&b'\n')) {
        bail!(UsageError(format!(
            "the passphrase in {from} is longer than {MAX_PASSPHRASE} bytes (or has no line end in its first {MAX_PASSPHRASE}); is it the right file?"
        )));
    }
    if line.is_empty() {
        bail!(UsageError(format!(
            "the passphrase in {from} is empty; a passphrase is the first line of the file or variable"
        )));
    }
    Ok(Zeroizing::new(line.to_vec()))
}

fn passphrase_from(
    file: Option<&Path>,
    env: &str,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<Option<Passphrase>> {
    if let Some(path) = file {
        use std::io::Read;
        let from = path.display().to_string();
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot read the password file {from}"))?;
        // Never more than a passphrase and its line end: the file may be
        // endless (/dev/zero) or huge.
        let mut text = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE + 2));
        f.take(MAX_PASSPHRASE as u64 + 2)
            .read_to_end(&mut text)
            .with_context(|| format!("cannot read the password file {from}"))?;
        let complete = text.len() <= MAX_PASSPHRASE + 1;
        return first_line(&text, complete, &from).map(Some);
    }
    if let Some(v) = std::env::var_os(env) {
        use std::os::unix::ffi::OsStringExt;
        let bytes = Zeroizing::new(v.into_vec());
        return first_line(&bytes, true, env).map(Some);
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let first = Zeroizing::new(rpassword::prompt_password(format!("{prompt}: "))?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password(format!("{prompt} (again): "))?);
        if *first != *again {
            bail!(UsageError("the passphrases do not match".into()));
        }
    }
    first_line(first.as_bytes(), true, "the prompt").map(Some)
}

/// How every command takes locks: `--wait`, and notes on standard error
/// when it waits or reads a read-only repository without a lock.
pub(crate) fn lock_options(lock: &LockArgs) -> LockOptions {
    LockOptions {
        wait: lock.wait.unwrap_or_default(),
        notify: Some(std::sync::Arc::new(|event: &LockEvent| match event {
            LockEvent::Waiting { holders } => {
                note!("waiting for the repository lock: {holders}")
            }
            LockEvent::Skipped { reason } => note!("note: {reason}"),
        })),
        ..LockOptions::default()
    }
}

/// Remote repositories this command uses, for the request report.
static REMOTES: Mutex<Vec<RepoLocation>> = Mutex::new(Vec::new());

/// The repository a command-line argument names: a path, or an
/// `az://`/`s3://` URL.
pub(crate) fn location(arg: &Path) -> anyhow::Result<RepoLocation> {
    let loc = match arg.to_str() {
        Some(text) => RepoLocation::parse(text)?,
        None => RepoLocation::local(arg),
    };
    if loc.local_path().is_none() {
        REMOTES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(loc.clone());
    }
    Ok(loc)
}

/// The requests each remote repository of this command made so far.
pub(crate) fn remote_requests() -> Vec<(String, diskvault::store::RequestCounts)> {
    REMOTES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|l| l.store().requests().map(|r| (l.name().to_string(), r)))
        .collect()
}

pub(crate) fn open(repo: &Path, pass: &PassArgs, lock: &LockArgs) -> anyhow::Result<Repository> {
    let mut r = open_unlocked(repo, pass)?;
    r.set_lock_options(lock_options(lock));
    Ok(r)
}

fn open_unlocked(repo: &Path, pass: &PassArgs) -> anyhow::Result<Repository> {
    let loc = location(repo)?;
    // Only ask for a passphrase when the repository needs one.
    let config = loc.read_config()?;
    let p = match config.encryption {
        // A passphrase given for an unencrypted repository is passed on, so
        // that the library can refuse it: the config may have been
        // downgraded by someone who can write the storage.
        Encryption::None
            if pass.password_file.is_some() || std::env::var_os("DISKVAULT_PASSWORD").is_some() =>
        {
            passphrase(pass, false)?
        }
        Encryption::None => None,
        Encryption::Aes256Gcm => passphrase(pass, false)?,
    };
    let opened = loc.open(p.as_deref().map(|v| v.as_slice()))?;
    if config.encryption == Encryption::None {
        note!(
            "note: {} is not encrypted: anyone who can read it can read the disks it holds",
            loc.name()
        );
    }
    Ok(opened)
}

pub(crate) fn new_passphrase(file: Option<&Path>) -> anyhow::Result<Passphrase> {
    passphrase_from(file, "DISKVAULT_NEW_PASSWORD", "New passphrase", true)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no new passphrase: set DISKVAULT_NEW_PASSWORD, pass --new-password-file, or run interactively"
        )
    })
}

/// What every command is given besides its own arguments: the global
/// flags.
pub(crate) struct Globals {
    /// `--wait`: how long to wait for a conflicting lock.
    pub lock: LockArgs,
    /// `--quiet`: no progress bars.
    pub quiet: bool,
}

impl Globals {
    /// Opens the repository at `repo` (path or URL) with the passphrase of
    /// `pass` and this command's lock options.
    pub fn open(&self, repo: &Path, pass: &PassArgs) -> anyhow::Result<Repository> {
        open(repo, pass, &self.lock)
    }

    /// A progress bar labelled `what` (hidden with `--quiet` or when
    /// standard error is not a terminal).
    pub fn bar(&self, what: &str) -> bar::Bar {
        bar::Bar::new(what, self.quiet)
    }
}

/// Runs the command given; each one's file says what it does.
fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let g = Globals {
        lock: cli.lock,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Init(a) => cmd::init::run(a, &g),
        Command::Backup(a) => cmd::backup::run(a, &g),
        Command::Analyze(a) => cmd::analyze::run(a, &g),
        Command::Points(a) => cmd::points::run(a, &g),
        Command::Show(a) => cmd::show::run(a, &g),
        Command::Restore(a) => cmd::restore::run(a, &g),
        Command::Partitions(a) => cmd::partitions::run(a, &g),
        Command::Ls(a) => cmd::ls::run(a, &g),
        Command::Cat(a) => cmd::cat::run(a, &g),
        Command::Extract(a) => cmd::extract::run(a, &g),
        Command::ServeNbd(a) => cmd::serve_nbd::run(a, &g),
        Command::Sync(a) => cmd::sync::run(a, &g),
        Command::Status(a) => cmd::status::run(a, &g),
        Command::Repair(a) => cmd::repair::run(a, &g),
        Command::Check(a) => cmd::check::run(a, &g),
        Command::Stats(a) => cmd::stats::run(a, &g),
        Command::Key { action } => cmd::key::run(action, &g),
        Command::Forget(a) => cmd::forget::run(a, &g),
        Command::Unforget(a) => cmd::unforget::run(a, &g),
        Command::Policy { action } => cmd::policy::run(action, &g),
        Command::Prune(a) => cmd::prune::run(a, &g),
        Command::Unlock(a) => cmd::unlock::run(a, &g),
    }
}

//! The command-line front end: passphrase sources, output formatting and
//! exit codes.

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
mod cmd;
mod output;
mod signals;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context};
use clap::Parser;
use zeroize::Zeroizing;

use args::{Cli, Command, EncryptionArg, KeyAction, LockArgs, PassArgs, PolicyAction, RuleArgs};
use diskvault::format::policy::StoredPolicy;
use diskvault::retention::RetentionPolicy;
use diskvault::{
    Encryption, Error, ErrorCategory, InitOptions, KdfCost, LockEvent, LockOptions, RepoLocation,
    Repository, SyncOptions,
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

type Passphrase = Zeroizing<Vec<u8>>;

/// The passphrase from --password-file, DISKVAULT_PASSWORD, or a prompt.
fn passphrase(pass: &PassArgs, confirm: bool) -> anyhow::Result<Option<Passphrase>> {
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
struct UsageError(String);

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
fn lock_options(lock: &LockArgs) -> LockOptions {
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
fn location(arg: &Path) -> anyhow::Result<RepoLocation> {
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

fn open(repo: &Path, pass: &PassArgs, lock: &LockArgs) -> anyhow::Result<Repository> {
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

fn new_passphrase(file: Option<&Path>) -> anyhow::Result<Passphrase> {
    passphrase_from(file, "DISKVAULT_NEW_PASSWORD", "New passphrase", true)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no new passphrase: set DISKVAULT_NEW_PASSWORD, pass --new-password-file, or run interactively"
        )
    })
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let lock = cli.lock;
    match cli.command {
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Init {
            repo,
            encryption,
            chunker,
            compression,
            format_major,
            pass,
        } => {
            let encryption = match encryption {
                EncryptionArg::Aes256Gcm => Encryption::Aes256Gcm,
                EncryptionArg::None => Encryption::None,
            };
            let p = match encryption {
                Encryption::Aes256Gcm => {
                    Some(passphrase(&pass, true)?.ok_or(Error::PassphraseRequired)?)
                }
                Encryption::None => None,
            };
            let opts = InitOptions {
                encryption,
                chunker,
                compression,
                kdf: KdfCost::default(),
                format_major,
            };
            let r = location(&repo)?.init(p.as_deref().map(|v| v.as_slice()), &opts)?;
            output::init(&r);
            Ok(exit::OK)
        }
        Command::Backup {
            repo,
            images,
            disks,
            tags,
            host,
            compression,
            threads,
            json,
            pass,
        } => {
            if !disks.is_empty() && disks.len() != images.len() {
                bail!(UsageError(format!(
                    "{} --disk names for {} images: give one name per image, in order",
                    disks.len(),
                    images.len()
                )));
            }
            let sources = images
                .iter()
                .enumerate()
                .map(|(i, path)| diskvault::DiskSource {
                    name: disks.get(i).cloned().unwrap_or_else(|| {
                        path.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| format!("disk{i}"))
                    }),
                    path: path.clone(),
                })
                .collect();
            let r = open(&repo, &pass, &lock)?;
            let bar = output::Bar::new("backup");
            let report = diskvault::backup(
                &r,
                &diskvault::BackupOptions {
                    disks: sources,
                    tags,
                    host,
                    compression,
                    threads,
                    progress: bar.progress(),
                },
            );
            bar.finish();
            output::backup(
                &report?,
                r.config().encryption == Encryption::Aes256Gcm,
                json,
            );
            Ok(exit::OK)
        }
        Command::Points {
            repo,
            forgotten,
            json,
            pass,
        } => {
            let r = open(&repo, &pass, &lock)?;
            if forgotten {
                output::forgotten(&diskvault::list_forgotten(&r)?, json);
            } else {
                let _lock = r.lock_for_reading("points")?;
                let (points, damaged) = r.list_points_lenient()?;
                output::damaged_warnings(
                    &damaged,
                    "the listing",
                    "'diskvault check REPO' says what it affects",
                );
                output::points(&points, json);
                // The listing is complete but for what is named above;
                // scripts learn of the damage from the status.
                if !damaged.is_empty() {
                    return Ok(exit::DAMAGED);
                }
            }
            Ok(exit::OK)
        }
        Command::Show {
            repo,
            point,
            json,
            pass,
        } => {
            let r = open(&repo, &pass, &lock)?;
            let _lock = r.lock_for_reading("show")?;
            let id = r.resolve_point(&point)?;
            output::show(&id, &r.read_point(&id)?, json);
            Ok(exit::OK)
        }
        Command::Restore {
            repo,
            point,
            output: out,
            into,
            disk,
            force,
            threads,
            fallback,
            pass,
        } => {
            let r = open(&repo, &pass, &lock)?;
            let into_existing = into.is_some();
            let bar = output::Bar::new("restore");
            let report = diskvault::restore(
                &r,
                &diskvault::RestoreOptions {
                    point,
                    disk,
                    output: into.or(out).unwrap_or_default(),
                    force,
                    threads,
                    into_existing,
                    progress: bar.progress(),
                    fallback: fallback.as_deref().map(location).transpose()?,
                    cancel: Some(signals::cancel_on_signals()),
                },
            );
            bar.finish();
            output::restore(&report?, &repo, fallback.as_deref());
            Ok(exit::OK)
        }
        Command::Sync {
            src,
            dst,
            points,
            tags,
            verify,
            threads,
            delete,
            json,
            pass,
        } => {
            // Objects move verbatim, so the passphrase is needed only to
            // read points (tags, `latest`), open chunks (--verify) or read
            // and write forget records (--delete).
            let needs_key =
                verify || delete || !tags.is_empty() || points.iter().any(|p| p == "latest");
            let bar = output::Bar::new("sync");
            let opts = SyncOptions {
                points,
                tags,
                verify,
                threads,
                progress: bar.progress(),
                delete,
                lock: Some(lock_options(&lock)),
            };
            let destination = location(&dst)?;
            // The replica marker records where the source is: make that
            // path mean something from anywhere.
            let is_url = src
                .to_str()
                .is_some_and(|t| diskvault::store::ObjectUrl::parse(t).is_some());
            let src = if is_url {
                src
            } else {
                std::path::absolute(&src).unwrap_or(src)
            };
            let report = if needs_key {
                let r = open(&src, &pass, &lock)?;
                diskvault::sync_with_key(&r, &destination, &opts)
            } else {
                diskvault::sync(&location(&src)?, &destination, &opts)
            };
            bar.finish();
            output::sync(&report?, json);
            Ok(exit::OK)
        }
        Command::Status {
            repo,
            replica,
            json,
            pass,
        } => {
            let r = open(&repo, &pass, &lock)?;
            let status = diskvault::replica_status(&r, &location(&replica)?)?;
            output::status(&status, json);
            Ok(exit::OK)
        }
        Command::Repair {
            repo,
            from,
            index,
            threads,
            json,
            pass,
        } => {
            let r = open(&repo, &pass, &lock)?;
            let Some(from) = from.filter(|_| !index) else {
                let report = diskvault::rebuild_index(&r)?;
                output::reindex(&report, json);
                return Ok(if report.damaged_packs.is_empty() {
                    exit::OK
                } else {
                    exit::DAMAGED
                });
            };
            let report =
                diskvault::repair(&r, &location(&from)?, &diskvault::RepairOptions { threads })?;
            output::repair(&report, &repo, &from, json);
            Ok(if report.is_complete() {
                exit::OK
            } else {
                exit::DAMAGED
            })
        }
        Command::Check {
            repo,
            read_data,
            threads,
            json,
            pass,
        } => {
            let r = open(&repo, &pass, &lock)?;
            let report = diskvault::check(&r, &diskvault::CheckOptions { read_data, threads })?;
            output::check(&report, read_data, json);
            Ok(if report.is_ok() {
                exit::OK
            } else {
                exit::DAMAGED
            })
        }
        Command::Stats { repo, json, pass } => {
            let r = open(&repo, &pass, &lock)?;
            let stats = diskvault::stats(&r)?;
            output::damaged_warnings(
                &stats.unreadable,
                "the figures",
                "'diskvault check REPO' says what it affects",
            );
            output::stats(&stats, json);
            Ok(if stats.unreadable.is_empty() {
                exit::OK
            } else {
                exit::DAMAGED
            })
        }
        Command::Key { action } => key(action, &lock),
        Command::Forget {
            repo,
            points,
            rules,
            dry_run,
            allow_remove_all,
            json,
            pass,
        } => {
            let r = open(&repo, &pass, &lock)?;
            let given = policy_of(&rules);
            let report = diskvault::forget(
                &r,
                &diskvault::ForgetOptions {
                    policy: (!given.is_empty()).then_some(given),
                    points,
                    dry_run,
                    allow_remove_all,
                    now: None,
                },
            )?;
            output::forget(&report, json);
            Ok(exit::OK)
        }
        Command::Unforget { repo, points, pass } => {
            let r = open(&repo, &pass, &lock)?;
            for id in diskvault::unforget(&r, &points)? {
                out!("unforgot {}", id.short());
            }
            Ok(exit::OK)
        }
        Command::Policy { action } => policy(action, &lock),
        Command::Prune {
            repo,
            dry_run,
            max_unused,
            now,
            json,
            pass,
        } => {
            let r = open(&repo, &pass, &lock)?;
            let report = diskvault::prune(
                &r,
                &diskvault::PruneOptions {
                    dry_run,
                    max_unused_percent: max_unused
                        .unwrap_or(diskvault::ops::prune::DEFAULT_MAX_UNUSED_PERCENT),
                    ignore_grace: now,
                    now: None,
                },
            )?;
            output::prune(&report, json);
            Ok(exit::OK)
        }
        Command::Unlock { repo, all, json } => {
            let location = location(&repo)?;
            // Refuse a path that is no repository before touching it.
            location.read_config()?;
            let opts = lock_options(&lock);
            if all {
                note!(
                    "warning: removing every lock of {}, also those of commands that may still be running; a prune or backup running now is no longer protected",
                    repo.display()
                );
            }
            let removed =
                diskvault::repo::lock::remove_locks(location.store().as_ref(), all, &opts)?;
            let left = diskvault::repo::lock::list_locks(location.store().as_ref(), &opts)?;
            output::unlock(&removed, &left, json);
            Ok(exit::OK)
        }
    }
}

/// The rules given on the command line.
fn policy_of(rules: &RuleArgs) -> RetentionPolicy {
    RetentionPolicy {
        keep_last: rules.keep_last,
        keep_hourly: rules.keep_hourly,
        keep_daily: rules.keep_daily,
        keep_weekly: rules.keep_weekly,
        keep_monthly: rules.keep_monthly,
        keep_yearly: rules.keep_yearly,
        keep_within: rules.keep_within,
        keep_tags: rules.keep_tags.clone(),
        group_by: rules.group_by.unwrap_or_default(),
    }
}

fn policy(action: PolicyAction, lock: &LockArgs) -> anyhow::Result<i32> {
    match action {
        PolicyAction::Set {
            repo,
            rules,
            grace,
            pass,
        } => {
            let r = open(&repo, &pass, lock)?;
            let mut stored = r.read_policy()?.unwrap_or_default();
            let given = policy_of(&rules);
            if given.is_empty() && grace.is_none() {
                bail!(Error::InvalidArgument(
                    "nothing to set: give rules (--keep-daily 7 ...) and/or --grace DURATION"
                        .into()
                ));
            }
            if !given.is_empty() {
                stored.rules = given;
            }
            if let Some(g) = grace {
                stored.grace_secs = g.as_secs();
            }
            r.write_policy(&stored)?;
            output::policy(&stored, false);
            Ok(exit::OK)
        }
        PolicyAction::Show { repo, json, pass } => {
            let r = open(&repo, &pass, lock)?;
            match r.read_policy()? {
                Some(p) => output::policy(&p, json),
                None if json => out!("null"),
                None => out!(
                    "no policy stored (forgotten points are kept {} before prune frees them); set one with 'diskvault policy set'",
                    output::duration(StoredPolicy::default().grace_secs)
                ),
            }
            Ok(exit::OK)
        }
    }
}

fn key(action: KeyAction, lock: &LockArgs) -> anyhow::Result<i32> {
    match action {
        KeyAction::Add {
            repo,
            new_password_file,
            pass,
        } => {
            let r = open(&repo, &pass, lock)?;
            let p = new_passphrase(new_password_file.as_deref())?;
            let id = r.add_key(&p, KdfCost::default())?;
            out!("added key {}", id.short());
        }
        KeyAction::List { repo, json, pass } => {
            let r = open(&repo, &pass, lock)?;
            output::keys(&r.list_keys()?, json);
        }
        KeyAction::Remove { repo, key, pass } => {
            let r = open(&repo, &pass, lock)?;
            let id = r.remove_key(&key)?;
            out!("removed key {}", id.short());
        }
        KeyAction::Passwd {
            repo,
            new_password_file,
            pass,
        } => {
            let mut r = open(&repo, &pass, lock)?;
            let p = new_passphrase(new_password_file.as_deref())?;
            let id = r.change_passphrase(&p, KdfCost::default())?;
            out!(
                "passphrase changed: key {} replaces the old one",
                id.short()
            );
        }
    }
    Ok(exit::OK)
}

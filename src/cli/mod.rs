//! The command-line front end: passphrase sources, output formatting and
//! exit codes.

mod args;
mod output;

use std::io::IsTerminal;
use std::path::Path;

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
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            exit_code(&e)
        }
    }
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
    match e.downcast_ref::<Error>().map(Error::category) {
        Some(ErrorCategory::Passphrase) => exit::PASSPHRASE,
        Some(ErrorCategory::Damaged) => exit::DAMAGED,
        Some(ErrorCategory::NotFound) => exit::NOT_FOUND,
        Some(ErrorCategory::Unsupported) => exit::UNSUPPORTED,
        Some(ErrorCategory::Refused) => exit::REFUSED,
        Some(ErrorCategory::Locked) => exit::LOCKED,
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

fn passphrase_from(
    file: Option<&Path>,
    env: &str,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<Option<Passphrase>> {
    if let Some(path) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the password file {}", path.display()))?,
        );
        let line = text.lines().next().unwrap_or("");
        return Ok(Some(Zeroizing::new(line.as_bytes().to_vec())));
    }
    if let Ok(v) = std::env::var(env) {
        return Ok(Some(Zeroizing::new(v.into_bytes())));
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let first = Zeroizing::new(rpassword::prompt_password(format!("{prompt}: "))?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password(format!("{prompt} (again): "))?);
        if *first != *again {
            bail!("the passphrases do not match");
        }
    }
    Ok(Some(Zeroizing::new(first.as_bytes().to_vec())))
}

/// How every command takes locks: `--wait`, and notes on standard error
/// when it waits or reads a read-only repository without a lock.
fn lock_options(lock: &LockArgs) -> LockOptions {
    LockOptions {
        wait: lock.wait.unwrap_or_default(),
        notify: Some(std::sync::Arc::new(|event: &LockEvent| match event {
            LockEvent::Waiting { holders } => {
                eprintln!("waiting for the repository lock: {holders}")
            }
            LockEvent::Skipped { reason } => eprintln!("note: {reason}"),
        })),
        ..LockOptions::default()
    }
}

fn open(repo: &Path, pass: &PassArgs, lock: &LockArgs) -> anyhow::Result<Repository> {
    let mut r = open_unlocked(repo, pass)?;
    r.set_lock_options(lock_options(lock));
    Ok(r)
}

fn open_unlocked(repo: &Path, pass: &PassArgs) -> anyhow::Result<Repository> {
    // Only ask for a passphrase when the repository needs one.
    let config = Repository::read_config(
        &diskvault::store::LocalStore::new(repo),
        &repo.display().to_string(),
    )?;
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
    let opened = Repository::open(repo, p.as_deref().map(|v| v.as_slice()))?;
    if config.encryption == Encryption::None {
        eprintln!(
            "note: {} is not encrypted: anyone who can read it can read the disks it holds",
            repo.display()
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
        Command::Init {
            repo,
            encryption,
            chunker,
            compression,
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
            };
            let r = Repository::init(&repo, p.as_deref().map(|v| v.as_slice()), &opts)?;
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
                bail!(Error::InvalidArgument(format!(
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
                output::points(&r.list_points()?, json);
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
                    fallback: fallback.as_deref().map(RepoLocation::local),
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
            let destination = RepoLocation::local(&dst);
            // The replica marker records where the source is: make that
            // path mean something from anywhere.
            let src = std::path::absolute(&src).unwrap_or(src);
            let report = if needs_key {
                let r = open(&src, &pass, &lock)?;
                diskvault::sync_with_key(&r, &destination, &opts)
            } else {
                diskvault::sync(&RepoLocation::local(&src), &destination, &opts)
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
            let status = diskvault::replica_status(&r, &RepoLocation::local(&replica))?;
            output::status(&status, json);
            Ok(exit::OK)
        }
        Command::Repair {
            repo,
            from,
            threads,
            json,
            pass,
        } => {
            let r = open(&repo, &pass, &lock)?;
            let report = diskvault::repair(
                &r,
                &RepoLocation::local(&from),
                &diskvault::RepairOptions { threads },
            )?;
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
            output::stats(&diskvault::stats(&r)?, json);
            Ok(exit::OK)
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
                println!("unforgot {}", id.short());
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
            let location = RepoLocation::local(&repo);
            // Refuse a path that is no repository before touching it.
            location.read_config()?;
            let opts = lock_options(&lock);
            if all {
                eprintln!(
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
                None if json => println!("null"),
                None => println!(
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
            println!("added key {}", id.short());
        }
        KeyAction::List { repo, json, pass } => {
            let r = open(&repo, &pass, lock)?;
            output::keys(&r.list_keys()?, json);
        }
        KeyAction::Remove { repo, key, pass } => {
            let r = open(&repo, &pass, lock)?;
            let id = r.remove_key(&key)?;
            println!("removed key {}", id.short());
        }
        KeyAction::Passwd {
            repo,
            new_password_file,
            pass,
        } => {
            let mut r = open(&repo, &pass, lock)?;
            let p = new_passphrase(new_password_file.as_deref())?;
            let id = r.change_passphrase(&p, KdfCost::default())?;
            println!(
                "passphrase changed: key {} replaces the old one",
                id.short()
            );
        }
    }
    Ok(exit::OK)
}

//! `diskvault key`: manage the passphrases (key files) that open the
//! repository.

use std::path::PathBuf;

use clap::Subcommand;
use diskvault::{KdfCost, KeyId, KeyInfo};
use serde::Serialize;

use crate::cli::human::time;
use crate::cli::output::print_json;
use crate::cli::{exit, new_passphrase, Globals, PassArgs};

/// What to do with the key files.
#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// Add a passphrase. The new one comes from DISKVAULT_NEW_PASSWORD, --new-password-file or a prompt.
    Add {
        repo: PathBuf,
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// Print the new key's id as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// List key files.
    List {
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Remove a key file (not the one used to open the repository).
    Remove {
        repo: PathBuf,
        /// Key id or unique prefix (see `key list`).
        key: String,
        /// Print the removed key's id as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Change the passphrase in use (adds a new key file, removes the old one).
    Passwd {
        repo: PathBuf,
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// Print the new key's id as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pass: PassArgs,
    },
}

/// `key add`, `key remove` and `key passwd --json`: the key added (or
/// removed).
#[derive(Serialize)]
struct KeyJson {
    key: KeyId,
}

/// Prints the key a command added or removed: as JSON, or the sentence
/// `text` makes of its short id.
fn report_key(id: KeyId, json: bool, text: impl FnOnce(&str) -> String) {
    if json {
        print_json(&KeyJson { key: id });
    } else {
        out!("{}", text(&id.short()));
    }
}

/// Runs the key action.
pub fn run(action: KeyAction, g: &Globals) -> anyhow::Result<i32> {
    match action {
        KeyAction::Add {
            repo,
            new_password_file,
            json,
            pass,
        } => {
            let r = g.open(&repo, &pass)?;
            let p = new_passphrase(new_password_file.as_deref())?;
            let id = r.add_key(&p, KdfCost::default())?;
            report_key(id, json, |short| format!("added key {short}"));
        }
        KeyAction::List { repo, json, pass } => {
            let r = g.open(&repo, &pass)?;
            let keys = r.list_keys()?;
            if json {
                print_json(&keys);
            } else {
                render(&keys);
            }
        }
        KeyAction::Remove {
            repo,
            key,
            json,
            pass,
        } => {
            let r = g.open(&repo, &pass)?;
            let id = r.remove_key(&key)?;
            report_key(id, json, |short| format!("removed key {short}"));
        }
        KeyAction::Passwd {
            repo,
            new_password_file,
            json,
            pass,
        } => {
            let mut r = g.open(&repo, &pass)?;
            let p = new_passphrase(new_password_file.as_deref())?;
            let id = r.change_passphrase(&p, KdfCost::default())?;
            report_key(id, json, |short| {
                format!("passphrase changed: key {short} replaces the old one")
            });
        }
    }
    Ok(exit::OK)
}

fn render(keys: &[KeyInfo]) {
    for k in keys {
        out!(
            "{} {:<10} {} {}@{}",
            if k.current { "*" } else { " " },
            k.id.short(),
            time(k.created),
            k.username,
            k.host
        );
    }
}

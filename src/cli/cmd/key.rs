//! `diskvault key`: manage the passphrases (key files) that open the
//! repository.

use std::path::PathBuf;

use clap::Subcommand;
use diskvault::{KdfCost, KeyInfo};

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
        #[command(flatten)]
        pass: PassArgs,
    },
    /// Change the passphrase in use (adds a new key file, removes the old one).
    Passwd {
        repo: PathBuf,
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        #[command(flatten)]
        pass: PassArgs,
    },
}

/// Runs the key action.
pub fn run(action: KeyAction, g: &Globals) -> anyhow::Result<i32> {
    match action {
        KeyAction::Add {
            repo,
            new_password_file,
            pass,
        } => {
            let r = g.open(&repo, &pass)?;
            let p = new_passphrase(new_password_file.as_deref())?;
            let id = r.add_key(&p, KdfCost::default())?;
            out!("added key {}", id.short());
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
        KeyAction::Remove { repo, key, pass } => {
            let r = g.open(&repo, &pass)?;
            let id = r.remove_key(&key)?;
            out!("removed key {}", id.short());
        }
        KeyAction::Passwd {
            repo,
            new_password_file,
            pass,
        } => {
            let mut r = g.open(&repo, &pass)?;
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

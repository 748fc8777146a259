//! `diskvault serve-nbd`: instant restore. A disk of a recovery point is
//! served over NBD, so a VM boots from it or `qemu-img` copies it while
//! only the chunks read are fetched.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use diskvault::image::ImageRead;
use diskvault::{serve_nbd, Error, NbdEvent, NbdExport, NbdOverlay};

use super::files::{open_disk, DiskArgs};
use crate::cli::human::size;
use crate::cli::{exit, signals, Globals};

/// Serve a disk of a recovery point over NBD (read-only unless
/// --writable), fetching chunks as clients read them; Ctrl-C stops.
#[derive(Args, Debug)]
pub struct ServeNbdArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// Address to listen on. The export is named after the disk and is
    /// also the default export (the empty name).
    #[arg(long, default_value = "127.0.0.1:10809", value_name = "ADDR:PORT")]
    bind: String,
    /// Accept writes, into a local overlay file: never into the vault.
    /// The overlay lasts as long as the server.
    #[arg(long)]
    writable: bool,
    /// The overlay file for --writable (created new; default: a temporary
    /// file removed when the server stops).
    #[arg(long, value_name = "FILE", requires = "writable")]
    overlay: Option<PathBuf>,
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run(a: ServeNbdArgs, g: &Globals) -> anyhow::Result<i32> {
    let disk = open_disk(&a.disk, g)?;
    let writable = a
        .writable
        .then(|| NbdOverlay::create(a.overlay.as_deref(), disk.size()))
        .transpose()?;
    let listener = TcpListener::bind(&a.bind).map_err(|e| {
        Error::InvalidArgument(format!(
            "cannot listen on {}: {e}; choose another address with --bind",
            a.bind
        ))
    })?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(a.bind.clone());
    let name = disk.disk().name.clone();
    let what = disk.describe();
    let mode = match &writable {
        Some(o) => match o.path() {
            Some(p) => format!("writable, writes kept in {}", p.display()),
            None => "writable, writes kept in a temporary overlay".into(),
        },
        None => "read-only".into(),
    };
    out!(
        "serving {what} ({}) at nbd://{addr}/{name} ({mode}); Ctrl-C stops",
        size(disk.size())
    );
    let stop = signals::cancel_on_signals();
    let export = NbdExport {
        name,
        description: what,
        image: disk.clone() as Arc<dyn ImageRead>,
        writable,
    };
    let events = |e: NbdEvent| match e {
        NbdEvent::Connected { peer } => note!("{peer}: connected"),
        NbdEvent::Disconnected {
            peer,
            bytes_read,
            bytes_written,
            reason,
        } => note!(
            "{peer}: disconnected after reading {} and writing {}{}",
            size(bytes_read),
            size(bytes_written),
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
        NbdEvent::RequestFailed { peer, message } => note!("{peer}: a request failed: {message}"),
        NbdEvent::AcceptFailed { message } => note!("accepting a connection failed: {message}"),
        _ => {}
    };
    serve_nbd(listener, export, &stop, &events)?;
    let s = disk.stats();
    note!(
        "stopped; read {} from the repository ({} blobs) for the {} disk",
        size(s.bytes_fetched),
        s.blobs_fetched,
        size(disk.size())
    );
    Ok(exit::OK)
}

//! An NBD server for one disk image: what `diskvault serve-nbd` runs so
//! that a VM boots from, or `qemu-img` copies, a disk of a recovery point
//! straight from the vault ("instant restore").
//!
//! [`serve_nbd`] exports one [`ImageRead`] under one name (the empty name
//! selects it too), read-only, or writable through an [`NbdOverlay`]: writes
//! land in a local file, never in the image. Many clients may connect at
//! once; each connection serves several requests in parallel, because
//! reading a recovery point waits on storage and decryption.
//!
//! Spoken: fixed newstyle negotiation (`NBD_OPT_GO`, `INFO`, `LIST`,
//! `EXPORT_NAME`, `ABORT`, `STRUCTURED_REPLY`, `LIST_META_CONTEXT` and
//! `SET_META_CONTEXT` for `base:allocation`); reads (simple or structured,
//! holes sent as hole chunks), block status, flush, and on a writable
//! export write, write-zeroes and trim. No TLS (`NBD_OPT_STARTTLS` is
//! refused): bind to 127.0.0.1 or reach the server over an SSH tunnel.
//!
//! - `negotiation.rs`: the handshake, from the greeting to transmission.
//! - `transmission.rs`: requests, worker threads, replies.
//! - `overlay.rs`: [`NbdOverlay`], where a writable export's writes go.

use std::collections::HashMap;
use std::io::{self, BufReader};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::image::ImageRead;

use super::proto::*;

mod negotiation;
mod overlay;
mod transmission;

pub use overlay::NbdOverlay;

/// Smallest request the export handles (any byte alignment works).
const BLOCK_SIZE_MIN: u32 = 1;
/// The request size the export handles best: the overlay's block.
const BLOCK_SIZE_PREFERRED: u32 = overlay::OVERLAY_BLOCK as u32;
/// Largest read or write accepted: the protocol's default maximum.
pub(crate) const BLOCK_SIZE_MAX: u32 = 32 << 20;

/// How often the accept loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// How long a client may take over each step of negotiation; a client
/// that connects and says nothing does not hold a thread for ever. In the
/// transmission phase a client may stay idle as long as it likes (a VM
/// that reads nothing for an hour).
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(60);

/// What an NBD server serves: one disk image, under one name.
pub struct NbdExport {
    /// The export's name, e.g. the disk's name. Clients may also ask for
    /// the empty name, which selects this export. At most 4096 bytes.
    pub name: String,
    /// A line about the export for clients that ask (`NBD_INFO_DESCRIPTION`,
    /// shown by `nbdinfo`), e.g. `disk 'root' of point 1a2b3c4d`; may be
    /// empty.
    pub description: String,
    /// The bytes served.
    pub image: Arc<dyn ImageRead>,
    /// `Some` makes the export writable: writes go into this overlay, and
    /// the image is never written. `None` serves the image read-only.
    pub writable: Option<NbdOverlay>,
}

/// Something that happened on the server, for its operator: the CLI
/// prints these. None of them stops the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NbdEvent {
    /// A client connected.
    Connected {
        /// The client's address.
        peer: SocketAddr,
    },
    /// A client's connection ended.
    Disconnected {
        /// The client's address.
        peer: SocketAddr,
        /// Bytes of the export sent to it.
        bytes_read: u64,
        /// Bytes it wrote (into the overlay).
        bytes_written: u64,
        /// Why it ended, when not by the client saying goodbye
        /// (`NBD_CMD_DISC` or `NBD_OPT_ABORT`): it vanished, broke the
        /// protocol, asked for an export that does not exist, or the
        /// server stopped.
        reason: Option<String>,
    },
    /// A request could not be served because the image could not be read
    /// or the overlay not written; the client got an I/O error (EIO).
    RequestFailed {
        /// The client's address.
        peer: SocketAddr,
        /// What failed, naming the range and the cause.
        message: String,
    },
    /// A connection could not be accepted (e.g. too many open files); the
    /// server goes on listening.
    AcceptFailed {
        /// The error.
        message: String,
    },
}

/// What negotiation tells clients about the export.
pub(super) struct ExportInfo {
    name: String,
    description: String,
    size: u64,
    /// `TFLAG_*` transmission flags.
    flags: u16,
}

impl ExportInfo {
    /// Whether a client asking for `name` gets this export.
    fn answers_to(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }

    /// The message for a client asking for an export that does not exist.
    fn unknown(&self, name: &str) -> String {
        format!(
            "no export named '{name}'; this server exports '{}' (the empty name selects it too)",
            self.name
        )
    }
}

/// The export as the connections share it.
pub(super) struct Export {
    info: ExportInfo,
    image: Arc<dyn ImageRead>,
    overlay: Option<NbdOverlay>,
}

/// Serves `export` to every client that connects to `listener`, each on a
/// thread of its own, until `stop` is set; then closes every connection
/// and returns. `events` hears of connections coming and going and of
/// requests that failed (it is called from the connection threads).
///
/// A client that vanishes, sends garbage or asks for what the export
/// cannot do ends or is refused on its own connection only. Fails only if
/// the export is unusable (a name over 4096 bytes, an overlay of another
/// size than the image) or the listener cannot be polled.
pub fn serve_nbd(
    listener: TcpListener,
    export: NbdExport,
    stop: &AtomicBool,
    events: &(dyn Fn(NbdEvent) + Sync),
) -> Result<()> {
    let export = prepare(export)?;
    // Accepting without blocking lets the loop look at `stop` in between.
    listener.set_nonblocking(true).map_err(|e| {
        Error::InvalidArgument(format!("cannot poll the NBD listening socket: {e}"))
    })?;
    let open: Mutex<HashMap<u64, TcpStream>> = Mutex::new(HashMap::new());
    std::thread::scope(|s| {
        let mut next_id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(STOP_POLL);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    events(NbdEvent::AcceptFailed {
                        message: e.to_string(),
                    });
                    // E.g. out of file descriptors: wait for some to close.
                    std::thread::sleep(STOP_POLL);
                    continue;
                }
            };
            let id = next_id;
            next_id += 1;
            // Kept so that stopping can shut the connection down while its
            // thread waits for the client.
            match stream.try_clone() {
                Ok(handle) => {
                    open.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(id, handle);
                }
                Err(e) => {
                    events(NbdEvent::AcceptFailed {
                        message: format!("connection from {peer}: {e}"),
                    });
                    continue;
                }
            }
            let (export, open) = (&export, &open);
            let spawned = std::thread::Builder::new()
                .name(format!("nbd-{peer}"))
                .spawn_scoped(s, move || {
                    events(NbdEvent::Connected { peer });
                    let (bytes_read, bytes_written, reason) =
                        serve_connection(stream, peer, export, events);
                    open.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    let reason = match reason {
                        Some(_) if stop.load(Ordering::Relaxed) => {
                            Some("the server is stopping".to_string())
                        }
                        other => other,
                    };
                    events(NbdEvent::Disconnected {
                        peer,
                        bytes_read,
                        bytes_written,
                        reason,
                    });
                });
            if let Err(e) = spawned {
                if let Some(stream) = open
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id)
                {
                    let _ = stream.shutdown(Shutdown::Both);
                }
                events(NbdEvent::AcceptFailed {
                    message: format!("cannot start a thread for {peer}: {e}"),
                });
            }
        }
        // Stopping: wake every connection thread; the scope then waits
        // for them to finish.
        for stream in open.lock().unwrap_or_else(PoisonError::into_inner).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    });
    Ok(())
}

/// Checks the export and works out what negotiation announces.
fn prepare(export: NbdExport) -> Result<Export> {
    let NbdExport {
        name,
        description,
        image,
        writable,
    } = export;
    if name.len() > MAX_STRING {
        return Err(Error::InvalidArgument(format!(
            "an NBD export name has at most {MAX_STRING} bytes; '{name}' has {}",
            name.len()
        )));
    }
    let size = image.size();
    if let Some(overlay) = &writable {
        if overlay.size() != size {
            return Err(Error::InvalidArgument(format!(
                "{} covers {} bytes but {} has {size}; create the overlay with the image's size",
                overlay.describe(),
                overlay.size(),
                image.describe()
            )));
        }
    }
    // Every connection sees the same bytes, and a flush syncs the one
    // overlay every connection writes to: several connections to one
    // export are safe either way.
    let mut flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_CAN_MULTI_CONN;
    if writable.is_some() {
        flags |= TFLAG_SEND_FUA | TFLAG_SEND_WRITE_ZEROES | TFLAG_SEND_TRIM;
    } else {
        flags |= TFLAG_READ_ONLY;
    }
    Ok(Export {
        info: ExportInfo {
            name,
            description,
            size,
            flags,
        },
        image,
        overlay: writable,
    })
}

/// Serves one client from greeting to goodbye. Returns the bytes read and
/// written, and why the connection ended when the client did not say
/// goodbye.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    export: &Export,
    events: &(dyn Fn(NbdEvent) + Sync),
) -> (u64, u64, Option<String>) {
    let failed = |message: String| events(NbdEvent::RequestFailed { peer, message });
    let counts = transmission::Counts::default();
    let run = || -> io::Result<()> {
        // Accepted sockets may inherit the listener's non-blocking mode.
        stream.set_nonblocking(false)?;
        // Replies are written whole; holding them back to batch them only
        // delays the client's next request.
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(NEGOTIATION_TIMEOUT))?;
        let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone()?);
        let mut writer = io::BufWriter::new(stream.try_clone()?);
        let Some(session) = negotiation::negotiate(&mut reader, &mut writer, &export.info)? else {
            return Ok(());
        };
        drop(writer);
        stream.set_read_timeout(None)?;
        transmission::Connection::new(export, session, stream.try_clone()?, &counts, &failed)
            .serve(&mut reader)
    };
    let result = run();
    let _ = stream.shutdown(Shutdown::Both);
    let reason = result.err().map(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            "the client closed the connection without saying goodbye".to_string()
        }
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "the client stopped answering during negotiation".to_string()
        }
        _ => e.to_string(),
    });
    (
        counts.read.load(Ordering::Relaxed),
        counts.written.load(Ordering::Relaxed),
        reason,
    )
}

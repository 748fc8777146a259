//! NBD (Network Block Device): a read-only client, to back up the disk of
//! a live VM exported by QEMU (`qemu-nbd`, or a running VM's NBD export),
//! and a server, to serve a disk of a recovery point to a VM or `qemu-img`
//! (`server.rs`, [`serve_nbd`]).
//!
//! The client reads the export with several requests in flight, and asks the
//! server which ranges hold data (`base:allocation`) and which changed since
//! the last backup (a QEMU dirty bitmap, `qemu:dirty-bitmap:NAME`), so a
//! backup reads neither holes nor unchanged ranges.
//!
//! The client speaks only what a backup needs: fixed newstyle negotiation,
//! structured replies, metadata contexts, reads and block status, over TCP
//! or a Unix socket; no TLS, no writes, no extended headers.
//!
//! - `url.rs`: the `nbd://` and `nbd+unix://` URLs users write.
//! - `proto.rs`: protocol constants and bounded decoding of server bytes.
//! - `handshake.rs`: negotiation up to the transmission phase.
//! - `client.rs`: [`NbdClient`], the transmission phase.
//! - `server.rs`: [`serve_nbd`], one image served to many clients, read-only
//!   or writable through an [`NbdOverlay`].

mod client;
mod handshake;
mod proto;
mod server;
mod url;

#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod tests;

pub(crate) use client::NbdClient;
pub use server::{serve_nbd, NbdEvent, NbdExport, NbdOverlay};
pub(crate) use url::NbdUrl;

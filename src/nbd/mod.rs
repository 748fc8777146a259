//! A read-only NBD (Network Block Device) client, to back up the disk of a
//! live VM exported by QEMU (`qemu-nbd`, or a running VM's NBD export).
//!
//! It reads the export with several requests in flight, and asks the
//! server which ranges hold data (`base:allocation`) and which changed since
//! the last backup (a QEMU dirty bitmap, `qemu:dirty-bitmap:NAME`), so a
//! backup reads neither holes nor unchanged ranges.
//!
//! Only what a backup needs is spoken: fixed newstyle negotiation, structured
//! replies, metadata contexts, reads and block status, over TCP or a Unix
//! socket; no TLS, no writes, no extended headers.
//!
//! - `url.rs`: the `nbd://` and `nbd+unix://` URLs users write.
//! - `proto.rs`: protocol constants and bounded decoding of server bytes.
//! - `handshake.rs`: negotiation up to the transmission phase.
//! - `client.rs`: [`NbdClient`], the transmission phase.

mod client;
mod handshake;
mod proto;
mod url;

#[cfg(test)]
mod tests;

pub(crate) use client::NbdClient;
pub(crate) use url::NbdUrl;

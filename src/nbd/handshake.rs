//! Fixed newstyle negotiation: from the server's greeting to the
//! transmission phase, asking for structured replies, the metadata contexts
//! the caller needs and the export's block sizes.

use std::io::{self, Read, Write};

use super::proto::*;

/// The most option replies we accept for one option; a real server sends
/// one per requested context or information item.
const MAX_REPLIES_PER_OPTION: usize = 1024;

/// What negotiation settled.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    /// Export size in bytes.
    pub size: u64,
    /// Whether replies to reads and block status come as structured chunks.
    pub structured: bool,
    /// The requested metadata contexts with the ids the server gave them.
    pub contexts: Vec<(String, u32)>,
    /// Block size constraints.
    pub block_sizes: BlockSizes,
}

/// The export's block size constraints (NBD_INFO_BLOCK_SIZE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockSizes {
    /// Requests should be aligned to this (a power of two, 1 to 64 KiB).
    pub minimum: u32,
    /// The size the server handles best.
    pub preferred: u32,
    /// The largest read the server accepts.
    pub maximum: u32,
}

impl BlockSizes {
    /// What the protocol lets a client assume when the server says nothing.
    const DEFAULT: BlockSizes = BlockSizes {
        minimum: 1,
        preferred: 4096,
        maximum: 32 << 20,
    };
}

/// An error about the export or server, for the user rather than the
/// protocol: what went wrong and what to do.
fn refused(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

/// Negotiates with the server on `r`/`w` up to the transmission phase.
pub(crate) fn negotiate(
    r: &mut impl Read,
    w: &mut impl Write,
    export: &str,
    contexts: &[&str],
) -> io::Result<Negotiated> {
    if export.len() > MAX_STRING {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("export name longer than {MAX_STRING} bytes"),
        ));
    }
    if let Some(c) = contexts
        .iter()
        .find(|c| c.len() > MAX_STRING || c.is_empty())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("meta context name {c:?} is empty or longer than {MAX_STRING} bytes"),
        ));
    }

    let magic = read_u64(r)?;
    if magic != NBD_MAGIC {
        return Err(protocol_error(format!(
            "the server does not greet like an NBD server (magic {magic:#x})"
        )));
    }
    let style = read_u64(r)?;
    if style == OLDSTYLE_MAGIC {
        return Err(refused(
            io::ErrorKind::Unsupported,
            "the server speaks oldstyle NBD negotiation, which has no export names or block \
             status; only fixed newstyle servers (qemu-nbd, nbdkit, nbd-server 3.x) are supported"
                .into(),
        ));
    }
    if style != IHAVEOPT {
        return Err(protocol_error(format!(
            "unknown negotiation style {style:#x}"
        )));
    }
    let server_flags = read_u16(r)?;
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(refused(
            io::ErrorKind::Unsupported,
            "the server does not speak fixed newstyle NBD negotiation, which is required".into(),
        ));
    }
    let mut client_flags = CLIENT_FIXED_NEWSTYLE;
    if server_flags & FLAG_NO_ZEROES != 0 {
        client_flags |= CLIENT_NO_ZEROES;
    }
    w.write_all(&client_flags.to_be_bytes())?;

    let structured = negotiate_structured_replies(r, w)?;
    let mut granted = Vec::new();
    if !contexts.is_empty() {
        if !structured {
            return Err(refused(
                io::ErrorKind::Unsupported,
                "the server refused structured replies, which block status needs".into(),
            ));
        }
        granted = negotiate_meta_contexts(r, w, export, contexts)?;
    }
    let (size, block_sizes) = negotiate_go(r, w, export)?;

    // Checked after NBD_OPT_GO so that a wrong export name is reported as
    // such, not as a missing context.
    let mut chosen = Vec::with_capacity(contexts.len());
    for wanted in contexts {
        match granted.iter().find(|(name, _)| name == wanted) {
            Some((name, id)) => chosen.push((name.clone(), *id)),
            None => return Err(missing_context(wanted, export)),
        }
    }
    Ok(Negotiated {
        size,
        structured,
        contexts: chosen,
        block_sizes,
    })
}

/// Explains a context the server did not grant, with what to check.
fn missing_context(context: &str, export: &str) -> io::Error {
    let msg = if let Some(bitmap) = context.strip_prefix("qemu:dirty-bitmap:") {
        format!(
            "the server has no meta context {context}: the bitmap does not exist on this export \
             (was it lost, e.g. by a VM restart?); check with `qemu-img info` that bitmap \
             {bitmap:?} exists, and that the export was made with it (qemu-nbd -B {bitmap}, or \
             block-export-add with \"bitmaps\")"
        )
    } else if context == "base:allocation" {
        format!(
            "the server has no meta context base:allocation for export {export:?}: it cannot \
             report holes and zeroes"
        )
    } else {
        format!("the server has no meta context {context} for export {export:?}")
    };
    refused(io::ErrorKind::NotFound, msg)
}

/// Asks for structured replies; says whether the server agreed.
fn negotiate_structured_replies(r: &mut impl Read, w: &mut impl Write) -> io::Result<bool> {
    write_option(w, OPT_STRUCTURED_REPLY, &[])?;
    w.flush()?;
    let reply = read_option_reply(r, OPT_STRUCTURED_REPLY)?;
    match reply.kind {
        REP_ACK => Ok(true),
        kind if kind & REP_FLAG_ERROR != 0 => Ok(false),
        kind => Err(protocol_error(format!(
            "reply type {kind} to NBD_OPT_STRUCTURED_REPLY"
        ))),
    }
}

/// Encodes an export name as the protocol wants it in options: u32 length,
/// then the bytes.
fn put_name(data: &mut Vec<u8>, name: &str) {
    // Lengths were checked against MAX_STRING by `negotiate`.
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
}

/// Sets the metadata contexts and returns those the server granted, with
/// their ids.
fn negotiate_meta_contexts(
    r: &mut impl Read,
    w: &mut impl Write,
    export: &str,
    contexts: &[&str],
) -> io::Result<Vec<(String, u32)>> {
    let mut data = Vec::new();
    put_name(&mut data, export);
    data.extend_from_slice(&(contexts.len() as u32).to_be_bytes());
    for c in contexts {
        put_name(&mut data, c);
    }
    write_option(w, OPT_SET_META_CONTEXT, &data)?;
    w.flush()?;
    let mut granted = Vec::new();
    for _ in 0..MAX_REPLIES_PER_OPTION {
        let reply = read_option_reply(r, OPT_SET_META_CONTEXT)?;
        match reply.kind {
            REP_ACK => return Ok(granted),
            REP_META_CONTEXT => {
                if reply.data.len() < 4 || reply.data.len() > 4 + MAX_STRING {
                    return Err(protocol_error(format!(
                        "meta context reply of {} bytes",
                        reply.data.len()
                    )));
                }
                let id = u32::from_be_bytes([
                    reply.data[0],
                    reply.data[1],
                    reply.data[2],
                    reply.data[3],
                ]);
                let name = String::from_utf8(reply.data[4..].to_vec())
                    .map_err(|_| protocol_error("meta context name is not UTF-8"))?;
                granted.push((name, id));
            }
            REP_ERR_UNKNOWN => return Err(unknown_export(export, &reply.data)),
            kind if kind & REP_FLAG_ERROR != 0 => {
                return Err(refused(
                    io::ErrorKind::Other,
                    format!(
                        "the server refused the meta contexts {contexts:?} for export \
                         {export:?} ({}){}",
                        option_error_name(kind),
                        option_error_message(&reply.data)
                    ),
                ))
            }
            kind => {
                return Err(protocol_error(format!(
                    "reply type {kind} to NBD_OPT_SET_META_CONTEXT"
                )))
            }
        }
    }
    Err(protocol_error(format!(
        "more than {MAX_REPLIES_PER_OPTION} replies to NBD_OPT_SET_META_CONTEXT"
    )))
}

/// The error for an export the server does not have.
fn unknown_export(export: &str, data: &[u8]) -> io::Error {
    let shown = if export.is_empty() {
        "the default export (empty name)".to_string()
    } else {
        format!("export {export:?}")
    };
    refused(
        io::ErrorKind::NotFound,
        format!(
            "the server has no {shown}{}; check the export name in the URL \
             (qemu-nbd -x NAME sets it)",
            option_error_message(data)
        ),
    )
}

/// Selects the export; returns its size and block sizes. (Transmission
/// flags are not needed: we only read, and reads need no flag.)
fn negotiate_go(
    r: &mut impl Read,
    w: &mut impl Write,
    export: &str,
) -> io::Result<(u64, BlockSizes)> {
    let mut data = Vec::new();
    put_name(&mut data, export);
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    write_option(w, OPT_GO, &data)?;
    w.flush()?;

    let mut size = None;
    let mut block_sizes = BlockSizes::DEFAULT;
    for _ in 0..MAX_REPLIES_PER_OPTION {
        let reply = read_option_reply(r, OPT_GO)?;
        let d = &reply.data;
        match reply.kind {
            REP_ACK => {
                let Some(size) = size else {
                    return Err(protocol_error(
                        "the server finished NBD_OPT_GO without giving the export size",
                    ));
                };
                return Ok((size, block_sizes));
            }
            REP_INFO => {
                if d.len() < 2 {
                    return Err(protocol_error("empty NBD_REP_INFO"));
                }
                match u16::from_be_bytes([d[0], d[1]]) {
                    INFO_EXPORT => {
                        let bytes: [u8; 12] = d.as_slice().try_into().map_err(|_| {
                            protocol_error(format!("NBD_INFO_EXPORT of {} bytes", d.len()))
                        })?;
                        // Bytes 10..12, the transmission flags, are not needed.
                        size = Some(u64::from_be_bytes(
                            bytes[2..10].try_into().expect("8 bytes"),
                        ));
                    }
                    INFO_BLOCK_SIZE => {
                        let bytes: [u8; 14] = d.as_slice().try_into().map_err(|_| {
                            protocol_error(format!("NBD_INFO_BLOCK_SIZE of {} bytes", d.len()))
                        })?;
                        let field = |i: usize| {
                            u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"))
                        };
                        block_sizes = BlockSizes {
                            minimum: field(2),
                            preferred: field(6),
                            maximum: field(10),
                        };
                        check_block_sizes(&block_sizes)?;
                    }
                    // Names, descriptions and future information: not needed.
                    _ => {}
                }
            }
            REP_ERR_UNKNOWN => return Err(unknown_export(export, d)),
            REP_ERR_TLS_REQD => {
                return Err(refused(
                    io::ErrorKind::Unsupported,
                    format!(
                        "the server requires TLS for export {export:?}, which is not \
                         supported{}",
                        option_error_message(d)
                    ),
                ))
            }
            REP_ERR_UNSUP => {
                return Err(refused(
                    io::ErrorKind::Unsupported,
                    "the server does not support NBD_OPT_GO (it is too old)".into(),
                ))
            }
            kind if kind & REP_FLAG_ERROR != 0 => {
                return Err(refused(
                    io::ErrorKind::Other,
                    format!(
                        "the server refused export {export:?} ({}){}",
                        option_error_name(kind),
                        option_error_message(d)
                    ),
                ))
            }
            kind => {
                return Err(protocol_error(format!("reply type {kind} to NBD_OPT_GO")));
            }
        }
    }
    Err(protocol_error(format!(
        "more than {MAX_REPLIES_PER_OPTION} replies to NBD_OPT_GO"
    )))
}

/// Refuses block sizes that would make requests impossible to form.
fn check_block_sizes(b: &BlockSizes) -> io::Result<()> {
    if !b.minimum.is_power_of_two() || b.minimum > 64 * 1024 {
        return Err(protocol_error(format!(
            "minimum block size {} is not a power of two up to 64 KiB",
            b.minimum
        )));
    }
    if b.maximum < b.minimum {
        return Err(protocol_error(format!(
            "maximum block size {} is below the minimum {}",
            b.maximum, b.minimum
        )));
    }
    Ok(())
}

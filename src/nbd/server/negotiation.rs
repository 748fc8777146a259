//! The server's side of fixed newstyle negotiation: from the greeting to
//! the transmission phase (or to the client giving up).
//!
//! Every option's data is read whole before it is parsed, and its length
//! is bounded first: a client claiming a 4 GiB option is disconnected
//! without anything being allocated.

use std::io::{self, Read, Write};

use super::super::proto::*;
use super::{ExportInfo, BLOCK_SIZE_MAX, BLOCK_SIZE_MIN, BLOCK_SIZE_PREFERRED};

/// The longest option data accepted. The largest legitimate option, a
/// metadata context request, holds a few names of at most 4 KiB each.
const MAX_OPTION_DATA: u32 = 64 * 1024;

/// The id the `base:allocation` context gets; the only context offered.
pub(super) const BASE_ALLOCATION_ID: u32 = 1;

/// What negotiation settled for the transmission phase.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Session {
    /// Replies to reads and block status come as structured chunks.
    pub structured: bool,
    /// Block status answers for `base:allocation`.
    pub base_allocation: bool,
}

/// Negotiates with one client. `Ok(None)` when the client aborted
/// negotiation (or listed exports and left); an error when it broke the
/// protocol or vanished, after which the connection is closed.
pub(super) fn negotiate(
    r: &mut impl Read,
    w: &mut impl Write,
    export: &ExportInfo,
) -> io::Result<Option<Session>> {
    w.write_all(&NBD_MAGIC.to_be_bytes())?;
    w.write_all(&IHAVEOPT.to_be_bytes())?;
    w.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())?;
    w.flush()?;
    let client_flags = read_u32(r)?;
    if client_flags & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0 {
        return Err(protocol_error(format!(
            "unknown client flags {client_flags:#x}"
        )));
    }
    let no_zeroes = client_flags & CLIENT_NO_ZEROES != 0;

    let mut session = Session::default();
    loop {
        let magic = read_u64(r)?;
        if magic != IHAVEOPT {
            return Err(protocol_error(format!("bad option magic {magic:#x}")));
        }
        let option = read_u32(r)?;
        let len = read_u32(r)?;
        if len > MAX_OPTION_DATA {
            return Err(protocol_error(format!(
                "option {option} claims {len} bytes of data (at most {MAX_OPTION_DATA} accepted)"
            )));
        }
        let data = read_vec(r, len as usize)?;
        let reply = |w: &mut _, kind, payload: &[u8]| write_option_reply(w, option, kind, payload);
        match option {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data);
                if !export.answers_to(&name) {
                    // This option has no error reply: closing is the answer.
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("the client asked for export '{name}', which does not exist"),
                    ));
                }
                w.write_all(&export.size.to_be_bytes())?;
                w.write_all(&export.flags.to_be_bytes())?;
                if !no_zeroes {
                    w.write_all(&[0; 124])?;
                }
                w.flush()?;
                return Ok(Some(session));
            }
            OPT_ABORT => {
                // The client may already be gone; the ack is a courtesy.
                let _ = reply(w, REP_ACK, &[]).and_then(|()| w.flush());
                return Ok(None);
            }
            OPT_LIST => {
                if data.is_empty() {
                    let mut server = Vec::with_capacity(4 + export.name.len());
                    put_string_u32(&mut server, &export.name);
                    reply(w, REP_SERVER, &server)?;
                    reply(w, REP_ACK, &[])?;
                } else {
                    reply(w, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?;
                }
            }
            OPT_STARTTLS => reply(
                w,
                REP_ERR_UNSUP,
                b"this server does not offer TLS; reach it over a trusted network or an SSH tunnel",
            )?,
            OPT_INFO | OPT_GO => match parse_info_request(&data) {
                Err(why) => reply(w, REP_ERR_INVALID, why.as_bytes())?,
                Ok((name, _)) if !export.answers_to(&name) => {
                    reply(w, REP_ERR_UNKNOWN, export.unknown(&name).as_bytes())?
                }
                Ok((_, wanted)) => {
                    send_info(w, option, export, &wanted)?;
                    reply(w, REP_ACK, &[])?;
                    if option == OPT_GO {
                        w.flush()?;
                        return Ok(Some(session));
                    }
                }
            },
            OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    session.structured = true;
                    reply(w, REP_ACK, &[])?;
                } else {
                    reply(
                        w,
                        REP_ERR_INVALID,
                        b"NBD_OPT_STRUCTURED_REPLY takes no data",
                    )?;
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let set = option == OPT_SET_META_CONTEXT;
                match parse_meta_request(&data) {
                    Err(why) => reply(w, REP_ERR_INVALID, why.as_bytes())?,
                    Ok(_) if set && !session.structured => reply(
                        w,
                        REP_ERR_INVALID,
                        b"negotiate structured replies before metadata contexts",
                    )?,
                    Ok((name, _)) if !export.answers_to(&name) => {
                        reply(w, REP_ERR_UNKNOWN, export.unknown(&name).as_bytes())?
                    }
                    Ok((_, queries)) => {
                        let matched = if set {
                            queries.iter().any(|q| q == BASE_ALLOCATION)
                        } else {
                            // Listing with no query, or a query for the
                            // `base:` namespace, lists every context.
                            queries.is_empty()
                                || queries.iter().any(|q| q == BASE_ALLOCATION || q == "base:")
                        };
                        if set {
                            session.base_allocation = matched;
                        }
                        if matched {
                            let mut context = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                            context.extend_from_slice(BASE_ALLOCATION.as_bytes());
                            reply(w, REP_META_CONTEXT, &context)?;
                        }
                        reply(w, REP_ACK, &[])?;
                    }
                }
            }
            _ => reply(
                w,
                REP_ERR_UNSUP,
                format!("option {option} is not supported by this server").as_bytes(),
            )?,
        }
        w.flush()?;
    }
}

/// Sends the information replies to `NBD_OPT_INFO`/`NBD_OPT_GO`: always
/// the size and flags and the block sizes; the name and description when
/// asked for.
fn send_info(
    w: &mut impl Write,
    option: u32,
    export: &ExportInfo,
    wanted: &[u16],
) -> io::Result<()> {
    let mut info = INFO_EXPORT.to_be_bytes().to_vec();
    info.extend_from_slice(&export.size.to_be_bytes());
    info.extend_from_slice(&export.flags.to_be_bytes());
    write_option_reply(w, option, REP_INFO, &info)?;

    if wanted.contains(&INFO_NAME) {
        let mut info = INFO_NAME.to_be_bytes().to_vec();
        info.extend_from_slice(export.name.as_bytes());
        write_option_reply(w, option, REP_INFO, &info)?;
    }
    if wanted.contains(&INFO_DESCRIPTION) && !export.description.is_empty() {
        let mut info = INFO_DESCRIPTION.to_be_bytes().to_vec();
        let text = export.description.as_bytes();
        info.extend_from_slice(&text[..text.len().min(MAX_STRING)]);
        write_option_reply(w, option, REP_INFO, &info)?;
    }
    // Sent even when not asked for: these are the protocol's defaults, so
    // a client that ignores them is still right.
    let mut info = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for size in [BLOCK_SIZE_MIN, BLOCK_SIZE_PREFERRED, BLOCK_SIZE_MAX] {
        info.extend_from_slice(&size.to_be_bytes());
    }
    write_option_reply(w, option, REP_INFO, &info)
}

/// Sends one option reply.
fn write_option_reply(w: &mut impl Write, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let mut head = [0; 20];
    head[..8].copy_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    head[8..12].copy_from_slice(&option.to_be_bytes());
    head[12..16].copy_from_slice(&kind.to_be_bytes());
    // Replies are built here from bounded parts (names of at most 4 KiB).
    head[16..].copy_from_slice(&(data.len() as u32).to_be_bytes());
    w.write_all(&head)?;
    w.write_all(data)
}

fn put_string_u32(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A bounded reader over an option's data; every read is checked.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.data.len() {
            return Err(format!(
                "{what} needs {n} bytes but the option has {} left",
                self.data.len()
            ));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A string with a u32 length, at most [`MAX_STRING`] bytes.
    fn string(&mut self, what: &str) -> Result<String, String> {
        let len = self.u32(what)? as usize;
        if len > MAX_STRING {
            return Err(format!("{what} of {len} bytes (at most {MAX_STRING})"));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
    fn finish(&self, option: &str) -> Result<(), String> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} bytes left over after the {option} request",
                self.data.len()
            ))
        }
    }
}

/// Parses `NBD_OPT_INFO`/`NBD_OPT_GO` data: export name and the
/// information types asked for.
fn parse_info_request(data: &[u8]) -> Result<(String, Vec<u16>), String> {
    let mut f = Fields { data };
    let name = f.string("export name")?;
    let count = f.u16("number of information requests")?;
    let wanted = (0..count)
        .map(|_| f.u16("information request"))
        .collect::<Result<Vec<_>, _>>()?;
    f.finish("info")?;
    Ok((name, wanted))
}

/// Parses `NBD_OPT_LIST_META_CONTEXT`/`NBD_OPT_SET_META_CONTEXT` data:
/// export name and the context queries.
fn parse_meta_request(data: &[u8]) -> Result<(String, Vec<String>), String> {
    let mut f = Fields { data };
    let name = f.string("export name")?;
    let count = f.u32("number of queries")?;
    // Each query takes at least 4 bytes, so the count is bounded by the
    // (bounded) data before anything is allocated for it.
    if count as usize > f.data.len() / 4 {
        return Err(format!(
            "{count} queries cannot fit in {} bytes",
            f.data.len()
        ));
    }
    let queries = (0..count)
        .map(|_| f.string("context query"))
        .collect::<Result<Vec<_>, _>>()?;
    f.finish("meta context")?;
    Ok((name, queries))
}

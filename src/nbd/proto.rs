//! NBD wire format: the magic numbers and codes of the protocol, request
//! encoding, and bounded decoding of what the server sends.
//!
//! Everything the server sends is untrusted: every length read from the wire
//! is checked against a limit before anything is allocated or read.

use std::io::{self, Read, Write};

/// First eight bytes a server sends ("NBDMAGIC").
pub(crate) const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// Second eight bytes of a newstyle server, and the prefix of every option
/// the client sends ("IHAVEOPT").
pub(crate) const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Second eight bytes of an oldstyle server, which we do not speak.
pub(crate) const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Prefix of every option reply.
pub(crate) const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every transmission request.
pub(crate) const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of a simple reply.
pub(crate) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Prefix of a structured reply chunk.
pub(crate) const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Prefix of an extended-header reply chunk, which we never ask for.
pub(crate) const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

/// Handshake flag: the server speaks fixed newstyle.
pub(crate) const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: the server can skip the 124 zero bytes after an export name.
pub(crate) const FLAG_NO_ZEROES: u16 = 2;
/// Client flag: we speak fixed newstyle.
pub(crate) const CLIENT_FIXED_NEWSTYLE: u32 = 1;
/// Client flag: we want no zero padding.
pub(crate) const CLIENT_NO_ZEROES: u32 = 2;

/// Option: select an export and enter transmission, with information replies.
pub(crate) const OPT_GO: u32 = 7;
/// Option: replies to reads and block status come in chunks.
pub(crate) const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: choose the metadata contexts block status will answer for.
pub(crate) const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply: the option succeeded (the last reply to it).
pub(crate) const REP_ACK: u32 = 1;
/// Option reply: one piece of information about the export.
pub(crate) const REP_INFO: u32 = 3;
/// Option reply: one metadata context and its id.
pub(crate) const REP_META_CONTEXT: u32 = 4;
/// Bit set in every option reply type that is an error.
pub(crate) const REP_FLAG_ERROR: u32 = 1 << 31;
/// Option error: the server does not know the option.
pub(crate) const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
/// Option error: the export does not exist.
pub(crate) const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
/// Option error: the server wants TLS first.
pub(crate) const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;

/// Information type: export size and transmission flags.
pub(crate) const INFO_EXPORT: u16 = 0;
/// Information type: minimum, preferred and maximum block sizes.
pub(crate) const INFO_BLOCK_SIZE: u16 = 3;

/// Command: read.
pub(crate) const CMD_READ: u16 = 0;
/// Command: disconnect (no reply).
pub(crate) const CMD_DISC: u16 = 2;
/// Command: block status for the negotiated metadata contexts.
pub(crate) const CMD_BLOCK_STATUS: u16 = 7;

/// Structured reply flag: this is the last chunk for the cookie.
pub(crate) const REPLY_FLAG_DONE: u16 = 1;
/// Chunk type: nothing more (only with the done flag).
pub(crate) const REPLY_TYPE_NONE: u16 = 0;
/// Chunk type: data at an offset.
pub(crate) const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk type: a range that reads as zeroes.
pub(crate) const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk type: extents of one metadata context.
pub(crate) const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Bit set in every chunk type that is an error.
pub(crate) const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;
/// Chunk type: an error about a given offset.
pub(crate) const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_ERROR_BIT | 2;

// What a server needs beyond the client's vocabulary above.

/// Option: select an export and enter transmission, old style (no reply
/// on failure: the server closes the connection).
pub(crate) const OPT_EXPORT_NAME: u32 = 1;
/// Option: the client gives up negotiating.
pub(crate) const OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub(crate) const OPT_LIST: u32 = 3;
/// Option: upgrade the connection to TLS.
pub(crate) const OPT_STARTTLS: u32 = 5;
/// Option: describe an export without selecting it.
pub(crate) const OPT_INFO: u32 = 6;
/// Option: list the metadata contexts an export offers.
pub(crate) const OPT_LIST_META_CONTEXT: u32 = 9;

/// Option reply: one export in answer to `OPT_LIST`.
pub(crate) const REP_SERVER: u32 = 2;
/// Option error: the option's data is malformed or out of order.
pub(crate) const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;

/// Information type: the export's canonical name.
pub(crate) const INFO_NAME: u16 = 1;
/// Information type: a human-readable description of the export.
pub(crate) const INFO_DESCRIPTION: u16 = 2;

/// Transmission flag: the other flags are meaningful.
pub(crate) const TFLAG_HAS_FLAGS: u16 = 1;
/// Transmission flag: the export refuses writes.
pub(crate) const TFLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: the server understands `CMD_FLUSH`.
pub(crate) const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: the server understands `CMD_FLAG_FUA`.
pub(crate) const TFLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: the server understands `CMD_TRIM`.
pub(crate) const TFLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: the server understands `CMD_WRITE_ZEROES`.
pub(crate) const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: every connection sees the same data, and a flush on
/// one covers writes completed on all of them.
pub(crate) const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Command: write (the data follows the request).
pub(crate) const CMD_WRITE: u16 = 1;
/// Command: make completed writes durable.
pub(crate) const CMD_FLUSH: u16 = 3;
/// Command: the client no longer needs a range.
pub(crate) const CMD_TRIM: u16 = 4;
/// Command: write zeroes without sending them.
pub(crate) const CMD_WRITE_ZEROES: u16 = 6;

/// Command flag: the write must be durable before the reply.
pub(crate) const CMD_FLAG_FUA: u16 = 1;
/// Command flag: block status may answer with one extent only.
pub(crate) const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

/// Chunk type: an error about the whole request.
pub(crate) const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_ERROR_BIT | 1;

/// Block status flag (`base:allocation`): the range is not allocated.
pub(crate) const STATE_HOLE: u32 = 1;
/// Block status flag (`base:allocation`): the range reads as zeroes.
pub(crate) const STATE_ZERO: u32 = 2;

/// The metadata context of allocation status, the one every client knows.
pub(crate) const BASE_ALLOCATION: &str = "base:allocation";

/// Error code: operation not permitted (a write to a read-only export).
pub(crate) const EPERM: u32 = 1;
/// Error code: input/output error (the image could not be read).
pub(crate) const EIO: u32 = 5;
/// Error code: invalid argument (a range past the end, an unknown command).
pub(crate) const EINVAL: u32 = 22;
/// Error code: no space left (a write past the end of the export).
pub(crate) const ENOSPC: u32 = 28;
/// Error code: value too large (a request above the maximum block size).
pub(crate) const EOVERFLOW: u32 = 75;

/// The longest string (export name, context name, message) the protocol
/// allows in negotiation.
pub(crate) const MAX_STRING: usize = 4096;
/// The largest option reply we read; real ones are a few dozen bytes.
pub(crate) const MAX_OPTION_REPLY: u32 = 64 * 1024;

/// An error for bytes from the server that break the protocol; the
/// connection cannot be used after one.
pub(crate) fn protocol_error(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("NBD protocol error: {what}"),
    )
}

/// Reads a big-endian u16.
pub(crate) fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

/// Reads a big-endian u32.
pub(crate) fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Reads a big-endian u64.
pub(crate) fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// Reads and throws away `n` bytes without allocating them.
pub(crate) fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads `n` bytes into a new vector; the caller has bounded `n`.
pub(crate) fn read_vec(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0; n];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// Sends one option with its data (the caller flushes).
pub(crate) fn write_option(w: &mut impl Write, option: u32, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option data too long"))?;
    let mut head = [0; 16];
    head[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
    head[8..12].copy_from_slice(&option.to_be_bytes());
    head[12..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    w.write_all(data)
}

/// One reply to an option: its type and its (bounded) payload.
pub(crate) struct OptionReply {
    /// `REP_*` code.
    pub kind: u32,
    /// The reply's data, at most [`MAX_OPTION_REPLY`] bytes.
    pub data: Vec<u8>,
}

/// Reads one reply to `option`, refusing replies to other options and
/// payloads over [`MAX_OPTION_REPLY`].
pub(crate) fn read_option_reply(r: &mut impl Read, option: u32) -> io::Result<OptionReply> {
    let magic = read_u64(r)?;
    if magic != OPTION_REPLY_MAGIC {
        return Err(protocol_error(format!("bad option reply magic {magic:#x}")));
    }
    let replied_to = read_u32(r)?;
    if replied_to != option {
        return Err(protocol_error(format!(
            "reply to option {replied_to} while option {option} was asked"
        )));
    }
    let kind = read_u32(r)?;
    let len = read_u32(r)?;
    if len > MAX_OPTION_REPLY {
        return Err(protocol_error(format!(
            "option reply of {len} bytes (at most {MAX_OPTION_REPLY} accepted)"
        )));
    }
    let data = read_vec(r, len as usize)?;
    Ok(OptionReply { kind, data })
}

/// Encodes one transmission request.
pub(crate) fn encode_request(
    command: u16,
    flags: u16,
    cookie: u64,
    offset: u64,
    length: u32,
) -> [u8; 28] {
    let mut b = [0; 28];
    b[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&command.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..24].copy_from_slice(&offset.to_be_bytes());
    b[24..].copy_from_slice(&length.to_be_bytes());
    b
}

/// The header of a reply in the transmission phase; the payload follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyHeader {
    /// A simple reply; for a successful read, the data follows.
    Simple {
        /// errno-style error code, 0 on success.
        error: u32,
        /// The cookie of the request.
        cookie: u64,
    },
    /// One chunk of a structured reply, with `length` bytes of payload.
    Chunk {
        /// `REPLY_FLAG_*` bits.
        flags: u16,
        /// `REPLY_TYPE_*` code.
        kind: u16,
        /// The cookie of the request.
        cookie: u64,
        /// Payload length (unchecked: the caller bounds it per type).
        length: u32,
    },
}

/// Reads a reply header (simple or structured chunk).
pub(crate) fn read_reply_header(r: &mut impl Read) -> io::Result<ReplyHeader> {
    let magic = read_u32(r)?;
    match magic {
        SIMPLE_REPLY_MAGIC => {
            let error = read_u32(r)?;
            let cookie = read_u64(r)?;
            Ok(ReplyHeader::Simple { error, cookie })
        }
        STRUCTURED_REPLY_MAGIC => {
            let flags = read_u16(r)?;
            let kind = read_u16(r)?;
            let cookie = read_u64(r)?;
            let length = read_u32(r)?;
            Ok(ReplyHeader::Chunk {
                flags,
                kind,
                cookie,
                length,
            })
        }
        EXTENDED_REPLY_MAGIC => Err(protocol_error(
            "extended-header reply, which was not negotiated",
        )),
        other => Err(protocol_error(format!("bad reply magic {other:#x}"))),
    }
}

/// Reads the payload of an error chunk (`length` bytes, already bounded by
/// the type: at most a u16 message plus a few fixed fields) and says what
/// the server reported.
pub(crate) fn read_error_chunk(r: &mut impl Read, kind: u16, length: u32) -> io::Result<String> {
    // errno (4) + message length (2) + message (< 64 KiB) + offset (8).
    const MAX_ERROR_CHUNK: u32 = 4 + 2 + 0xffff + 8;
    if !(6..=MAX_ERROR_CHUNK).contains(&length) {
        return Err(protocol_error(format!(
            "error chunk of {length} bytes (6 to {MAX_ERROR_CHUNK} accepted)"
        )));
    }
    let error = read_u32(r)?;
    let msg_len = read_u16(r)?;
    let rest = length - 6;
    if u32::from(msg_len) > rest {
        return Err(protocol_error(format!(
            "error message of {msg_len} bytes in an error chunk with {rest} bytes left"
        )));
    }
    let message = String::from_utf8_lossy(&read_vec(r, msg_len.into())?).into_owned();
    let mut rest = rest - u32::from(msg_len);
    let mut at = String::new();
    if kind == REPLY_TYPE_ERROR_OFFSET && rest >= 8 {
        at = format!(" at offset {}", read_u64(r)?);
        rest -= 8;
    }
    skip(r, rest.into())?;
    let mut text = format!("{}{at}", errno_name(error));
    if !message.is_empty() {
        text.push_str(": ");
        text.push_str(&message);
    }
    Ok(text)
}

/// Names an NBD error code (the protocol's errno values) for messages.
pub(crate) fn errno_name(error: u32) -> String {
    let name = match error {
        1 => "EPERM (operation not permitted)",
        5 => "EIO (input/output error)",
        12 => "ENOMEM (out of memory)",
        22 => "EINVAL (invalid argument)",
        28 => "ENOSPC (no space left)",
        75 => "EOVERFLOW (value too large)",
        95 => "ENOTSUP (not supported)",
        108 => "ESHUTDOWN (server shutting down)",
        other => return format!("error {other}"),
    };
    name.to_string()
}

/// Names an option reply error for messages.
pub(crate) fn option_error_name(kind: u32) -> String {
    let name = match kind & !REP_FLAG_ERROR {
        1 => "unsupported",
        2 => "forbidden by policy",
        3 => "invalid",
        4 => "unsupported on this platform",
        5 => "TLS required",
        6 => "unknown export",
        7 => "server shutting down",
        8 => "block size negotiation required",
        9 => "request too big",
        10 => "extended headers required",
        _ => return format!("error {kind:#x}"),
    };
    name.to_string()
}

/// Turns an option error reply's payload (an optional UTF-8 message) into
/// text to append to a message: empty, or ": MESSAGE".
pub(crate) fn option_error_message(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(&data[..data.len().min(MAX_STRING)]);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

//! NBD URLs: where an export lives, as users write it.
//!
//! Two forms of the NBD URI scheme are accepted, the ones QEMU prints and
//! takes: `nbd://HOST[:PORT]/EXPORT` and `nbd+unix:///EXPORT?socket=PATH`.
//! TLS (`nbds://`) is not supported, so it is refused rather than silently
//! downgraded to plain text.

use std::fmt;

/// The port NBD servers listen on unless told otherwise (IANA assignment).
pub(crate) const DEFAULT_PORT: u16 = 10809;

/// The longest export name the protocol allows, in bytes.
const MAX_EXPORT_NAME: usize = 4096;

/// The accepted forms, repeated in every parse error so the user can fix the
/// URL without looking anything up.
const ACCEPTED_FORMS: &str = "expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH";

/// Where an NBD export is reached: a TCP host and port or a Unix socket, and
/// the export's name on that server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NbdUrl {
    endpoint: NbdEndpoint,
    export: String,
}

/// The transport part of an [`NbdUrl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NbdEndpoint {
    /// A TCP server; `host` is a name, an IPv4 address or an IPv6 address
    /// (without the brackets the URL needs around it).
    Tcp {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket.
    Unix {
        /// Filesystem path of the socket.
        socket: String,
    },
}

impl NbdUrl {
    /// Parses `nbd://HOST[:PORT]/EXPORT` (port default 10809, an IPv6 address
    /// in `[..]`, an empty export meaning the server's default export, the
    /// export name percent-decoded) or `nbd+unix:///EXPORT?socket=PATH`.
    /// Anything else (`nbds://`, `nbd+unix` without `socket=`, junk) is
    /// refused with a message that shows the accepted forms.
    pub fn parse(s: &str) -> Result<NbdUrl, String> {
        let refuse = |why: &str| format!("invalid NBD URL {s:?}: {why}; {ACCEPTED_FORMS}");
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(refuse("no scheme"));
        };
        if rest.contains('#') {
            return Err(refuse("a fragment (#...) has no meaning here"));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        // The authority ends at the first '/'; what follows it is the export.
        let (authority, export) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i + 1..]),
            None => (before_query, ""),
        };
        let export = percent_decode(export).map_err(|e| refuse(&format!("export name: {e}")))?;
        if export.len() > MAX_EXPORT_NAME {
            return Err(refuse(&format!(
                "the export name is longer than {MAX_EXPORT_NAME} bytes"
            )));
        }
        let endpoint = match scheme.to_ascii_lowercase().as_str() {
            "nbd" => {
                if query.is_some() {
                    return Err(refuse("nbd:// takes no query parameters"));
                }
                let (host, port) = parse_authority(authority).map_err(|e| refuse(&e))?;
                NbdEndpoint::Tcp { host, port }
            }
            "nbd+unix" => {
                if !authority.is_empty() {
                    return Err(refuse(
                        "nbd+unix:// takes no host (write three slashes: nbd+unix:///EXPORT?socket=PATH)",
                    ));
                }
                let socket = parse_socket_query(query).map_err(|e| refuse(&e))?;
                NbdEndpoint::Unix { socket }
            }
            "nbds" | "nbds+unix" => return Err(refuse("TLS (nbds) is not supported")),
            other => return Err(refuse(&format!("unsupported scheme {other:?}"))),
        };
        Ok(NbdUrl { endpoint, export })
    }

    /// The export name (empty for the server's default export).
    pub fn export(&self) -> &str {
        &self.export
    }

    /// How the server is reached.
    pub(crate) fn endpoint(&self) -> &NbdEndpoint {
        &self.endpoint
    }
}

/// Splits `HOST[:PORT]` or `[V6ADDR][:PORT]`.
fn parse_authority(authority: &str) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("user names are not supported".into());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((addr, after)) = bracketed.split_once(']') else {
            return Err("an IPv6 address opened with '[' is not closed with ']'".into());
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{addr:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err("unexpected text after the IPv6 address".into()),
            },
        };
        (addr, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let bracketed = authority.starts_with('[');
    if !bracketed
        && (!host.starts_with(|c: char| c.is_ascii_alphanumeric())
            || host.contains(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))))
    {
        return Err(format!("{host:?} is not a host name or address"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("{p:?} is not a port number (1-65535)")),
        },
    };
    Ok((host.to_string(), port))
}

/// Finds `socket=PATH` in the query of an `nbd+unix://` URL.
fn parse_socket_query(query: Option<&str>) -> Result<String, String> {
    let mut socket = None;
    for param in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match param.split_once('=') {
            Some(("socket", path)) => {
                if socket.is_some() {
                    return Err("socket= is given twice".into());
                }
                let path = percent_decode(path).map_err(|e| format!("socket path: {e}"))?;
                if path.is_empty() {
                    return Err("socket= is empty".into());
                }
                socket = Some(path);
            }
            _ => return Err(format!("unsupported query parameter {param:?}")),
        }
    }
    socket.ok_or_else(|| "nbd+unix:// needs ?socket=PATH".into())
}

/// Decodes `%XX` escapes; the result must be UTF-8 (NBD names are).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => out.push(b),
                None => return Err(format!("bad percent escape at byte {i}")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 after percent-decoding".into())
}

/// Escapes what would otherwise end or confuse the URL part it sits in.
fn percent_encode(s: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'/'
                    | b':'
                    | b'@'
                    | b'!'
                    | b'$'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b','
                    | b';'
            );
        if keep {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

impl fmt::Display for NbdUrl {
    /// The URL in canonical form; [`NbdUrl::parse`] gives back the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            NbdEndpoint::Tcp { host, port } => {
                if host.contains(':') {
                    write!(f, "nbd://[{host}]")?;
                } else {
                    write!(f, "nbd://{host}")?;
                }
                if *port != DEFAULT_PORT {
                    write!(f, ":{port}")?;
                }
                f.write_str("/")?;
                percent_encode(&self.export, f)
            }
            NbdEndpoint::Unix { socket } => {
                f.write_str("nbd+unix:///")?;
                percent_encode(&self.export, f)?;
                f.write_str("?socket=")?;
                percent_encode(socket, f)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, export: &str) -> NbdUrl {
        NbdUrl {
            endpoint: NbdEndpoint::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
        }
    }

    fn unix(socket: &str, export: &str) -> NbdUrl {
        NbdUrl {
            endpoint: NbdEndpoint::Unix {
                socket: socket.into(),
            },
            export: export.into(),
        }
    }

    #[test]
    fn nbd_url_accepts_the_forms_qemu_prints() {
        let cases = [
            ("nbd://localhost/vm", tcp("localhost", 10809, "vm")),
            ("nbd://localhost:10810/vm", tcp("localhost", 10810, "vm")),
            ("nbd://127.0.0.1:1/", tcp("127.0.0.1", 1, "")),
            ("nbd://127.0.0.1", tcp("127.0.0.1", 10809, "")),
            ("nbd://[::1]:9000/disk0", tcp("::1", 9000, "disk0")),
            ("nbd://[fe80::1]/x", tcp("fe80::1", 10809, "x")),
            ("NBD://host.example/x", tcp("host.example", 10809, "x")),
            ("nbd://h/a%20b%2Fc", tcp("h", 10809, "a b/c")),
            ("nbd://h//leading", tcp("h", 10809, "/leading")),
            ("nbd://h/d%C3%A9j%C3%A0", tcp("h", 10809, "déjà")),
            (
                "nbd+unix:///vm?socket=/run/qemu/nbd.sock",
                unix("/run/qemu/nbd.sock", "vm"),
            ),
            ("nbd+unix:///?socket=/tmp/s", unix("/tmp/s", "")),
            ("nbd+unix://?socket=/tmp/s", unix("/tmp/s", "")),
            ("nbd+unix:///e?socket=/tmp/a%20b", unix("/tmp/a b", "e")),
        ];
        for (text, want) in cases {
            let got = NbdUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.export(), want.export);
            // The displayed URL parses back to the same thing.
            let shown = got.to_string();
            assert_eq!(
                NbdUrl::parse(&shown).as_ref(),
                Ok(&want),
                "{text} -> {shown}"
            );
        }
    }

    #[test]
    fn nbd_url_display_is_canonical() {
        assert_eq!(
            NbdUrl::parse("nbd://h:10809/vm").unwrap().to_string(),
            "nbd://h/vm"
        );
        assert_eq!(
            NbdUrl::parse("nbd://[::1]:2/a%20b").unwrap().to_string(),
            "nbd://[::1]:2/a%20b"
        );
        assert_eq!(
            NbdUrl::parse("nbd+unix:///x?socket=/s%26t")
                .unwrap()
                .to_string(),
            "nbd+unix:///x?socket=/s%26t"
        );
    }

    #[test]
    fn nbd_url_refuses_other_forms_and_says_what_is_accepted() {
        let cases = [
            ("", "no scheme"),
            ("localhost:10809", "no scheme"),
            ("/dev/nbd0", "no scheme"),
            ("nbds://host/vm", "TLS"),
            ("nbds+unix:///vm?socket=/s", "TLS"),
            ("http://host/vm", "unsupported scheme"),
            ("nbd+vsock://2/vm", "unsupported scheme"),
            ("nbd:///vm", "no host"),
            ("nbd://:10809/vm", "no host"),
            ("nbd://host:0/vm", "port"),
            ("nbd://host:65536/vm", "port"),
            ("nbd://host:+80/vm", "port"),
            ("nbd://host:abc/vm", "port"),
            ("nbd://host:/vm", "port"),
            ("nbd://[::1/vm", "not closed"),
            ("nbd://[nothex]/vm", "not an IPv6 address"),
            ("nbd://[::1]x/vm", "after the IPv6"),
            ("nbd://::1/vm", "no host"),
            ("nbd://user@host/vm", "user names"),
            ("nbd://ho st/vm", "not a host"),
            ("nbd://host/vm?tls=on", "no query"),
            ("nbd://host/vm#frag", "fragment"),
            ("nbd://host/a%2", "percent escape"),
            ("nbd://host/a%zz", "percent escape"),
            ("nbd://host/%ff", "UTF-8"),
            ("nbd+unix:///vm", "socket=PATH"),
            ("nbd+unix:///vm?", "socket=PATH"),
            ("nbd+unix:///vm?socket=", "empty"),
            ("nbd+unix:///vm?socket=/a&socket=/b", "twice"),
            ("nbd+unix:///vm?socket=/a&x=1", "unsupported query"),
            ("nbd+unix://host/vm?socket=/a", "no host"),
        ];
        for (text, why) in cases {
            let err = NbdUrl::parse(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains(ACCEPTED_FORMS), "{text}: {err}");
        }
        let long = format!("nbd://h/{}", "x".repeat(MAX_EXPORT_NAME + 1));
        assert!(NbdUrl::parse(&long).unwrap_err().contains("longer than"));
    }
}

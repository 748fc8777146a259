//! Forget records (`forgotten/<id>`): a recovery point marked forgotten by
//! `forget`. The point stays in place and restorable until `prune` removes
//! it after the grace period; `unforget` deletes the record. Object header
//! (kind 4), then a sealed blob whose plaintext is [`ForgetRecord`]'s
//! encoding (spec/FORMAT.md §16).

use super::bytes::{ByteReader, PutBytes};
use super::point::MAX_STRING;
use super::{FormatError, PointId};

/// The plaintext of a forget record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetRecord {
    /// The forgotten point.
    pub point: PointId,
    /// Unix seconds when it was forgotten: the grace period counts from here.
    pub time_secs: i64,
    /// Host that ran the forget.
    pub host: String,
    /// Why: the rules or command that forgot it, for people.
    pub reason: String,
}

impl ForgetRecord {
    /// Cuts strings to the bounds a reader enforces.
    pub fn new(point: PointId, time_secs: i64, host: &str, reason: &str) -> Self {
        let cut = |s: &str| {
            let mut end = s.len().min(MAX_STRING);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        };
        ForgetRecord {
            point,
            time_secs,
            host: cut(host),
            reason: cut(reason),
        }
    }

    /// Encodes the record as the plaintext of a `forgotten/` object.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(48 + self.host.len() + self.reason.len());
        v.extend_from_slice(&self.point.0);
        v.put_i64(self.time_secs);
        v.put_string(&self.host);
        v.put_string(&self.reason);
        v
    }

    /// Decodes a record from the plaintext of a `forgotten/` object.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = ByteReader::new(bytes, "forget record");
        let point = PointId(r.array()?);
        let time_secs = r.i64()?;
        let host = r.string(MAX_STRING)?;
        let reason = r.string(MAX_STRING)?;
        r.finish()?;
        Ok(ForgetRecord {
            point,
            time_secs,
            host,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_trailing_or_missing_bytes() {
        let r = ForgetRecord::new(PointId([7; 32]), 1_800_000_000, "vm", "--keep-last 3");
        let bytes = r.encode();
        assert_eq!(ForgetRecord::decode(&bytes).unwrap(), r);
        assert!(ForgetRecord::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ForgetRecord::decode(&longer).is_err());
    }

    #[test]
    fn long_strings_are_cut_to_what_readers_accept() {
        let r = ForgetRecord::new(PointId([1; 32]), 0, &"h".repeat(5000), "r");
        assert_eq!(r.host.len(), MAX_STRING);
        assert_eq!(ForgetRecord::decode(&r.encode()).unwrap(), r);
    }
}

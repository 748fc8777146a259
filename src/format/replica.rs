//! The `replica` object: written once by the `sync` that creates a
//! repository as a copy of another, so that a person (or `status`) can tell
//! a replica from its source and see where it came from. JSON, not
//! encrypted, like `config`. Nothing needs it to open the repository.

use serde::{Deserialize, Serialize};

use super::FormatError;

/// Largest replica marker accepted.
pub const MAX_REPLICA_MARKER_LEN: usize = 64 << 10;
/// Longest `source` and `host` strings, in bytes.
pub const MAX_REPLICA_STRING: usize = 4096;

/// The contents of the `replica` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaMarker {
    /// Where the source repository was, as given to the sync that created
    /// this replica (a path or URL; informational).
    pub source: String,
    /// Unix seconds when the replica was created.
    pub created: i64,
    /// Host that ran the sync that created the replica.
    pub host: String,
}

impl ReplicaMarker {
    /// A marker for a replica of `source` created now by `host`; long
    /// strings are cut to [`MAX_REPLICA_STRING`] bytes.
    pub fn new(source: &str, created: i64, host: &str) -> Self {
        ReplicaMarker {
            source: truncate(source),
            created,
            host: truncate(host),
        }
    }

    /// Pretty JSON with a trailing newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("replica marker serializes");
        v.push(b'\n');
        v
    }

    /// Parses a marker, bounding its size and string lengths.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let what = "replica marker";
        if bytes.len() > MAX_REPLICA_MARKER_LEN {
            return Err(FormatError::TooLarge {
                what,
                value: bytes.len() as u64,
                max: MAX_REPLICA_MARKER_LEN as u64,
            });
        }
        let m: ReplicaMarker = serde_json::from_slice(bytes).map_err(|e| FormatError::Invalid {
            what,
            reason: e.to_string(),
        })?;
        for s in [&m.source, &m.host] {
            if s.len() > MAX_REPLICA_STRING {
                return Err(FormatError::TooLarge {
                    what,
                    value: s.len() as u64,
                    max: MAX_REPLICA_STRING as u64,
                });
            }
        }
        Ok(m)
    }
}

/// Cuts `s` to at most [`MAX_REPLICA_STRING`] bytes on a character boundary.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(MAX_REPLICA_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let m = ReplicaMarker::new("/backups/vault", 1_795_740_663, "vm");
        assert_eq!(ReplicaMarker::decode(&m.encode()).unwrap(), m);
        let long = ReplicaMarker::new(&"é".repeat(5000), 1, "h");
        assert!(long.source.len() <= MAX_REPLICA_STRING);
        assert!(ReplicaMarker::decode(&long.encode()).is_ok());
        assert!(ReplicaMarker::decode(b"{\"source\": 1}").is_err());
        assert!(ReplicaMarker::decode(&vec![b' '; MAX_REPLICA_MARKER_LEN + 1]).is_err());
        // Unknown fields are ignored, so later versions may add some.
        let extra = br#"{"source":"s","created":2,"host":"h","last_sync":3}"#;
        assert_eq!(ReplicaMarker::decode(extra).unwrap().created, 2);
    }
}

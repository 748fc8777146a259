//! Lock objects (`locks/<id>`): who holds a lock on the repository, of
//! which kind, since when. JSON, not encrypted, so that a key-free `sync`
//! can take one and `unlock` can show and remove them without a passphrase.
//! The protocol that uses them is in `spec/FORMAT.md` §15.

use serde::{Deserialize, Serialize};

use super::FormatError;

/// Largest lock object accepted.
pub const MAX_LOCK_LEN: usize = 4096;
/// Longest string field, in bytes.
pub const MAX_LOCK_STRING: usize = 256;
/// The lock format this build writes.
pub const LOCK_VERSION: u32 = 1;

/// Shared locks coexist; an exclusive lock excludes every other lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Taken by commands that add or read (backup, restore, check, sync,
    /// forget, ...); coexists with other shared locks.
    Shared,
    /// Taken by commands that delete or rewrite (prune while it deletes,
    /// key remove, key passwd, repair); coexists with no other lock.
    Exclusive,
}

/// The contents of a lock object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Lock record format version (1).
    pub version: u32,
    /// Shared or exclusive.
    pub mode: LockMode,
    /// The command holding it (`backup`, `prune`, ...).
    pub command: String,
    /// Host name of the machine holding it.
    pub host: String,
    /// User name of the process holding it.
    pub user: String,
    /// Process id of the holder, on its host.
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux
    /// `/proc/PID/stat` field 22), so a reused pid is not taken for the
    /// holder; 0 when unknown.
    pub process_start: u64,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): the same
    /// boot id means the same running machine, where a missing process
    /// proves the lock stale. Empty when unknown.
    pub boot_id: String,
    /// Unix seconds when the lock was taken.
    pub created: i64,
    /// Unix seconds of the last refresh (equal to `created` at first).
    pub refreshed: i64,
}

impl LockRecord {
    /// Compact JSON with a trailing newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("lock record serializes");
        v.push(b'\n');
        v
    }

    /// Parses a lock, bounding its size and strings. Readers accept any
    /// version: unknown versions are still locks (fields they lack make
    /// the parse fail, and an unreadable lock is treated as held).
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let what = "lock";
        if bytes.len() > MAX_LOCK_LEN {
            return Err(FormatError::TooLarge {
                what,
                value: bytes.len() as u64,
                max: MAX_LOCK_LEN as u64,
            });
        }
        let r: LockRecord = serde_json::from_slice(bytes).map_err(|e| FormatError::Invalid {
            what,
            reason: e.to_string(),
        })?;
        for s in [&r.command, &r.host, &r.user, &r.boot_id] {
            if s.len() > MAX_LOCK_STRING {
                return Err(FormatError::TooLarge {
                    what: "lock string",
                    value: s.len() as u64,
                    max: MAX_LOCK_STRING as u64,
                });
            }
        }
        Ok(r)
    }
}

/// Cuts `s` to at most [`MAX_LOCK_STRING`] bytes at a character boundary.
pub fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_LOCK_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LockRecord {
        LockRecord {
            version: LOCK_VERSION,
            mode: LockMode::Exclusive,
            command: "prune".into(),
            host: "vm".into(),
            user: "root".into(),
            pid: 42,
            process_start: 1234,
            boot_id: "b".into(),
            created: 1_800_000_000,
            refreshed: 1_800_000_300,
        }
    }

    #[test]
    fn round_trips_and_bounds_hostile_input() {
        let r = record();
        assert_eq!(LockRecord::decode(&r.encode()).unwrap(), r);
        assert!(LockRecord::decode(&vec![b' '; MAX_LOCK_LEN + 1]).is_err());
        let mut long = record();
        long.host = "h".repeat(MAX_LOCK_STRING + 1);
        assert!(LockRecord::decode(&long.encode()).is_err());
        assert!(LockRecord::decode(b"{\"version\":1}").is_err());
        assert!(LockRecord::decode(b"\xff\xfe").is_err());
    }

    #[test]
    fn bounded_cuts_at_a_character_boundary() {
        let s = "é".repeat(200);
        let b = bounded(&s);
        assert!(b.len() <= MAX_LOCK_STRING);
        assert!(s.starts_with(&b));
    }
}

//! The stored retention policy (`policy`): the rules `forget` applies when
//! given none, and the grace period forgotten points are kept for before
//! `prune` frees their data. Object header (kind 5), then a sealed blob
//! whose plaintext is UTF-8 JSON (spec/FORMAT.md §17). Sealed, so that
//! nobody without the key can loosen or tighten the policy unnoticed.

use serde::{Deserialize, Serialize};

use super::FormatError;
use crate::retention::RetentionPolicy;

/// Largest policy plaintext accepted.
pub const MAX_POLICY_LEN: usize = 64 << 10;
/// The grace period when none is set: 14 days, as Azure Backup keeps
/// soft-deleted backup data.
pub const DEFAULT_GRACE_SECS: u64 = 14 * 86_400;
/// Longest grace period accepted: ten years.
pub const MAX_GRACE_SECS: u64 = 10 * 366 * 86_400;

/// The contents of the `policy` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredPolicy {
    /// The rules; `forget` without rules applies these. May be empty when
    /// only the grace period was set.
    pub rules: RetentionPolicy,
    /// Seconds a forgotten point stays restorable before `prune` may free
    /// its data.
    pub grace_secs: u64,
}

impl Default for StoredPolicy {
    fn default() -> Self {
        StoredPolicy {
            rules: RetentionPolicy::default(),
            grace_secs: DEFAULT_GRACE_SECS,
        }
    }
}

impl StoredPolicy {
    /// Checks every bound a reader enforces.
    pub fn validate(&self) -> Result<(), FormatError> {
        self.rules.validate().map_err(|e| FormatError::Invalid {
            what: "retention policy",
            reason: e.to_string(),
        })?;
        if self.grace_secs > MAX_GRACE_SECS {
            return Err(FormatError::TooLarge {
                what: "grace period",
                value: self.grace_secs,
                max: MAX_GRACE_SECS,
            });
        }
        Ok(())
    }

    /// Encodes the policy as the JSON of the `policy` object.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("policy serializes")
    }

    /// Decodes and validates the JSON of the `policy` object.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let what = "retention policy";
        if bytes.len() > MAX_POLICY_LEN {
            return Err(FormatError::TooLarge {
                what,
                value: bytes.len() as u64,
                max: MAX_POLICY_LEN as u64,
            });
        }
        let p: StoredPolicy = serde_json::from_slice(bytes).map_err(|e| FormatError::Invalid {
            what,
            reason: e.to_string(),
        })?;
        p.validate()?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_cannot_honour() {
        let p = StoredPolicy {
            rules: RetentionPolicy {
                keep_daily: Some(7),
                keep_weekly: Some(4),
                ..RetentionPolicy::default()
            },
            grace_secs: 3 * 86_400,
        };
        assert_eq!(StoredPolicy::decode(&p.encode()).unwrap(), p);
        // A rule from a newer build must not be silently dropped.
        let newer = br#"{"rules":{"keep_fortnightly":3},"grace_secs":0}"#;
        assert!(StoredPolicy::decode(newer).is_err());
        let long = format!(r#"{{"rules":{{}},"grace_secs":{}}}"#, MAX_GRACE_SECS + 1);
        assert!(StoredPolicy::decode(long.as_bytes()).is_err());
        assert!(StoredPolicy::decode(&vec![b' '; MAX_POLICY_LEN + 1]).is_err());
        assert!(StoredPolicy::decode(br#"{"rules":{"keep_last":-5},"grace_secs":0}"#).is_err());
    }
}

//! The repository `config` object: a small JSON document, the only object
//! that is not content-named, written once at init.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use super::{FormatError, FORMAT_MAJOR, FORMAT_MINOR};

/// Largest config document accepted.
pub const MAX_CONFIG_LEN: usize = 64 << 10;
/// Largest chunk any chunker may produce.
pub const MAX_CHUNK_SIZE: u32 = 8 << 20;

/// Format version, major and minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatVersion {
    /// Incompatible changes: readers refuse a major newer than theirs.
    pub major: u32,
    /// Additions an older reader of the same major may ignore.
    pub minor: u32,
}

/// How image bytes are cut into chunks. Fixed per repository: chunk ids only
/// match between backups made with the same parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "kebab-case")]
pub enum ChunkerParams {
    /// FastCDC as published in 2020 (crate `fastcdc` 5.0.0, `v2020`,
    /// normalization level 1, unseeded gear table).
    #[serde(rename = "fastcdc-v2020")]
    FastCdc2020 {
        /// Smallest chunk, in bytes (except the last chunk of an image).
        min_size: u32,
        /// Target average chunk size, in bytes.
        avg_size: u32,
        /// Largest chunk, in bytes.
        max_size: u32,
    },
    /// Fixed-size chunks aligned to multiples of `size` in the image. Any
    /// size in 512..=8 MiB: boundaries are computed by division, so it need
    /// not be a power of two.
    Fixed {
        /// Chunk size, in bytes.
        size: u32,
    },
}

impl ChunkerParams {
    /// The default, chosen by measurement (see `spec/CHUNKING.md`): disk
    /// images change in place in aligned blocks, so aligned fixed-size chunks
    /// store the least per day and chunk fastest.
    pub const DEFAULT: ChunkerParams = ChunkerParams::Fixed { size: 16 << 10 };

    /// FastCDC sizes used when `fastcdc` is asked for without sizes: the best
    /// content-defined setting in the same measurement.
    pub const DEFAULT_FASTCDC: ChunkerParams = ChunkerParams::FastCdc2020 {
        min_size: 4 << 10,
        avg_size: 16 << 10,
        max_size: 64 << 10,
    };

    /// Largest chunk these parameters can produce.
    pub fn max_chunk_size(&self) -> u32 {
        match *self {
            ChunkerParams::FastCdc2020 { max_size, .. } => max_size,
            ChunkerParams::Fixed { size } => size,
        }
    }

    /// Checks the parameters are within what the chunker supports.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            ChunkerParams::FastCdc2020 {
                min_size,
                avg_size,
                max_size,
            } => {
                let in_range = (64..=(1 << 20)).contains(&min_size)
                    && (256..=(4 << 20)).contains(&avg_size)
                    && (1024..=MAX_CHUNK_SIZE).contains(&max_size)
                    && min_size <= avg_size
                    && avg_size <= max_size;
                let even = [min_size, avg_size, max_size].iter().all(|s| s % 2 == 0);
                if !(in_range && even) {
                    return Err(format!(
                        "fastcdc sizes {min_size}/{avg_size}/{max_size} are out of range \
                         (need even sizes, 64 <= min <= avg <= max <= {MAX_CHUNK_SIZE})"
                    ));
                }
            }
            ChunkerParams::Fixed { size } => {
                if !(512..=MAX_CHUNK_SIZE).contains(&size) {
                    return Err(format!(
                        "fixed chunk size {size} is out of range (512..={MAX_CHUNK_SIZE})"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `16K` for multiples of 1024, plain bytes otherwise.
fn size_text(v: u32) -> String {
    if v % 1024 == 0 {
        format!("{}K", v >> 10)
    } else {
        v.to_string()
    }
}

impl fmt::Display for ChunkerParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ChunkerParams::FastCdc2020 {
                min_size,
                avg_size,
                max_size,
            } => write!(
                f,
                "fastcdc:{}/{}/{}",
                size_text(min_size),
                size_text(avg_size),
                size_text(max_size)
            ),
            ChunkerParams::Fixed { size } => write!(f, "fixed:{}", size_text(size)),
        }
    }
}

impl FromStr for ChunkerParams {
    type Err = String;
    /// Parses `fixed` (16K), `fixed:SIZE`, `fastcdc` (4K/16K/64K) or
    /// `fastcdc:MIN/AVG/MAX`, sizes in bytes or with a K/M suffix.
    fn from_str(s: &str) -> Result<Self, String> {
        let size = |t: &str| -> Result<u32, String> {
            let t = t.trim();
            let (num, mul) = match t.chars().last() {
                Some('K') | Some('k') => (&t[..t.len() - 1], 1024),
                Some('M') | Some('m') => (&t[..t.len() - 1], 1024 * 1024),
                _ => (t, 1),
            };
            num.parse::<u32>()
                .ok()
                .and_then(|n| n.checked_mul(mul))
                .ok_or_else(|| format!("'{t}' is not a size"))
        };
        let params = if s == "fastcdc" {
            ChunkerParams::DEFAULT_FASTCDC
        } else if s == "fixed" {
            ChunkerParams::DEFAULT
        } else if let Some(rest) = s.strip_prefix("fastcdc:") {
            let parts: Vec<&str> = rest.split('/').collect();
            if parts.len() != 3 {
                return Err("expected fastcdc:MIN/AVG/MAX".into());
            }
            ChunkerParams::FastCdc2020 {
                min_size: size(parts[0])?,
                avg_size: size(parts[1])?,
                max_size: size(parts[2])?,
            }
        } else if let Some(rest) = s.strip_prefix("fixed:") {
            ChunkerParams::Fixed { size: size(rest)? }
        } else {
            return Err(format!(
                "unknown chunker '{s}': use fixed, fixed:SIZE, fastcdc or fastcdc:MIN/AVG/MAX"
            ));
        };
        params.validate()?;
        Ok(params)
    }
}

/// Compression applied to new chunks. Stored per chunk, so it can change
/// between backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionSetting {
    /// Chunks are stored uncompressed.
    None,
    /// Chunks are compressed with zstd at this level.
    Zstd(i32),
}

impl CompressionSetting {
    /// zstd level 3. Compressing 2 MiB chunk groups (format 2), it stores
    /// 10 % less than level 1 on a 2 GiB ext4 image (391 vs 434 MB) for
    /// about a fifth more first-backup time; on chunks sealed alone (format
    /// 1) the difference was 2.4 % (spec/FORMAT.md §20.3).
    pub const DEFAULT: CompressionSetting = CompressionSetting::Zstd(3);
}

impl fmt::Display for CompressionSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompressionSetting::None => f.write_str("none"),
            CompressionSetting::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

impl FromStr for CompressionSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(CompressionSetting::None);
        }
        if s == "zstd" {
            return Ok(CompressionSetting::DEFAULT);
        }
        let level = s
            .strip_prefix("zstd:")
            .and_then(|l| l.parse::<i32>().ok())
            .ok_or_else(|| format!("unknown compression '{s}': use none, zstd or zstd:LEVEL"))?;
        if !(-7..=22).contains(&level) {
            return Err(format!("zstd level {level} is out of range (-7..=22)"));
        }
        Ok(CompressionSetting::Zstd(level))
    }
}

impl Serialize for CompressionSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for CompressionSetting {
    /// Reads the spelling the config stores: `none` or `zstd:L` exactly as
    /// [`fmt::Display`] writes it. The shorthands the command line accepts
    /// (`zstd`, `zstd:+3`, `zstd:03`) are refused here, so that one setting
    /// has one spelling in the format (spec/FORMAT.md §3).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let setting: CompressionSetting = s.parse().map_err(serde::de::Error::custom)?;
        if setting.to_string() != s {
            return Err(serde::de::Error::custom(format!(
                "compression '{s}' is not in its stored form '{setting}'"
            )));
        }
        Ok(setting)
    }
}

/// Whether the repository is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    /// AES-256-GCM for every sealed blob, keyed BLAKE3 chunk ids.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// No encryption, plain BLAKE3 chunk ids.
    None,
}

/// As users write it, and as `config` stores it: `aes-256-gcm`, `none`.
impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encryption::Aes256Gcm => "aes-256-gcm",
            Encryption::None => "none",
        })
    }
}

/// The `config` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// The repository's format version; fixes which extensions apply.
    pub format: FormatVersion,
    /// 64 lower-case hex characters, random at init.
    pub id: String,
    /// How images are cut into chunks. Chunk boundaries, and so
    /// deduplication between backups, depend on it.
    pub chunker: ChunkerParams,
    /// Default compression for new chunks.
    pub compression: CompressionSetting,
    /// Whether and how objects are encrypted.
    pub encryption: Encryption,
    /// Unix seconds at init.
    pub created: i64,
}

#[derive(Deserialize)]
struct VersionOnly {
    format: FormatVersion,
}

impl RepoConfig {
    /// A config for a new repository with this build's format version.
    pub fn new(
        id: String,
        chunker: ChunkerParams,
        compression: CompressionSetting,
        encryption: Encryption,
        created: i64,
    ) -> Self {
        RepoConfig {
            format: FormatVersion {
                major: FORMAT_MAJOR,
                minor: FORMAT_MINOR,
            },
            id,
            chunker,
            compression,
            encryption,
            created,
        }
    }

    /// The same config for a repository of format `major`: 1.1 or 2.0.
    pub fn with_major(mut self, major: u32) -> Self {
        if major != self.format.major {
            self.format = FormatVersion {
                major,
                minor: if major == 1 { 1 } else { 0 },
            };
        }
        self
    }

    /// Pretty JSON with a trailing newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("config serializes");
        v.push(b'\n');
        v
    }

    /// Parses a config, checking the version before anything else so that a
    /// newer repository gets a version error rather than a parse error.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let what = "config";
        if bytes.len() > MAX_CONFIG_LEN {
            return Err(FormatError::TooLarge {
                what,
                value: bytes.len() as u64,
                max: MAX_CONFIG_LEN as u64,
            });
        }
        let invalid = |e: serde_json::Error| FormatError::Invalid {
            what,
            reason: e.to_string(),
        };
        let v: VersionOnly = serde_json::from_slice(bytes).map_err(invalid)?;
        if v.format.major > FORMAT_MAJOR {
            return Err(FormatError::NewerVersion {
                what: "repository",
                found: v.format.major,
                supported: FORMAT_MAJOR,
            });
        }
        if v.format.major == 0 {
            return Err(FormatError::Invalid {
                what,
                reason: "format major version 0".into(),
            });
        }
        // Unknown members are ignored at every level: minor versions add
        // fields an older reader may ignore (spec/FORMAT.md §3.1).
        let c: RepoConfig = serde_json::from_slice(bytes).map_err(invalid)?;
        c.chunker
            .validate()
            .map_err(|reason| FormatError::Invalid { what, reason })?;
        // Key files name the repository by this string and use it as
        // associated data as written: one id, one spelling.
        if !super::is_lower_hex(&c.id, 32) {
            return Err(FormatError::Invalid {
                what,
                reason: "id is not 64 lower-case hex characters".into(),
            });
        }
        Ok(c)
    }
}

//! Recovery points (`points/<id>`): object header, then a sealed blob whose
//! plaintext is the [`PointBody`] encoding documented in `spec/FORMAT.md`.

use super::bytes::{ByteReader, PutBytes};
use super::{ChunkId, FormatError};

/// Bounds on strings and lists in a point.
pub const MAX_STRING: usize = 1024;
pub const MAX_TAGS: usize = 256;
pub const MAX_DISKS: usize = 256;

/// Counters measured while backing up one disk (spec/FORMAT.md §10.1).
///
/// A chunk that several disks of one point contain is new for the first of
/// them in the point's disk order (disks are backed up one after another),
/// and known for the others; so summing the `new_*` figures over the disks
/// gives what the backup added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskStats {
    /// Bytes read from the source: the length of its data regions (holes
    /// are not read), all-zero chunks included.
    pub bytes_read: u64,
    /// Bytes of the image that are zero runs (holes and all-zero chunks):
    /// the disk size minus the lengths of its data extents.
    pub zero_bytes: u64,
    /// Data extents in the manifest, a chunk repeated in the disk counting
    /// at each place.
    pub chunks: u64,
    /// Chunks (data and manifest nodes) this backup sealed into new packs
    /// for this disk: not in the index when the backup started, and not
    /// already added by this backup for an earlier disk.
    pub new_chunks: u64,
    /// Plaintext bytes of those new chunks.
    pub new_bytes: u64,
    /// Sealed bytes of those new chunks (whole sealed blobs, as written into
    /// packs; pack headers, tables and index files not included).
    pub stored_bytes: u64,
}

/// One disk of a recovery point.
///
/// Serialised (for reports) with the image hash as `image_blake3` in hex,
/// and the [`DiskStats`] figures beside the other fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskRecord {
    pub name: String,
    pub size: u64,
    /// Root node of the manifest tree.
    pub manifest_root: ChunkId,
    /// Plain BLAKE3 of the whole image (what `b3sum` prints).
    #[serde(rename = "image_blake3", serialize_with = "hex_bytes")]
    pub image_hash: [u8; 32],
    #[serde(flatten)]
    pub stats: DiskStats,
}

/// The plaintext of a recovery point.
///
/// Serialised (for reports) with `time` for `time_secs` and the duration as
/// `duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PointBody {
    /// Unix time of the backup's start.
    #[serde(rename = "time")]
    pub time_secs: i64,
    pub time_nanos: u32,
    #[serde(rename = "duration_seconds", serialize_with = "millis_as_seconds")]
    pub duration_millis: u64,
    pub host: String,
    pub source: String,
    pub tags: Vec<String>,
    pub disks: Vec<DiskRecord>,
}

/// Serializes bytes as lower-case hex.
fn hex_bytes<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// Serializes milliseconds as seconds with a fraction.
fn millis_as_seconds<S: serde::Serializer>(millis: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*millis as f64 / 1000.0)
}

/// Checks a disk name against the rules of spec/FORMAT.md §10: 1 to
/// [`MAX_STRING`] bytes, not `.` or `..`, without `/` and without control
/// characters (Unicode category Cc: U+0000 to U+001F and U+007F to U+009F,
/// NUL included). Names become file names when a point is restored into a
/// directory and are printed in reports, so a name that is a path, or that
/// could move a terminal's cursor, is refused rather than escaped.
pub fn check_disk_name(name: &str) -> Result<(), FormatError> {
    check_len("disk name", name)?;
    let bad = |reason: &str| FormatError::Invalid {
        what: "disk name",
        reason: format!("{name:?} {reason}"),
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name == "." || name == ".." {
        return Err(bad("is a directory name"));
    }
    if name.contains('/') {
        return Err(bad("contains '/'"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    Ok(())
}

/// Checks every disk name of a point, and that no two are equal (a disk is
/// named on the command line by its name).
fn check_disk_names(disks: &[DiskRecord]) -> Result<(), FormatError> {
    let mut seen = std::collections::HashSet::with_capacity(disks.len());
    for d in disks {
        check_disk_name(&d.name)?;
        if !seen.insert(d.name.as_str()) {
            return Err(FormatError::Invalid {
                what: "recovery point",
                reason: format!("two disks are named {:?}", d.name),
            });
        }
    }
    Ok(())
}

fn check_len(what: &'static str, s: &str) -> Result<(), FormatError> {
    if s.len() > MAX_STRING {
        return Err(FormatError::TooLarge {
            what,
            value: s.len() as u64,
            max: MAX_STRING as u64,
        });
    }
    Ok(())
}

impl PointBody {
    /// Checks the bounds and rules a reader will enforce (string lengths,
    /// list sizes, disk names), so we never write a point we could not read
    /// back.
    pub fn validate(&self) -> Result<(), FormatError> {
        check_len("host name", &self.host)?;
        check_len("source", &self.source)?;
        if self.tags.len() > MAX_TAGS || self.disks.len() > MAX_DISKS {
            return Err(FormatError::TooLarge {
                what: "recovery point lists",
                value: self.tags.len().max(self.disks.len()) as u64,
                max: MAX_TAGS as u64,
            });
        }
        for t in &self.tags {
            check_len("tag", t)?;
        }
        check_disk_names(&self.disks)
    }

    /// The point's plaintext (spec/FORMAT.md §10). Call
    /// [`PointBody::validate`] first.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.put_i64(self.time_secs);
        v.put_u32(self.time_nanos);
        v.put_u64(self.duration_millis);
        v.put_string(&self.host);
        v.put_string(&self.source);
        v.put_u16(self.tags.len() as u16);
        for t in &self.tags {
            v.put_string(t);
        }
        v.put_u16(self.disks.len() as u16);
        for d in &self.disks {
            v.put_string(&d.name);
            v.put_u64(d.size);
            v.extend_from_slice(&d.manifest_root.0);
            v.extend_from_slice(&d.image_hash);
            let s = &d.stats;
            for x in [
                s.bytes_read,
                s.zero_bytes,
                s.chunks,
                s.new_chunks,
                s.new_bytes,
                s.stored_bytes,
            ] {
                v.put_u64(x);
            }
        }
        v
    }

    /// Decodes a point's plaintext, refusing what spec/FORMAT.md §10
    /// forbids: strings and lists over their bounds, nanoseconds out of
    /// range, invalid or duplicate disk names, trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = ByteReader::new(bytes, "recovery point");
        let time_secs = r.i64()?;
        let time_nanos = r.u32()?;
        if time_nanos >= 1_000_000_000 {
            return Err(r.invalid("nanoseconds out of range"));
        }
        let duration_millis = r.u64()?;
        let host = r.string(MAX_STRING)?;
        let source = r.string(MAX_STRING)?;
        let nt = r.count_u16(MAX_TAGS, 2)?;
        let mut tags = Vec::with_capacity(nt);
        for _ in 0..nt {
            tags.push(r.string(MAX_STRING)?);
        }
        let nd = r.count_u16(MAX_DISKS, 2 + 8 + 64 + 48)?;
        let mut disks = Vec::with_capacity(nd);
        for _ in 0..nd {
            let name = r.string(MAX_STRING)?;
            let size = r.u64()?;
            let manifest_root = ChunkId(r.array()?);
            let image_hash = r.array()?;
            let stats = DiskStats {
                bytes_read: r.u64()?,
                zero_bytes: r.u64()?,
                chunks: r.u64()?,
                new_chunks: r.u64()?,
                new_bytes: r.u64()?,
                stored_bytes: r.u64()?,
            };
            disks.push(DiskRecord {
                name,
                size,
                manifest_root,
                image_hash,
                stats,
            });
        }
        r.finish()?;
        check_disk_names(&disks)?;
        Ok(PointBody {
            time_secs,
            time_nanos,
            duration_millis,
            host,
            source,
            tags,
            disks,
        })
    }
}

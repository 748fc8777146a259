//! Recovery points (`points/<id>`): object header, then a sealed blob whose
//! plaintext is the [`PointBody`] encoding documented in `spec/FORMAT.md`.

use super::bytes::{ByteReader, PutBytes};
use super::{ChunkId, FormatError, PointId};

/// Bounds on strings and lists in a point.
pub const MAX_STRING: usize = 1024;
/// Most tags a point may carry.
pub const MAX_TAGS: usize = 256;
/// Most disks a point may hold.
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
    /// The disk's name, e.g. `sda`; unique within the point.
    pub name: String,
    /// The disk's size in bytes.
    pub size: u64,
    /// Root node of the manifest tree.
    pub manifest_root: ChunkId,
    /// Plain BLAKE3 of the whole image (what `b3sum` prints).
    #[serde(rename = "image_blake3", serialize_with = "hex_bytes")]
    pub image_hash: [u8; 32],
    /// Figures on how the disk was stored: bytes read, zero bytes, chunks,
    /// new chunks.
    #[serde(flatten)]
    pub stats: DiskStats,
    /// Where the disk's bytes came from (spec/FORMAT.md §10.2); a point
    /// without the origins extension read every disk from a file or device.
    pub origin: DiskOrigin,
}

/// How a disk's image reached the backup (spec/FORMAT.md §10.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SourceKind {
    /// A file or block device, read where it has data.
    #[default]
    File,
    /// A stream (standard input): read once, in order, size unknown ahead.
    Stream,
    /// Only the ranges reported changed since a parent point (by a
    /// changed-block list or a dirty bitmap) were read; everything else was
    /// taken from the parent.
    ChangedBlocks,
    /// An NBD export (a live VM's disk), read where its block status
    /// reported data.
    Nbd,
    /// A source of the program that embeds diskvault (its own
    /// [`crate::DiskSource`]).
    Custom,
    /// A value this reader does not know (written by a newer writer).
    Other(u8),
}

impl SourceKind {
    fn code(self) -> u8 {
        match self {
            SourceKind::File => 0,
            SourceKind::Stream => 1,
            SourceKind::ChangedBlocks => 2,
            SourceKind::Nbd => 3,
            SourceKind::Custom => 4,
            SourceKind::Other(v) => v,
        }
    }

    fn from_code(v: u8) -> Self {
        match v {
            0 => SourceKind::File,
            1 => SourceKind::Stream,
            2 => SourceKind::ChangedBlocks,
            3 => SourceKind::Nbd,
            4 => SourceKind::Custom,
            v => SourceKind::Other(v),
        }
    }

    /// The name `show` and `--json` use.
    pub fn name(self) -> String {
        match self {
            SourceKind::File => "file".into(),
            SourceKind::Stream => "stream".into(),
            SourceKind::ChangedBlocks => "changed-blocks".into(),
            SourceKind::Nbd => "nbd".into(),
            SourceKind::Custom => "custom".into(),
            SourceKind::Other(v) => format!("unknown-{v}"),
        }
    }
}

/// Where one disk's bytes came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskOrigin {
    /// Whether the disk was read from a file or device, a stream, or only
    /// its changed blocks.
    pub kind: SourceKind,
    /// The point whose manifest supplied the ranges that were not read.
    pub parent: Option<PointId>,
    /// Image bytes taken from the parent point without reading the source.
    pub bytes_from_parent: u64,
}

/// Whether a point's images are consistent for the applications on the
/// disks, or only as after a power cut (spec/FORMAT.md §10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsistencyLevel {
    /// As if the machine lost power at the instant of the read: file
    /// systems recover by their journal, applications by their own logs.
    Crash,
    /// The pre-backup script (freeze, quiesce) succeeded before the read
    /// and the post-backup script ran after it.
    Application,
}

impl ConsistencyLevel {
    /// The name `show` and `--json` use.
    pub fn name(self) -> &'static str {
        match self {
            ConsistencyLevel::Crash => "crash",
            ConsistencyLevel::Application => "application",
        }
    }
}

/// A point's consistency and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Consistency {
    /// Crash- or application-consistent.
    pub level: ConsistencyLevel,
    /// What the consistency scripts did, in words (at most
    /// [`MAX_STRING`] bytes).
    pub reason: String,
}

impl serde::Serialize for SourceKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl serde::Serialize for ConsistencyLevel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Extension tags of a point (spec/FORMAT.md §10.2).
const EXT_CONSISTENCY: u16 = 1;
const EXT_ORIGINS: u16 = 2;
/// Bounds on a point's extensions.
pub const MAX_EXTENSIONS: usize = 64;
/// Most bytes of all extensions of a point together.
pub const MAX_EXTENSION_BYTES: usize = 1 << 16;

/// The plaintext of a recovery point.
///
/// Serialised (for reports) with `time` for `time_secs` and the duration as
/// `duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PointBody {
    /// Unix time of the backup's start.
    #[serde(rename = "time")]
    pub time_secs: i64,
    /// Nanoseconds past `time_secs` (less than 10^9).
    pub time_nanos: u32,
    /// How long the backup took, in milliseconds.
    #[serde(rename = "duration_seconds", serialize_with = "millis_as_seconds")]
    pub duration_millis: u64,
    /// Host name of the machine backed up.
    pub host: String,
    /// Free-text description of where the disks came from.
    pub source: String,
    /// Labels given at backup time, for selecting points.
    pub tags: Vec<String>,
    /// One record per disk, in the order backed up.
    pub disks: Vec<DiskRecord>,
    /// Recorded when the backup ran consistency scripts; `None` for a
    /// point without the consistency extension (taken without scripts:
    /// crash-consistent at best).
    pub consistency: Option<Consistency>,
    /// Extensions this reader does not know, by tag, kept so the point
    /// encodes back to the same bytes.
    #[serde(skip)]
    pub unknown_extensions: Vec<(u16, Vec<u8>)>,
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
        if let Some(c) = &self.consistency {
            check_len("consistency reason", &c.reason)?;
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
        self.encode_extensions(&mut v);
        v
    }

    /// Appends the extensions (§10.2), only those with something to say,
    /// so a point like those of earlier versions stays byte-compatible
    /// with their readers.
    fn encode_extensions(&self, v: &mut Vec<u8>) {
        let mut exts: Vec<(u16, Vec<u8>)> = Vec::new();
        if let Some(c) = &self.consistency {
            let mut e = Vec::new();
            e.put_u8(match c.level {
                ConsistencyLevel::Crash => 0,
                ConsistencyLevel::Application => 1,
            });
            e.put_string(&c.reason);
            exts.push((EXT_CONSISTENCY, e));
        }
        if self.disks.iter().any(|d| d.origin != DiskOrigin::default()) {
            let mut e = Vec::new();
            e.put_u16(self.disks.len() as u16);
            for d in &self.disks {
                let o = &d.origin;
                e.put_u8(o.kind.code());
                e.put_u8(o.parent.is_some() as u8);
                e.extend_from_slice(&o.parent.map(|p| p.0).unwrap_or([0; 32]));
                e.put_u64(o.bytes_from_parent);
            }
            exts.push((EXT_ORIGINS, e));
        }
        exts.extend(self.unknown_extensions.iter().cloned());
        exts.sort_by_key(|(tag, _)| *tag);
        if exts.is_empty() {
            return;
        }
        v.put_u16(exts.len() as u16);
        for (tag, bytes) in exts {
            v.put_u16(tag);
            v.put_u32(bytes.len() as u32);
            v.extend_from_slice(&bytes);
        }
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
                origin: DiskOrigin::default(),
            });
        }
        let (consistency, unknown_extensions) = decode_extensions(&mut r, &mut disks)?;
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
            consistency,
            unknown_extensions,
        })
    }
}

/// What a point's extensions say: its consistency, and the extensions
/// this reader does not know.
type Extensions = (Option<Consistency>, Vec<(u16, Vec<u8>)>);

/// Reads the extensions after the disk records, if any (§10.2): tags in
/// increasing order, each payload bounded and, for a known tag, read to
/// its end; unknown tags are kept as they are.
fn decode_extensions(
    r: &mut ByteReader<'_>,
    disks: &mut [DiskRecord],
) -> Result<Extensions, FormatError> {
    if r.remaining() == 0 {
        return Ok((None, Vec::new()));
    }
    let n = r.count_u16(MAX_EXTENSIONS, 6)?;
    if n == 0 {
        return Err(r.invalid("an empty list of point extensions"));
    }
    let mut consistency = None;
    let mut unknown = Vec::new();
    let mut last_tag = 0u16;
    for _ in 0..n {
        let tag = r.u16()?;
        if tag <= last_tag {
            return Err(r.invalid("point extensions out of order or repeated"));
        }
        last_tag = tag;
        let len = r.u32()? as usize;
        if len > MAX_EXTENSION_BYTES {
            return Err(FormatError::TooLarge {
                what: "point extension",
                value: len as u64,
                max: MAX_EXTENSION_BYTES as u64,
            });
        }
        let payload = r.take(len)?;
        let mut e = ByteReader::new(payload, "point extension");
        match tag {
            EXT_CONSISTENCY => {
                let level = match e.u8()? {
                    0 => ConsistencyLevel::Crash,
                    1 => ConsistencyLevel::Application,
                    _ => return Err(e.invalid("unknown consistency level")),
                };
                let reason = e.string(MAX_STRING)?;
                e.finish()?;
                consistency = Some(Consistency { level, reason });
            }
            EXT_ORIGINS => {
                let count = e.u16()? as usize;
                if count != disks.len() {
                    return Err(e.invalid("disk origins do not match the disks"));
                }
                for d in disks.iter_mut() {
                    let kind = SourceKind::from_code(e.u8()?);
                    let has_parent = match e.u8()? {
                        0 => false,
                        1 => true,
                        _ => return Err(e.invalid("parent flag is not 0 or 1")),
                    };
                    let parent: [u8; 32] = e.array()?;
                    if !has_parent && parent != [0; 32] {
                        return Err(e.invalid("a parent id without its flag"));
                    }
                    let bytes_from_parent = e.u64()?;
                    d.origin = DiskOrigin {
                        kind,
                        parent: has_parent.then_some(PointId(parent)),
                        bytes_from_parent,
                    };
                }
                e.finish()?;
                if disks.iter().all(|d| d.origin == DiskOrigin::default()) {
                    return Err(FormatError::Invalid {
                        what: "point extension",
                        reason: "disk origins that say nothing (every disk a file read whole)"
                            .into(),
                    });
                }
            }
            _ => unknown.push((tag, payload.to_vec())),
        }
    }
    Ok((consistency, unknown))
}

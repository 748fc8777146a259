//! GPT and MBR partition tables: finding the partitions of a disk image,
//! and choosing the one `--part` names.
//!
//! The tables are read with the `gpt` and `mbrman` crates, but every
//! number that decides how much they read or allocate is checked here
//! first: a disk image is untrusted input, and both crates trust it (the
//! `gpt` crate asserts 128-byte entries and allocates the whole entry
//! array a header claims; `mbrman` adds logical partition offsets with
//! unchecked `u32` arithmetic, so its chain walk is done here).

use std::collections::BTreeSet;
use std::ops::Range;

use gpt::disk::LogicalBlockSize;
use gpt::header::{Header, HeaderError};
use mbrman::{MBRHeader, MBRPartitionEntry};

use crate::error::{Error, Result};
use crate::image::{check_bounds, ImageCursor, ImageRead, ImageSlice};

/// Which kind of partition table a disk has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A GUID partition table (with its protective MBR).
    Gpt,
    /// A DOS/MBR table, with logical partitions in an extended one.
    Mbr,
}

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its number as Linux gives it (`sda2` is 2): a GPT entry's index
    /// plus one; MBR primaries 1 to 4, logical partitions from 5.
    pub number: u32,
    /// Offset of its first byte in the disk.
    pub start: u64,
    /// Its length in bytes.
    pub size: u64,
    /// Its GPT name, if it has one (MBR partitions have none).
    pub label: Option<String>,
    /// Its type in words: `Linux filesystem`, `EFI System`,
    /// `NTFS/exFAT (0x07)`.
    pub type_name: String,
    /// Its type as stored: a GPT type GUID, or an MBR type byte as `0x83`.
    pub type_id: String,
    /// A GPT partition's unique GUID.
    pub uuid: Option<String>,
}

impl Partition {
    /// `2 (root)`, or `5` without a label: how messages list it.
    pub fn short_name(&self) -> String {
        match &self.label {
            Some(label) if !label.is_empty() => format!("{} ({label})", self.number),
            _ => self.number.to_string(),
        }
    }
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// GPT or MBR.
    pub kind: TableKind,
    /// The sector size the table was found with (512 or 4096).
    pub sector_size: u32,
    /// Its partitions, by number; empty entries (and an MBR's extended
    /// container) are left out.
    pub partitions: Vec<Partition>,
}

/// The most entries a GPT may claim. The specification's minimum is 128
/// and tools write 128; this leaves room for unusual tables while
/// bounding what a hostile header can make us read (1 MiB of entries).
const MAX_GPT_ENTRIES: u32 = 8192;

/// The most logical partitions followed in an MBR extended partition.
/// Linux stops well below this; a longer chain is damage or a trap.
const MAX_LOGICAL_PARTITIONS: usize = 256;

/// Reads the partition table of `image`: GPT (with 512-byte sectors, then
/// 4096-byte ones), else MBR, else `None` when the disk has no table and
/// is one file system (or nothing diskvault reads).
///
/// A GPT whose primary header or entry array is damaged is read from its
/// backup at the end of the disk. A table that cannot be trusted (both
/// GPT headers damaged, absurd entry counts, partitions past the end of
/// the disk or overlapping) is [`Error::FileSystem`] naming the disk.
pub fn read_partition_table(image: &dyn ImageRead) -> Result<Option<PartitionTable>> {
    let place = || format!("partition table of {}", image.describe());
    let damaged = |reason: String| Error::FileSystem {
        place: place(),
        reason,
    };
    if image.size() < 1024 {
        return Ok(None);
    }
    let mut sector0 = [0u8; 512];
    image.read_exact_at(&mut sector0, 0)?;
    let protective =
        has_boot_signature(&sector0) && mbr_entries(&sector0).iter().any(|e| e.sys == 0xee);

    for sector_size in [512u32, 4096] {
        if let Some(table) = read_gpt(image, sector_size).map_err(damaged)? {
            return Ok(Some(table));
        }
    }
    if protective {
        return Err(damaged(
            "its protective MBR announces a GPT, but neither GPT header (512- or 4096-byte \
             sectors) is there"
                .into(),
        ));
    }
    if !has_boot_signature(&sector0) || is_filesystem_boot_sector(&sector0) {
        return Ok(None);
    }
    read_mbr(image).map_err(damaged)
}

/// True when the 512 bytes end with the 0x55AA boot signature.
fn has_boot_signature(sector: &[u8; 512]) -> bool {
    sector[510] == 0x55 && sector[511] == 0xaa
}

/// NTFS, FAT and exFAT volumes start with a boot sector that ends in
/// 0x55AA too; its bytes where an MBR keeps partitions are boot code.
fn is_filesystem_boot_sector(sector: &[u8; 512]) -> bool {
    &sector[3..11] == b"NTFS    "
        || &sector[3..11] == b"EXFAT   "
        || &sector[54..59] == b"FAT12"
        || &sector[54..59] == b"FAT16"
        || &sector[82..87] == b"FAT32"
}

/// The four primary entries of an MBR sector, decoded by hand: only the
/// type byte, start and length are needed, and this never fails.
fn mbr_entries(sector: &[u8; 512]) -> [MBRPartitionEntry; 4] {
    std::array::from_fn(|i| {
        let e = &sector[446 + 16 * i..446 + 16 * (i + 1)];
        let u32_at = |o: usize| u32::from_le_bytes([e[o], e[o + 1], e[o + 2], e[o + 3]]);
        MBRPartitionEntry {
            sys: e[4],
            starting_lba: u32_at(8),
            sectors: u32_at(12),
            ..MBRPartitionEntry::empty()
        }
    })
}

/// Reads the GPT header at sector `lba`, through the `gpt` crate (which
/// checks its signature and CRC).
fn gpt_header_at(
    image: &dyn ImageRead,
    sector_size: u32,
    lba: u64,
) -> std::result::Result<Header, HeaderError> {
    let ss = u64::from(sector_size);
    // The crate reads "the primary header": sector 1 of what it is given.
    // A two-sector window ending at `lba` makes that any sector.
    let window = lba
        .checked_sub(1)
        .and_then(|first| first.checked_mul(ss))
        .ok_or(HeaderError::Overflow("GPT header position"))?;
    let slice = ImageSlice::new(image, window, 2 * ss, String::new())
        .map_err(|_| HeaderError::InvalidGptSignature)?;
    gpt::header::read_header_from_arbitrary_device(
        &mut ImageCursor::new(slice),
        block_size(sector_size),
    )
}

fn block_size(sector_size: u32) -> LogicalBlockSize {
    if sector_size == 4096 {
        LogicalBlockSize::Lb4096
    } else {
        LogicalBlockSize::Lb512
    }
}

/// Why a header that passed its CRC still cannot be used: the checks the
/// `gpt` crate leaves out, which keep it from panicking or allocating
/// what the header says.
fn header_problem(h: &Header, disk_size: u64, sector_size: u32) -> Option<String> {
    if h.part_size != 128 {
        return Some(format!(
            "its entries are {} bytes each (this build reads 128-byte entries)",
            h.part_size
        ));
    }
    if h.num_parts == 0 || h.num_parts > MAX_GPT_ENTRIES {
        return Some(format!(
            "it claims {} entries (at most {MAX_GPT_ENTRIES} are read)",
            h.num_parts
        ));
    }
    let array_end = h
        .part_start
        .checked_mul(u64::from(sector_size))
        .and_then(|start| start.checked_add(u64::from(h.num_parts) * 128));
    match array_end {
        Some(end) if end <= disk_size => None,
        _ => Some(format!(
            "its entry array (sector {}, {} entries) lies past the end of the disk",
            h.part_start, h.num_parts
        )),
    }
}

/// The GPT of `image` read with `sector_size`-byte sectors, `Ok(None)`
/// when neither header has the GPT signature, `Err(reason)` when the
/// table is there but cannot be trusted.
fn read_gpt(
    image: &dyn ImageRead,
    sector_size: u32,
) -> std::result::Result<Option<PartitionTable>, String> {
    let ss = u64::from(sector_size);
    let size = image.size();
    if size < 3 * ss {
        return Ok(None);
    }
    let last_lba = size / ss - 1;
    let primary = gpt_header_at(image, sector_size, 1);
    let backup = gpt_header_at(image, sector_size, last_lba);
    let absent = |h: &std::result::Result<Header, HeaderError>| {
        matches!(h, Err(HeaderError::InvalidGptSignature))
    };
    if absent(&primary) && absent(&backup) {
        return Ok(None);
    }
    let usable = |h: &std::result::Result<Header, HeaderError>| -> std::result::Result<(), String> {
        match h {
            Ok(h) => header_problem(h, size, sector_size).map_or(Ok(()), Err),
            Err(e) => Err(e.to_string()),
        }
    };
    let primary_ok = usable(&primary);
    let backup_ok = usable(&backup);

    // The crate reads the primary header's table when that header passes
    // its CRC, and does not fall back when the table itself is damaged:
    // to read the backup's, show it a disk whose primary header is gone.
    let mut attempts: Vec<(bool, &str)> = Vec::new();
    if primary_ok.is_ok() {
        attempts.push((false, "primary"));
    }
    if backup_ok.is_ok() {
        attempts.push((true, "backup"));
    }
    let mut failures = Vec::new();
    for (hide_primary, which) in attempts {
        let config = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(block_size(sector_size));
        let opened = if hide_primary {
            let masked = HiddenSector {
                inner: image,
                hidden: ss..2 * ss,
            };
            config
                .open_from_device(ImageCursor::new(masked))
                .map(|disk| disk.partitions().clone())
        } else {
            config
                .open_from_device(ImageCursor::new(image))
                .map(|disk| disk.partitions().clone())
        };
        match opened {
            Ok(entries) => {
                let partitions = gpt_partitions(&entries, size, ss)?;
                return Ok(Some(PartitionTable {
                    kind: TableKind::Gpt,
                    sector_size,
                    partitions,
                }));
            }
            Err(e) => failures.push(format!("{which} GPT: {e}")),
        }
    }
    if let Err(e) = primary_ok {
        failures.insert(0, format!("primary GPT header: {e}"));
    }
    if let Err(e) = backup_ok {
        failures.push(format!("backup GPT header: {e}"));
    }
    Err(format!(
        "neither GPT copy can be used ({})",
        failures.join("; ")
    ))
}

/// Turns the crate's entries into [`Partition`]s, refusing entries that
/// end before they start, lie past the end of the disk or overlap.
fn gpt_partitions(
    entries: &std::collections::BTreeMap<u32, gpt::partition::Partition>,
    disk_size: u64,
    ss: u64,
) -> std::result::Result<Vec<Partition>, String> {
    let mut partitions = Vec::new();
    for (&number, entry) in entries {
        if entry.part_type_guid == gpt::partition_types::UNUSED {
            continue;
        }
        if entry.last_lba < entry.first_lba {
            return Err(format!(
                "partition {number} ends (sector {}) before it starts (sector {})",
                entry.last_lba, entry.first_lba
            ));
        }
        let range = entry.first_lba.checked_mul(ss).zip(
            entry
                .last_lba
                .checked_add(1)
                .and_then(|end| end.checked_mul(ss)),
        );
        let (start, end) = match range {
            Some((start, end)) if end <= disk_size => (start, end),
            _ => {
                return Err(format!(
                    "partition {number} (sectors {}..={}) lies past the end of the disk ({disk_size} bytes)",
                    entry.first_lba, entry.last_lba
                ))
            }
        };
        let guid = entry.part_type_guid.guid.to_string().to_uppercase();
        partitions.push(Partition {
            number,
            start,
            size: end - start,
            label: Some(entry.name.clone()).filter(|n| !n.is_empty()),
            type_name: gpt_type_name(&guid).to_string(),
            type_id: guid,
            uuid: Some(entry.part_guid.to_string().to_uppercase()),
        });
    }
    check_overlaps(&partitions)?;
    Ok(partitions)
}

/// Refuses partitions that share bytes: reading one would read another.
fn check_overlaps(partitions: &[Partition]) -> std::result::Result<(), String> {
    let mut by_start: Vec<&Partition> = partitions.iter().collect();
    by_start.sort_by_key(|p| p.start);
    for pair in by_start.windows(2) {
        if pair[0].start + pair[0].size > pair[1].start {
            return Err(format!(
                "partitions {} and {} overlap",
                pair[0].number, pair[1].number
            ));
        }
    }
    Ok(())
}

/// The common GPT partition types, named as `fdisk` users know them.
fn gpt_type_name(guid: &str) -> &'static str {
    match guid {
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" => "Linux root (ARM-64)",
        "44479540-F297-41B2-9AF7-D131D5F0458A" => "Linux root (x86)",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux home",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "CA7D7CCB-63ED-4C53-861C-1742536059CC" => "Linux LUKS",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "Windows recovery environment",
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3" => "Microsoft LDM metadata",
        "AF9B60A0-1431-4F62-BC68-3311714A69AD" => "Microsoft LDM data",
        "48465300-0000-11AA-AA11-00306543ECAC" => "Apple HFS+",
        "7C3457EF-0000-11AA-AA11-00306543ECAC" => "Apple APFS",
        _ => "unknown type",
    }
}

/// The common MBR partition types.
fn mbr_type_name(sys: u8) -> String {
    let name = match sys {
        0x01 => "FAT12",
        0x04 | 0x06 | 0x0e => "FAT16",
        0x07 => "NTFS/exFAT",
        0x0b | 0x0c => "FAT32",
        0x27 => "Windows recovery",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xee => "GPT protective",
        0xef => "EFI System",
        0xfd => "Linux RAID",
        _ => "unknown type",
    };
    format!("{name} ({sys:#04x})")
}

/// The MBR of `image`, with the logical partitions of its extended one.
/// `Ok(None)` when the sector is not a partition table after all (no
/// used entry, or boot flags other than 0x00/0x80: boot code).
fn read_mbr(image: &dyn ImageRead) -> std::result::Result<Option<PartitionTable>, String> {
    const SS: u64 = 512;
    let header = match MBRHeader::read_from(&mut ImageCursor::new(image)) {
        Ok(header) => header,
        Err(_) => return Ok(None),
    };
    let size = image.size();
    let mut partitions = Vec::new();
    let mut extended = None;
    for (i, entry) in header.iter() {
        if entry.is_unused() {
            continue;
        }
        // The loop index is 1..=4.
        let number = i as u32;
        if entry.is_extended() {
            if extended.is_some() {
                return Err("it has more than one extended partition".into());
            }
            extended = Some(sector_range(entry, 0, size, number)?);
            continue;
        }
        partitions.push(mbr_partition(
            number,
            entry,
            sector_range(entry, 0, size, number)?,
        ));
    }
    if let Some(container) = &extended {
        read_logical_partitions(image, container, &mut partitions)?;
    }
    if partitions.is_empty() && extended.is_none() {
        return Ok(None);
    }
    check_overlaps(&partitions)?;
    Ok(Some(PartitionTable {
        kind: TableKind::Mbr,
        sector_size: SS as u32,
        partitions,
    }))
}

/// The bytes an MBR entry covers, its start counted from sector `base`;
/// refused when they leave the disk.
fn sector_range(
    entry: &MBRPartitionEntry,
    base: u64,
    disk_size: u64,
    number: u32,
) -> std::result::Result<Range<u64>, String> {
    let first = base + u64::from(entry.starting_lba);
    let start = first * 512;
    let end = start + u64::from(entry.sectors) * 512;
    if entry.sectors == 0 || end > disk_size {
        return Err(format!(
            "partition {number} (sector {first}, {} sectors) lies past the end of the disk ({disk_size} bytes)",
            entry.sectors
        ));
    }
    Ok(start..end)
}

fn mbr_partition(number: u32, entry: &MBRPartitionEntry, bytes: Range<u64>) -> Partition {
    Partition {
        number,
        start: bytes.start,
        size: bytes.end - bytes.start,
        label: None,
        type_name: mbr_type_name(entry.sys),
        type_id: format!("{:#04x}", entry.sys),
        uuid: None,
    }
}

/// Follows the chain of extended boot records in `container`. Each EBR
/// has the layout of an MBR: its first entry is a logical partition
/// (counted from the EBR), its second the next EBR (counted from the
/// container's start). The chain is bounded in length and must stay
/// inside the container and never revisit an EBR.
fn read_logical_partitions(
    image: &dyn ImageRead,
    container: &Range<u64>,
    partitions: &mut Vec<Partition>,
) -> std::result::Result<(), String> {
    let container_lba = container.start / 512;
    let mut next_ebr = 0u64;
    let mut seen = BTreeSet::new();
    loop {
        let ebr_start = container.start + next_ebr * 512;
        if ebr_start + 512 > container.end {
            return Err(format!(
                "an extended boot record (sector {}) lies outside the extended partition",
                container_lba + next_ebr
            ));
        }
        if !seen.insert(next_ebr) {
            return Err("the extended boot records form a loop".into());
        }
        let number = 5 + partitions_logical(partitions) as u32;
        if number as usize - 5 >= MAX_LOGICAL_PARTITIONS {
            return Err(format!(
                "the extended partition holds more than {MAX_LOGICAL_PARTITIONS} logical partitions"
            ));
        }
        let window =
            ImageSlice::new(image, ebr_start, 512, String::new()).map_err(|e| e.to_string())?;
        let ebr = match MBRHeader::read_from(&mut ImageCursor::new(window)) {
            Ok(ebr) => ebr,
            // An empty extended partition need not hold an EBR at all.
            Err(_) if next_ebr == 0 => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "the extended boot record at sector {} is damaged: {e}",
                    container_lba + next_ebr
                ))
            }
        };
        let logical = &ebr.partition_1;
        if logical.is_used() {
            let bytes = sector_range(logical, container_lba + next_ebr, image.size(), number)?;
            if bytes.start < container.start || bytes.end > container.end {
                return Err(format!(
                    "logical partition {number} lies outside its extended partition"
                ));
            }
            partitions.push(mbr_partition(number, logical, bytes));
        }
        let link = &ebr.partition_2;
        if link.is_unused() || link.starting_lba == 0 {
            return Ok(());
        }
        next_ebr = u64::from(link.starting_lba);
    }
}

fn partitions_logical(partitions: &[Partition]) -> usize {
    partitions.iter().filter(|p| p.number >= 5).count()
}

/// An image with one byte range reading as zeros: how the backup GPT is
/// read when the primary header is trusted but its table is damaged.
struct HiddenSector<'a> {
    inner: &'a dyn ImageRead,
    hidden: Range<u64>,
}

impl ImageRead for HiddenSector<'_> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_bounds(&|| self.describe(), offset, buf.len(), self.size())?;
        self.inner.read_exact_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        let from = self.hidden.start.max(offset);
        let to = self.hidden.end.min(end);
        if from < to {
            buf[(from - offset) as usize..(to - offset) as usize].fill(0);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// The image `select_partition` chose, and the partition it is, if any.
pub struct Selected<I> {
    /// The partition's bytes (or the whole disk's) as an image, named in
    /// messages as e.g. `partition 2 (root) of disk 'root' in point 1a2b3c4d`.
    pub image: ImageSlice<I>,
    /// The partition chosen; `None` when the whole disk is the file system.
    pub partition: Option<Partition>,
}

/// Chooses the part of `image` that holds the file system to browse.
///
/// - `part` is a partition number (`2`, as Linux numbers them) or a GPT
///   label (`root`, exact match). A label made only of digits cannot be
///   chosen by name: the number wins.
/// - Without `part`: a disk with no partition table is one file system;
///   a disk with a table gives its one partition holding a file system
///   diskvault reads (ext2/3/4, NTFS, told by magic numbers), and with
///   several (or none) is [`Error::InvalidArgument`] listing them.
/// - An unknown number or label is [`Error::UnknownPartition`].
pub fn select_partition<I: ImageRead>(image: I, part: Option<&str>) -> Result<Selected<I>> {
    let disk = image.describe();
    let table = read_partition_table(&image)?;
    let chosen = match (table, part) {
        (None, None) => {
            let size = image.size();
            return Ok(Selected {
                image: ImageSlice::new(image, 0, size, disk)?,
                partition: None,
            });
        }
        (None, Some(part)) => {
            return Err(Error::UnknownPartition {
                disk,
                part: part.to_string(),
                available: "none (the disk has no partition table; leave out --part)".into(),
            })
        }
        (Some(table), Some(part)) => {
            let found = match part.parse::<u32>() {
                Ok(number) if part.bytes().all(|b| b.is_ascii_digit()) => {
                    table.partitions.iter().find(|p| p.number == number)
                }
                _ => table
                    .partitions
                    .iter()
                    .find(|p| p.label.as_deref() == Some(part)),
            };
            match found {
                Some(p) => p.clone(),
                None => {
                    return Err(Error::UnknownPartition {
                        disk,
                        part: part.to_string(),
                        available: list_partitions(&table.partitions),
                    })
                }
            }
        }
        (Some(table), None) => {
            let mut readable = Vec::new();
            for p in &table.partitions {
                let slice = ImageSlice::new(&image, p.start, p.size, String::new())?;
                if crate::fs::readable_filesystem(&slice).is_some() {
                    readable.push(p);
                }
            }
            match readable.as_slice() {
                [only] => (*only).clone(),
                _ => {
                    let why = if readable.is_empty() {
                        "none of its partitions holds a file system diskvault reads (ext2/3/4, NTFS)"
                            .to_string()
                    } else {
                        format!("{} of its partitions hold file systems", readable.len())
                    };
                    return Err(Error::InvalidArgument(format!(
                        "{disk} has a {} partition table and {why}; choose one with --part NUMBER or --part LABEL: {}",
                        match table.kind {
                            TableKind::Gpt => "GPT",
                            TableKind::Mbr => "MBR",
                        },
                        describe_partitions(&table.partitions)
                    )));
                }
            }
        }
    };
    let name = match &chosen.label {
        Some(label) => format!("partition {} ({label}) of {disk}", chosen.number),
        None => format!("partition {} of {disk}", chosen.number),
    };
    Ok(Selected {
        image: ImageSlice::new(image, chosen.start, chosen.size, name)?,
        partition: Some(chosen),
    })
}

/// `1 (efi), 2 (root)`: the list error messages give.
fn list_partitions(partitions: &[Partition]) -> String {
    if partitions.is_empty() {
        return "none".into();
    }
    partitions
        .iter()
        .map(Partition::short_name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1 (efi): EFI System, 512 MiB; 2 (root): Linux filesystem, 20 GiB`.
fn describe_partitions(partitions: &[Partition]) -> String {
    partitions
        .iter()
        .map(|p| format!("{}: {}, {}", p.short_name(), p.type_name, size_text(p.size)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `512 MiB`, `20.0 GiB`: a size for a message (binary units).
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests;

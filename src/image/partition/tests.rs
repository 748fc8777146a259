use std::os::unix::fs::FileExt;
use std::path::Path;

use super::*;
use crate::fs::open_filesystem;
use crate::fs::test_images::*;
use crate::image::FileImage;

fn image(path: &Path) -> FileImage {
    FileImage::open(path).unwrap()
}

fn hostname_in(selected: Selected<FileImage>) -> Vec<u8> {
    let fs = open_filesystem(Box::new(selected.image)).unwrap();
    let mut out = Vec::new();
    fs.copy_file("/etc/hostname", &mut out).unwrap();
    out
}

#[test]
fn a_gpt_disk_lists_its_two_partitions_with_starts_sizes_and_labels() {
    if !tools_available(&["mke2fs", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, _) = make_gpt_disk(dir.path());
    let table = read_partition_table(&image(&disk)).unwrap().unwrap();
    assert_eq!(table.kind, TableKind::Gpt);
    assert_eq!(table.sector_size, 512);
    let summary: Vec<_> = table
        .partitions
        .iter()
        .map(|p| {
            (
                p.number,
                p.start,
                p.size,
                p.label.as_deref(),
                p.type_name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                1,
                GPT_STARTS[0] * 512,
                PART_BYTES,
                Some("alpha"),
                "Linux filesystem"
            ),
            (
                2,
                GPT_STARTS[1] * 512,
                PART_BYTES,
                Some("beta"),
                "Linux filesystem"
            ),
        ]
    );
    assert_eq!(
        table.partitions[0].type_id,
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    );
    assert!(table.partitions[0].uuid.is_some());
}

#[test]
fn a_partition_is_chosen_by_number_or_by_label_and_an_unknown_one_is_named() {
    if !tools_available(&["mke2fs", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, _) = make_gpt_disk(dir.path());

    let by_number = select_partition(image(&disk), Some("2")).unwrap();
    let name = by_number.image.describe();
    assert!(name.starts_with("partition 2 (beta) of "), "{name}");
    assert!(name.contains("gpt-disk.img"), "{name}");
    assert_eq!(hostname_in(by_number), b"beta\n");

    let by_label = select_partition(image(&disk), Some("alpha")).unwrap();
    assert_eq!(by_label.partition.as_ref().unwrap().number, 1);
    assert_eq!(hostname_in(by_label), b"alpha\n");

    let err = select_partition(image(&disk), Some("gamma")).err().unwrap();
    assert!(matches!(err, Error::UnknownPartition { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("'gamma'") && msg.contains("1 (alpha), 2 (beta)"),
        "{msg}"
    );
    let err = select_partition(image(&disk), Some("7")).err().unwrap();
    assert!(matches!(err, Error::UnknownPartition { .. }), "{err}");
}

#[test]
fn without_part_a_disk_with_two_file_systems_asks_for_one() {
    if !tools_available(&["mke2fs", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, _) = make_gpt_disk(dir.path());
    let err = select_partition(image(&disk), None).err().unwrap();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let msg = err.to_string();
    for needle in ["--part", "1 (alpha): Linux filesystem, 16 MiB", "2 (beta)"] {
        assert!(msg.contains(needle), "{needle} not in: {msg}");
    }
    // The whole disk given as a file system says what it found.
    let err = open_filesystem(Box::new(image(&disk))).err().unwrap();
    assert!(matches!(err, Error::NoFileSystem { .. }), "{err}");
    assert!(
        err.to_string().contains("choose a partition with --part"),
        "{err}"
    );
}

#[test]
fn with_one_file_system_among_partitions_no_part_is_needed() {
    if !tools_available(&["mke2fs", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, _) = make_gpt_disk(dir.path());
    // Partition 1 becomes swap-like noise: only partition 2 is a file system.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&vec![0u8; 4096], GPT_STARTS[0] * 512)
        .unwrap();
    let chosen = select_partition(image(&disk), None).unwrap();
    assert_eq!(chosen.partition.as_ref().unwrap().number, 2);
    assert_eq!(hostname_in(chosen), b"beta\n");
}

#[test]
fn an_mbr_disk_numbers_a_logical_partition_5_and_reads_the_ext4_inside() {
    if !tools_available(&["mke2fs", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("mbr.img");
    let script = format!(
        "label: dos\n\
         start=2048, size={PART_SECTORS}, type=83\n\
         start={}, size={}, type=5\n\
         start={}, size={PART_SECTORS}, type=83\n",
        2048 + PART_SECTORS,
        PART_SECTORS + 4096,
        2048 + PART_SECTORS + 2048,
    );
    make_disk(
        &disk,
        (2048 + 2 * PART_SECTORS + 4096 + 2048) * 512,
        &script,
    );
    let (first, _) = make_ext4(dir.path(), "primary");
    let (logical, _) = make_ext4(dir.path(), "logical");
    place(&disk, &first, 2048);
    place(&disk, &logical, 2048 + PART_SECTORS + 2048);

    let table = read_partition_table(&image(&disk)).unwrap().unwrap();
    assert_eq!(table.kind, TableKind::Mbr);
    let summary: Vec<_> = table
        .partitions
        .iter()
        .map(|p| (p.number, p.start / 512, p.size, p.type_name.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 2048, PART_BYTES, "Linux (0x83)"),
            (5, 2048 + PART_SECTORS + 2048, PART_BYTES, "Linux (0x83)"),
        ]
    );
    let chosen = select_partition(image(&disk), Some("5")).unwrap();
    assert_eq!(
        chosen.image.describe(),
        format!("partition 5 of {}", disk.display())
    );
    assert_eq!(hostname_in(chosen), b"logical\n");
}

#[test]
fn a_bare_ext4_image_is_one_file_system() {
    if !tools_available(&["mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = make_ext4(dir.path(), "bare");
    assert_eq!(read_partition_table(&image(&img)).unwrap(), None);
    let chosen = select_partition(image(&img), None).unwrap();
    assert!(chosen.partition.is_none());
    assert_eq!(chosen.image.size(), PART_BYTES);
    assert_eq!(hostname_in(chosen), b"bare\n");
    let err = select_partition(image(&img), Some("1")).err().unwrap();
    assert!(err.to_string().contains("no partition table"), "{err}");
}

#[test]
fn zeros_and_noise_are_no_file_system_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let zeros = dir.path().join("zeros.img");
    std::fs::File::create(&zeros)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    assert_eq!(read_partition_table(&image(&zeros)).unwrap(), None);
    let err = open_filesystem(Box::new(image(&zeros))).err().unwrap();
    assert!(matches!(err, Error::NoFileSystem { .. }), "{err}");
    assert!(err.to_string().contains("only zeros"), "{err}");

    let noise_img = dir.path().join("noise.img");
    let mut bytes = noise(3, 4 << 20);
    bytes[510] = 0; // no accidental boot signature
    std::fs::write(&noise_img, bytes).unwrap();
    assert_eq!(read_partition_table(&image(&noise_img)).unwrap(), None);
    let err = open_filesystem(Box::new(image(&noise_img))).err().unwrap();
    assert!(
        err.to_string().contains("no signature diskvault knows"),
        "{err}"
    );
}

// --- Damaged and hostile tables -------------------------------------------

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Rewrites the primary GPT header (and, if `entries` is given, its first
/// entry array sector) with correct CRCs, as a hostile image would.
fn rewrite_primary(disk: &Path, edit: impl Fn(&mut [u8; 92], &mut Vec<u8>)) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let mut header = [0u8; 92];
    f.read_exact_at(&mut header, 512).unwrap();
    let mut array = vec![0u8; 128 * 128];
    f.read_exact_at(&mut array, 1024).unwrap();
    edit(&mut header, &mut array);
    f.write_all_at(&array, 1024).unwrap();
    let count = u32::from_le_bytes(header[80..84].try_into().unwrap()) as usize;
    let size = u32::from_le_bytes(header[84..88].try_into().unwrap()) as usize;
    if count * size <= array.len() {
        header[88..92].copy_from_slice(&crc32(&array[..count * size]).to_le_bytes());
    }
    header[16..20].fill(0);
    let crc = crc32(&header);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&header, 512).unwrap();
}

fn break_backup(disk: &Path) {
    let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(b"XXXXXXXX", len - 512).unwrap();
}

fn table_error(disk: &Path) -> String {
    match read_partition_table(&image(disk)) {
        Err(e @ Error::FileSystem { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("partition table of"), "{msg}");
            assert!(msg.contains(&disk.display().to_string()), "{msg}");
            msg
        }
        other => panic!("expected a damaged-table error, got {other:?}"),
    }
}

#[test]
fn a_damaged_primary_gpt_is_read_from_its_backup() {
    if !tools_available(&["mke2fs", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, _) = make_gpt_disk(dir.path());
    let good = read_partition_table(&image(&disk)).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();

    // The primary entry array damaged, its header intact (CRC mismatch).
    f.write_all_at(b"garbage!", 1024 + 40).unwrap();
    assert_eq!(read_partition_table(&image(&disk)).unwrap(), good);

    // The primary header itself damaged too.
    f.write_all_at(b"garbage!", 512 + 24).unwrap();
    assert_eq!(read_partition_table(&image(&disk)).unwrap(), good);

    // And the backup header: nothing left to trust.
    break_backup(&disk);
    let msg = table_error(&disk);
    assert!(msg.contains("neither GPT copy can be used"), "{msg}");
}

#[test]
fn hostile_gpt_headers_are_refused_without_panic_or_huge_allocation() {
    if !tools_available(&["mke2fs", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, _) = make_gpt_disk(dir.path());
    let pristine = std::fs::read(&disk).unwrap();
    type Edit = fn(&mut [u8; 92], &mut Vec<u8>);
    let cases: [(&str, Edit, &str); 5] = [
        (
            "2^32-1 entries",
            |h, _| h[80..84].copy_from_slice(&u32::MAX.to_le_bytes()),
            "claims 4294967295 entries",
        ),
        (
            "256-byte entries (the crate asserts 128)",
            |h, _| h[84..88].copy_from_slice(&256u32.to_le_bytes()),
            "256 bytes each",
        ),
        (
            "entry array far past the end",
            |h, _| h[72..80].copy_from_slice(&(u64::MAX / 2).to_le_bytes()),
            "past the end of the disk",
        ),
        (
            "a partition past the end of the disk",
            |_, a| a[40..48].copy_from_slice(&(1u64 << 40).to_le_bytes()),
            "partition 1 (sectors 2048..=1099511627776) lies past the end",
        ),
        (
            "overlapping partitions",
            |_, a| a[128 + 32..128 + 40].copy_from_slice(&4096u64.to_le_bytes()),
            "partitions 1 and 2 overlap",
        ),
    ];
    for (what, edit, expected) in cases {
        std::fs::write(&disk, &pristine).unwrap();
        rewrite_primary(&disk, edit);
        break_backup(&disk);
        let msg = table_error(&disk);
        assert!(msg.contains(expected), "{what}: {msg}");
    }
}

#[test]
fn a_truncated_gpt_disk_is_refused_by_name() {
    if !tools_available(&["mke2fs", "sfdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (disk, _) = make_gpt_disk(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.set_len(20 << 20).unwrap();
    let msg = table_error(&disk);
    assert!(
        msg.contains("partition 2") && msg.contains("past the end"),
        "{msg}"
    );
}

#[test]
fn a_looping_or_escaping_ebr_chain_is_refused() {
    // A hand-made MBR: an extended partition whose EBR points at itself.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("ebr-loop.img");
    let mut bytes = vec![0u8; 4 << 20];
    let entry = |b: &mut Vec<u8>, at: usize, sys: u8, start: u32, sectors: u32| {
        b[at + 4] = sys;
        b[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
        b[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
    };
    entry(&mut bytes, 446, 0x05, 2048, 4096);
    bytes[510] = 0x55;
    bytes[511] = 0xaa;
    let ebr = 2048 * 512;
    entry(&mut bytes, ebr + 446, 0x83, 2048, 1024);
    // The next EBR is 0 sectors after the container start: itself? No: 0
    // ends the chain, so point at sector 1, whose link points back to 1.
    entry(&mut bytes, ebr + 446 + 16, 0x05, 1, 1);
    let ebr1 = ebr + 512;
    entry(&mut bytes, ebr1 + 446 + 16, 0x05, 1, 1);
    for at in [ebr, ebr1] {
        bytes[at + 510] = 0x55;
        bytes[at + 511] = 0xaa;
    }
    std::fs::write(&disk, &bytes).unwrap();
    let msg = table_error(&disk);
    assert!(msg.contains("loop"), "{msg}");

    // A logical partition whose start overflows 32 bits once added to its
    // EBR's position (mbrman's own walk would overflow here).
    entry(&mut bytes, ebr + 446, 0x83, u32::MAX, 1024);
    entry(&mut bytes, ebr + 446 + 16, 0, 0, 0);
    std::fs::write(&disk, &bytes).unwrap();
    let msg = table_error(&disk);
    assert!(msg.contains("past the end"), "{msg}");
}

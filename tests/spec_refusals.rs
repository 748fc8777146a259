//! What spec/FORMAT.md says readers refuse, one table per object. Each row
//! changes a valid encoding in one way the spec forbids (or allows) and
//! says what a reader must do with it; the valid encoding itself must be
//! accepted, so every refusal is caused by the change alone.

use diskvault::crypto::Sealer;
use diskvault::format::blob::BlobHeader;
use diskvault::format::config::CompressionSetting;
use diskvault::format::zstd_frame::check_frame;

// ---- zstd bodies (§2.3) -------------------------------------------------------

const CONTENT: &[u8] = b"diskvault keeps disk images; diskvault keeps them small. ";

/// A raw-block frame written by hand: magic, `header` (descriptor and the
/// fields it announces), then `blocks` (block header and content each).
fn frame(header: &[u8], blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    f.extend_from_slice(header);
    for b in blocks {
        f.extend_from_slice(b);
    }
    f
}

/// A block of `block_type` carrying `content` (one byte for RLE, repeated
/// `size` times).
fn block(last: bool, block_type: u32, size: usize, content: &[u8]) -> Vec<u8> {
    let h = ((size as u32) << 3) | (block_type << 1) | last as u32;
    [&h.to_le_bytes()[..3], content].concat()
}

fn raw_block(content: &[u8]) -> Vec<u8> {
    block(true, 0, content.len(), content)
}

/// Single segment, 1-byte content size (for contents under 256 bytes).
fn single_segment_header(size: usize) -> Vec<u8> {
    vec![0x20, size as u8]
}

/// Opens `body` as the zstd body of an unencrypted blob declaring `plain`
/// bytes of plaintext: the path every reader of every blob takes.
fn open_zstd(body: &[u8], plain: usize) -> Result<Vec<u8>, String> {
    let mut blob = vec![1u8, 0, 0, 0];
    blob.extend((plain as u32).to_le_bytes());
    blob.extend_from_slice(body);
    Sealer::plain()
        .open(&blob, b"ctx", 1 << 20)
        .map_err(|e| e.to_string())
}

fn compressed_with(configure: impl FnOnce(&mut zstd::bulk::Compressor<'static>)) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    configure(&mut c);
    c.compress(&CONTENT.repeat(4)).unwrap()
}

#[test]
fn a_compressed_body_is_exactly_one_zstd_frame_of_p_bytes() {
    let n = CONTENT.len();
    let valid = frame(&single_segment_header(n), &[raw_block(CONTENT)]);
    assert_eq!(open_zstd(&valid, n).as_deref(), Ok(CONTENT));

    let library = compressed_with(|_| {});
    let p = 4 * n;
    assert_eq!(open_zstd(&library, p).unwrap(), CONTENT.repeat(4));

    let skippable = |len: u32| {
        let mut f = 0x184D_2A53u32.to_le_bytes().to_vec();
        f.extend(len.to_le_bytes());
        f.extend(vec![0u8; len as usize]);
        f
    };
    let refused: Vec<(&str, Vec<u8>, usize)> = vec![
        ("an empty body", vec![], 0),
        ("the magic alone", valid[..4].to_vec(), n),
        ("a truncated block", valid[..valid.len() - 1].to_vec(), n),
        ("one trailing zero byte", [&valid[..], &[0]].concat(), n),
        ("four trailing bytes", [&valid[..], b"junk"].concat(), n),
        (
            "a second frame (together P bytes)",
            [&valid[..], &valid[..]].concat(),
            2 * n,
        ),
        (
            "a skippable frame before",
            [&skippable(4)[..], &valid[..]].concat(),
            n,
        ),
        (
            "a skippable frame after",
            [&valid[..], &skippable(0)[..]].concat(),
            n,
        ),
        ("a skippable frame alone", skippable(8), 0),
        (
            "a legacy (v0.7) magic",
            {
                let mut f = valid.clone();
                f[..4].copy_from_slice(&0xFD2F_B527u32.to_le_bytes());
                f
            },
            n,
        ),
        (
            "the reserved header bit",
            frame(&[0x28, n as u8], &[raw_block(CONTENT)]),
            n,
        ),
        (
            "a dictionary id (1 byte)",
            frame(&[0x21, 7, n as u8], &[raw_block(CONTENT)]),
            n,
        ),
        (
            "a dictionary id (4 bytes)",
            frame(&[0x23, 0, 0, 0, 1, n as u8], &[raw_block(CONTENT)]),
            n,
        ),
        ("a content size above P", valid.clone(), n - 1),
        ("a content size below P", valid.clone(), n + 1),
        (
            "no content size and less than P",
            frame(&[0x00, 0x00], &[raw_block(CONTENT)]),
            n + 1,
        ),
        (
            "no content size and more than P",
            frame(&[0x00, 0x00], &[raw_block(CONTENT)]),
            n - 1,
        ),
        (
            "the reserved block type",
            frame(&single_segment_header(n), &[block(true, 3, n, CONTENT)]),
            n,
        ),
        (
            "no last block",
            frame(&single_segment_header(n), &[block(false, 0, n, CONTENT)]),
            n,
        ),
        (
            "a checksum that does not match",
            {
                let mut f = compressed_with(|c| {
                    c.include_checksum(true).unwrap();
                });
                *f.last_mut().unwrap() ^= 1;
                f
            },
            p,
        ),
        (
            "a library frame cut short",
            library[..library.len() - 2].to_vec(),
            p,
        ),
    ];
    for (what, body, plain) in &refused {
        assert!(
            open_zstd(body, *plain).is_err(),
            "a body with {what} was opened"
        );
    }

    // What the spec leaves optional.
    let accepted: Vec<(&str, Vec<u8>, usize)> = vec![
        (
            "no content size",
            frame(&[0x00, 0x00], &[raw_block(CONTENT)]),
            n,
        ),
        (
            "a dictionary id field of 0",
            frame(&[0x21, 0, n as u8], &[raw_block(CONTENT)]),
            n,
        ),
        (
            "the unused header bit",
            frame(&[0x30, n as u8], &[raw_block(CONTENT)]),
            n,
        ),
        (
            "two blocks, one of them RLE",
            frame(
                &single_segment_header(n + 5),
                &[block(false, 0, n, CONTENT), block(true, 1, 5, b"!")],
            ),
            n + 5,
        ),
        (
            "a content checksum",
            compressed_with(|c| {
                c.include_checksum(true).unwrap();
            }),
            p,
        ),
        (
            "no content size, from libzstd",
            compressed_with(|c| {
                c.include_contentsize(false).unwrap();
            }),
            p,
        ),
    ];
    for (what, body, plain) in accepted {
        assert!(
            open_zstd(&body, plain).is_ok(),
            "a body with {what} was refused"
        );
    }
    // A 2-byte content size field holds the size minus 256.
    let big = CONTENT.repeat(6);
    let two_byte_size = frame(
        &[
            0x60,
            (big.len() - 256) as u8,
            ((big.len() - 256) >> 8) as u8,
        ],
        &[raw_block(&big)],
    );
    assert_eq!(open_zstd(&two_byte_size, big.len()).unwrap(), big);
}

/// diskvault's writer: the content size always, no checksum, no
/// dictionary (what §2.3 says diskvault writes).
#[test]
fn diskvault_writes_frames_with_their_content_size_and_no_checksum() {
    let plaintext = CONTENT.repeat(40);
    for level in [1, 3, 19, -7] {
        let sealed = Sealer::plain().seal(&plaintext, b"ctx", CompressionSetting::Zstd(level));
        let (header, body) = BlobHeader::decode(&sealed, 1 << 20).unwrap();
        let frame = check_frame(body, header.plain_len).unwrap();
        assert_eq!(frame.content_size, Some(plaintext.len() as u64));
        assert!(!frame.has_checksum, "level {level}");
    }
}

//! Cutting image bytes into chunks: FastCDC 2020 or fixed-size boundaries,
//! and the all-zero test that turns a chunk into a zero run.

use fastcdc::v2020::{self, Normalization};

use crate::format::config::ChunkerParams;

/// Cuts chunks with the repository's parameters.
///
/// Boundaries do not depend on how the caller splits its reads: FastCDC looks
/// at most `max_size` bytes ahead, so [`Chunker::cut`] stops before a tail
/// shorter than that unless told the data ends there.
#[derive(Debug, Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// Makes a chunker that cuts with `params` (the repository's `chunker` setting).
    pub fn new(params: ChunkerParams) -> Self {
        let (mask_s, mask_l) = match params {
            ChunkerParams::FastCdc2020 { avg_size, .. } => {
                v2020::select_masks(avg_size as usize, Normalization::Level1)
            }
            ChunkerParams::Fixed { .. } => (0, 0),
        };
        Chunker {
            params,
            mask_s,
            mask_l,
        }
    }

    /// Largest chunk this chunker produces.
    pub fn max_chunk_size(&self) -> usize {
        self.params.max_chunk_size() as usize
    }

    /// Appends to `out` the lengths of the chunks cut from the front of
    /// `data`, whose first byte is at `image_offset` in the image. With
    /// `at_end` false, the tail that could still change with more data is
    /// left uncut. Returns the number of bytes consumed.
    pub fn cut(&self, data: &[u8], image_offset: u64, at_end: bool, out: &mut Vec<usize>) -> usize {
        let mut pos = 0usize;
        match self.params {
            ChunkerParams::FastCdc2020 {
                min_size,
                avg_size,
                max_size,
            } => {
                let max = max_size as usize;
                while pos < data.len() {
                    let rest = data.len() - pos;
                    if !at_end && rest < max {
                        break;
                    }
                    let window = &data[pos..pos + rest.min(max)];
                    let (_, len) = v2020::cut(
                        window,
                        min_size as usize,
                        avg_size as usize,
                        max,
                        self.mask_s,
                        self.mask_l,
                        self.mask_s << 1,
                        self.mask_l << 1,
                    );
                    let len = len.max(1).min(rest);
                    out.push(len);
                    pos += len;
                }
            }
            ChunkerParams::Fixed { size } => {
                let size = size as u64;
                while pos < data.len() {
                    let abs = image_offset + pos as u64;
                    let boundary = (abs / size + 1) * size;
                    let want = (boundary - abs) as usize;
                    let rest = data.len() - pos;
                    if rest < want {
                        if !at_end {
                            break;
                        }
                        out.push(rest);
                        pos += rest;
                    } else {
                        out.push(want);
                        pos += want;
                    }
                }
            }
        }
        pos
    }
}

/// True when every byte of `data` is zero.
///
/// ORs blocks of bytes together (which the compiler vectorises) and stops at
/// the first block that is not zero, so data chunks are rejected quickly.
pub fn is_all_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

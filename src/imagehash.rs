//! The whole-image BLAKE3 hash, computed in parallel.
//!
//! A recovery point records the plain BLAKE3 of each disk image (what
//! `b3sum` prints), holes included. Hashing a 2 GiB image on one core takes
//! about a second, longer than the rest of an incremental backup, so the
//! image is hashed as aligned blocks of [`HASH_BLOCK`] bytes, each a
//! complete subtree of the BLAKE3 tree: full blocks are hashed in parallel
//! on the caller's thread pool, blocks split across two calls are finished
//! sequentially, and the blocks' chaining values are merged in order into
//! the root exactly as BLAKE3's own incremental hasher does.

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use rayon::prelude::*;

/// Bytes per independently hashed subtree: a power of two, so that every
/// aligned block is a complete BLAKE3 subtree.
pub const HASH_BLOCK: u64 = 64 << 10;

/// One block of zeros: zero runs are hashed (and written to streams) from
/// it, never from a buffer allocated per run.
pub(crate) static ZEROS: [u8; HASH_BLOCK as usize] = [0u8; HASH_BLOCK as usize];

/// A contiguous piece of image content.
#[derive(Clone, Copy)]
pub enum Span<'a> {
    /// Bytes as they are.
    Data(&'a [u8]),
    /// This many zero bytes.
    Zero(u64),
}

impl Span<'_> {
    fn len(&self) -> u64 {
        match self {
            Span::Data(d) => d.len() as u64,
            Span::Zero(n) => *n,
        }
    }
}

/// Hashes an image of known size fed in order, in pieces.
pub struct ImageHasher {
    size: u64,
    pos: u64,
    /// The block being filled across calls, if any.
    partial: Option<blake3::Hasher>,
    /// Chaining values not yet merged, as in BLAKE3's CV stack.
    stack: Vec<ChainingValue>,
    blocks: u64,
    /// Images of one block or less are a single root: hashed plainly.
    small: Option<blake3::Hasher>,
}

impl ImageHasher {
    /// A hasher for an image of `size` bytes.
    pub fn new(size: u64) -> Self {
        ImageHasher {
            size,
            pos: 0,
            partial: None,
            stack: Vec::new(),
            blocks: 0,
            small: (size <= HASH_BLOCK).then(blake3::Hasher::new),
        }
    }

    /// Sets the size of an image whose size was not known when the hasher
    /// was made (a stream, given `u64::MAX` then, and known to be larger
    /// than one block): once its last byte has been fed, or before.
    pub fn set_size(&mut self, size: u64) {
        assert!(
            self.small.is_none() && size >= self.pos && size > HASH_BLOCK,
            "an image size set out of place"
        );
        self.size = size;
        if self.pos == size {
            // The last block was fed while the size was unknown.
            if let Some(h) = self.partial.take() {
                self.push_cv(h.finalize_non_root());
            }
        }
    }

    /// Bytes hashed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Merges the chaining values that more input is now known to follow
    /// (lazily, as BLAKE3's own hasher does, so that the last merge can be
    /// the root): the stack then mirrors the bits of the blocks so far.
    fn merge_known(&mut self) {
        let keep = self.blocks.count_ones() as usize;
        while self.stack.len() > keep {
            let right = self.stack.pop().expect("stack longer than keep");
            let left = self.stack.pop().expect("stack longer than keep");
            self.stack
                .push(merge_subtrees_non_root(&left, &right, Mode::Hash));
        }
    }

    fn push_cv(&mut self, cv: ChainingValue) {
        self.merge_known();
        self.stack.push(cv);
        self.blocks += 1;
    }

    fn block_end(&self, offset: u64) -> u64 {
        ((offset / HASH_BLOCK + 1) * HASH_BLOCK).min(self.size)
    }

    /// Feeds the chaining value of the next `len` bytes of the image,
    /// hashed as a complete subtree ([`subtree_cv`], or the value a
    /// manifest leaf recorded). The hasher must be at a multiple of `len`,
    /// a power-of-two multiple of [`HASH_BLOCK`], and the image larger than
    /// `len` bytes (the subtree is not the root).
    pub fn push_subtree(&mut self, cv: ChainingValue, len: u64) {
        assert!(
            self.small.is_none()
                && self.partial.is_none()
                && len.is_power_of_two()
                && len >= HASH_BLOCK
                && self.pos % len == 0
                && self.pos + len <= self.size,
            "a subtree pushed out of place"
        );
        self.merge_known();
        self.stack.push(cv);
        self.blocks += len / HASH_BLOCK;
        self.pos += len;
    }

    /// Feeds the next pieces of the image, which must start where the last
    /// call ended. Full blocks are hashed in parallel on the current rayon
    /// pool.
    pub fn update(&mut self, spans: &[Span<'_>]) {
        if let Some(h) = &mut self.small {
            for s in spans {
                match *s {
                    Span::Data(d) => {
                        h.update(d);
                    }
                    Span::Zero(mut n) => {
                        while n > 0 {
                            let k = n.min(HASH_BLOCK) as usize;
                            h.update(&ZEROS[..k]);
                            n -= k as u64;
                        }
                    }
                }
                self.pos += s.len();
            }
            return;
        }
        let start = self.pos;
        let total: u64 = spans.iter().map(Span::len).sum();
        let end = start + total;
        // 1. Finish the block begun by an earlier call.
        let first_full = if start % HASH_BLOCK == 0 {
            start
        } else {
            self.block_end(start)
        };
        let head_end = first_full.min(end);
        if head_end > start {
            self.feed_partial(spans, start, start, head_end);
        }
        // 2. Full blocks in parallel.
        let full_end = if end == self.size {
            end
        } else {
            end / HASH_BLOCK * HASH_BLOCK
        };
        if full_end > first_full {
            let nblocks = (full_end - first_full).div_ceil(HASH_BLOCK);
            let cvs: Vec<ChainingValue> = (0..nblocks)
                .into_par_iter()
                .map(|i| {
                    let b = first_full + i * HASH_BLOCK;
                    let e = (b + HASH_BLOCK).min(full_end);
                    let mut h = blake3::Hasher::new();
                    h.set_input_offset(b);
                    for_each_piece(spans, start, b, e, |p| {
                        h.update(p);
                    });
                    h.finalize_non_root()
                })
                .collect();
            for cv in cvs {
                self.push_cv(cv);
            }
        }
        // 3. Begin the block that the next call finishes.
        let tail_start = full_end.max(first_full).max(start);
        if end > tail_start {
            self.feed_partial(spans, start, tail_start, end);
        }
        self.pos = end;
    }

    /// Feeds image range [from, to) of `spans` (which begin at `base`) into
    /// the partial block, closing it when it is complete.
    fn feed_partial(&mut self, spans: &[Span<'_>], base: u64, from: u64, to: u64) {
        let mut h = self.partial.take().unwrap_or_else(|| {
            let mut h = blake3::Hasher::new();
            h.set_input_offset(from / HASH_BLOCK * HASH_BLOCK);
            h
        });
        for_each_piece(spans, base, from, to, |p| {
            h.update(p);
        });
        if to == self.block_end(from) {
            self.push_cv(h.finalize_non_root());
        } else {
            self.partial = Some(h);
        }
    }

    /// The BLAKE3 of the whole image. Panics if fewer bytes than the size
    /// given to [`ImageHasher::new`] were fed (a caller bug).
    pub fn finalize(mut self) -> [u8; 32] {
        assert_eq!(self.pos, self.size, "image hash finalized early");
        if let Some(h) = self.small.take() {
            return *h.finalize().as_bytes();
        }
        let mut right = self.stack.pop().expect("at least two blocks");
        while self.stack.len() > 1 {
            let left = self.stack.pop().expect("checked length");
            right = merge_subtrees_non_root(&left, &right, Mode::Hash);
        }
        let left = self.stack.pop().expect("at least two blocks");
        *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()
    }
}

/// The chaining value of the `len` image bytes of `spans`, which begin at
/// image offset `start`, as a non-root subtree of the image's BLAKE3 tree:
/// `len` is a power-of-two multiple of [`HASH_BLOCK`] and `start` a
/// multiple of `len`. Blocks are hashed in parallel on the current pool.
pub fn subtree_cv(spans: &[Span<'_>], start: u64, len: u64) -> ChainingValue {
    assert!(len.is_power_of_two() && len >= HASH_BLOCK && start % len == 0);
    let mut cvs: Vec<ChainingValue> = (0..len / HASH_BLOCK)
        .into_par_iter()
        .map(|i| {
            let b = start + i * HASH_BLOCK;
            let mut h = blake3::Hasher::new();
            h.set_input_offset(b);
            for_each_piece(spans, start, b, b + HASH_BLOCK, |p| {
                h.update(p);
            });
            h.finalize_non_root()
        })
        .collect();
    while cvs.len() > 1 {
        cvs = cvs
            .chunks(2)
            .map(|pair| merge_subtrees_non_root(&pair[0], &pair[1], Mode::Hash))
            .collect();
    }
    cvs[0]
}

/// Calls `f` with the bytes of image range [from, to) of `spans`, which
/// begin at image offset `base`; zero runs come from a static buffer.
fn for_each_piece(spans: &[Span<'_>], base: u64, from: u64, to: u64, mut f: impl FnMut(&[u8])) {
    let mut off = base;
    for s in spans {
        let len = s.len();
        let (a, b) = (off.max(from), (off + len).min(to));
        if a < b {
            match *s {
                Span::Data(d) => f(&d[(a - off) as usize..(b - off) as usize]),
                Span::Zero(_) => {
                    let mut n = b - a;
                    while n > 0 {
                        let k = n.min(HASH_BLOCK) as usize;
                        f(&ZEROS[..k]);
                        n -= k as u64;
                    }
                }
            }
        }
        off += len;
        if off >= to {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Feeds `image` split at `cuts`, with every other piece given as a zero
    /// run where the bytes are zero.
    fn hash_in_pieces(image: &[u8], cuts: &[usize]) -> [u8; 32] {
        let mut h = ImageHasher::new(image.len() as u64);
        let mut prev = 0;
        for &c in cuts.iter().chain(std::iter::once(&image.len())) {
            let piece = &image[prev..c];
            if !piece.is_empty() && piece.iter().all(|&b| b == 0) {
                h.update(&[Span::Zero(piece.len() as u64)]);
            } else {
                let mid = piece.len() / 2;
                h.update(&[Span::Data(&piece[..mid]), Span::Data(&piece[mid..])]);
            }
            prev = c;
        }
        h.finalize()
    }

    #[test]
    fn equals_plain_blake3_for_many_sizes_and_splits() {
        let sizes = [
            0usize,
            1,
            1023,
            1024,
            65535,
            65536,
            65537,
            131072,
            200_000,
            4 << 20,
            (4 << 20) + 12345,
        ];
        for (i, &size) in sizes.iter().enumerate() {
            let mut image = bytes(size, i as u64 + 7);
            // A zero region in the middle, as a hole would be.
            if size > 300_000 {
                image[100_000..300_000].fill(0);
            }
            let expect = *blake3::hash(&image).as_bytes();
            assert_eq!(hash_in_pieces(&image, &[]), expect, "size {size} whole");
            let step = (size / 7).max(1);
            let cuts: Vec<usize> = (1..7).map(|k| (k * step).min(size)).collect();
            assert_eq!(hash_in_pieces(&image, &cuts), expect, "size {size} in 7");
            let cuts: Vec<usize> = [100_000, 300_000]
                .into_iter()
                .filter(|&c| c <= size)
                .collect();
            assert_eq!(
                hash_in_pieces(&image, &cuts),
                expect,
                "size {size} at the hole"
            );
        }
    }

    #[test]
    fn subtrees_pushed_whole_give_the_same_hash() {
        const SPAN: u64 = 1 << 20;
        for size in [SPAN + 1, 2 * SPAN, 3 * SPAN + 4097, 5 * SPAN] {
            let image = bytes(size as usize, size);
            let expect = *blake3::hash(&image).as_bytes();
            // Every whole aligned span as a subtree, the rest as bytes.
            let mut h = ImageHasher::new(size);
            let mut pos = 0u64;
            while pos < size {
                let end = (pos + SPAN).min(size);
                let piece = &image[pos as usize..end as usize];
                if end - pos == SPAN {
                    h.push_subtree(subtree_cv(&[Span::Data(piece)], pos, SPAN), SPAN);
                } else {
                    h.update(&[Span::Data(piece)]);
                }
                pos = end;
            }
            assert_eq!(h.finalize(), expect, "size {size}");
            // Subtrees of zeros, given as zero runs.
            let mut zeros = vec![0u8; size as usize];
            zeros[..100].copy_from_slice(&image[..100]);
            let mut h = ImageHasher::new(size);
            h.update(&[Span::Data(&zeros[..SPAN as usize])]);
            let mut pos = SPAN;
            while pos + SPAN <= size {
                h.push_subtree(subtree_cv(&[Span::Zero(SPAN)], pos, SPAN), SPAN);
                pos += SPAN;
            }
            h.update(&[Span::Zero(size - pos)]);
            assert_eq!(
                h.finalize(),
                *blake3::hash(&zeros).as_bytes(),
                "zeros {size}"
            );
        }
    }

    #[test]
    fn odd_pieces_across_block_boundaries() {
        let image = bytes(1_000_003, 99);
        let expect = *blake3::hash(&image).as_bytes();
        let mut cuts = Vec::new();
        let mut c = 0;
        let mut step = 1;
        while c + step < image.len() {
            c += step;
            cuts.push(c);
            step = (step * 3 + 17) % 90_001 + 1;
        }
        assert_eq!(hash_in_pieces(&image, &cuts), expect);
    }
}

//! Bounded little-endian readers and writers for repository bytes.
//!
//! Every decoder of untrusted bytes goes through [`ByteReader`], which never
//! reads past its slice and never allocates more than the caller allowed.

use super::FormatError;

/// A cursor over untrusted bytes. All reads are bounds-checked.
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    /// Starts reading `bytes`; `what` names the structure in error messages.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        ByteReader {
            bytes,
            pos: 0,
            what,
        }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.remaining() < n {
            return Err(FormatError::Truncated { what: self.what });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian u16.
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian i64.
    pub fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Reads a count and checks it against `max` and against the bytes left,
    /// given that every element takes at least `min_elem_size` bytes. This is
    /// what keeps a hostile count from causing a huge allocation.
    pub fn count_u32(&mut self, max: usize, min_elem_size: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        self.check_count(n, max, min_elem_size)
    }

    /// Like [`ByteReader::count_u32`] for a 16-bit count.
    pub fn count_u16(&mut self, max: usize, min_elem_size: usize) -> Result<usize, FormatError> {
        let n = self.u16()? as usize;
        self.check_count(n, max, min_elem_size)
    }

    fn check_count(&self, n: usize, max: usize, min_elem: usize) -> Result<usize, FormatError> {
        if n > max {
            return Err(FormatError::TooLarge {
                what: self.what,
                value: n as u64,
                max: max as u64,
            });
        }
        if n.saturating_mul(min_elem) > self.remaining() {
            return Err(FormatError::Truncated { what: self.what });
        }
        Ok(n)
    }

    /// A UTF-8 string with a u16 length prefix, at most `max` bytes.
    pub fn string(&mut self, max: usize) -> Result<String, FormatError> {
        let n = self.count_u16(max, 1)?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| FormatError::Invalid {
            what: self.what,
            reason: "string is not UTF-8".into(),
        })
    }

    /// Fails unless every byte was consumed (trailing garbage is corruption).
    pub fn finish(self) -> Result<(), FormatError> {
        if self.remaining() != 0 {
            return Err(FormatError::Invalid {
                what: self.what,
                reason: format!("{} unexpected trailing bytes", self.remaining()),
            });
        }
        Ok(())
    }

    /// Builds an [`FormatError::Invalid`] naming this structure.
    pub fn invalid(&self, reason: impl Into<String>) -> FormatError {
        FormatError::Invalid {
            what: self.what,
            reason: reason.into(),
        }
    }
}

/// Appends little-endian fields to a byte vector.
pub trait PutBytes {
    /// Appends one byte.
    fn put_u8(&mut self, v: u8);
    /// Appends a little-endian u16.
    fn put_u16(&mut self, v: u16);
    /// Appends a little-endian u32.
    fn put_u32(&mut self, v: u32);
    /// Appends a little-endian u64.
    fn put_u64(&mut self, v: u64);
    /// Appends a little-endian i64.
    fn put_i64(&mut self, v: i64);
    /// Writes a u16 length prefix then the bytes. Callers bound the length.
    fn put_string(&mut self, s: &str);
}

impl PutBytes for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_string(&mut self, s: &str) {
        debug_assert!(s.len() <= u16::MAX as usize);
        self.put_u16(s.len() as u16);
        self.extend_from_slice(s.as_bytes());
    }
}

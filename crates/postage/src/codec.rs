//! Minimal big-endian byte writer and bounds-checked reader for our fixed binary layouts.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the named field.
    #[error("truncated data: field {0} is missing")]
    Truncated(&'static str),
    /// Bytes were left after the last field.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
    /// A field holds a value that is not allowed.
    #[error("invalid value in field {0}")]
    Invalid(&'static str),
}

/// Appends big-endian fields to a byte vector.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// Appends a 16-bit integer.
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Appends a 32-bit integer.
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Appends a 64-bit integer.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Appends the low `n` bytes of `v` (caller guarantees it fits).
    pub fn uint(&mut self, v: u64, n: usize) {
        self.0.extend_from_slice(&v.to_be_bytes()[8 - n..]);
    }
    /// Appends raw bytes.
    pub fn raw(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// Appends a length-prefixed (u32) byte string.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.raw(v);
    }
}

/// Reads big-endian fields from a byte slice, never panicking.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Truncated(field))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated(field))?;
        self.pos = end;
        Ok(s)
    }
    /// Reads an unsigned integer of `n` ≤ 8 bytes.
    pub fn uint(&mut self, n: usize, field: &'static str) -> Result<u64, DecodeError> {
        let s = self.take(n, field)?;
        Ok(s.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }
    /// Reads one byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }
    /// Reads a 16-bit integer.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(self.uint(2, field)? as u16)
    }
    /// Reads a 32-bit integer.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(self.uint(4, field)? as u32)
    }
    /// Reads a 64-bit integer.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.uint(8, field)
    }
    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(field)? as usize;
        if n > max {
            return Err(DecodeError::Invalid(field));
        }
        self.take(n, field)
    }
    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: usize, field: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes(max, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid(field))
    }
    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

//! Goods encryption: a chunked streaming AEAD (format `NBG1`) under the per-purchase key `K`.
//!
//! This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
//! Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015) with
//! ChaCha20-Poly1305 (RFC 8439). It encrypts and decrypts any amount of data in constant
//! memory, and the receiver can tell a complete stream from a truncated, reordered or
//! extended one.
//!
//! # Format
//!
//! All integers are big-endian. `K` is the 32-byte [`GoodsKey`], used as the
//! ChaCha20-Poly1305 key. `c` is the chunk size.
//!
//! ```text
//! stream = header || C_0 || C_1 || ... || C_{n-1}
//! header = "NBG1" (4 ASCII bytes 4E 42 47 31) || c (u32)          8 bytes
//! C_i    = ChaCha20-Poly1305-Encrypt(key = K, nonce = N_i, aad = header, P_i)
//!          (ciphertext of P_i followed by its 16-byte tag: |P_i| + 16 bytes)
//! N_i    = i as an 11-byte unsigned integer || f_i                12 bytes
//! f_i    = 0x01 if i = n - 1 (the final chunk), else 0x00
//! ```
//!
//! * `c` must satisfy `1 <= c <= 1_048_576` ([`MAX_CHUNK_SIZE`]); the default is 65 536
//!   ([`DEFAULT_CHUNK_SIZE`]).
//! * The plaintext `P` of length `L` is cut into `n` chunks: if `L = 0`, `n = 1` and the
//!   single (final) chunk is empty; otherwise `n = ceil(L / c)`, chunks `P_0 .. P_{n-2}`
//!   hold exactly `c` bytes and the final chunk `P_{n-1}` holds the remaining
//!   `L - (n-1)·c` bytes (between 1 and `c`). So the total length is
//!   `8 + L + 16·n` ([`ciphertext_len`]).
//! * There are no length fields: chunk `i` occupies bytes `[8 + i·(c+16), 8 + (i+1)·(c+16))`
//!   of the stream, except that the final one may be shorter. A reader takes `c + 16`
//!   bytes at a time; the block after which the stream ends is the final chunk (decrypted
//!   with `f = 0x01`), every other one is decrypted with `f = 0x00`. A final block shorter
//!   than 16 bytes means the stream is truncated.
//! * The header is the associated data of every chunk, so changing the chunk size or
//!   magic makes every chunk fail.
//! * Encryptors must produce exactly this layout, so that the ciphertext (and the checksum
//!   the protocol signs) is a function of `K`, `c` and the plaintext. Decryptors accept any
//!   stream whose chunks all authenticate in this layout (e.g. also an empty final chunk
//!   after full ones).
//! * Encryption is deterministic: the same `K`, `c` and plaintext always give the same
//!   bytes. That is safe because `K` is fresh for every purchase and encrypts one
//!   plaintext only; never reuse a `GoodsKey` for different contents.
//!
//! # Test vector
//!
//! `K` = bytes `00 01 02 … 1f`, `c` = 16, plaintext = ASCII
//! `abcdefghijklmnopqrstuvwxyz0123456789` (36 bytes, so chunks of 16, 16 and 4 bytes):
//!
//! ```text
//! 4e424731 00000010                                          header
//! 79da2155c880c1b97a0b370dc22d21574525aab882156ee1bb6fbc1464e204e7  C_0 (f = 0)
//! ca15b257db5b5fcb7d575cf79c0c4e1adaf8fe86ee939ae135c9ebb6b04ced64  C_1 (f = 0)
//! 724f82eff2ae699a4fe7b91c6b6a7b36d9956767                          C_2 (f = 1)
//! SHA-256 of the stream: c269eacbbeb35a404b26c0ca5dd4cf92286c4f7d4c5807200df5294d41cb96fc
//! ```
//!
//! The empty plaintext under the same key gives
//! `4e424731000000108859ad39d346398749137eb310761e3b`.
//!
//! # Guarantees and error reporting
//!
//! [`decrypt_stream`] writes a chunk's plaintext only after that chunk's tag has been
//! verified, but it does write the verified chunks before a later one fails: on any error
//! the caller must discard everything written (e.g. write to a temporary file and rename it
//! into place only on success). When a chunk fails, a short diagnosis (trying the other
//! final flag, and counters within ±32 of the expected one) picks the [`GoodsError`]
//! variant; the diagnosis only names the failure, every failure is a rejection. Data
//! appended after a short final chunk shifts the chunk boundaries, so it is reported as
//! [`GoodsError::Corrupted`] rather than [`GoodsError::TrailingData`].

use std::io::{self, Read, Write};

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Nonce, Tag};
use netbill_proto::crypto::{Digest, GoodsKey};
use sha2::Digest as _;

/// The 4-byte magic that starts every goods stream.
pub const MAGIC: [u8; 4] = *b"NBG1";
/// Length of the stream header (magic + chunk size).
pub const HEADER_LEN: usize = 8;
/// Length of a chunk's Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// The chunk size used unless the caller picks another (64 KiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// The largest chunk size a stream may declare (1 MiB); larger ones are refused.
pub const MAX_CHUNK_SIZE: u32 = 1024 * 1024;
/// How far from the expected counter the failure diagnosis looks for a moved chunk.
const REORDER_WINDOW: u64 = 32;

/// What [`encrypt_stream`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptStats {
    /// Number of ciphertext bytes written (header included).
    pub ciphertext_len: u64,
    /// SHA-256 of all ciphertext bytes written: the protocol's checksum of the encrypted goods.
    pub checksum: Digest,
}

/// What [`decrypt_stream`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptStats {
    /// Number of plaintext bytes written.
    pub plaintext_len: u64,
    /// SHA-256 of all plaintext bytes written.
    pub plaintext_digest: Digest,
}

/// Why a goods stream was rejected.
#[derive(Debug, thiserror::Error)]
pub enum GoodsError {
    /// The stream does not start with a valid `NBG1` header.
    #[error("not an encrypted goods stream (bad or missing NBG1 header)")]
    BadHeader,
    /// The declared chunk size is zero.
    #[error("invalid chunk size 0 in the goods header")]
    InvalidChunkSize,
    /// The declared chunk size exceeds [`MAX_CHUNK_SIZE`].
    #[error("chunk size {size} in the goods header exceeds the maximum {max}")]
    ChunkSizeTooLarge {
        /// The declared size.
        size: u32,
        /// The maximum accepted.
        max: u32,
    },
    /// The stream ends before its final chunk.
    #[error("the goods stream is truncated after {chunks} chunk(s): download it again")]
    Truncated {
        /// Chunks that authenticated before the end.
        chunks: u64,
    },
    /// Data follows the chunk marked final.
    #[error("the goods stream has data after its final chunk (chunk {chunk})")]
    TrailingData {
        /// Index of the chunk that authenticated as final.
        chunk: u64,
    },
    /// A chunk is at the wrong position.
    #[error("chunk at position {position} is chunk {found}: the goods stream was reordered")]
    OutOfOrder {
        /// Where it was found.
        position: u64,
        /// Which chunk it is.
        found: u64,
    },
    /// The first chunk does not authenticate: the key is wrong (or the first chunk is damaged).
    #[error("the goods key does not decrypt this stream (wrong key, or damaged first chunk)")]
    WrongKey,
    /// A later chunk does not authenticate: it was altered.
    #[error("chunk {chunk} of the goods stream failed authentication (damaged or altered)")]
    Corrupted {
        /// Index of the chunk.
        chunk: u64,
    },
    /// Reading the ciphertext or writing the plaintext failed.
    #[error("I/O error while decrypting goods: {0}")]
    Io(#[from] io::Error),
}

/// Total ciphertext length for `plaintext_len` bytes in chunks of `chunk_size` (0 counts as 1).
pub fn ciphertext_len(plaintext_len: u64, chunk_size: u32) -> u64 {
    let c = u64::from(chunk_size.max(1));
    let n = if plaintext_len == 0 {
        1
    } else {
        plaintext_len.div_ceil(c)
    };
    (HEADER_LEN as u64)
        .saturating_add(plaintext_len)
        .saturating_add(n.saturating_mul(TAG_LEN as u64))
}

fn header_bytes(chunk_size: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..].copy_from_slice(&chunk_size.to_be_bytes());
    h
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::from(n)
}

fn cipher(key: &GoodsKey) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&chacha20poly1305::Key::from(key.0))
}

/// Reads until `buf` is full or the reader is exhausted; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads blocks of a fixed size with one byte of look-ahead, to know which block is last.
struct Blocks<R> {
    inner: R,
    carry: Option<u8>,
    finished: bool,
}

impl<R: Read> Blocks<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            carry: None,
            finished: false,
        }
    }

    /// Fills `buf` with the next block: `Some((len, is_last))`, or `None` after the last.
    fn next(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, bool)>> {
        if self.finished {
            return Ok(None);
        }
        let mut len = 0;
        // `buf` is never empty (chunk sizes are at least 1), so the carried byte fits.
        if let Some(b) = self.carry.take()
            && let Some(first) = buf.first_mut()
        {
            *first = b;
            len = 1;
        }
        len += read_full(&mut self.inner, &mut buf[len..])?;
        let last = if len < buf.len() {
            true
        } else {
            let mut one = [0u8; 1];
            if read_full(&mut self.inner, &mut one)? == 0 {
                true
            } else {
                self.carry = Some(one[0]);
                false
            }
        };
        self.finished = last;
        Ok(Some((len, last)))
    }
}

/// A [`Read`] adapter that yields the `NBG1` ciphertext of what it reads, on the fly.
///
/// Memory use is one chunk. After it has returned end-of-file, [`Self::stats`] gives the
/// length and checksum of everything it yielded.
pub struct EncryptingReader<R> {
    blocks: Blocks<R>,
    cipher: ChaCha20Poly1305,
    header: [u8; HEADER_LEN],
    chunk_size: usize,
    counter: u64,
    out: Vec<u8>,
    out_len: usize,
    pos: usize,
    done: bool,
    total: u64,
    hasher: sha2::Sha256,
}

impl<R: Read> EncryptingReader<R> {
    /// Encrypts `inner` under `key` in chunks of `chunk_size` (1..=[`MAX_CHUNK_SIZE`]).
    pub fn new(key: &GoodsKey, chunk_size: u32, inner: R) -> io::Result<Self> {
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "goods chunk size must be between 1 and {MAX_CHUNK_SIZE}, not {chunk_size}"
                ),
            ));
        }
        let header = header_bytes(chunk_size);
        let chunk_size = chunk_size as usize;
        let mut out = vec![0u8; chunk_size + TAG_LEN];
        out[..HEADER_LEN].copy_from_slice(&header);
        let mut hasher = sha2::Sha256::new();
        hasher.update(header);
        Ok(Self {
            blocks: Blocks::new(inner),
            cipher: cipher(key),
            header,
            chunk_size,
            counter: 0,
            out,
            out_len: HEADER_LEN,
            pos: 0,
            done: false,
            total: HEADER_LEN as u64,
            hasher,
        })
    }

    /// Length and checksum of the whole ciphertext, once it has all been read.
    pub fn stats(&self) -> Option<EncryptStats> {
        (self.done && self.pos == self.out_len).then(|| EncryptStats {
            ciphertext_len: self.total,
            checksum: Digest(self.hasher.clone().finalize().into()),
        })
    }

    /// Makes the next chunk's ciphertext available in `out`; false at the end.
    fn produce(&mut self) -> io::Result<bool> {
        if self.done {
            return Ok(false);
        }
        let Some((len, last)) = self.blocks.next(&mut self.out[..self.chunk_size])? else {
            self.done = true;
            return Ok(false);
        };
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &nonce(self.counter, last),
                &self.header,
                InOutBuf::from(&mut self.out[..len]),
            )
            .map_err(|_| io::Error::other("ChaCha20-Poly1305 refused a chunk"))?;
        self.out[len..len + TAG_LEN].copy_from_slice(&tag);
        self.out_len = len + TAG_LEN;
        self.pos = 0;
        self.hasher.update(&self.out[..self.out_len]);
        self.total += self.out_len as u64;
        self.counter += 1;
        self.done = last;
        Ok(true)
    }

    /// The bytes produced but not yet returned, producing a new chunk if needed.
    fn pending(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.out_len && !self.produce()? {
            return Ok(&[]);
        }
        Ok(&self.out[self.pos..self.out_len])
    }
}

impl<R: Read> Read for EncryptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pending = self.pending()?;
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl<R> std::fmt::Debug for EncryptingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptingReader")
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.counter)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Encrypts all of `reader` to `writer`; returns the ciphertext length and its SHA-256.
pub fn encrypt_stream<R: Read, W: Write>(
    key: &GoodsKey,
    chunk_size: u32,
    reader: R,
    mut writer: W,
) -> io::Result<EncryptStats> {
    let mut enc = EncryptingReader::new(key, chunk_size, reader)?;
    loop {
        let pending = enc.pending()?;
        if pending.is_empty() {
            break;
        }
        writer.write_all(pending)?;
        enc.pos = enc.out_len;
    }
    writer.flush()?;
    enc.stats()
        .ok_or_else(|| io::Error::other("goods encryption ended early"))
}

/// Does `block` (ciphertext || tag) authenticate as chunk `counter` with final flag `last`?
fn authenticates(
    c: &ChaCha20Poly1305,
    header: &[u8],
    block: &[u8],
    counter: u64,
    last: bool,
) -> bool {
    let Some(split) = block.len().checked_sub(TAG_LEN) else {
        return false;
    };
    let (ct, tag) = block.split_at(split);
    let tag = Tag::try_from(tag).ok();
    let mut scratch = ct.to_vec();
    match tag {
        Some(tag) => c
            .decrypt_inout_detached(
                &nonce(counter, last),
                header,
                InOutBuf::from(&mut scratch[..]),
                &tag,
            )
            .is_ok(),
        None => false,
    }
}

/// Names the failure of `block` at `position` (expected final flag `last`).
fn diagnose(
    c: &ChaCha20Poly1305,
    header: &[u8],
    block: &[u8],
    position: u64,
    last: bool,
) -> GoodsError {
    if authenticates(c, header, block, position, !last) {
        return if last {
            GoodsError::Truncated {
                chunks: position + 1,
            }
        } else {
            GoodsError::TrailingData { chunk: position }
        };
    }
    let lo = position.saturating_sub(REORDER_WINDOW);
    let hi = position.saturating_add(REORDER_WINDOW);
    for found in (lo..=hi).filter(|&j| j != position) {
        if [false, true]
            .into_iter()
            .any(|f| authenticates(c, header, block, found, f))
        {
            return GoodsError::OutOfOrder { position, found };
        }
    }
    if position == 0 {
        GoodsError::WrongKey
    } else {
        GoodsError::Corrupted { chunk: position }
    }
}

/// Decrypts an `NBG1` stream from `reader` to `writer`, verifying every chunk first.
///
/// On error, plaintext of the chunks before the failing one may already have been
/// written: discard the output.
pub fn decrypt_stream<R: Read, W: Write>(
    key: &GoodsKey,
    mut reader: R,
    mut writer: W,
) -> Result<DecryptStats, GoodsError> {
    let mut header = [0u8; HEADER_LEN];
    if read_full(&mut reader, &mut header)? < HEADER_LEN || header[..4] != MAGIC {
        return Err(GoodsError::BadHeader);
    }
    let mut size = [0u8; 4];
    size.copy_from_slice(&header[4..]);
    let chunk_size = u32::from_be_bytes(size);
    if chunk_size == 0 {
        return Err(GoodsError::InvalidChunkSize);
    }
    if chunk_size > MAX_CHUNK_SIZE {
        return Err(GoodsError::ChunkSizeTooLarge {
            size: chunk_size,
            max: MAX_CHUNK_SIZE,
        });
    }
    let c = cipher(key);
    let block_len = chunk_size as usize + TAG_LEN;
    let mut block = vec![0u8; block_len];
    let mut plain = vec![0u8; chunk_size as usize];
    let mut blocks = Blocks::new(reader);
    let mut hasher = sha2::Sha256::new();
    let mut plaintext_len = 0u64;
    let mut counter = 0u64;
    while let Some((len, last)) = blocks.next(&mut block)? {
        if len < TAG_LEN {
            return Err(GoodsError::Truncated { chunks: counter });
        }
        let ct_len = len - TAG_LEN;
        let (ct, tag) = block[..len].split_at(ct_len);
        let Ok(tag) = Tag::try_from(tag) else {
            return Err(GoodsError::Truncated { chunks: counter });
        };
        let ok = match InOutBuf::new(ct, &mut plain[..ct_len]) {
            Ok(buf) => c
                .decrypt_inout_detached(&nonce(counter, last), &header, buf, &tag)
                .is_ok(),
            Err(_) => false,
        };
        if !ok {
            return Err(diagnose(&c, &header, &block[..len], counter, last));
        }
        writer.write_all(&plain[..ct_len])?;
        hasher.update(&plain[..ct_len]);
        plaintext_len += ct_len as u64;
        counter += 1;
    }
    writer.flush()?;
    Ok(DecryptStats {
        plaintext_len,
        plaintext_digest: Digest(hasher.finalize().into()),
    })
}

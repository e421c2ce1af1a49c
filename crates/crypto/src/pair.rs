//! v2 sealing between two parties that each hold a static X25519 sealing key.
//!
//! Byte by byte (also in `docs/protocol.md`):
//! 1. A sealing secret's public key is `X25519(secret, 9)` (RFC 7748, the secret clamped).
//! 2. `shared = X25519(own secret, peer public)`; an all-zero `shared` (a low-order peer
//!    key) is refused: nothing seals or opens under it.
//! 3. `lo`, `hi` = the two public keys in ascending byte order, so both ends agree.
//! 4. `pair key = HKDF-SHA256(salt = "netbill/v2/pair-key", IKM = shared, info = lo || hi)`,
//!    32 bytes.
//! 5. A seal is `nonce (24 random bytes) || XChaCha20-Poly1305(pair key, nonce, aad, pt)`
//!    (ciphertext then the 16-byte tag).
//!
//! The pair key costs one scalar multiplication; it is computed once per pair and kept in a
//! process-wide cache, and so is each secret's public key, so sealing and opening (and
//! naming one's own seal key in a message) cost a hash and an AEAD pass. Random 192-bit nonces make the key's reuse
//! across purchases safe; the `aad` binds each seal to its purpose and EPOID.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use netbill_proto::crypto::{SealKey, SealSecret};
use sha2::Digest as _;
use zeroize::Zeroizing;

/// The HKDF salt of every pair key.
pub const PAIR_KEY_SALT: &[u8] = b"netbill/v2/pair-key";
/// Bytes a pair seal adds to its plaintext: the nonce and the Poly1305 tag.
pub const PAIR_OVERHEAD: usize = 24 + 16;
/// Most entries each cache holds; when full it starts again (a miss costs one X25519).
pub const PAIR_CACHE_MAX: usize = 1 << 16;

/// A process-wide map from a SHA-256 slot to 32 bytes, bounded by [`PAIR_CACHE_MAX`].
type Cache = Mutex<HashMap<[u8; 32], Zeroizing<[u8; 32]>>>;

/// `value` from `cache` under the slot `SHA-256(parts…)`, computed by `make` on a miss.
fn cached(
    cache: &'static OnceLock<Cache>,
    parts: &[&[u8]],
    make: impl FnOnce() -> Option<Zeroizing<[u8; 32]>>,
) -> Option<Zeroizing<[u8; 32]>> {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    let slot: [u8; 32] = h.finalize().into();
    let cache = cache.get_or_init(|| Mutex::new(HashMap::new()));
    let lock = || cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = lock().get(&slot) {
        return Some(v.clone());
    }
    let v = make()?;
    let mut c = lock();
    if c.len() >= PAIR_CACHE_MAX {
        c.clear();
    }
    c.insert(slot, v.clone());
    Some(v)
}

/// The public key of a sealing secret (cached: a party names its own key in every message).
pub fn public_key(secret: &SealSecret) -> SealKey {
    static PUBLIC: OnceLock<Cache> = OnceLock::new();
    let compute = || MontgomeryPoint::mul_base_clamped(secret.0).to_bytes();
    let make = || Some(Zeroizing::new(compute()));
    match cached(&PUBLIC, &[b"netbill/v2/public-cache", &secret.0], make) {
        Some(k) => SealKey(*k),
        None => SealKey(compute()),
    }
}

/// The pair key of `own` and `peer` (computed, without the cache); `None` for a low-order
/// peer key.
pub fn derive_pair_key(own: &SealSecret, peer: &SealKey) -> Option<Zeroizing<[u8; 32]>> {
    let shared = Zeroizing::new(MontgomeryPoint(peer.0).mul_clamped(own.0).to_bytes());
    if *shared == [0u8; 32] {
        return None;
    }
    let me = public_key(own);
    let (lo, hi) = if me.0 <= peer.0 {
        (me.0, peer.0)
    } else {
        (peer.0, me.0)
    };
    let mut info = [0u8; 64];
    info[..32].copy_from_slice(&lo);
    info[32..].copy_from_slice(&hi);
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(PAIR_KEY_SALT), &*shared);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(&info, &mut *key).ok()?;
    Some(key)
}

/// The pair key of `own` and `peer`, from the cache when it has been derived before.
pub fn pair_key(own: &SealSecret, peer: &SealKey) -> Option<Zeroizing<[u8; 32]>> {
    static PAIRS: OnceLock<Cache> = OnceLock::new();
    cached(&PAIRS, &[b"netbill/v2/pair-cache", &own.0, &peer.0], || {
        derive_pair_key(own, peer)
    })
}

/// Seals `plaintext` between `own` and `peer`; empty (which nothing opens) for a
/// low-order peer key.
pub fn seal(
    own: &SealSecret,
    peer: &SealKey,
    aad: &[u8],
    plaintext: &[u8],
    nonce: [u8; 24],
) -> Vec<u8> {
    let Some(key) = pair_key(own, peer) else {
        return Vec::new();
    };
    let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key));
    let Ok(ct) = cipher.encrypt(
        &XNonce::from(nonce),
        Payload {
            msg: plaintext,
            aad,
        },
    ) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(24 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens what [`seal`] sealed between the same two keys with the same `aad`.
pub fn open(own: &SealSecret, peer: &SealKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < PAIR_OVERHEAD {
        return None;
    }
    let (nonce, ct) = sealed.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().ok()?;
    let key = pair_key(own, peer)?;
    let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key));
    cipher
        .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad })
        .ok()
}

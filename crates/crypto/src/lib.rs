//! The real cryptography behind NetBill's [`Crypto`] and [`Signer`] interfaces.
//!
//! * digests: SHA-256 over the concatenation of the parts;
//! * signatures: Ed25519 (RFC 8032) with **strict** verification
//!   ([`ed25519_dalek::VerifyingKey::verify_strict`]), also in [`batch_verify`];
//! * v1 sealing: HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//!   ChaCha20-Poly1305, single-shot; a seal is `enc (32 bytes) || ciphertext`, with the
//!   `info` as HPKE info and an empty AAD (still opened, for records signed before v2);
//! * v2 pair sealing ([`pair`]): static X25519 between the two parties' sealing keys,
//!   HKDF-SHA256, XChaCha20-Poly1305 with a random 24-byte nonce; pair keys are cached;
//! * key files: [`keyfile`];
//! * goods encryption: the chunked streaming AEAD in [`goods`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use ed25519_dalek::Signer as _;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use netbill_proto::crypto::{
    Crypto, Digest, GoodsKey, PublicKey, SealKey, SealSecret, Signature, Signer,
};
use rand_core::{SeedableRng, TryRng};
use sha2::Digest as _;
use zeroize::Zeroizing;

pub mod goods;
pub mod keyfile;
pub mod pair;

pub use goods::{
    DEFAULT_CHUNK_SIZE, DecryptStats, EncryptStats, EncryptingReader, GoodsError, MAX_CHUNK_SIZE,
    ciphertext_len, decrypt_stream, encrypt_stream,
};
pub use keyfile::{KeyFileError, load_secret_key, save_secret_key};

type HpkeKem = hpke::kem::X25519HkdfSha256;
type HpkeKdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::ChaCha20Poly1305;

/// Length of the HPKE encapsulated key that starts every seal.
pub const SEAL_ENC_LEN: usize = 32;
/// Bytes a seal adds to its plaintext (encapsulated key + Poly1305 tag).
pub const SEAL_OVERHEAD: usize = SEAL_ENC_LEN + 16;

/// The production [`Crypto`]: SHA-256, strict Ed25519, HPKE X25519/HKDF-SHA256/ChaCha20-Poly1305.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealCrypto;

impl Crypto for RealCrypto {
    fn digest(&self, parts: &[&[u8]]) -> Digest {
        let mut h = sha2::Sha256::new();
        for p in parts {
            h.update(p);
        }
        Digest(h.finalize().into())
    }

    fn verify(&self, key: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
        let Some(vk) = verifying_key(key) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        vk.verify_strict(msg, &sig).is_ok()
    }

    /// Seals with HPKE; the ephemeral key is drawn from ChaCha20 seeded with `entropy`.
    ///
    /// The trait gives no way to report failure, so a seal that HPKE refuses (a low-order
    /// `to` key, whose shared secret would be all zeros, or an `info` longer than HPKE
    /// allows) yields an **empty** vector, which no [`Crypto::open`] accepts.
    fn seal(&self, to: &SealKey, info: &[u8], plaintext: &[u8], entropy: [u8; 32]) -> Vec<u8> {
        let Ok(pk) = <HpkeKem as hpke::Kem>::PublicKey::from_bytes(&to.0) else {
            return Vec::new();
        };
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(entropy);
        match hpke::single_shot_seal_with_rng::<HpkeAead, HpkeKdf, HpkeKem>(
            &OpModeS::Base,
            &pk,
            info,
            plaintext,
            b"",
            &mut rng,
        ) {
            Ok((enc, ct)) => {
                let mut out = Vec::with_capacity(SEAL_ENC_LEN + ct.len());
                out.extend_from_slice(&enc.to_bytes());
                out.extend_from_slice(&ct);
                out
            }
            Err(_) => Vec::new(),
        }
    }

    /// `X25519(secret, 9)`, the key HPKE (v1) and pair sealing (v2) both use; cached.
    fn seal_key(&self, secret: &SealSecret) -> SealKey {
        pair::public_key(secret)
    }

    fn pair_seal(
        &self,
        own: &SealSecret,
        peer: &SealKey,
        aad: &[u8],
        plaintext: &[u8],
        nonce: [u8; 24],
    ) -> Vec<u8> {
        pair::seal(own, peer, aad, plaintext, nonce)
    }

    fn pair_open(
        &self,
        own: &SealSecret,
        peer: &SealKey,
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        pair::open(own, peer, aad, sealed)
    }

    fn mac(&self, key: &[u8; 32], parts: &[&[u8]]) -> Digest {
        use hmac::Mac as _;
        // A 32-byte key is always a valid HMAC key.
        let mut m = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(key)
            .expect("HMAC takes keys of any length");
        for p in parts {
            m.update(p);
        }
        Digest(m.finalize().into_bytes().into())
    }

    fn open(&self, secret: &SealSecret, info: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (enc, ct) = sealed.split_at(SEAL_ENC_LEN);
        let enc = <HpkeKem as hpke::Kem>::EncappedKey::from_bytes(enc).ok()?;
        let sk = seal_private_key(secret);
        hpke::single_shot_open::<HpkeAead, HpkeKdf, HpkeKem>(
            &OpModeR::Base,
            &sk,
            &enc,
            info,
            ct,
            b"",
        )
        .ok()
    }
}

/// The HPKE private key of a sealing secret (clamped by HPKE, so any 32 bytes work).
fn seal_private_key(secret: &SealSecret) -> <HpkeKem as hpke::Kem>::PrivateKey {
    match <HpkeKem as hpke::Kem>::PrivateKey::from_bytes(&secret.0) {
        Ok(sk) => sk,
        // X25519 private keys are any 32 bytes; from_bytes only checks the length.
        Err(_) => unreachable!("a 32-byte X25519 private key is always accepted"),
    }
}

/// An Ed25519 signing key (zeroized on drop).
#[derive(Clone)]
pub struct Ed25519Signer {
    key: ed25519_dalek::SigningKey,
}

impl Ed25519Signer {
    /// The signer whose RFC 8032 secret key (seed) is `secret`.
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(secret),
        }
    }

    /// A new signer with a secret from the operating system's RNG.
    pub fn generate() -> Self {
        Self::from_bytes(&random_bytes::<32>())
    }

    /// The 32-byte secret key, for saving with [`save_secret_key`]; zeroized on drop.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Signer({:?})", self.public_key())
    }
}

impl Signer for Ed25519Signer {
    fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.key.sign(msg).to_bytes())
    }
}

/// `N` bytes from the operating system's RNG (panics only if the OS RNG is unavailable).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::SysRng
        .try_fill_bytes(&mut out)
        .expect("the operating system's random number generator failed");
    out
}

/// A fresh sealing (X25519) secret from the operating system's RNG.
pub fn random_seal_secret() -> SealSecret {
    let mut bytes = Zeroizing::new(random_bytes::<32>());
    SealSecret(std::mem::take(&mut *bytes))
}

/// A fresh per-purchase goods key `K` from the operating system's RNG.
pub fn random_goods_key() -> GoodsKey {
    let mut bytes = Zeroizing::new(random_bytes::<32>());
    GoodsKey(std::mem::take(&mut *bytes))
}

/// Most distinct public keys whose decompressed form is kept ([`verifying_key`]).
const KEY_CACHE_MAX: usize = 1 << 16;

/// The decompressed Ed25519 key of `key`, `None` if it is no point. Decompressing costs about
/// as much as a fifth of a verification, and the same accounts sign again and again, so the
/// result is kept in a bounded process-wide map (public data only).
fn verifying_key(key: &PublicKey) -> Option<ed25519_dalek::VerifyingKey> {
    type Keys = std::sync::Mutex<std::collections::HashMap<[u8; 32], ed25519_dalek::VerifyingKey>>;
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    let lock = || keys.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(vk) = lock().get(&key.0) {
        return Some(*vk);
    }
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key.0).ok()?;
    let mut k = lock();
    if k.len() >= KEY_CACHE_MAX {
        k.clear();
    }
    k.insert(key.0, vk);
    Some(vk)
}

/// Is the y-coordinate of a point encoding below p = 2^255 − 19? The 255 low bits are y;
/// y ≥ p exactly when they are 2^255 − 19 … 2^255 − 1 (byte 0 ≥ 0xed, bytes 1–30 0xff, byte
/// 31 0x7f or 0xff).
fn canonical_y(b: &[u8; 32]) -> bool {
    !(b[0] >= 0xed && b[1..31].iter().all(|&x| x == 0xff) && b[31] & 0x7f == 0x7f)
}

/// Is a 32-byte string the canonical encoding of an Edwards point of large order? Besides a
/// y ≥ p, the only non-canonical encodings are x = 0 with the sign bit set: the points
/// (0, ±1), both of small order. So checking y (a byte comparison) is exact here, and saves
/// re-compressing the point (a field inversion).
fn canonical_large_order_point(bytes: &[u8; 32]) -> bool {
    canonical_y(bytes)
        && curve25519_dalek::edwards::CompressedEdwardsY(*bytes)
            .decompress()
            .is_some_and(|p| !p.is_small_order())
}

/// Are all signatures valid? Uses Ed25519 batch verification (≈2× faster than one by one).
///
/// Accepts exactly what [`Crypto::verify`] (strict) accepts: before the batch equation,
/// every key and every signature's `R` must be a canonically encoded point of large
/// order, as `verify_strict` requires. The empty batch is valid.
pub fn batch_verify(items: &[(PublicKey, &[u8], Signature)]) -> bool {
    if items.is_empty() {
        return true;
    }
    let mut keys = Vec::with_capacity(items.len());
    let mut msgs = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    for (pk, msg, sig) in items {
        let Some(vk) = verifying_key(pk) else {
            return false;
        };
        let mut r = [0u8; 32];
        r.copy_from_slice(&sig.0[..32]);
        if vk.is_weak() || !canonical_large_order_point(&r) {
            return false;
        }
        keys.push(vk);
        msgs.push(*msg);
        sigs.push(ed25519_dalek::Signature::from_bytes(&sig.0));
    }
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok()
}

/// Which signatures are valid: one batch check, then one by one only if the batch fails.
pub fn verify_many(items: &[(PublicKey, &[u8], Signature)]) -> Vec<bool> {
    if batch_verify(items) {
        return vec![true; items.len()];
    }
    items
        .iter()
        .map(|(pk, msg, sig)| RealCrypto.verify(pk, msg, sig))
        .collect()
}

#[cfg(test)]
mod tests;

//! The cryptography the protocol needs, as an interface.
//!
//! The protocol core never calls a crypto library directly: it is handed a [`Crypto`]
//! (digests, signature checks, sealing, opening) and the party's own [`Signer`].
//! `netbill-crypto` implements them with SHA-256, Ed25519, HPKE (RFC 9180, v1 seals) and
//! X25519 + HKDF + XChaCha20-Poly1305 pair keys (v2 seals); the
//! [`symbolic`] module implements them cheaply and deterministically for simulation and
//! model checking, where only the *structure* of the cryptography matters.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

macro_rules! byte_array {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;
            /// Lower-case hex, the form used in JSON, config files and logs.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            pub fn from_hex(s: &str) -> Result<Self, ParseKeyError> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s.trim(), &mut out).map_err(|_| ParseKeyError {
                    what: stringify!($name),
                    len: $len,
                })?;
                Ok(Self(out))
            }
        }
        impl std::str::FromStr for $name {
            type Err = ParseKeyError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

byte_array!(
    /// A SHA-256 digest (the paper's cryptographic checksum `CC(..)`).
    Digest, 32
);
byte_array!(
    /// An Ed25519 public key: verifies a party's signatures.
    PublicKey, 32
);
byte_array!(
    /// An Ed25519 signature.
    Signature, 64
);
byte_array!(
    /// An X25519 public key: things sealed to it can be opened only by its owner.
    SealKey, 32
);

/// A hex string that is not a key of the right length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {what}: expected {len} bytes as hex")]
pub struct ParseKeyError {
    what: &'static str,
    len: usize,
}

/// The per-purchase symmetric key `K` under which the goods are encrypted.
/// Zeroized on drop; never logged, never sent in the clear.
#[derive(Clone, PartialEq, Eq, Hash, Zeroize, ZeroizeOnDrop)]
pub struct GoodsKey(pub [u8; 32]);

impl fmt::Debug for GoodsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GoodsKey(<secret>)")
    }
}

/// Stateless cryptographic operations.
pub trait Crypto {
    /// SHA-256 of the concatenation of `parts`.
    fn digest(&self, parts: &[&[u8]]) -> Digest;
    /// Does `sig` by `key` cover exactly `msg`?
    fn verify(&self, key: &PublicKey, msg: &[u8], sig: &Signature) -> bool;
    /// Seals `plaintext` so that only the holder of `to`'s secret can read it. `info` binds
    /// the seal to its purpose (domain separation). `entropy` is fresh randomness from the
    /// caller: the core has no random source of its own.
    fn seal(&self, to: &SealKey, info: &[u8], plaintext: &[u8], entropy: [u8; 32]) -> Vec<u8>;
    /// The public half of a sealing secret.
    fn seal_key(&self, secret: &SealSecret) -> SealKey;
    /// Opens what was sealed to `secret`'s public half with the same `info`; `None` if the
    /// seal is for another key or `info`, or was altered.
    fn open(&self, secret: &SealSecret, info: &[u8], sealed: &[u8]) -> Option<Vec<u8>>;

    /// v2 sealing between two parties with static sealing keys: `plaintext` sealed under the
    /// key their X25519 agreement derives (computed once per pair and cached, so a purchase
    /// costs no public-key operation), with `aad` binding it to its purpose and purchase and
    /// `nonce` fresh randomness from the caller. Only `own`'s holder and `peer`'s can open it.
    fn pair_seal(
        &self,
        own: &SealSecret,
        peer: &SealKey,
        aad: &[u8],
        plaintext: &[u8],
        nonce: [u8; 24],
    ) -> Vec<u8>;
    /// Opens what [`Crypto::pair_seal`] sealed between `own` and `peer` with the same `aad`;
    /// `None` if it was sealed for another pair or purpose, or was altered.
    fn pair_open(
        &self,
        own: &SealSecret,
        peer: &SealKey,
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>>;

    /// HMAC-SHA256 under `key` of the concatenation of `parts`: a party's keyed
    /// derivations from its own secret (v2: the merchant's K per purchase and its offer
    /// tickets). Callers make the concatenation unambiguous (fixed lengths, prefixes).
    fn mac(&self, key: &[u8; 32], parts: &[&[u8]]) -> Digest;
}

/// A party's signing key.
pub trait Signer {
    fn public_key(&self) -> PublicKey;
    fn sign(&self, msg: &[u8]) -> Signature;
}

/// An X25519 secret: opens what was sealed to its public half. Zeroized on drop.
#[derive(Clone, PartialEq, Eq, Hash, Zeroize, ZeroizeOnDrop)]
pub struct SealSecret(pub [u8; 32]);

impl fmt::Debug for SealSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealSecret(<secret>)")
    }
}

/// A deterministic stand-in for the real cryptography, for simulation and model checking.
///
/// It keeps the structure the protocol relies on (a signature verifies only for the key
/// and message it was made for; a seal opens only with the key and `info` it was made for)
/// at a tiny fraction of the cost, and with no secrecy at all. **Never use it for money.**
/// Only with the `symbolic` feature (the model checker's) or in tests.
#[cfg(any(test, feature = "symbolic"))]
pub mod symbolic {
    use super::*;
    use std::hash::{Hash, Hasher};

    /// A 64-bit hash widened to the byte-array sizes; collisions are irrelevant in a model.
    fn h(parts: &[&[u8]]) -> u64 {
        let mut s = std::collections::hash_map::DefaultHasher::new();
        for p in parts {
            p.len().hash(&mut s);
            p.hash(&mut s);
        }
        s.finish()
    }

    fn widen<const N: usize>(x: u64) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            *b = x.rotate_left((i as u32 * 8) % 64) as u8 ^ (i as u8);
        }
        out
    }

    /// The symbolic [`Crypto`].
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SymbolicCrypto;

    impl Crypto for SymbolicCrypto {
        fn digest(&self, parts: &[&[u8]]) -> Digest {
            Digest(widen(h(parts)))
        }
        fn verify(&self, key: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
            *sig == Signature(widen(h(&[b"sig", &key.0, msg])))
        }
        fn seal(&self, to: &SealKey, info: &[u8], plaintext: &[u8], _entropy: [u8; 32]) -> Vec<u8> {
            let mut out = widen::<8>(h(&[b"seal", &to.0, info])).to_vec();
            out.extend_from_slice(plaintext);
            out
        }
        fn seal_key(&self, secret: &SealSecret) -> SealKey {
            SealKey(widen(h(&[b"seal-key", &secret.0])))
        }
        fn open(&self, secret: &SealSecret, info: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
            let tag = widen::<8>(h(&[b"seal", &self.seal_key(secret).0, info]));
            let body = sealed.strip_prefix(&tag[..])?;
            Some(body.to_vec())
        }
        fn pair_seal(
            &self,
            own: &SealSecret,
            peer: &SealKey,
            aad: &[u8],
            plaintext: &[u8],
            _nonce: [u8; 24],
        ) -> Vec<u8> {
            let mut out = pair_tag(&self.seal_key(own), peer, aad).to_vec();
            out.extend_from_slice(plaintext);
            out
        }
        fn pair_open(
            &self,
            own: &SealSecret,
            peer: &SealKey,
            aad: &[u8],
            sealed: &[u8],
        ) -> Option<Vec<u8>> {
            let tag = pair_tag(&self.seal_key(own), peer, aad);
            Some(sealed.strip_prefix(&tag[..])?.to_vec())
        }
        fn mac(&self, key: &[u8; 32], parts: &[&[u8]]) -> Digest {
            let mut all: Vec<&[u8]> = vec![b"mac", key];
            all.extend_from_slice(parts);
            Digest(widen(h(&all)))
        }
    }

    /// The same for both ends of a pair: the two public keys in ascending order.
    fn pair_tag(a: &SealKey, b: &SealKey, aad: &[u8]) -> [u8; 8] {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        widen::<8>(h(&[b"pair", &lo.0, &hi.0, aad]))
    }

    /// A symbolic signing key. Its "secret" is its name.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    pub struct SymbolicSigner {
        public: PublicKey,
    }

    impl SymbolicSigner {
        pub fn new(name: &str) -> Self {
            Self {
                public: PublicKey(widen(h(&[b"pk", name.as_bytes()]))),
            }
        }
    }

    impl Signer for SymbolicSigner {
        fn public_key(&self) -> PublicKey {
            self.public
        }
        fn sign(&self, msg: &[u8]) -> Signature {
            Signature(widen(h(&[b"sig", &self.public.0, msg])))
        }
    }

    /// A deterministic symbolic sealing secret derived from a name.
    pub fn seal_secret(name: &str) -> SealSecret {
        SealSecret(widen(h(&[b"seal-secret", name.as_bytes()])))
    }
}

macro_rules! secret_serde {
    ($name:ident) => {
        /// Serialized as hex, only for persisting to files only the owner can read.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(self.0))
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.as_bytes(), &mut out)
                    .map_err(|_| serde::de::Error::custom("secret must be 32 bytes as hex"))?;
                Ok(Self(out))
            }
        }
    };
}
secret_serde!(SealSecret);
secret_serde!(GoodsKey);

/// The public commitment to a goods key: `SHA-256("netbill/v1/goods-key" || K)`.
pub fn goods_key_digest(crypto: &dyn Crypto, key: &GoodsKey) -> Digest {
    crypto.digest(&[b"netbill/v1/goods-key", &key.0])
}

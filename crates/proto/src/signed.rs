//! Signed objects: a body's canonical bytes, a version, a domain-separation tag, a signature.
//!
//! The signature covers `DOMAIN || 0x00 || VERSION || body`, where `DOMAIN` names the kind
//! of object (`netbill/v1/quote`, `netbill/v1/epo`, …). A signature made for one kind of
//! object can therefore never be passed off as another, and a future version can never be
//! confused with this one. On the wire a signed object travels as its exact signed bytes
//! plus the signature, so there is nothing to re-encode before checking it.

use std::marker::PhantomData;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{Codec, DecodeError, FIELD_LEN_MAX, Reader, Writer};
use crate::crypto::{Crypto, Digest, PublicKey, Signature, Signer};

/// The version of a signed object whose kind has only ever had one.
pub const VERSION: u8 = 1;

/// A body that is signed as a whole, under its own domain-separation tag.
///
/// Each kind is versioned on its own: the first byte of the signed bytes is the body's
/// [`version`](SignedBody::version), and [`decode_version`](SignedBody::decode_version)
/// reads every version of the kind that is still accepted, so records signed by an older
/// release stay readable and checkable.
pub trait SignedBody: Codec + Clone {
    /// e.g. `b"netbill/v1/quote"`: names the kind (the version is the byte after it).
    const DOMAIN: &'static [u8];

    /// The version this body is encoded (and signed) as.
    fn version(&self) -> u8 {
        VERSION
    }

    /// Decodes a body of `version`; refuses versions this kind never had.
    fn decode_version(version: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if version == VERSION {
            Self::decode(r)
        } else {
            Err(DecodeError::UnsupportedVersion(version))
        }
    }
}

/// A signature did not verify under the expected key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad signature on {domain}")]
pub struct BadSignature {
    pub domain: &'static str,
}

/// A body, its exact signed bytes and the signature over them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signed<T> {
    body: T,
    bytes: Vec<u8>,
    signature: Signature,
    _kind: PhantomData<T>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

/// The exact bytes a signature of this kind covers.
pub fn to_be_signed(domain: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 1 + bytes.len());
    out.extend_from_slice(domain);
    out.push(0);
    out.extend_from_slice(bytes);
    out
}

impl<T: SignedBody> Signed<T> {
    /// Signs `body` with `signer`.
    pub fn sign(body: T, signer: &dyn Signer) -> Self {
        let mut w = Writer::new();
        w.u8(body.version());
        body.encode(&mut w);
        let bytes = w.into_bytes();
        let signature = signer.sign(&to_be_signed(T::DOMAIN, &bytes));
        Signed {
            body,
            bytes,
            signature,
            _kind: PhantomData,
        }
    }

    /// Rebuilds a signed object from its wire form. Decodes strictly; does not verify.
    pub fn from_parts(bytes: Vec<u8>, signature: Signature) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&bytes);
        let version = r.u8()?;
        let body = T::decode_version(version, &mut r)?;
        r.finish()?;
        Ok(Signed {
            body,
            bytes,
            signature,
            _kind: PhantomData,
        })
    }

    /// The body, once the signature is shown to be `key`'s.
    pub fn verify(&self, crypto: &dyn Crypto, key: &PublicKey) -> Result<&T, BadSignature> {
        if crypto.verify(key, &to_be_signed(T::DOMAIN, &self.bytes), &self.signature) {
            Ok(&self.body)
        } else {
            Err(BadSignature {
                domain: std::str::from_utf8(T::DOMAIN).unwrap_or("?"),
            })
        }
    }

    /// The body *without* checking the signature: only to find out whose key to check it
    /// with, or to show it to a person.
    pub fn body_unverified(&self) -> &T {
        &self.body
    }
    /// The signed bytes (version byte, then the body's canonical encoding).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The version the object was signed as (its first signed byte).
    pub fn version(&self) -> u8 {
        // Never empty: every constructor starts the bytes with the version.
        self.bytes.first().copied().unwrap_or_default()
    }
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
    /// A digest naming this exact signed object (bytes and signature).
    pub fn digest(&self, crypto: &dyn Crypto) -> Digest {
        crypto.digest(&[T::DOMAIN, &[0], &self.bytes, &self.signature.0])
    }
}

impl<T: SignedBody> Codec for Signed<T> {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.bytes);
        w.fixed(&self.signature.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bytes = r.bytes(FIELD_LEN_MAX)?.to_vec();
        let signature = Signature(r.array()?);
        Signed::from_parts(bytes, signature)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSigned<'a> {
    body: std::borrow::Cow<'a, str>,
    sig: std::borrow::Cow<'a, str>,
}

impl<T: SignedBody> Serialize for Signed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireSigned {
            body: B64.encode(&self.bytes).into(),
            sig: B64.encode(self.signature.0).into(),
        }
        .serialize(s)
    }
}

impl<'de, T: SignedBody> Deserialize<'de> for Signed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireSigned::deserialize(d)?;
        if w.body.len() > FIELD_LEN_MAX * 4 / 3 + 4 {
            return Err(D::Error::custom("signed body is too long"));
        }
        let bytes = B64
            .decode(w.body.as_bytes())
            .map_err(|_| D::Error::custom("signed body is not base64url"))?;
        let sig: [u8; 64] = B64
            .decode(w.sig.as_bytes())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| D::Error::custom("signature is not 64 bytes of base64url"))?;
        Signed::from_parts(bytes, Signature(sig)).map_err(D::Error::custom)
    }
}

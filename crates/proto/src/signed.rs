//! Signed objects: a body's canonical bytes, a version, a domain-separation tag, a signature.
//!
//! The signature covers `DOMAIN || 0x00 || VERSION || body`, where `DOMAIN` names the kind
//! of object (`netbill/v1/quote`, `netbill/v1/epo`, …). A signature made for one kind of
//! object can therefore never be passed off as another, and a future version can never be
//! confused with this one. On the wire a signed object travels as its exact signed bytes
//! plus the signature, so there is nothing to re-encode before checking it.
//!
//! Kinds that allow it ([`SignedBody::BATCH_SIGNED`]: N's receipts) may instead be signed in
//! a batch ([`Signed::sign_batch`]): one signature over the Merkle root of many objects,
//! each carrying its inclusion path ([`SignatureForm::Batch`], see [`crate::batch`]).
//! [`Signed::verify`] checks either form, so callers need not know which one they hold.

use std::marker::PhantomData;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::batch;
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

    /// May objects of this kind be signed in a batch ([`Signed::sign_batch`])? Decoding
    /// refuses a batch signature on a kind that may not have one.
    const BATCH_SIGNED: bool = false;

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

/// Where an object sits in a signed batch: its leaf's index, the number of leaves, and the
/// sibling hashes from the leaf up to the root. Only a path of the one length `index` and
/// `count` imply can be built or decoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchProof {
    index: u32,
    count: u32,
    path: Vec<Digest>,
}

impl BatchProof {
    /// A proof for leaf `index` of `count`; refuses an index out of range or a path of the
    /// wrong length.
    pub fn new(index: u32, count: u32, path: Vec<Digest>) -> Result<Self, DecodeError> {
        match batch::path_len(index, count) {
            None => Err(DecodeError::InvalidValue {
                field: "batch index",
            }),
            Some(len) if len != path.len() => Err(DecodeError::InvalidValue {
                field: "batch path length",
            }),
            Some(_) => Ok(BatchProof { index, count, path }),
        }
    }
    pub fn index(&self) -> u32 {
        self.index
    }
    /// The number of objects signed together.
    pub fn count(&self) -> u32 {
        self.count
    }
    /// Sibling hashes, leaf to root.
    pub fn path(&self) -> &[Digest] {
        &self.path
    }
}

/// How a signed object is signed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignatureForm {
    /// A signature over the object's own bytes (every object before batch signing).
    Single(Signature),
    /// A signature over the root of a batch, and the object's path to that root.
    Batch {
        root_signature: Signature,
        proof: BatchProof,
    },
}

impl SignatureForm {
    /// The Ed25519 signature: the object's own, or its batch root's.
    pub fn signature(&self) -> &Signature {
        match self {
            SignatureForm::Single(s) => s,
            SignatureForm::Batch { root_signature, .. } => root_signature,
        }
    }

    /// The stored form: the 64 signature bytes for a single signature; for a batch, the
    /// root signature ‖ u32 index ‖ u32 count ‖ u8 path length ‖ the path (32 bytes each).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SignatureForm::Single(s) => s.0.to_vec(),
            SignatureForm::Batch {
                root_signature,
                proof,
            } => {
                let mut w = Writer::new();
                w.fixed(&root_signature.0);
                w.u32(proof.index);
                w.u32(proof.count);
                // Never over PATH_LEN_MAX: `BatchProof::new` checked the length.
                w.u8(proof.path.len() as u8);
                for d in &proof.path {
                    w.fixed(&d.0);
                }
                w.into_bytes()
            }
        }
    }

    /// Reads [`SignatureForm::to_bytes`]'s form strictly: exactly 64 bytes are a single
    /// signature; anything else must be a whole, valid batch form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if let Ok(s) = <[u8; 64]>::try_from(bytes) {
            return Ok(SignatureForm::Single(Signature(s)));
        }
        let mut r = Reader::new(bytes);
        let root_signature = Signature(r.array()?);
        let index = r.u32()?;
        let count = r.u32()?;
        let len = usize::from(r.u8()?);
        if len > batch::PATH_LEN_MAX {
            return Err(DecodeError::TooLong {
                len,
                max: batch::PATH_LEN_MAX,
            });
        }
        let mut path = Vec::with_capacity(len);
        for _ in 0..len {
            path.push(Digest(r.array()?));
        }
        r.finish()?;
        Ok(SignatureForm::Batch {
            root_signature,
            proof: BatchProof::new(index, count, path)?,
        })
    }
}

/// Longest [`SignatureForm::to_bytes`].
pub const SIGNATURE_FORM_LEN_MAX: usize = 64 + 4 + 4 + 1 + 32 * batch::PATH_LEN_MAX;

/// A body, its exact signed bytes and the signature over them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signed<T> {
    body: T,
    bytes: Vec<u8>,
    form: SignatureForm,
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

fn signed_bytes<T: SignedBody>(body: &T) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(body.version());
    body.encode(&mut w);
    w.into_bytes()
}

fn domain_name<T: SignedBody>() -> &'static str {
    std::str::from_utf8(T::DOMAIN).unwrap_or("?")
}

impl<T: SignedBody> Signed<T> {
    /// Signs `body` with `signer`.
    pub fn sign(body: T, signer: &dyn Signer) -> Self {
        let bytes = signed_bytes(&body);
        let signature = signer.sign(&to_be_signed(T::DOMAIN, &bytes));
        Signed {
            body,
            bytes,
            form: SignatureForm::Single(signature),
            _kind: PhantomData,
        }
    }

    /// Signs all of `bodies` with one signature, over the root of a Merkle tree of them
    /// (see [`crate::batch`]); each signed object carries its path. In the order given.
    ///
    /// Only for kinds with [`SignedBody::BATCH_SIGNED`] (a compile-time check), and at most
    /// `u32::MAX` bodies (an internal limit: callers batch far fewer).
    pub fn sign_batch(bodies: Vec<T>, crypto: &dyn Crypto, signer: &dyn Signer) -> Vec<Self> {
        const { assert!(T::BATCH_SIGNED, "this kind of object is never batch-signed") };
        let count = u32::try_from(bodies.len()).expect("a batch of at most u32::MAX objects");
        let bytes: Vec<Vec<u8>> = bodies.iter().map(signed_bytes).collect();
        let leaves: Vec<Digest> = bytes
            .iter()
            .map(|b| batch::leaf_hash(crypto, T::DOMAIN, b))
            .collect();
        let Some((root, paths)) = batch::tree(crypto, &leaves) else {
            return Vec::new();
        };
        let root_signature = signer.sign(&batch::root_message(&root, count));
        bodies
            .into_iter()
            .zip(bytes)
            .zip(paths)
            .enumerate()
            .map(|(index, ((body, bytes), path))| Signed {
                body,
                bytes,
                form: SignatureForm::Batch {
                    root_signature,
                    // `tree` made the path of exactly this leaf; index < count.
                    proof: BatchProof {
                        index: index as u32,
                        count,
                        path,
                    },
                },
                _kind: PhantomData,
            })
            .collect()
    }

    /// Rebuilds a singly signed object from its wire form. Decodes strictly; does not verify.
    pub fn from_parts(bytes: Vec<u8>, signature: Signature) -> Result<Self, DecodeError> {
        Self::from_form(bytes, SignatureForm::Single(signature))
    }

    /// Rebuilds a signed object of either form. Decodes strictly; does not verify. A batch
    /// form is refused for kinds that are never batch-signed.
    pub fn from_form(bytes: Vec<u8>, form: SignatureForm) -> Result<Self, DecodeError> {
        if matches!(form, SignatureForm::Batch { .. }) && !T::BATCH_SIGNED {
            return Err(DecodeError::InvalidValue {
                field: "batch signature on a kind that is never batch-signed",
            });
        }
        let mut r = Reader::new(&bytes);
        let version = r.u8()?;
        let body = T::decode_version(version, &mut r)?;
        r.finish()?;
        Ok(Signed {
            body,
            bytes,
            form,
            _kind: PhantomData,
        })
    }

    /// The body, once the signature is shown to be `key`'s: over the object itself, or
    /// over a batch root that the object's path reaches.
    pub fn verify(&self, crypto: &dyn Crypto, key: &PublicKey) -> Result<&T, BadSignature> {
        let ok = match &self.form {
            SignatureForm::Single(s) => {
                crypto.verify(key, &to_be_signed(T::DOMAIN, &self.bytes), s)
            }
            SignatureForm::Batch {
                root_signature,
                proof,
            } => {
                let leaf = batch::leaf_hash(crypto, T::DOMAIN, &self.bytes);
                batch::root_from_path(crypto, leaf, proof.index, proof.count, &proof.path)
                    .is_some_and(|root| {
                        crypto.verify(
                            key,
                            &batch::root_message(&root, proof.count),
                            root_signature,
                        )
                    })
            }
        };
        if ok {
            Ok(&self.body)
        } else {
            Err(BadSignature {
                domain: domain_name::<T>(),
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
    /// The Ed25519 signature: over the object for a single signature, over the batch root
    /// for a batch one (which is then not enough to check the object: see [`Self::form`]).
    pub fn signature(&self) -> &Signature {
        self.form.signature()
    }
    /// How the object is signed, with the batch path if any.
    pub fn form(&self) -> &SignatureForm {
        &self.form
    }
    /// A digest naming this exact signed object (bytes and signature form):
    /// `SHA-256(DOMAIN ‖ 0x00 ‖ B ‖ F)`, F as in [`SignatureForm::to_bytes`] (for a single
    /// signature, its 64 bytes).
    pub fn digest(&self, crypto: &dyn Crypto) -> Digest {
        match &self.form {
            SignatureForm::Single(s) => crypto.digest(&[T::DOMAIN, &[0], &self.bytes, &s.0]),
            batch_form => crypto.digest(&[T::DOMAIN, &[0], &self.bytes, &batch_form.to_bytes()]),
        }
    }
}

impl<T: SignedBody> Codec for Signed<T> {
    /// `bytes B ‖ [64] S`; for kinds that may be batch-signed, `bytes B ‖ bytes F`.
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.bytes);
        if T::BATCH_SIGNED {
            w.bytes(&self.form.to_bytes());
        } else {
            w.fixed(&self.form.signature().0);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bytes = r.bytes(FIELD_LEN_MAX)?.to_vec();
        let form = if T::BATCH_SIGNED {
            SignatureForm::from_bytes(r.bytes(SIGNATURE_FORM_LEN_MAX)?)?
        } else {
            SignatureForm::Single(Signature(r.array()?))
        };
        Signed::from_form(bytes, form)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSigned<'a> {
    body: std::borrow::Cow<'a, str>,
    sig: std::borrow::Cow<'a, str>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_batch"
    )]
    batch: Option<WireBatch>,
}

/// `batch` is absent (a single signature) or a proof; `null` is neither.
fn present_batch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<WireBatch>, D::Error> {
    WireBatch::deserialize(d).map(Some)
}

/// The JSON form of a [`BatchProof`]; `sig` is then the batch root's signature.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBatch {
    index: u32,
    count: u32,
    path: Vec<Digest>,
}

impl<T: SignedBody> Serialize for Signed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireSigned {
            body: B64.encode(&self.bytes).into(),
            sig: B64.encode(self.form.signature().0).into(),
            batch: match &self.form {
                SignatureForm::Single(_) => None,
                SignatureForm::Batch { proof, .. } => Some(WireBatch {
                    index: proof.index,
                    count: proof.count,
                    path: proof.path.clone(),
                }),
            },
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
        let form = match w.batch {
            None => SignatureForm::Single(Signature(sig)),
            Some(b) => {
                if b.path.len() > batch::PATH_LEN_MAX {
                    return Err(D::Error::custom("batch path is too long"));
                }
                SignatureForm::Batch {
                    root_signature: Signature(sig),
                    proof: BatchProof::new(b.index, b.count, b.path).map_err(D::Error::custom)?,
                }
            }
        };
        Signed::from_form(bytes, form).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::symbolic::{SymbolicCrypto, SymbolicSigner};
    use crate::messages::Checkpoint;

    /// A batch-signable kind for these tests.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Note(u64);
    impl Codec for Note {
        fn encode(&self, w: &mut Writer) {
            w.u64(self.0);
        }
        fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
            Ok(Note(r.u64()?))
        }
    }
    impl SignedBody for Note {
        const DOMAIN: &'static [u8] = b"netbill/test/note";
        const BATCH_SIGNED: bool = true;
    }

    const C: SymbolicCrypto = SymbolicCrypto;

    fn n() -> SymbolicSigner {
        SymbolicSigner::new("N")
    }

    fn batch(first: u64, count: u64) -> Vec<Signed<Note>> {
        Signed::sign_batch((first..first + count).map(Note).collect(), &C, &n())
    }

    fn proof(s: &Signed<Note>) -> (&Signature, &BatchProof) {
        match s.form() {
            SignatureForm::Batch {
                root_signature,
                proof,
            } => (root_signature, proof),
            SignatureForm::Single(_) => panic!("not batch-signed"),
        }
    }

    fn with_form(s: &Signed<Note>, form: SignatureForm) -> Signed<Note> {
        Signed::from_form(s.bytes().to_vec(), form).unwrap()
    }

    #[test]
    fn every_receipt_of_a_batch_verifies_and_shares_one_signature() {
        let other = SymbolicSigner::new("M");
        for count in [1u64, 2, 3, 7, 64] {
            let signed = batch(100, count);
            assert_eq!(signed.len() as u64, count);
            let root_sig = *signed[0].signature();
            for (i, s) in signed.iter().enumerate() {
                assert_eq!(s.verify(&C, &n().public_key()), Ok(&Note(100 + i as u64)));
                assert!(s.verify(&C, &other.public_key()).is_err());
                assert_eq!(*s.signature(), root_sig, "one signature per batch");
                let (_, p) = proof(s);
                assert_eq!((p.index(), p.count()), (i as u32, count as u32));
                // Every wire form keeps the proof.
                let json: Signed<Note> =
                    serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap();
                assert_eq!(&json, s);
                assert_eq!(&Signed::<Note>::from_bytes(&s.to_bytes()).unwrap(), s);
                let stored = SignatureForm::from_bytes(&s.form().to_bytes()).unwrap();
                assert_eq!(&stored, s.form());
                assert!(with_form(s, stored).verify(&C, &n().public_key()).is_ok());
            }
        }
        assert!(Signed::<Note>::sign_batch(Vec::new(), &C, &n()).is_empty());
    }

    #[test]
    fn a_path_altered_by_one_bit_fails() {
        let signed = batch(0, 7);
        for s in &signed {
            let (sig, p) = proof(s);
            for (level, d) in p.path().iter().enumerate() {
                for bit in 0..256 {
                    let mut path = p.path().to_vec();
                    path[level].0[bit / 8] ^= 1 << (bit % 8);
                    assert_ne!(path[level], *d);
                    let form = SignatureForm::Batch {
                        root_signature: *sig,
                        proof: BatchProof::new(p.index(), p.count(), path).unwrap(),
                    };
                    assert!(with_form(s, form).verify(&C, &n().public_key()).is_err());
                }
            }
            for bit in 0..512 {
                let mut bad = *sig;
                bad.0[bit / 8] ^= 1 << (bit % 8);
                let form = SignatureForm::Batch {
                    root_signature: bad,
                    proof: p.clone(),
                };
                assert!(with_form(s, form).verify(&C, &n().public_key()).is_err());
            }
            // Another index that has a path of the same length.
            for index in 0..p.count() {
                if index == p.index() {
                    continue;
                }
                if let Ok(moved) = BatchProof::new(index, p.count(), p.path().to_vec()) {
                    let form = SignatureForm::Batch {
                        root_signature: *sig,
                        proof: moved,
                    };
                    assert!(with_form(s, form).verify(&C, &n().public_key()).is_err());
                }
            }
        }
    }

    #[test]
    fn a_receipt_with_another_batchs_path_or_root_signature_fails() {
        let a = batch(0, 7);
        let b = batch(1000, 7);
        for (ra, rb) in a.iter().zip(&b) {
            let (sig_a, pa) = proof(ra);
            let (sig_b, pb) = proof(rb);
            assert_ne!(sig_a, sig_b);
            // A's receipt with B's path (and B's signature): not a leaf of B's tree.
            let b_whole = SignatureForm::Batch {
                root_signature: *sig_b,
                proof: pb.clone(),
            };
            assert!(
                with_form(ra, b_whole)
                    .verify(&C, &n().public_key())
                    .is_err()
            );
            // A's receipt and path with B's root signature.
            let b_sig = SignatureForm::Batch {
                root_signature: *sig_b,
                proof: pa.clone(),
            };
            assert!(with_form(ra, b_sig).verify(&C, &n().public_key()).is_err());
            // A's root signature cannot pass as a signature of the receipt itself.
            assert!(
                with_form(ra, SignatureForm::Single(*sig_a))
                    .verify(&C, &n().public_key())
                    .is_err()
            );
        }
        // A singly signed receipt's signature is not a batch root signature either.
        let single = Signed::sign(Note(0), &n());
        let one = batch(0, 1);
        let (_, p1) = proof(&one[0]);
        let form = SignatureForm::Batch {
            root_signature: *single.signature(),
            proof: p1.clone(),
        };
        assert!(
            with_form(&single, form)
                .verify(&C, &n().public_key())
                .is_err()
        );
    }

    #[test]
    fn index_count_and_path_length_are_checked_at_decode() {
        let s = &batch(0, 3)[2];
        let (sig, p) = proof(s);
        assert_eq!(p.path().len(), 1);
        let d = p.path()[0];
        assert!(BatchProof::new(3, 3, vec![d]).is_err(), "index = count");
        assert!(BatchProof::new(0, 0, vec![]).is_err(), "no leaves");
        assert!(BatchProof::new(2, 3, vec![]).is_err(), "path too short");
        assert!(BatchProof::new(2, 3, vec![d, d]).is_err(), "path too long");
        assert!(BatchProof::new(u32::MAX, u32::MAX, vec![d; 32]).is_err());

        let stored = |index: u32, count: u32, len: u8, n: usize| {
            let mut b = sig.0.to_vec();
            b.extend_from_slice(&index.to_be_bytes());
            b.extend_from_slice(&count.to_be_bytes());
            b.push(len);
            for _ in 0..n {
                b.extend_from_slice(&d.0);
            }
            b
        };
        assert_eq!(
            SignatureForm::from_bytes(&stored(2, 3, 1, 1)).as_ref(),
            Ok(s.form())
        );
        for bad in [
            stored(3, 3, 1, 1),          // index out of range
            stored(7, 3, 1, 1),          // index out of range
            stored(0, 0, 0, 0),          // empty batch
            stored(2, 3, 2, 2),          // path longer than the tree is deep
            stored(2, 3, 1, 0),          // truncated
            stored(2, 3, 0, 1),          // trailing bytes
            stored(0, u32::MAX, 33, 33), // over the limit
            stored(0, u32::MAX, 255, 0), // over the limit, before reading it
            sig.0[..63].to_vec(),        // not a signature
            Vec::new(),
        ] {
            assert!(SignatureForm::from_bytes(&bad).is_err(), "{bad:?}");
        }

        let json = |batch: serde_json::Value| {
            let mut v = serde_json::to_value(s).unwrap();
            v["batch"] = batch;
            serde_json::from_value::<Signed<Note>>(v)
        };
        let hex = d.to_hex();
        assert!(json(serde_json::json!({"index": 2, "count": 3, "path": [hex]})).is_ok());
        for bad in [
            serde_json::json!({"index": 3, "count": 3, "path": [hex]}),
            serde_json::json!({"index": 2, "count": 3, "path": []}),
            serde_json::json!({"index": 2, "count": 3, "path": [hex, hex]}),
            serde_json::json!({"index": -1, "count": 3, "path": [hex]}),
            serde_json::json!({"index": 2, "count": 4294967296u64, "path": [hex]}),
            serde_json::json!({"index": 2, "count": 3, "path": [hex], "root": hex}),
            serde_json::json!({"index": 2, "count": 3, "path": ["00"]}),
            serde_json::json!({"index": 2, "count": 3}),
            serde_json::json!(null),
        ] {
            assert!(json(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn old_single_signed_json_and_bytes_still_read() {
        let single = Signed::sign(Note(5), &n());
        let json = serde_json::to_value(&single).unwrap();
        // Exactly the form every record signed before batch signing has.
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["body", "sig"]);
        let back: Signed<Note> = serde_json::from_value(json).unwrap();
        assert_eq!(back.verify(&C, &n().public_key()), Ok(&Note(5)));
        assert_eq!(back.form(), &SignatureForm::Single(*single.signature()));
        assert_eq!(single.form().to_bytes(), single.signature().0.to_vec());
        // The digest of a singly signed object is what it always was.
        assert_eq!(
            single.digest(&C),
            C.digest(&[Note::DOMAIN, &[0], single.bytes(), &single.signature().0])
        );
    }

    #[test]
    fn the_digest_covers_the_proof() {
        let a = batch(0, 4);
        let b = batch(0, 5);
        // Same body, same index, other batch: other digests.
        assert_eq!(a[0].bytes(), b[0].bytes());
        assert_ne!(a[0].digest(&C), b[0].digest(&C));
        let single = Signed::sign(Note(0), &n());
        assert_ne!(a[0].digest(&C), single.digest(&C));
    }

    #[test]
    fn kinds_that_are_never_batch_signed_refuse_a_batch_form() {
        let cp = Checkpoint {
            seq: 1,
            hash: Digest([1; 32]),
            deposits_minor: 0,
            payouts_minor: 0,
            time_ms: 0,
        };
        let s = Signed::sign(cp, &n());
        let one = batch(0, 1);
        let (_, p) = proof(&one[0]);
        let form = SignatureForm::Batch {
            root_signature: *s.signature(),
            proof: p.clone(),
        };
        assert!(Signed::<Checkpoint>::from_form(s.bytes().to_vec(), form).is_err());
        let mut v = serde_json::to_value(&s).unwrap();
        v["batch"] = serde_json::json!({"index": 0, "count": 1, "path": []});
        assert!(serde_json::from_value::<Signed<Checkpoint>>(v).is_err());
    }
}

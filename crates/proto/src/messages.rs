//! Every message of the purchase protocol and every signed object, in one place.
//!
//! Signed objects (see [`crate::signed`]) have a canonical binary encoding; plain messages
//! travel as JSON. `docs/protocol.md` describes both byte by byte.

use serde::{Deserialize, Serialize};

use crate::codec::{Codec, DecodeError, Reader, Writer};
use crate::crypto::{Digest, PublicKey, SealKey};
use crate::ids::{AccountId, EpoId, GroupName, ProductCode};
use crate::money::Amount;
use crate::signed::{Signed, SignedBody};

/// Longest human-readable product description (the paper's ProductID).
pub const DESCRIPTION_LEN_MAX: usize = 200;
/// Longest customer identity or pseudonym shown to merchants.
pub const IDENTITY_LEN_MAX: usize = 64;
/// Longest memo.
pub const MEMO_LEN_MAX: usize = 200;
/// Longest product request data (PRD).
pub const PRD_LEN_MAX: usize = 4096;
/// Most group credentials one price request may carry.
pub const CREDENTIALS_MAX: usize = 4;
/// Longest sealed part of any message.
pub const SEALED_LEN_MAX: usize = 4096;

fn enc_digest(w: &mut Writer, d: &Digest) {
    w.fixed(&d.0);
}
fn dec_digest(r: &mut Reader<'_>) -> Result<Digest, DecodeError> {
    Ok(Digest(r.array()?))
}
fn dec_amount(r: &mut Reader<'_>, field: &'static str) -> Result<Amount, DecodeError> {
    Amount::from_minor(r.u64()?).map_err(|_| DecodeError::InvalidValue { field })
}
fn dec_text(r: &mut Reader<'_>, max: usize) -> Result<String, DecodeError> {
    Ok(r.str(max)?.to_string())
}

// ---------------------------------------------------------------------------------------
// Steps 1–2: price request and quote.

/// Step 1, C → M: what the customer wants and who she is (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceRequest {
    /// The customer's identity or pseudonym as the merchant will know her.
    pub identity: String,
    /// The key that will sign the EPO; the quote is bound to it.
    pub customer_key: PublicKey,
    pub product: ProductCode,
    /// Product request data, hex; application-specific (e.g. a page range).
    #[serde(default)]
    pub prd_hex: String,
    /// The price the customer is willing to pay, if she bids.
    #[serde(default)]
    pub bid: Option<Amount>,
    /// Group credentials that may change the price (e.g. a student discount).
    #[serde(default)]
    pub credentials: Vec<Signed<GroupCredential>>,
}

/// A group authority's statement that a key belongs to a member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCredential {
    pub group: GroupName,
    /// Free-form detail, e.g. a membership number.
    pub detail: String,
    /// The member's signing key: only EPOs signed by it get the group's price.
    pub holder_key: PublicKey,
    pub expires_at_ms: u64,
}

impl SignedBody for GroupCredential {
    const DOMAIN: &'static [u8] = b"netbill/v1/group-credential";
}

impl Codec for GroupCredential {
    fn encode(&self, w: &mut Writer) {
        self.group.encode(w);
        w.str(&self.detail);
        w.fixed(&self.holder_key.0);
        w.u64(self.expires_at_ms);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(GroupCredential {
            group: GroupName::decode(r)?,
            detail: dec_text(r, MEMO_LEN_MAX)?,
            holder_key: PublicKey(r.array()?),
            expires_at_ms: r.u64()?,
        })
    }
}

/// Step 2, M → C: the merchant's signed offer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quote {
    pub merchant: AccountId,
    /// The merchant's quote number (the paper's TID); unique per merchant.
    pub quote_id: u64,
    pub identity: String,
    pub customer_key: PublicKey,
    pub product: ProductCode,
    /// Human-readable description: it appears on the customer's statement.
    pub description: String,
    pub price: Amount,
    /// The group whose discount set this price, if any.
    pub group: Option<GroupName>,
    /// SHA-256 of the product request data.
    pub prd_digest: Digest,
    /// SHA-256 of the plaintext goods: what the merchant promises to deliver.
    pub goods_digest: Digest,
    pub goods_len: u64,
    pub expires_at_ms: u64,
}

impl SignedBody for Quote {
    const DOMAIN: &'static [u8] = b"netbill/v1/quote";
}

impl Codec for Quote {
    fn encode(&self, w: &mut Writer) {
        self.merchant.encode(w);
        w.u64(self.quote_id);
        w.str(&self.identity);
        w.fixed(&self.customer_key.0);
        self.product.encode(w);
        w.str(&self.description);
        w.u64(self.price.minor());
        w.option(self.group.as_ref(), |w, g| g.encode(w));
        enc_digest(w, &self.prd_digest);
        enc_digest(w, &self.goods_digest);
        w.u64(self.goods_len);
        w.u64(self.expires_at_ms);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Quote {
            merchant: AccountId::decode(r)?,
            quote_id: r.u64()?,
            identity: dec_text(r, IDENTITY_LEN_MAX)?,
            customer_key: PublicKey(r.array()?),
            product: ProductCode::decode(r)?,
            description: dec_text(r, DESCRIPTION_LEN_MAX)?,
            price: dec_amount(r, "price")?,
            group: r.option("group", GroupName::decode)?,
            prd_digest: dec_digest(r)?,
            goods_digest: dec_digest(r)?,
            goods_len: r.u64()?,
            expires_at_ms: r.u64()?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Steps 3–4: goods request and encrypted delivery.

/// Step 3, C → M: accept a quote (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoodsRequest {
    pub quote: Signed<Quote>,
}

/// Step 4, M → C, first half: the purchase the encrypted goods belong to (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoodsOffer {
    /// The merchant's handle for this delivery.
    pub purchase: String,
    /// SHA-256 of the ciphertext the customer is about to download.
    pub checksum: Digest,
    pub ciphertext_len: u64,
}

/// Step 4, M → C, second half (after the ciphertext is downloaded): the EPOID, stamped at
/// the end of delivery, and how long an EPO for it may still commit (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryNote {
    pub epoid: EpoId,
    pub expires_at_ms: u64,
}

// ---------------------------------------------------------------------------------------
// v2: the two customer–merchant round trips.

/// The header of a v2 402 answer that carries the [`PurchaseOffer`]: base64url (no
/// padding) of its JSON.
pub const OFFER_HEADER: &str = "netbill-offer";

/// v2, M → C in the 402 answer to a purchase request: everything steps 2 and 4 carried,
/// sent together with the ciphertext (the answer's body). The customer sends it back
/// unchanged with her EPO; the `ticket` lets the merchant trust it without having stored
/// anything (JSON, in the `NetBill-Offer` header as base64url).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseOffer {
    pub quote: Signed<Quote>,
    pub goods: GoodsOffer,
    pub note: DeliveryNote,
    /// The merchant's MAC over the quote's digest, `goods` and `note`: opaque to the
    /// customer, who only returns it.
    pub ticket: Digest,
}

/// v2, C → M: the signed EPO for an offer (steps 5 and 6 of the 1995 protocol in one
/// request); answered with the receipt (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payment {
    pub offer: PurchaseOffer,
    pub epo: Signed<Epo>,
}

// ---------------------------------------------------------------------------------------
// Step 5: the electronic purchase order.

/// Step 5, C → M: the customer's signed payment order — her point of no return.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epo {
    /// Clear part, readable by M and N.
    pub identity: String,
    pub customer_key: PublicKey,
    pub description: String,
    pub price: Amount,
    pub merchant: AccountId,
    /// SHA-256 of the *encrypted* goods the customer received.
    pub goods_checksum: Digest,
    pub prd_digest: Digest,
    /// SHA-256 binding the customer's true account and a nonce (see [`EpoSecret`]).
    pub account_commitment: Digest,
    pub epoid: EpoId,
    pub expires_at_ms: u64,
    /// Digest of the signed quote this EPO accepts.
    pub quote_digest: Digest,
    /// The customer's sealing key. v2: her wallet's static X25519 key, with which N derives
    /// the pair key that seals [`EpoSecret`] and the receipt's [`CustomerPart`]. v1: a fresh
    /// key per purchase to which N sealed the customer part with HPKE.
    pub reply_key: SealKey,
    /// [`EpoSecret`], sealed so that only N can read it; the variant is the EPO's version.
    pub sealed_for_billing: Sealed,
}

/// A part of a signed object only one other party may read, and how it is sealed. The
/// variant is fixed by the version of the object that carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sealed {
    /// v1: HPKE (a fresh X25519 key agreement per seal) to the reader's sealing key.
    Hpke(Vec<u8>),
    /// v2: XChaCha20-Poly1305 under the key the two parties' static X25519 keys derive
    /// (see [`crate::crypto::Crypto::pair_seal`]); `nonce (24 bytes) || ciphertext`.
    Pair(Vec<u8>),
}

impl Sealed {
    /// The sealed bytes, whatever the scheme.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Sealed::Hpke(b) | Sealed::Pair(b) => b,
        }
    }
    /// The version of the signed object that carries a part sealed this way.
    pub fn version(&self) -> u8 {
        match self {
            Sealed::Hpke(_) => 1,
            Sealed::Pair(_) => 2,
        }
    }
    fn decode(version: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let b = r.bytes(SEALED_LEN_MAX)?.to_vec();
        match version {
            1 => Ok(Sealed::Hpke(b)),
            2 => Ok(Sealed::Pair(b)),
            v => Err(DecodeError::UnsupportedVersion(v)),
        }
    }
}

/// The additional data that binds a v2 pair-sealed part to its purpose and purchase:
/// `purpose || 0x00 || EPOID bytes`.
pub fn pair_aad(purpose: &[u8], epoid: &EpoId) -> Vec<u8> {
    let mut aad = purpose.to_vec();
    aad.push(0);
    aad.extend_from_slice(&epoid.to_bytes());
    aad
}

impl SignedBody for Epo {
    const DOMAIN: &'static [u8] = b"netbill/v1/epo";
    fn version(&self) -> u8 {
        self.sealed_for_billing.version()
    }
    fn decode_version(version: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Epo::decode_as(version, r)
    }
}

impl Codec for Epo {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.identity);
        w.fixed(&self.customer_key.0);
        w.str(&self.description);
        w.u64(self.price.minor());
        self.merchant.encode(w);
        enc_digest(w, &self.goods_checksum);
        enc_digest(w, &self.prd_digest);
        enc_digest(w, &self.account_commitment);
        self.epoid.encode(w);
        w.u64(self.expires_at_ms);
        enc_digest(w, &self.quote_digest);
        w.fixed(&self.reply_key.0);
        w.bytes(self.sealed_for_billing.as_bytes());
    }
    /// Decodes the current version (v2).
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Epo::decode_as(2, r)
    }
}

impl Epo {
    /// The EPO's body layout is the same in v1 and v2; the version says how the sealed
    /// part is sealed.
    fn decode_as(version: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Epo {
            identity: dec_text(r, IDENTITY_LEN_MAX)?,
            customer_key: PublicKey(r.array()?),
            description: dec_text(r, DESCRIPTION_LEN_MAX)?,
            price: dec_amount(r, "price")?,
            merchant: AccountId::decode(r)?,
            goods_checksum: dec_digest(r)?,
            prd_digest: dec_digest(r)?,
            account_commitment: dec_digest(r)?,
            epoid: EpoId::decode(r)?,
            expires_at_ms: r.u64()?,
            quote_digest: dec_digest(r)?,
            reply_key: SealKey(r.array()?),
            sealed_for_billing: Sealed::decode(version, r)?,
        })
    }
}

/// The part of the EPO only N can read: the customer's true account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpoSecret {
    pub account: AccountId,
    /// Random nonce so the account commitment reveals nothing to the merchant.
    pub account_nonce: [u8; 16],
    pub memo: String,
}

impl EpoSecret {
    /// v1: the HPKE seal's `info`: binds it to EPOs.
    pub const SEAL_INFO: &'static [u8] = b"netbill/v1/epo-secret";
    /// v2: the purpose in the pair seal's additional data ([`pair_aad`]).
    pub const PAIR_PURPOSE: &'static [u8] = b"netbill/v2/epo-secret";
}

impl Codec for EpoSecret {
    fn encode(&self, w: &mut Writer) {
        self.account.encode(w);
        w.fixed(&self.account_nonce);
        w.str(&self.memo);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(EpoSecret {
            account: AccountId::decode(r)?,
            account_nonce: r.array()?,
            memo: dec_text(r, MEMO_LEN_MAX)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Step 6: the merchant's endorsement.

/// Step 6, M → N: the EPO endorsed with the goods key — the merchant's point of no return.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endorsement {
    pub epo: Signed<Epo>,
    pub merchant_key: PublicKey,
    pub memo: String,
    /// The goods key K, sealed so that only N can read it, bound to the EPOID.
    pub sealed_key: SealedKey,
    /// `SHA-256("netbill/v1/goods-key" || K)`: a public commitment to K.
    pub key_digest: Digest,
}

/// How the endorsement seals K to N; the variant is the endorsement's version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SealedKey {
    /// v1: HPKE to N's sealing key with `info` = [`crate::billing::sealed_key_info`].
    Hpke(Vec<u8>),
    /// v2: pair-sealed between the merchant's static sealing key `merchant_seal_key` and
    /// N's, with [`pair_aad`]`(`[`Endorsement::KEY_PURPOSE`]`, epoid)`.
    Pair {
        merchant_seal_key: SealKey,
        sealed: Vec<u8>,
    },
}

impl Endorsement {
    /// v2: the purpose in the pair seal of K.
    pub const KEY_PURPOSE: &'static [u8] = b"netbill/v2/goods-key";

    /// v1 layout: epo, merchant_key, memo, sealed_key, key_digest. v2 puts the merchant's
    /// sealing key before the sealed key.
    fn decode_as(version: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let epo = Signed::decode(r)?;
        let merchant_key = PublicKey(r.array()?);
        let memo = dec_text(r, MEMO_LEN_MAX)?;
        let sealed_key = match version {
            1 => SealedKey::Hpke(r.bytes(SEALED_LEN_MAX)?.to_vec()),
            2 => SealedKey::Pair {
                merchant_seal_key: SealKey(r.array()?),
                sealed: r.bytes(SEALED_LEN_MAX)?.to_vec(),
            },
            v => return Err(DecodeError::UnsupportedVersion(v)),
        };
        Ok(Endorsement {
            epo,
            merchant_key,
            memo,
            sealed_key,
            key_digest: dec_digest(r)?,
        })
    }
}

impl SignedBody for Endorsement {
    const DOMAIN: &'static [u8] = b"netbill/v1/endorsement";
    fn version(&self) -> u8 {
        match self.sealed_key {
            SealedKey::Hpke(_) => 1,
            SealedKey::Pair { .. } => 2,
        }
    }
    fn decode_version(version: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Endorsement::decode_as(version, r)
    }
}

impl Codec for Endorsement {
    fn encode(&self, w: &mut Writer) {
        self.epo.encode(w);
        w.fixed(&self.merchant_key.0);
        w.str(&self.memo);
        match &self.sealed_key {
            SealedKey::Hpke(b) => w.bytes(b),
            SealedKey::Pair {
                merchant_seal_key,
                sealed,
            } => {
                w.fixed(&merchant_seal_key.0);
                w.bytes(sealed);
            }
        }
        enc_digest(w, &self.key_digest);
    }
    /// Decodes the current version (v2).
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Endorsement::decode_as(2, r)
    }
}

// ---------------------------------------------------------------------------------------
// Steps 7–8: the receipt.

/// The outcome a receipt reports. Every outcome but `Committed` leaves balances unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultCode {
    /// Money moved; the receipt carries K.
    Committed,
    InsufficientFunds,
    /// The EPO's expiry passed before N saw the endorsement.
    Expired,
    /// The EPOID expired with no endorsement: aborted for good.
    Aborted,
    /// The customer's or merchant's key is revoked.
    KeyRevoked,
    /// The customer's or merchant's account is frozen.
    AccountFrozen,
    /// An account named in the EPO does not exist, or its key is not the signer's.
    UnknownAccount,
    /// The EPO is not acceptable (e.g. the account commitment does not match).
    Refused,
}

impl ResultCode {
    const ALL: [ResultCode; 8] = [
        ResultCode::Committed,
        ResultCode::InsufficientFunds,
        ResultCode::Expired,
        ResultCode::Aborted,
        ResultCode::KeyRevoked,
        ResultCode::AccountFrozen,
        ResultCode::UnknownAccount,
        ResultCode::Refused,
    ];
    fn to_u8(self) -> u8 {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0) as u8
    }
    /// A short English description for people.
    pub fn describe(self) -> &'static str {
        match self {
            ResultCode::Committed => "committed: paid, goods key released",
            ResultCode::InsufficientFunds => "failed: insufficient funds",
            ResultCode::Expired => "failed: the purchase order expired",
            ResultCode::Aborted => "aborted: expired with no endorsement",
            ResultCode::KeyRevoked => "failed: a key is revoked",
            ResultCode::AccountFrozen => "failed: an account is frozen",
            ResultCode::UnknownAccount => "failed: unknown account or unregistered key",
            ResultCode::Refused => "failed: purchase order refused",
        }
    }
}

/// Steps 7–8, N → M → C: N's signed, timestamped statement of the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Receipt {
    pub result: ResultCode,
    pub epoid: EpoId,
    pub identity: String,
    pub merchant: AccountId,
    pub description: String,
    pub price: Amount,
    /// Digest of the signed EPO decided on (zero for an abort with no EPO).
    pub epo_digest: Digest,
    /// The commitment to K from the endorsement (zero unless committed).
    pub key_digest: Digest,
    /// [`CustomerPart`], sealed for the customer the way her EPO's version says (v1: HPKE
    /// to the reply key; v2: the customer–N pair key); empty for an abort with no EPO.
    pub customer_part: Vec<u8>,
    pub time_ms: u64,
}

impl SignedBody for Receipt {
    const DOMAIN: &'static [u8] = b"netbill/v1/receipt";
    /// N signs the receipts of one durable write together (see [`crate::batch`]).
    const BATCH_SIGNED: bool = true;
}

impl Codec for Receipt {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.result.to_u8());
        self.epoid.encode(w);
        w.str(&self.identity);
        self.merchant.encode(w);
        w.str(&self.description);
        w.u64(self.price.minor());
        enc_digest(w, &self.epo_digest);
        enc_digest(w, &self.key_digest);
        w.bytes(&self.customer_part);
        w.u64(self.time_ms);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let code = r.u8()?;
        let result = *ResultCode::ALL
            .get(code as usize)
            .ok_or(DecodeError::InvalidValue { field: "result" })?;
        Ok(Receipt {
            result,
            epoid: EpoId::decode(r)?,
            identity: dec_text(r, IDENTITY_LEN_MAX)?,
            merchant: AccountId::decode(r)?,
            description: dec_text(r, DESCRIPTION_LEN_MAX)?,
            price: dec_amount(r, "price")?,
            epo_digest: dec_digest(r)?,
            key_digest: dec_digest(r)?,
            customer_part: r.bytes(SEALED_LEN_MAX)?.to_vec(),
            time_ms: r.u64()?,
        })
    }
}

/// The receipt's part only the customer can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerPart {
    /// Repeated so a merchant cannot replay the part of an earlier receipt.
    pub epoid: EpoId,
    pub account: AccountId,
    /// The account's balance after this outcome, in minor units (negative on credit).
    pub balance_minor: i64,
    /// The balance fell below the account's low-water mark: time to top up.
    pub low_balance: bool,
    /// K, present only when committed.
    pub goods_key: Option<[u8; 32]>,
}

impl CustomerPart {
    /// v1: the HPKE seal's `info`.
    pub const SEAL_INFO: &'static [u8] = b"netbill/v1/customer-part";
    /// v2: the purpose in the pair seal's additional data ([`pair_aad`]).
    pub const PAIR_PURPOSE: &'static [u8] = b"netbill/v2/customer-part";
}

impl Codec for CustomerPart {
    fn encode(&self, w: &mut Writer) {
        self.epoid.encode(w);
        self.account.encode(w);
        w.i64(self.balance_minor);
        w.bool(self.low_balance);
        w.option(self.goods_key.as_ref(), |w, k| w.fixed(k));
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CustomerPart {
            epoid: EpoId::decode(r)?,
            account: AccountId::decode(r)?,
            balance_minor: r.i64()?,
            low_balance: r.bool("low_balance")?,
            goods_key: r.option("goods_key", |r| r.array())?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Authenticated requests: status queries, balances, statements.

/// A request signed by an account's key: who asks, for what, when.
///
/// Sent in the `NetBill-Auth` header as `base64url(bytes).base64url(sig)`; the signature
/// covers the method, path, a digest of the body and the time, so it cannot be moved to
/// another request, and it is refused outside a short window around the server's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAuth {
    pub account: AccountId,
    pub method: String,
    pub path: String,
    pub body_digest: Digest,
    pub time_ms: u64,
}

impl SignedBody for RequestAuth {
    const DOMAIN: &'static [u8] = b"netbill/v1/request";
}

impl Codec for RequestAuth {
    fn encode(&self, w: &mut Writer) {
        self.account.encode(w);
        w.str(&self.method);
        w.str(&self.path);
        enc_digest(w, &self.body_digest);
        w.u64(self.time_ms);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RequestAuth {
            account: AccountId::decode(r)?,
            method: dec_text(r, 16)?,
            path: dec_text(r, 1024)?,
            body_digest: dec_digest(r)?,
            time_ms: r.u64()?,
        })
    }
}

/// What N or M knows about an EPOID (JSON answer to a status query).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusAnswer {
    pub epoid: EpoId,
    /// `None`: no outcome yet (the EPO may still commit until its expiry).
    pub receipt: Option<Signed<Receipt>>,
}

// ---------------------------------------------------------------------------------------
// Refunds: the merchant gives back what a committed purchase paid.

/// Longest refund id (chosen by the merchant; it makes the refund idempotent).
pub const REFUND_ID_LEN_MAX: usize = 64;

/// M → N: the merchant returns `amount` of a committed purchase to its customer. The
/// merchant chooses `refund_id`; the same request sent again is the same refund.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RefundRequest {
    pub refund_id: String,
    pub epoid: EpoId,
    pub merchant: AccountId,
    pub amount: Amount,
    pub reason: String,
    pub time_ms: u64,
}

impl SignedBody for RefundRequest {
    const DOMAIN: &'static [u8] = b"netbill/v1/refund";
}

impl Codec for RefundRequest {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.refund_id);
        self.epoid.encode(w);
        self.merchant.encode(w);
        w.u64(self.amount.minor());
        w.str(&self.reason);
        w.u64(self.time_ms);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RefundRequest {
            refund_id: dec_text(r, REFUND_ID_LEN_MAX)?,
            epoid: EpoId::decode(r)?,
            merchant: AccountId::decode(r)?,
            amount: dec_amount(r, "amount")?,
            reason: dec_text(r, MEMO_LEN_MAX)?,
            time_ms: r.u64()?,
        })
    }
}

/// N → M (and to the customer on request): N's signed statement that a refund moved money.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RefundReceipt {
    pub refund_id: String,
    pub epoid: EpoId,
    pub merchant: AccountId,
    pub amount: Amount,
    /// Everything refunded for this EPOID so far, this refund included (never above `price`).
    pub refunded_total: Amount,
    /// What the purchase paid.
    pub price: Amount,
    /// Digest of the merchant's signed [`RefundRequest`].
    pub request_digest: Digest,
    pub time_ms: u64,
}

impl SignedBody for RefundReceipt {
    const DOMAIN: &'static [u8] = b"netbill/v1/refund-receipt";
    /// N signs the receipts of one durable write together (see [`crate::batch`]).
    const BATCH_SIGNED: bool = true;
}

impl Codec for RefundReceipt {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.refund_id);
        self.epoid.encode(w);
        self.merchant.encode(w);
        w.u64(self.amount.minor());
        w.u64(self.refunded_total.minor());
        w.u64(self.price.minor());
        enc_digest(w, &self.request_digest);
        w.u64(self.time_ms);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RefundReceipt {
            refund_id: dec_text(r, REFUND_ID_LEN_MAX)?,
            epoid: EpoId::decode(r)?,
            merchant: AccountId::decode(r)?,
            amount: dec_amount(r, "amount")?,
            refunded_total: dec_amount(r, "refunded_total")?,
            price: dec_amount(r, "price")?,
            request_digest: dec_digest(r)?,
            time_ms: r.u64()?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The journal's signed checkpoints.

/// N's signed statement of the journal's head: entry `seq` has chain hash `hash`, and the
/// money that entered and left the system up to it. An auditor holding a checkpoint can
/// tell whether any entry at or before `seq` was later deleted, altered or reordered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: Digest,
    pub deposits_minor: u64,
    pub payouts_minor: u64,
    pub time_ms: u64,
}

impl SignedBody for Checkpoint {
    const DOMAIN: &'static [u8] = b"netbill/v1/checkpoint";
}

impl Codec for Checkpoint {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.seq);
        enc_digest(w, &self.hash);
        w.u64(self.deposits_minor);
        w.u64(self.payouts_minor);
        w.u64(self.time_ms);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Checkpoint {
            seq: r.u64()?,
            hash: dec_digest(r)?,
            deposits_minor: r.u64()?,
            payouts_minor: r.u64()?,
            time_ms: r.u64()?,
        })
    }
}

/// What N hands a purchase's customer or merchant for a dispute (JSON): the signed records
/// of the EPOID and the goods key K as N opened it from the endorsement. Every part but K
/// carries its own signature, so the bundle may be passed on to an arbitrator as it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingEvidence {
    pub epoid: EpoId,
    /// N's signed receipt for the EPOID.
    pub receipt: Signed<Receipt>,
    /// The merchant-signed endorsement (it carries the customer-signed EPO); `None` for an
    /// abort, which had none.
    pub endorsement: Option<Signed<Endorsement>>,
    /// K, for a committed purchase.
    pub goods_key: Option<crate::crypto::GoodsKey>,
    /// Refunds of this purchase, each with N's signed receipt.
    #[serde(default)]
    pub refunds: Vec<Signed<RefundReceipt>>,
}

/// A customer's or merchant's signed permission for an arbitrator to fetch N's evidence of
/// one purchase. The arbitrator proves it holds `arbitrator_key` by signing the request
/// (`NetBill-Auth` naming the grantor, signed with the arbitrator's key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceGrant {
    pub epoid: EpoId,
    /// The party granting access: the purchase's customer account or merchant.
    pub grantor: AccountId,
    pub arbitrator_key: PublicKey,
    pub expires_at_ms: u64,
}

impl SignedBody for EvidenceGrant {
    const DOMAIN: &'static [u8] = b"netbill/v1/evidence-grant";
}

impl Codec for EvidenceGrant {
    fn encode(&self, w: &mut Writer) {
        self.epoid.encode(w);
        self.grantor.encode(w);
        w.fixed(&self.arbitrator_key.0);
        w.u64(self.expires_at_ms);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(EvidenceGrant {
            epoid: EpoId::decode(r)?,
            grantor: AccountId::decode(r)?,
            arbitrator_key: PublicKey(r.array()?),
            expires_at_ms: r.u64()?,
        })
    }
}

//! The merchant's (M's) side of a purchase.
//!
//! [`make_quote`] answers a price request. In v2 the merchant answers a purchase request
//! with [`make_offer`] (the quote, the ciphertext's checksum and the EPOID, under a ticket)
//! and stores nothing: when the offer comes back with the customer's EPO,
//! [`MerchantPurchase::from_offer`] checks the ticket and derives K again. Endorsing is
//! deterministic, so a merchant that crashed after sending an endorsement sends N the same
//! bytes again on the customer's retry. (v1 purchases, stored by older releases, follow one
//! delivery step by step through the same [`MerchantPurchase`].)

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::{Codec, Writer};
use crate::crypto::{
    Crypto, Digest, GoodsKey, PublicKey, SealKey, SealSecret, Signer, goods_key_digest,
};
use crate::ids::{AccountId, EpoId, GroupName, ProductCode};
use crate::messages::{
    DeliveryNote, Endorsement, Epo, GoodsOffer, GroupCredential, IDENTITY_LEN_MAX, PRD_LEN_MAX,
    PriceRequest, PurchaseOffer, Quote, Receipt, ResultCode, StatusAnswer,
};
use crate::money::Amount;
use crate::signed::Signed;

/// Why the merchant refuses a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerchantError {
    #[error("the product request data is not hex or is over {PRD_LEN_MAX} bytes")]
    BadProductRequestData,
    #[error("the identity is empty or over {IDENTITY_LEN_MAX} bytes")]
    BadIdentity,
    #[error("the bid {bid} is below the price {price}")]
    BidTooLow { bid: Amount, price: Amount },
    #[error("credential for group {0} is not signed by an authority this merchant trusts")]
    UntrustedCredential(GroupName),
    #[error("credential for group {0} is expired or was issued to another key")]
    CredentialNotForYou(GroupName),
    #[error("this quote was not signed by this merchant")]
    NotOurQuote,
    #[error("the quote expired; ask for a new one")]
    QuoteExpired,
    #[error("the EPO does not match the quote and delivery: {0}")]
    EpoMismatch(&'static str),
    #[error("the customer's signature on the EPO does not verify")]
    BadCustomerSignature,
    #[error("the purchase order expired before it reached the merchant")]
    EpoExpired,
    #[error("this purchase was already endorsed with a different EPO")]
    AlreadyEndorsed,
    #[error("the goods have not been delivered yet: fetch them and the delivery note first")]
    NotDelivered,
    #[error("the receipt does not verify under the billing server's key")]
    BadReceiptSignature,
    #[error("the receipt is for another purchase: {0}")]
    ReceiptMismatch(&'static str),
    #[error("no endorsement has been sent for this purchase")]
    NotEndorsed,
    #[error("this offer was not made by this merchant, or was altered: ask for the goods again")]
    BadTicket,
    #[error("a purchase request must carry a bid: the most the customer accepts to pay")]
    BidRequired,
}

impl MerchantError {
    /// A stable machine-readable code (the suffix of the problem `type`).
    pub fn code(&self) -> &'static str {
        match self {
            MerchantError::BadProductRequestData => "bad-product-request-data",
            MerchantError::BadIdentity => "bad-identity",
            MerchantError::BidTooLow { .. } => "bid-too-low",
            MerchantError::UntrustedCredential(_) => "untrusted-credential",
            MerchantError::CredentialNotForYou(_) => "credential-not-for-you",
            MerchantError::NotOurQuote => "not-our-quote",
            MerchantError::QuoteExpired => "quote-expired",
            MerchantError::EpoMismatch(_) => "epo-mismatch",
            MerchantError::BadCustomerSignature => "bad-customer-signature",
            MerchantError::EpoExpired => "epo-expired",
            MerchantError::AlreadyEndorsed => "already-endorsed",
            MerchantError::NotDelivered => "not-delivered",
            MerchantError::BadReceiptSignature => "bad-receipt-signature",
            MerchantError::ReceiptMismatch(_) => "receipt-mismatch",
            MerchantError::NotEndorsed => "not-endorsed",
            MerchantError::BadTicket => "bad-ticket",
            MerchantError::BidRequired => "bid-required",
        }
    }
}

/// A product as the merchant offers it, with its goods' digest computed by the shell.
#[derive(Clone, Debug)]
pub struct Offer {
    pub product: ProductCode,
    pub description: String,
    pub price: Amount,
    /// Prices for members of groups, e.g. `acm-student` → `USD:0.005`.
    pub group_prices: Vec<(GroupName, Amount)>,
    pub goods_digest: Digest,
    pub goods_len: u64,
}

/// Step 2: the signed quote for a price request.
///
/// A credential lowers the price only if it is signed by the authority the merchant trusts
/// for its group (`trusted`), is unexpired, and names the requesting key.
#[allow(clippy::too_many_arguments)]
pub fn make_quote(
    crypto: &dyn Crypto,
    signer: &dyn Signer,
    merchant: &AccountId,
    request: &PriceRequest,
    offer: &Offer,
    trusted: &dyn Fn(&GroupName) -> Option<PublicKey>,
    quote_id: u64,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<Signed<Quote>, MerchantError> {
    if request.identity.is_empty() || request.identity.len() > IDENTITY_LEN_MAX {
        return Err(MerchantError::BadIdentity);
    }
    if request.prd_hex.len() > 2 * PRD_LEN_MAX {
        return Err(MerchantError::BadProductRequestData);
    }
    let prd = hex::decode(&request.prd_hex).map_err(|_| MerchantError::BadProductRequestData)?;
    let mut price = offer.price;
    let mut group = None;
    for cred in &request.credentials {
        let claimed = &cred.body_unverified().group;
        let authority =
            trusted(claimed).ok_or(MerchantError::UntrustedCredential(claimed.clone()))?;
        let c: &GroupCredential = cred
            .verify(crypto, &authority)
            .map_err(|_| MerchantError::UntrustedCredential(claimed.clone()))?;
        if c.holder_key != request.customer_key || c.expires_at_ms < now_ms {
            return Err(MerchantError::CredentialNotForYou(c.group.clone()));
        }
        if let Some((_, p)) = offer.group_prices.iter().find(|(g, _)| *g == c.group)
            && *p < price
        {
            price = *p;
            group = Some(c.group.clone());
        }
    }
    if let Some(bid) = request.bid
        && bid < price
    {
        return Err(MerchantError::BidTooLow { bid, price });
    }
    Ok(Signed::sign(
        Quote {
            merchant: merchant.clone(),
            quote_id,
            identity: request.identity.clone(),
            customer_key: request.customer_key,
            product: offer.product.clone(),
            description: offer.description.clone(),
            price,
            group,
            prd_digest: crypto.digest(&[&prd]),
            goods_digest: offer.goods_digest,
            goods_len: offer.goods_len,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        },
        signer,
    ))
}

/// Step 3: accept a goods request only for an unexpired quote this merchant signed.
pub fn check_goods_request<'q>(
    crypto: &dyn Crypto,
    own_key: &PublicKey,
    quote: &'q Signed<Quote>,
    now_ms: u64,
) -> Result<&'q Quote, MerchantError> {
    let q = quote
        .verify(crypto, own_key)
        .map_err(|_| MerchantError::NotOurQuote)?;
    if q.expires_at_ms < now_ms {
        return Err(MerchantError::QuoteExpired);
    }
    Ok(q)
}

// ---------------------------------------------------------------------------------------
// v2: a merchant that stores nothing before it endorses.
//
// Every per-purchase secret of the merchant is derived from its static sealing secret,
// under a label of its own, with HMAC-SHA256 ([`Crypto::mac`]):
//
// * K = mac(secret, "netbill/v2/goods-key" 0x00 || quote digest || EPOID): the same
//   purchase always gets the same K, two purchases never share one (each has its own EPOID
//   and quote), and a restarted merchant can endorse an EPO for goods it delivered without
//   having written K down.
// * the offer's ticket = mac(secret, "netbill/v2/offer-ticket" 0x00 || quote digest ||
//   encoded goods offer || encoded delivery note): proves to the merchant, when the offer
//   comes back with the EPO, that it made this offer (quote, ciphertext checksum, EPOID).
// * the nonce sealing K to N = mac(secret, "netbill/v2/seal-nonce" 0x00 || EPOID || K): the
//   endorsement of an EPO is a function of the EPO, so re-endorsing after a crash sends N
//   the very same bytes, which it answers with the very same receipt.

const GOODS_KEY_LABEL: &[u8] = b"netbill/v2/goods-key\0";
const TICKET_LABEL: &[u8] = b"netbill/v2/offer-ticket\0";
const SEAL_NONCE_LABEL: &[u8] = b"netbill/v2/seal-nonce\0";

/// v2: the goods key K of the purchase with this quote and EPOID.
pub fn derive_goods_key(
    crypto: &dyn Crypto,
    secret: &SealSecret,
    quote: &Signed<Quote>,
    epoid: &EpoId,
) -> GoodsKey {
    let q = quote.digest(crypto);
    GoodsKey(
        crypto
            .mac(&secret.0, &[GOODS_KEY_LABEL, &q.0, &epoid.to_bytes()])
            .0,
    )
}

fn ticket(
    crypto: &dyn Crypto,
    secret: &SealSecret,
    quote: &Signed<Quote>,
    goods: &GoodsOffer,
    note: &DeliveryNote,
) -> Digest {
    let mut w = Writer::new();
    w.fixed(&quote.digest(crypto).0);
    w.str(&goods.purchase);
    w.fixed(&goods.checksum.0);
    w.u64(goods.ciphertext_len);
    note.epoid.encode(&mut w);
    w.u64(note.expires_at_ms);
    crypto.mac(&secret.0, &[TICKET_LABEL, &w.into_bytes()])
}

/// The nonce entropy sealing K for N: a function of the EPOID and K (see above).
fn seal_entropy(
    crypto: &dyn Crypto,
    secret: &SealSecret,
    epoid: &EpoId,
    key: &GoodsKey,
) -> [u8; 32] {
    crypto
        .mac(&secret.0, &[SEAL_NONCE_LABEL, &epoid.to_bytes(), &key.0])
        .0
}

/// v2, step 2+4: the offer sent with the ciphertext. `goods` holds the checksum the shell
/// computed of the ciphertext under [`derive_goods_key`]`(quote, note.epoid)`.
pub fn make_offer(
    crypto: &dyn Crypto,
    secret: &SealSecret,
    quote: Signed<Quote>,
    goods: GoodsOffer,
    note: DeliveryNote,
) -> PurchaseOffer {
    let ticket = ticket(crypto, secret, &quote, &goods, &note);
    PurchaseOffer {
        quote,
        goods,
        note,
        ticket,
    }
}

/// What the merchant's shell is to do for a purchase, as [`MerchantPurchase::on_payment`] and
/// [`MerchantPurchase::on_billing_answer`] decide it: the server (`crates/merchant`) and the
/// model checker carry out the same effects, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MerchantEffect {
    /// Send this endorsement to N (`POST /v1/endorsements`), holding it in memory only (it is
    /// deterministic); feed N's answer to [`MerchantPurchase::on_billing_answer`].
    SendEndorsement(Box<Signed<Endorsement>>),
    /// Ask N for the outcome of this EPOID (the M→N status query); feed the answer to
    /// [`MerchantPurchase::on_billing_answer`].
    AskBilling(EpoId),
    /// Store the settled purchase: the merchant's books. No durable write is needed: N holds
    /// the outcome, and a status query or the customer's retry finds it again.
    Record,
    /// Answer the customer's payment with this receipt.
    AnswerCustomer(Box<Signed<Receipt>>),
}

/// Where a merchant's purchase stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantState {
    /// K chosen, ciphertext offered; the customer is downloading.
    Delivering,
    /// The EPOID is stamped; waiting for the customer's EPO.
    Delivered,
    /// Endorsement persisted and (being) sent to N: no way back.
    Endorsed,
    /// N's receipt is in.
    Settled(ResultCode),
}

/// One delivery, from the goods request to the receipt: what the merchant persists.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MerchantPurchase {
    pub quote: Signed<Quote>,
    pub goods_key: GoodsKey,
    pub offer: GoodsOffer,
    pub delivery: Option<DeliveryNote>,
    pub endorsement: Option<Signed<Endorsement>>,
    pub receipt: Option<Signed<Receipt>>,
}

impl MerchantPurchase {
    /// Step 4 begins: K was drawn fresh by the shell, and the shell computed the checksum
    /// of the ciphertext under it. Persist this before sending any ciphertext.
    pub fn new(quote: Signed<Quote>, goods_key: GoodsKey, offer: GoodsOffer) -> Self {
        Self {
            quote,
            goods_key,
            offer,
            delivery: None,
            endorsement: None,
            receipt: None,
        }
    }

    pub fn state(&self) -> MerchantState {
        match (&self.receipt, &self.endorsement, &self.delivery) {
            (Some(r), _, _) => MerchantState::Settled(r.body_unverified().result),
            (None, Some(_), _) => MerchantState::Endorsed,
            (None, None, Some(_)) => MerchantState::Delivered,
            (None, None, None) => MerchantState::Delivering,
        }
    }

    /// v2: the purchase an offer that came back with the customer's EPO stands for, once
    /// its ticket shows this merchant made it: K derived again, the EPOID stamped.
    pub fn from_offer(
        crypto: &dyn Crypto,
        secret: &SealSecret,
        offer: PurchaseOffer,
    ) -> Result<Self, MerchantError> {
        let expected = ticket(crypto, secret, &offer.quote, &offer.goods, &offer.note);
        if !constant_time_eq(&expected.0, &offer.ticket.0) {
            return Err(MerchantError::BadTicket);
        }
        let goods_key = derive_goods_key(crypto, secret, &offer.quote, &offer.note.epoid);
        Ok(Self {
            quote: offer.quote,
            goods_key,
            offer: offer.goods,
            delivery: Some(offer.note),
            endorsement: None,
            receipt: None,
        })
    }

    /// Step 4 ends: stamp the EPOID at the end of delivery. Asking again returns the same note.
    pub fn deliver(&mut self, serial: u64, now_ms: u64, expiry_ms: u64) -> DeliveryNote {
        if let Some(note) = &self.delivery {
            return note.clone();
        }
        let note = DeliveryNote {
            epoid: EpoId {
                merchant: self.quote.body_unverified().merchant.clone(),
                delivered_at_ms: now_ms,
                serial,
            },
            expires_at_ms: now_ms.saturating_add(expiry_ms),
        };
        self.delivery = Some(note.clone());
        note
    }

    /// Step 6: check the customer's EPO against the quote and delivery, then endorse it
    /// with K sealed to N (under the pair key of `merchant_seal_secret` and N's sealing
    /// key). The endorsement is a function of the purchase, the EPO and the memo (the
    /// seal's nonce is derived, see [`derive_goods_key`]), so endorsing the same EPO again,
    /// even after a crash that lost it, gives the same bytes; on this purchase object a
    /// different EPO is refused.
    #[allow(clippy::too_many_arguments)]
    pub fn endorse(
        &mut self,
        crypto: &dyn Crypto,
        signer: &dyn Signer,
        merchant_seal_secret: &SealSecret,
        billing_seal_key: &SealKey,
        epo: Signed<Epo>,
        memo: &str,
        now_ms: u64,
    ) -> Result<Signed<Endorsement>, MerchantError> {
        if let Some(done) = &self.endorsement {
            return if done.body_unverified().epo == epo {
                Ok(done.clone())
            } else {
                Err(MerchantError::AlreadyEndorsed)
            };
        }
        let note = self.delivery.as_ref().ok_or(MerchantError::NotDelivered)?;
        let quote = self.quote.body_unverified();
        let e = epo
            .verify(crypto, &quote.customer_key)
            .map_err(|_| MerchantError::BadCustomerSignature)?;
        let checks: [(bool, &'static str); 9] = [
            (e.customer_key == quote.customer_key, "customer key"),
            (e.identity == quote.identity, "identity"),
            (e.description == quote.description, "description"),
            (e.price == quote.price, "price"),
            (e.merchant == quote.merchant, "merchant"),
            (
                e.goods_checksum == self.offer.checksum,
                "checksum of the encrypted goods",
            ),
            (e.prd_digest == quote.prd_digest, "product request data"),
            (
                e.epoid == note.epoid && e.expires_at_ms == note.expires_at_ms,
                "EPOID",
            ),
            (e.quote_digest == self.quote.digest(crypto), "quote"),
        ];
        if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(MerchantError::EpoMismatch(what));
        }
        if now_ms > e.expires_at_ms {
            return Err(MerchantError::EpoExpired);
        }
        let sealed_key = crate::sealing::seal_goods_key(
            crypto,
            merchant_seal_secret,
            billing_seal_key,
            &e.epoid,
            &self.goods_key,
            seal_entropy(crypto, merchant_seal_secret, &e.epoid, &self.goods_key),
        );
        let endorsement = Signed::sign(
            Endorsement {
                epo,
                merchant_key: signer.public_key(),
                memo: memo.to_string(),
                sealed_key,
                key_digest: goods_key_digest(crypto, &self.goods_key),
            },
            signer,
        );
        self.endorsement = Some(endorsement.clone());
        Ok(endorsement)
    }

    /// Step 7: take N's receipt (from the endorsement's answer or a status query).
    pub fn settle(
        &mut self,
        crypto: &dyn Crypto,
        billing_key: &PublicKey,
        receipt: Signed<Receipt>,
    ) -> Result<ResultCode, MerchantError> {
        let r = receipt
            .verify(crypto, billing_key)
            .map_err(|_| MerchantError::BadReceiptSignature)?;
        let result = r.result;
        let endorsement = self
            .endorsement
            .as_ref()
            .ok_or(MerchantError::NotEndorsed)?;
        let epo = &endorsement.body_unverified().epo;
        if r.epoid != epo.body_unverified().epoid {
            return Err(MerchantError::ReceiptMismatch("EPOID"));
        }
        if result != ResultCode::Aborted && r.epo_digest != epo.digest(crypto) {
            return Err(MerchantError::ReceiptMismatch("EPO"));
        }
        if result == ResultCode::Committed
            && r.key_digest != endorsement.body_unverified().key_digest
        {
            return Err(MerchantError::ReceiptMismatch("goods key"));
        }
        self.receipt = Some(receipt);
        Ok(result)
    }

    /// The EPOID, once stamped.
    pub fn epoid(&self) -> Option<&EpoId> {
        self.delivery.as_ref().map(|d| &d.epoid)
    }

    /// The purchase a v2 payment is for: the merchant's own record of it (`stored`, under the
    /// offer's purchase id) if that is the same quote and goods — a retry of a purchase it
    /// settled or endorsed — else `fresh`, rebuilt from the offer by [`Self::from_offer`].
    pub fn for_payment(fresh: Self, stored: Option<Self>) -> Self {
        match stored {
            Some(s) if s.quote == fresh.quote && s.offer == fresh.offer => s,
            _ => fresh,
        }
    }

    /// Step 5 arrives: the customer's EPO. Endorses it (the point of no return: the shell
    /// sends the endorsement to N, [`MerchantEffect::SendEndorsement`]); for the EPO already
    /// endorsed, answers with the receipt if the purchase is settled, else asks N for it.
    #[allow(clippy::too_many_arguments)]
    pub fn on_payment(
        &mut self,
        crypto: &dyn Crypto,
        signer: &dyn Signer,
        merchant_seal_secret: &SealSecret,
        billing_seal_key: &SealKey,
        epo: Signed<Epo>,
        memo: &str,
        now_ms: u64,
    ) -> Result<MerchantEffect, MerchantError> {
        if let Some(done) = &self.endorsement
            && done.body_unverified().epo == epo
        {
            return Ok(match &self.receipt {
                Some(r) => MerchantEffect::AnswerCustomer(Box::new(r.clone())),
                None => MerchantEffect::AskBilling(epo.body_unverified().epoid.clone()),
            });
        }
        self.endorse(
            crypto,
            signer,
            merchant_seal_secret,
            billing_seal_key,
            epo,
            memo,
            now_ms,
        )
        .map(|e| MerchantEffect::SendEndorsement(Box::new(e)))
    }

    /// Step 7 arrives: N's answer to the endorsement or to a status query. A receipt settles
    /// the purchase (record it, answer the customer with it); "no outcome yet" sends N the
    /// very same endorsement again (N answers idempotently).
    pub fn on_billing_answer(
        &mut self,
        crypto: &dyn Crypto,
        billing_key: &PublicKey,
        answer: &StatusAnswer,
    ) -> Result<Vec<MerchantEffect>, MerchantError> {
        match &answer.receipt {
            Some(r) => {
                self.settle(crypto, billing_key, r.clone())?;
                Ok(vec![
                    MerchantEffect::Record,
                    MerchantEffect::AnswerCustomer(Box::new(r.clone())),
                ])
            }
            None => Ok(self
                .endorsement
                .iter()
                .map(|e| MerchantEffect::SendEndorsement(Box::new(e.clone())))
                .collect()),
        }
    }
}

/// Compares two MACs without a timing side channel on where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

//! The customer's (C's) side of a purchase.
//!
//! A [`CustomerPurchase`] is what the wallet persists for one purchase. Its transitions
//! check everything the customer must check before she commits (the quote's signature, the
//! checksum of the ciphertext she actually received) and everything after (N's signature on
//! the receipt, that it is for *her* EPO, that K matches N's commitment). Signing the EPO is
//! her point of no return: the shell persists the purchase with the EPO before sending it.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::billing::account_commitment;
use crate::crypto::{
    Crypto, Digest, GoodsKey, PublicKey, SealKey, SealSecret, Signer, goods_key_digest,
};
use crate::ids::{AccountId, ProductCode};
use crate::messages::{DeliveryNote, Epo, EpoSecret, GoodsOffer, Quote, Receipt, ResultCode};
use crate::money::Amount;
use crate::sealing;
use crate::signed::Signed;

/// Who pays, as signing the EPO needs it.
pub struct Payer<'a> {
    pub signer: &'a dyn Signer,
    /// N's sealing key (the EPO's part only N reads is sealed to it).
    pub billing_seal_key: &'a SealKey,
    /// The customer's true account (sealed to N).
    pub account: &'a AccountId,
    /// The customer's memo to N.
    pub memo: &'a str,
}

/// What the customer's shell is to do for a purchase, as [`CustomerPurchase::on_goods`],
/// [`CustomerPurchase::on_receipt`] and [`CustomerPurchase::recover`] decide it: the wallet
/// and the model checker carry out the same effects, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomerEffect {
    /// Write the purchase record durably (fsync) before the next effect: it holds the
    /// signed EPO, which may be paid.
    PersistDurably,
    /// Write the purchase record; no fsync needed (what it adds can be fetched again).
    Persist,
    /// Send the signed EPO to the merchant (v2: with the offer, `POST /v2/pay`).
    SendEpo(Box<Signed<Epo>>),
    /// Decrypt the ciphertext with K, checked against the quote's plaintext digest.
    Decrypt(GoodsKey),
    /// Ask for the receipt of this EPOID: the merchant's status, N's, or the EPO re-sent.
    AskForReceipt(crate::ids::EpoId),
}

/// Why the customer refuses to go on (or cannot use a receipt).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CustomerError {
    #[error("the quote is not signed by the merchant's key")]
    BadQuoteSignature,
    #[error("the quote does not match the request: {0}")]
    QuoteMismatch(&'static str),
    #[error("the price {price} is over your limit of {limit}")]
    PriceOverLimit { price: Amount, limit: Amount },
    #[error("the quote has expired; ask for a new one")]
    QuoteExpired,
    #[error("the ciphertext received does not match the merchant's checksum: not paying")]
    ChecksumMismatch,
    #[error("the delivery note is not for this purchase: {0}")]
    DeliveryMismatch(&'static str),
    #[error("the purchase is past its expiry; it can no longer be paid")]
    Expired,
    #[error("the purchase order is already signed: the purchase can only be finished, not aborted")]
    AlreadyCommitted,
    #[error("this step is out of order: the purchase is {0:?}")]
    OutOfOrder(CustomerState),
    #[error("the receipt is not signed by the billing server's key")]
    BadReceiptSignature,
    #[error("the receipt is for another purchase: {0}")]
    ReceiptMismatch(&'static str),
    #[error("the receipt's private part cannot be opened with this purchase's reply key")]
    CustomerPartUnreadable,
    #[error("the goods key in the receipt does not match the key N committed to")]
    KeyMismatch,
    #[error("the memo is {0} bytes; at most {max} are allowed", max = crate::messages::MEMO_LEN_MAX)]
    MemoTooLong(usize),
}

/// Where a customer's purchase stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerState {
    /// Quote accepted; downloading the encrypted goods.
    Receiving,
    /// Ciphertext received and checked; EPOID known; not yet committed.
    Delivered,
    /// EPO signed: the point of no return. Waiting for the receipt.
    Committed,
    /// Receipt in hand.
    Settled(ResultCode),
    /// Abandoned before the EPO was signed: nothing was paid, nothing can be.
    Aborted,
}

/// What the customer expects of a quote.
pub struct QuoteExpectation<'a> {
    pub merchant_key: &'a PublicKey,
    pub customer_key: &'a PublicKey,
    pub product: &'a ProductCode,
    /// Refuse quotes above this price.
    pub max_price: Option<Amount>,
}

/// Step 2 (customer side): is this quote from the merchant, for me, and acceptable?
pub fn check_quote<'q>(
    crypto: &dyn Crypto,
    quote: &'q Signed<Quote>,
    expect: &QuoteExpectation<'_>,
    now_ms: u64,
) -> Result<&'q Quote, CustomerError> {
    let q = quote
        .verify(crypto, expect.merchant_key)
        .map_err(|_| CustomerError::BadQuoteSignature)?;
    if q.customer_key != *expect.customer_key {
        return Err(CustomerError::QuoteMismatch("customer key"));
    }
    if q.product != *expect.product {
        return Err(CustomerError::QuoteMismatch("product"));
    }
    if let Some(limit) = expect.max_price
        && q.price > limit
    {
        return Err(CustomerError::PriceOverLimit {
            price: q.price,
            limit,
        });
    }
    if q.expires_at_ms < now_ms {
        return Err(CustomerError::QuoteExpired);
    }
    Ok(q)
}

/// What the customer's wallet persists for one purchase.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CustomerPurchase {
    pub quote: Signed<Quote>,
    pub offer: GoodsOffer,
    /// Checksum of the ciphertext as the customer received it.
    pub received_checksum: Option<Digest>,
    pub delivery: Option<DeliveryNote>,
    /// The secret half of the EPO's reply key: opens the receipt's private part. v2: the
    /// wallet's static sealing secret (the same for every purchase); v1 purchases kept a
    /// fresh one each.
    pub reply_secret: SealSecret,
    pub epo: Option<Signed<Epo>>,
    pub receipt: Option<Signed<Receipt>>,
    pub aborted: bool,
}

/// A receipt's meaning for the customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Paid; here is K.
    Paid {
        goods_key: GoodsKey,
        balance_minor: i64,
        low_balance: bool,
    },
    /// Not paid (with N's signed reason).
    NotPaid {
        result: ResultCode,
        balance_minor: Option<i64>,
    },
}

impl CustomerPurchase {
    /// Step 3–4: the customer accepted `quote` (already checked with [`check_quote`]) and
    /// the merchant offered ciphertext. `reply_secret` is the wallet's static sealing secret.
    pub fn new(quote: Signed<Quote>, offer: GoodsOffer, reply_secret: SealSecret) -> Self {
        Self {
            quote,
            offer,
            received_checksum: None,
            delivery: None,
            reply_secret,
            epo: None,
            receipt: None,
            aborted: false,
        }
    }

    pub fn state(&self) -> CustomerState {
        if let Some(r) = &self.receipt {
            CustomerState::Settled(r.body_unverified().result)
        } else if self.epo.is_some() {
            CustomerState::Committed
        } else if self.aborted {
            CustomerState::Aborted
        } else if self.delivery.is_some() {
            CustomerState::Delivered
        } else {
            CustomerState::Receiving
        }
    }

    /// Step 4: the ciphertext arrived (the shell computed its checksum and length while
    /// storing it) and the merchant stamped the EPOID.
    pub fn delivered(
        &mut self,
        received_checksum: Digest,
        received_len: u64,
        note: DeliveryNote,
        now_ms: u64,
    ) -> Result<(), CustomerError> {
        if self.state() != CustomerState::Receiving {
            return Err(CustomerError::OutOfOrder(self.state()));
        }
        if received_checksum != self.offer.checksum || received_len != self.offer.ciphertext_len {
            return Err(CustomerError::ChecksumMismatch);
        }
        if note.epoid.merchant != self.quote.body_unverified().merchant {
            return Err(CustomerError::DeliveryMismatch("merchant"));
        }
        if note.expires_at_ms < now_ms {
            return Err(CustomerError::Expired);
        }
        self.received_checksum = Some(received_checksum);
        self.delivery = Some(note);
        Ok(())
    }

    /// Step 5: sign the EPO. Persist the purchase (which now holds it) before sending it.
    #[allow(clippy::too_many_arguments)]
    pub fn sign_epo(
        &mut self,
        crypto: &dyn Crypto,
        signer: &dyn Signer,
        billing_seal_key: &SealKey,
        account: &AccountId,
        account_nonce: [u8; 16],
        memo: &str,
        now_ms: u64,
        entropy: [u8; 32],
    ) -> Result<Signed<Epo>, CustomerError> {
        if self.state() != CustomerState::Delivered {
            return Err(CustomerError::OutOfOrder(self.state()));
        }
        let (Some(note), Some(checksum)) = (&self.delivery, self.received_checksum) else {
            return Err(CustomerError::OutOfOrder(self.state()));
        };
        if note.expires_at_ms < now_ms {
            return Err(CustomerError::Expired);
        }
        if memo.len() > crate::messages::MEMO_LEN_MAX {
            // Caught before signing: N could not decode the sealed part, and the EPO would
            // be refused after the point of no return.
            return Err(CustomerError::MemoTooLong(memo.len()));
        }
        let q = self.quote.body_unverified();
        let secret = EpoSecret {
            account: account.clone(),
            account_nonce,
            memo: memo.to_string(),
        };
        let epo = Signed::sign(
            Epo {
                identity: q.identity.clone(),
                customer_key: signer.public_key(),
                description: q.description.clone(),
                price: q.price,
                merchant: q.merchant.clone(),
                goods_checksum: checksum,
                prd_digest: q.prd_digest,
                account_commitment: account_commitment(crypto, account, &account_nonce),
                epoid: note.epoid.clone(),
                expires_at_ms: note.expires_at_ms,
                quote_digest: self.quote.digest(crypto),
                reply_key: crypto.seal_key(&self.reply_secret),
                sealed_for_billing: sealing::seal_epo_secret(
                    crypto,
                    &self.reply_secret,
                    billing_seal_key,
                    &note.epoid,
                    &secret,
                    entropy,
                ),
            },
            signer,
        );
        self.epo = Some(epo.clone());
        Ok(epo)
    }

    /// Gives up before committing. Refused once the EPO is signed: from then on only the
    /// receipt (or N's abort after expiry) decides.
    pub fn abort(&mut self) -> Result<(), CustomerError> {
        match self.state() {
            CustomerState::Receiving | CustomerState::Delivered | CustomerState::Aborted => {
                self.aborted = true;
                Ok(())
            }
            _ => Err(CustomerError::AlreadyCommitted),
        }
    }

    /// Step 8 (or a status answer): check N's receipt and, if paid, recover K.
    pub fn settle(
        &mut self,
        crypto: &dyn Crypto,
        billing_key: &PublicKey,
        billing_seal_key: &SealKey,
        receipt: Signed<Receipt>,
    ) -> Result<Settlement, CustomerError> {
        let epo = self
            .epo
            .as_ref()
            .ok_or(CustomerError::OutOfOrder(self.state()))?;
        let r = receipt
            .verify(crypto, billing_key)
            .map_err(|_| CustomerError::BadReceiptSignature)?;
        let my_epo = epo.body_unverified();
        if r.epoid != my_epo.epoid {
            return Err(CustomerError::ReceiptMismatch("EPOID"));
        }
        let settlement = if r.result == ResultCode::Aborted {
            Settlement::NotPaid {
                result: r.result,
                balance_minor: None,
            }
        } else {
            if r.epo_digest != epo.digest(crypto) {
                return Err(CustomerError::ReceiptMismatch("EPO"));
            }
            let part = sealing::open_customer_part(
                crypto,
                &self.reply_secret,
                billing_seal_key,
                my_epo,
                &r.customer_part,
            )
            .ok_or(CustomerError::CustomerPartUnreadable)?;
            if part.epoid != my_epo.epoid {
                return Err(CustomerError::ReceiptMismatch("private part"));
            }
            match (r.result, part.goods_key) {
                (ResultCode::Committed, Some(k)) => {
                    let goods_key = GoodsKey(k);
                    if goods_key_digest(crypto, &goods_key) != r.key_digest {
                        return Err(CustomerError::KeyMismatch);
                    }
                    Settlement::Paid {
                        goods_key,
                        balance_minor: part.balance_minor,
                        low_balance: part.low_balance,
                    }
                }
                (ResultCode::Committed, None) => return Err(CustomerError::KeyMismatch),
                (result, _) => Settlement::NotPaid {
                    result,
                    balance_minor: Some(part.balance_minor),
                },
            }
        };
        self.receipt = Some(receipt);
        Ok(settlement)
    }

    /// Steps 4–5 in one: the shell received the ciphertext (its checksum and length as it
    /// arrived, and the merchant's delivery note). Checks it and signs the EPO — the
    /// customer's point of no return: persist durably, then send. On a refusal the purchase
    /// is aborted (nothing was signed, nothing can be paid) and kept as a record.
    #[allow(clippy::too_many_arguments)]
    pub fn on_goods(
        &mut self,
        crypto: &dyn Crypto,
        payer: &Payer<'_>,
        received: (Digest, u64),
        note: DeliveryNote,
        now_ms: u64,
        account_nonce: [u8; 16],
        entropy: [u8; 32],
    ) -> Result<Vec<CustomerEffect>, (CustomerError, Vec<CustomerEffect>)> {
        let signed = self
            .delivered(received.0, received.1, note, now_ms)
            .and_then(|()| {
                self.sign_epo(
                    crypto,
                    payer.signer,
                    payer.billing_seal_key,
                    payer.account,
                    account_nonce,
                    payer.memo,
                    now_ms,
                    entropy,
                )
            });
        match signed {
            Ok(epo) => Ok(vec![
                CustomerEffect::PersistDurably,
                CustomerEffect::SendEpo(Box::new(epo)),
            ]),
            Err(e) => {
                // Not signed: abort always succeeds here (no EPO exists).
                let _ = self.abort();
                Err((e, vec![CustomerEffect::Persist]))
            }
        }
    }

    /// Step 8 (or a status answer): N's receipt. Settles the purchase; if paid, decrypt with
    /// K; then record it (a quick write: the receipt can be fetched from N again, and the
    /// durable EPO record recovers it after a crash).
    pub fn on_receipt(
        &mut self,
        crypto: &dyn Crypto,
        billing_key: &PublicKey,
        billing_seal_key: &SealKey,
        receipt: Signed<Receipt>,
    ) -> Result<(Settlement, Vec<CustomerEffect>), CustomerError> {
        let settlement = self.settle(crypto, billing_key, billing_seal_key, receipt)?;
        let effects = match &settlement {
            Settlement::Paid { goods_key, .. } => vec![
                CustomerEffect::Decrypt(goods_key.clone()),
                CustomerEffect::Persist,
            ],
            Settlement::NotPaid { .. } => vec![CustomerEffect::Persist],
        };
        Ok((settlement, effects))
    }

    /// After a restart, from the persisted record: a purchase not signed is aborted (nothing
    /// was paid); a signed one asks for its receipt (it may have been paid); a finished one
    /// needs nothing.
    pub fn recover(&mut self) -> Vec<CustomerEffect> {
        match self.state() {
            CustomerState::Receiving | CustomerState::Delivered => {
                let _ = self.abort();
                vec![CustomerEffect::Persist]
            }
            CustomerState::Committed => self
                .epo
                .as_ref()
                .map(|e| CustomerEffect::AskForReceipt(e.body_unverified().epoid.clone()))
                .into_iter()
                .collect(),
            CustomerState::Settled(_) | CustomerState::Aborted => Vec::new(),
        }
    }
}

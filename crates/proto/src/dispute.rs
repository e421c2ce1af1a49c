//! Arbitration: deciding a disputed purchase from signed records alone (Cox, Tygar and Sirbu
//! 1995, §6). The arbitrator trusts nothing but two public keys — the billing server's and the
//! merchant's — and the facts the shell measured on the ciphertext the customer holds.
//!
//! The records: the customer-signed EPO (it names the checksum of the encrypted goods and the
//! quote it accepted), the merchant-signed endorsement (it commits to K), N's signed receipt
//! (it names the EPO and K's commitment), K as N reveals it, and the merchant-signed quote (it
//! commits to the digest of the plaintext promised).

use serde::{Deserialize, Serialize};

use crate::crypto::{Crypto, Digest, GoodsKey, PublicKey, goods_key_digest};
use crate::messages::{Endorsement, Epo, Quote, Receipt, ResultCode};
use crate::money::Amount;
use crate::signed::Signed;

/// The customer's own records of a purchase, as `netbill wallet evidence` exports them
/// (JSON). Each carries its signer's signature.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerEvidence {
    /// The merchant-signed quote she accepted (it commits to the plaintext's digest).
    pub quote: Signed<Quote>,
    /// The EPO she signed, if she got that far.
    pub epo: Option<Signed<Epo>>,
    /// N's receipt, if she got one.
    pub receipt: Option<Signed<Receipt>>,
}

/// What a party claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// "The goods are wrong or damaged": the ciphertext, the key or the plaintext is not what
    /// was paid for.
    WrongGoods,
    /// "I paid but never got the key."
    NeverGotKey,
    /// "I was charged more than the price I agreed."
    ChargedWrongAmount { agreed: Amount },
    /// "I never bought this" (or "the merchant put it through anyway").
    NeverBought,
    /// "I was told it failed, but I was charged": with N's signed failure receipt.
    ToldFailedButCharged { failure: Box<Signed<Receipt>> },
    /// The merchant: "I was not paid".
    MerchantNotPaid,
}

/// What the shell measured on the ciphertext the customer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoodsFacts {
    /// SHA-256 of the ciphertext she holds.
    pub ciphertext_digest: Digest,
    /// SHA-256 of the plaintext if K decrypts the ciphertext completely; `None` if it does not.
    pub plaintext_digest: Option<Digest>,
}

/// The records before the arbitrator. Any may be missing: whoever needs one must produce it.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    pub quote: Option<Signed<Quote>>,
    pub epo: Option<Signed<Epo>>,
    pub endorsement: Option<Signed<Endorsement>>,
    pub receipt: Option<Signed<Receipt>>,
    /// K as N revealed it.
    pub goods_key: Option<GoodsKey>,
    pub goods: Option<GoodsFacts>,
}

/// The keys the arbitrator trusts.
#[derive(Clone, Copy, Debug)]
pub struct TrustedKeys {
    pub billing: PublicKey,
    pub merchant: PublicKey,
}

/// Who the ruling favours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ruling {
    /// The claim is upheld: the customer is owed `amount`.
    ForCustomer,
    /// The claim is rejected: the records back the merchant (and N).
    ForMerchant,
    /// The merchant's claim is upheld: N owes the merchant `amount`.
    MerchantOwed,
    /// The customer lacked only K, and N has now produced it: nothing is owed.
    KeyProduced,
    /// No money moved for this purchase: nothing is owed.
    NothingOwed,
}

/// A decision with its reasons, in the order they were established.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub ruling: Ruling,
    /// The amount owed (to the customer for `ForCustomer`, to the merchant for `MerchantOwed`).
    pub amount: Option<Amount>,
    pub reasons: Vec<String>,
}

/// The records, each checked against the trusted keys and against each other.
struct Checked<'a> {
    receipt: Option<&'a Receipt>,
    epo: Option<&'a Epo>,
    key_ok: bool,
    quote: Option<&'a Quote>,
}

fn check<'a>(
    crypto: &dyn Crypto,
    keys: &TrustedKeys,
    ev: &'a Evidence,
    why: &mut Vec<String>,
) -> Checked<'a> {
    let receipt = ev
        .receipt
        .as_ref()
        .and_then(|r| match r.verify(crypto, &keys.billing) {
            Ok(b) => Some(b),
            Err(_) => {
                why.push(
                    "the receipt is not signed by the billing server's key: disregarded".into(),
                );
                None
            }
        });
    // The EPO counts only if the customer signed it and it is the one the receipt names.
    let epo = ev.epo.as_ref().and_then(|e| {
        let body = e.verify(crypto, &e.body_unverified().customer_key).ok();
        let named = receipt.is_none_or(|r| r.epo_digest == e.digest(crypto));
        match (body, named) {
            (Some(b), true) => Some(b),
            (None, _) => {
                why.push("the EPO's customer signature does not verify: disregarded".into());
                None
            }
            (Some(_), false) => {
                why.push("the EPO is not the one the receipt names: disregarded".into());
                None
            }
        }
    });
    let endorsement_ok = match (&ev.endorsement, epo, receipt) {
        (Some(en), Some(_), _) => {
            let body = en.verify(crypto, &keys.merchant).ok();
            let same_epo = ev
                .epo
                .as_ref()
                .is_some_and(|e| en.body_unverified().epo == *e);
            let same_key = receipt.is_none_or(|r| {
                r.result != ResultCode::Committed || r.key_digest == en.body_unverified().key_digest
            });
            if body.is_none() {
                why.push("the endorsement is not signed by the merchant's key: disregarded".into());
            } else if !same_epo || !same_key {
                why.push("the endorsement does not match the EPO and receipt: disregarded".into());
            }
            body.is_some() && same_epo && same_key
        }
        _ => false,
    };
    let key_ok = match (&ev.goods_key, &ev.endorsement) {
        (Some(k), Some(en)) if endorsement_ok => {
            let ok = goods_key_digest(crypto, k) == en.body_unverified().key_digest;
            if !ok {
                why.push("the key produced is not the one the merchant committed to".into());
            }
            ok
        }
        _ => false,
    };
    let quote = ev.quote.as_ref().and_then(|q| {
        let body = q.verify(crypto, &keys.merchant).ok()?;
        match &ev.epo {
            Some(e) if e.body_unverified().quote_digest == q.digest(crypto) => Some(body),
            _ => {
                why.push("the quote is not the one the EPO accepted: disregarded".into());
                None
            }
        }
    });
    Checked {
        receipt,
        epo,
        key_ok,
        quote,
    }
}

fn verdict(ruling: Ruling, amount: Option<Amount>, reasons: Vec<String>) -> Verdict {
    Verdict {
        ruling,
        amount,
        reasons,
    }
}

/// Decides `claim` on `evidence`.
pub fn decide(crypto: &dyn Crypto, keys: &TrustedKeys, claim: &Claim, ev: &Evidence) -> Verdict {
    let mut why = Vec::new();
    let c = check(crypto, keys, ev, &mut why);
    let committed = c.receipt.filter(|r| r.result == ResultCode::Committed);
    match claim {
        Claim::NeverBought | Claim::ChargedWrongAmount { .. } => {
            let Some(r) = committed else {
                why.push("no committed receipt signed by N: no debit is shown".into());
                return verdict(Ruling::NothingOwed, None, why);
            };
            let Some(epo) = c.epo else {
                why.push(format!(
                    "N cannot show an EPO signed by the customer for the debit of {}: refund it",
                    r.price
                ));
                return verdict(Ruling::ForCustomer, Some(r.price), why);
            };
            why.push(format!(
                "the customer signed an EPO for {:?} at {}",
                epo.description, epo.price
            ));
            if r.price != epo.price {
                why.push(format!(
                    "N charged {} but the EPO says {}",
                    r.price, epo.price
                ));
                let over = r.price.checked_sub(epo.price);
                return verdict(Ruling::ForCustomer, over, why);
            }
            if let Claim::ChargedWrongAmount { agreed } = claim
                && *agreed != epo.price
            {
                why.push(format!(
                    "she claims to have agreed {agreed}, but her signature says {}",
                    epo.price
                ));
            }
            verdict(Ruling::ForMerchant, None, why)
        }
        Claim::NeverGotKey => {
            let Some(r) = committed else {
                why.push("the purchase did not commit: she was not charged".into());
                return verdict(Ruling::NothingOwed, None, why);
            };
            if c.key_ok {
                why.push("N produced K, matching the merchant's commitment: the customer now has the goods".into());
                verdict(Ruling::KeyProduced, None, why)
            } else {
                why.push(format!(
                    "N cannot produce the key it was paid to release: refund {}",
                    r.price
                ));
                verdict(Ruling::ForCustomer, Some(r.price), why)
            }
        }
        Claim::ToldFailedButCharged { failure } => {
            let Ok(f) = failure.verify(crypto, &keys.billing) else {
                why.push("the failure receipt is not signed by N: the claim has no basis".into());
                return verdict(Ruling::ForMerchant, None, why);
            };
            if f.result == ResultCode::Committed {
                why.push("the receipt shown is not a failure receipt".into());
                return verdict(Ruling::ForMerchant, None, why);
            }
            why.push(format!(
                "N signed a failure receipt ({}) for {}",
                f.result.describe(),
                f.epoid
            ));
            match committed {
                None => {
                    why.push("and shows no committed receipt: she was not charged".into());
                    verdict(Ruling::NothingOwed, None, why)
                }
                Some(r) if c.key_ok => {
                    why.push(format!(
                        "N claims the purchase committed at {}; it must and did produce K",
                        r.price
                    ));
                    verdict(Ruling::KeyProduced, None, why)
                }
                Some(r) => {
                    why.push("N claims approval but cannot produce K: refund".into());
                    verdict(Ruling::ForCustomer, Some(r.price), why)
                }
            }
        }
        Claim::MerchantNotPaid => match committed {
            Some(r) if r.merchant == c.epo.map_or(r.merchant.clone(), |e| e.merchant.clone()) => {
                why.push(format!(
                    "N signed a committed receipt for {} to {}: N owes the merchant",
                    r.price, r.merchant
                ));
                verdict(Ruling::MerchantOwed, Some(r.price), why)
            }
            _ => {
                why.push("no committed receipt signed by N: the purchase was not paid".into());
                verdict(Ruling::NothingOwed, None, why)
            }
        },
        Claim::WrongGoods => {
            let Some(r) = committed else {
                why.push("the purchase did not commit: she was not charged".into());
                return verdict(Ruling::NothingOwed, None, why);
            };
            let Some(epo) = c.epo else {
                why.push("N cannot show the customer-signed EPO: refund".into());
                return verdict(Ruling::ForCustomer, Some(r.price), why);
            };
            let Some(goods) = ev.goods else {
                why.push(
                    "the customer does not produce the ciphertext she received: no basis".into(),
                );
                return verdict(Ruling::ForMerchant, None, why);
            };
            if goods.ciphertext_digest != epo.goods_checksum {
                why.push("the ciphertext she produces is not the one she signed for (checksum differs): it was altered after delivery".into());
                return verdict(Ruling::ForMerchant, None, why);
            }
            why.push("the ciphertext matches the checksum she signed".into());
            if !c.key_ok {
                why.push("N cannot produce the key the merchant committed to: refund".into());
                return verdict(Ruling::ForCustomer, Some(r.price), why);
            }
            let Some(plain) = goods.plaintext_digest else {
                why.push("the merchant's key does not decrypt the ciphertext the merchant delivered: the merchant is at fault".into());
                return verdict(Ruling::ForCustomer, Some(r.price), why);
            };
            why.push("the merchant's key decrypts it".into());
            match c.quote {
                Some(q) if q.goods_digest != plain => {
                    why.push("but the plaintext is not what the signed quote promised: the merchant is at fault".into());
                    verdict(Ruling::ForCustomer, Some(r.price), why)
                }
                Some(_) => {
                    why.push("and the plaintext is exactly what the signed quote promised".into());
                    verdict(Ruling::ForMerchant, None, why)
                }
                None => {
                    why.push("no signed quote commits to the plaintext: whether it is as advertised is outside the protocol".into());
                    verdict(Ruling::ForMerchant, None, why)
                }
            }
        }
    }
}

//! The parts of a purchase only one other party may read, and how each is sealed.
//!
//! Three parts are secret: the customer's true account ([`EpoSecret`], C → N), the goods key
//! K (M → N), and the receipt's [`CustomerPart`] (N → C, with K). v1 sealed each with HPKE
//! to the reader: a fresh X25519 key agreement per seal, six scalar multiplications on N
//! per purchase. v2 seals each under the key the two parties' *static* sealing keys derive
//! ([`Crypto::pair_seal`]): computed once per pair and cached, so a purchase costs N no
//! public-key operation beyond signature checks. The version of the signed object that
//! carries a part says which scheme sealed it; this module is the one place that decides.
//!
//! Every v2 seal's additional data is [`pair_aad`]`(purpose, epoid)`: a part made for one
//! purpose or one purchase never opens as another, and the nonce is 24 fresh random bytes
//! from the sealing party, so reusing the pair key across purchases is safe.

use crate::billing::sealed_key_info;
use crate::codec::Codec;
use crate::crypto::{Crypto, GoodsKey, SealKey, SealSecret};
use crate::ids::EpoId;
use crate::messages::{CustomerPart, Endorsement, Epo, EpoSecret, Sealed, SealedKey, pair_aad};

/// The 24-byte nonce of a pair seal, from the caller's 32 bytes of entropy.
fn nonce(entropy: [u8; 32]) -> [u8; 24] {
    let mut n = [0u8; 24];
    n.copy_from_slice(&entropy[..24]);
    n
}

/// C seals her [`EpoSecret`] for N (v2).
pub fn seal_epo_secret(
    crypto: &dyn Crypto,
    customer_secret: &SealSecret,
    billing_seal_key: &SealKey,
    epoid: &EpoId,
    secret: &EpoSecret,
    entropy: [u8; 32],
) -> Sealed {
    Sealed::Pair(crypto.pair_seal(
        customer_secret,
        billing_seal_key,
        &pair_aad(EpoSecret::PAIR_PURPOSE, epoid),
        &secret.to_bytes(),
        nonce(entropy),
    ))
}

/// N opens an EPO's [`EpoSecret`], whichever version sealed it.
pub fn open_epo_secret(
    crypto: &dyn Crypto,
    billing_secret: &SealSecret,
    epo: &Epo,
) -> Option<EpoSecret> {
    let bytes = match &epo.sealed_for_billing {
        Sealed::Hpke(b) => crypto.open(billing_secret, EpoSecret::SEAL_INFO, b)?,
        Sealed::Pair(b) => crypto.pair_open(
            billing_secret,
            &epo.reply_key,
            &pair_aad(EpoSecret::PAIR_PURPOSE, &epo.epoid),
            b,
        )?,
    };
    EpoSecret::from_bytes(&bytes).ok()
}

/// M seals K for N (v2), naming its own static sealing key so that N can derive the pair key.
pub fn seal_goods_key(
    crypto: &dyn Crypto,
    merchant_secret: &SealSecret,
    billing_seal_key: &SealKey,
    epoid: &EpoId,
    key: &GoodsKey,
    entropy: [u8; 32],
) -> SealedKey {
    SealedKey::Pair {
        merchant_seal_key: crypto.seal_key(merchant_secret),
        sealed: crypto.pair_seal(
            merchant_secret,
            billing_seal_key,
            &pair_aad(Endorsement::KEY_PURPOSE, epoid),
            &key.0,
            nonce(entropy),
        ),
    }
}

/// N opens the K an endorsement carries, whichever version sealed it.
pub fn open_goods_key(
    crypto: &dyn Crypto,
    billing_secret: &SealSecret,
    endorsement: &Endorsement,
) -> Option<GoodsKey> {
    let epoid = &endorsement.epo.body_unverified().epoid;
    let bytes = match &endorsement.sealed_key {
        SealedKey::Hpke(b) => crypto.open(billing_secret, &sealed_key_info(epoid), b)?,
        SealedKey::Pair {
            merchant_seal_key,
            sealed,
        } => crypto.pair_open(
            billing_secret,
            merchant_seal_key,
            &pair_aad(Endorsement::KEY_PURPOSE, epoid),
            sealed,
        )?,
    };
    Some(GoodsKey(bytes.as_slice().try_into().ok()?))
}

/// N seals the receipt's [`CustomerPart`] for the customer, the way her EPO's version says.
pub fn seal_customer_part(
    crypto: &dyn Crypto,
    billing_secret: &SealSecret,
    epo: &Epo,
    part: &CustomerPart,
    entropy: [u8; 32],
) -> Vec<u8> {
    match epo.sealed_for_billing {
        Sealed::Hpke(_) => crypto.seal(
            &epo.reply_key,
            CustomerPart::SEAL_INFO,
            &part.to_bytes(),
            entropy,
        ),
        Sealed::Pair(_) => crypto.pair_seal(
            billing_secret,
            &epo.reply_key,
            &pair_aad(CustomerPart::PAIR_PURPOSE, &epo.epoid),
            &part.to_bytes(),
            nonce(entropy),
        ),
    }
}

/// C opens the [`CustomerPart`] of the receipt for her `epo`.
pub fn open_customer_part(
    crypto: &dyn Crypto,
    reply_secret: &SealSecret,
    billing_seal_key: &SealKey,
    epo: &Epo,
    sealed: &[u8],
) -> Option<CustomerPart> {
    let bytes = match epo.sealed_for_billing {
        Sealed::Hpke(_) => crypto.open(reply_secret, CustomerPart::SEAL_INFO, sealed)?,
        Sealed::Pair(_) => crypto.pair_open(
            reply_secret,
            billing_seal_key,
            &pair_aad(CustomerPart::PAIR_PURPOSE, &epo.epoid),
            sealed,
        )?,
    };
    CustomerPart::from_bytes(&bytes).ok()
}

//! The v2 merchant stores nothing between its two round trips with the customer: K is
//! derived from its seal secret, the offer comes back under its ticket, and endorsing is
//! deterministic. With the real cryptography: what a merchant that restarted in between
//! makes is byte for byte what it would have made, and no altered offer passes.

use netbill_crypto::{Ed25519Signer, RealCrypto, random_bytes, random_seal_secret};
use netbill_proto::billing::{self, BillingPolicy};
use netbill_proto::crypto::{Crypto, Digest, SealKey, SealSecret, Signer};
use netbill_proto::customer::CustomerPurchase;
use netbill_proto::merchant::{
    MerchantError, MerchantPurchase, Offer, derive_goods_key, make_offer, make_quote,
};
use netbill_proto::messages::{DeliveryNote, Epo, GoodsOffer, PriceRequest, PurchaseOffer};
use netbill_proto::{AccountId, Amount, EpoId, ProductCode, Signed};

const NOW: u64 = 1_700_000_000_000;
const C: RealCrypto = RealCrypto;
const GOODS: &[u8] = b"The goods: an article about atomicity in electronic commerce.";

struct World {
    customer: Ed25519Signer,
    merchant: Ed25519Signer,
    merchant_seal: SealSecret,
    billing_secret: SealSecret,
    billing_seal_key: SealKey,
}

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

impl World {
    fn new() -> World {
        let billing_secret = random_seal_secret();
        World {
            customer: Ed25519Signer::generate(),
            merchant: Ed25519Signer::generate(),
            merchant_seal: random_seal_secret(),
            billing_seal_key: C.seal_key(&billing_secret),
            billing_secret,
        }
    }

    fn quote(&self, quote_id: u64) -> Signed<netbill_proto::messages::Quote> {
        let offer = Offer {
            product: ProductCode::new("article").unwrap(),
            description: "An article".into(),
            price: Amount::from_minor(2_000).unwrap(),
            group_prices: vec![],
            goods_digest: C.digest(&[GOODS]),
            goods_len: GOODS.len() as u64,
        };
        let req = PriceRequest {
            identity: "alice".into(),
            customer_key: self.customer.public_key(),
            product: offer.product.clone(),
            prd_hex: String::new(),
            bid: Some(Amount::from_minor(2_000).unwrap()),
            credentials: vec![],
        };
        make_quote(
            &C,
            &self.merchant,
            &id("acme"),
            &req,
            &offer,
            &|_| None,
            quote_id,
            NOW,
            60_000,
        )
        .unwrap()
    }

    /// The first round trip as the merchant shell does it: K derived, the goods encrypted
    /// under it, the offer made. Returns the offer and the ciphertext.
    fn offer(&self, serial: u64) -> (PurchaseOffer, Vec<u8>) {
        let quote = self.quote(1);
        let note = DeliveryNote {
            epoid: EpoId {
                merchant: id("acme"),
                delivered_at_ms: NOW,
                serial,
            },
            expires_at_ms: NOW + 600_000,
        };
        let k = derive_goods_key(&C, &self.merchant_seal, &quote, &note.epoid);
        let mut ciphertext = Vec::new();
        let stats = netbill_crypto::encrypt_stream(&k, 16, GOODS, &mut ciphertext).unwrap();
        let goods = GoodsOffer {
            purchase: format!("{serial:032x}"),
            checksum: stats.checksum,
            ciphertext_len: stats.ciphertext_len,
        };
        (
            make_offer(&C, &self.merchant_seal, quote, goods, note),
            ciphertext,
        )
    }

    /// The customer's side: checks what she received and signs the EPO over its checksum.
    fn sign(&self, offer: &PurchaseOffer, received: &[u8]) -> Signed<Epo> {
        let mut c = CustomerPurchase::new(
            offer.quote.clone(),
            offer.goods.clone(),
            random_seal_secret(),
        );
        c.delivered(
            C.digest(&[received]),
            received.len() as u64,
            offer.note.clone(),
            NOW,
        )
        .unwrap();
        c.sign_epo(
            &C,
            &self.customer,
            &self.billing_seal_key,
            &id("alice"),
            random_bytes(),
            "",
            NOW,
            random_bytes(),
        )
        .unwrap()
    }

    /// The second round trip as a merchant with no memory of the first.
    fn endorse(
        &self,
        offer: PurchaseOffer,
        epo: Signed<Epo>,
    ) -> Result<Signed<netbill_proto::messages::Endorsement>, MerchantError> {
        let mut m = MerchantPurchase::from_offer(&C, &self.merchant_seal, offer)?;
        m.endorse(
            &C,
            &self.merchant,
            &self.merchant_seal,
            &self.billing_seal_key,
            epo,
            "",
            NOW + 1,
        )
    }
}

#[test]
fn a_restarted_merchant_endorses_the_same_bytes_and_n_opens_the_k_that_decrypts_the_goods() {
    let w = World::new();
    let (offer, ciphertext) = w.offer(7);
    let epo = w.sign(&offer, &ciphertext);
    let first = w.endorse(offer.clone(), epo.clone()).unwrap();
    let again = w.endorse(offer.clone(), epo).unwrap();
    assert_eq!(first.bytes(), again.bytes());
    assert_eq!(first.signature(), again.signature());
    assert_eq!(first.digest(&C), again.digest(&C));
    let v = billing::verify_endorsement(&C, &w.billing_secret, &BillingPolicy::default(), first)
        .unwrap();
    let mut plain = Vec::new();
    netbill_crypto::decrypt_stream(&v.goods_key, &ciphertext[..], &mut plain).unwrap();
    assert_eq!(plain, GOODS);
}

#[test]
fn an_offer_changed_in_any_field_or_made_by_another_merchant_is_refused() {
    let w = World::new();
    let (offer, ciphertext) = w.offer(7);
    let epo = w.sign(&offer, &ciphertext);
    let mut altered: Vec<(&str, PurchaseOffer)> = Vec::new();
    let mut o = offer.clone();
    o.goods.checksum = Digest([1; 32]);
    altered.push(("checksum", o));
    let mut o = offer.clone();
    o.goods.ciphertext_len += 1;
    altered.push(("length", o));
    let mut o = offer.clone();
    o.goods.purchase = format!("{:032x}", 8);
    altered.push(("purchase", o));
    let mut o = offer.clone();
    o.note.epoid.serial += 1;
    altered.push(("serial", o));
    let mut o = offer.clone();
    o.note.epoid.delivered_at_ms += 1;
    altered.push(("delivery time", o));
    let mut o = offer.clone();
    o.note.expires_at_ms += 1;
    altered.push(("expiry", o));
    let mut o = offer.clone();
    o.quote = w.quote(2);
    altered.push(("quote", o));
    for bit in [0, 7, 100, 255] {
        let mut o = offer.clone();
        o.ticket.0[bit / 8] ^= 1 << (bit % 8);
        altered.push(("ticket", o));
    }
    // Two bytes changed alike: a comparison that folds differences with XOR would let
    // them cancel.
    let mut o = offer.clone();
    o.ticket.0[0] ^= 1;
    o.ticket.0[1] ^= 1;
    altered.push(("ticket, two bytes", o));
    for (what, o) in altered {
        assert_eq!(
            w.endorse(o, epo.clone()).unwrap_err(),
            MerchantError::BadTicket,
            "{what}"
        );
    }
    // The same offer at another merchant (another seal secret): not its ticket.
    let other = World {
        merchant_seal: random_seal_secret(),
        ..World::new()
    };
    assert_eq!(
        MerchantPurchase::from_offer(&C, &other.merchant_seal, offer).unwrap_err(),
        MerchantError::BadTicket
    );
}

#[test]
fn an_epo_over_another_ciphertext_is_refused_even_under_a_genuine_offer() {
    let w = World::new();
    let (offer, mut ciphertext) = w.offer(7);
    ciphertext[20] ^= 1;
    // The customer signs over what she received, which is not what the merchant sent.
    let mut c = CustomerPurchase::new(
        offer.quote.clone(),
        offer.goods.clone(),
        random_seal_secret(),
    );
    assert!(
        c.delivered(
            C.digest(&[&ciphertext]),
            ciphertext.len() as u64,
            offer.note.clone(),
            NOW
        )
        .is_err(),
        "the customer refuses a ciphertext whose checksum is not the offer's"
    );
    // A customer who signs over another checksum anyway is refused by the merchant.
    let epo = w.sign(&offer, &w.offer(7).1);
    let mut body = epo.body_unverified().clone();
    body.goods_checksum = C.digest(&[&ciphertext]);
    let forged = Signed::sign(body, &w.customer);
    assert_eq!(
        w.endorse(offer, forged).unwrap_err(),
        MerchantError::EpoMismatch("checksum of the encrypted goods")
    );
}

#[test]
fn no_two_purchases_share_a_goods_key() {
    let w = World::new();
    let q1 = w.quote(1);
    let q2 = w.quote(2);
    let e = |serial| EpoId {
        merchant: id("acme"),
        delivered_at_ms: NOW,
        serial,
    };
    let keys = [
        derive_goods_key(&C, &w.merchant_seal, &q1, &e(1)),
        derive_goods_key(&C, &w.merchant_seal, &q1, &e(2)),
        derive_goods_key(&C, &w.merchant_seal, &q2, &e(1)),
        derive_goods_key(&C, &random_seal_secret(), &q1, &e(1)),
    ];
    for i in 0..keys.len() {
        for j in i + 1..keys.len() {
            assert_ne!(keys[i].0, keys[j].0, "keys {i} and {j}");
        }
    }
    // …and the same purchase always gets the same one.
    assert_eq!(
        derive_goods_key(&C, &w.merchant_seal, &q1, &e(1)).0,
        keys[0].0
    );
}

#[test]
fn every_purchase_seals_its_key_to_n_under_a_nonce_of_its_own() {
    // The pair key of a merchant and N is the same for all their purchases: the nonce of the
    // seal of K must differ from one purchase to the next (here: its first 24 bytes).
    let w = World::new();
    let nonce = |serial| {
        let (offer, ciphertext) = w.offer(serial);
        let epo = w.sign(&offer, &ciphertext);
        let e = w.endorse(offer, epo).unwrap();
        match &e.body_unverified().sealed_key {
            netbill_proto::messages::SealedKey::Pair { sealed, .. } => sealed[..24].to_vec(),
            other => panic!("a v2 endorsement pair-seals K, not {other:?}"),
        }
    };
    let nonces: Vec<Vec<u8>> = (1..=4).map(nonce).collect();
    for i in 0..nonces.len() {
        for j in i + 1..nonces.len() {
            assert_ne!(nonces[i], nonces[j], "purchases {i} and {j}");
        }
    }
}

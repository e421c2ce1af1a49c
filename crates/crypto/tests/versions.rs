//! The protocol core with the real cryptography: a v2 purchase seals with pair keys, a v1
//! purchase (EPO and endorsement sealed with HPKE, as releases before v2 made them) is still
//! accepted and settled, and a sealed part moved to another purchase opens nowhere.

use netbill_crypto::{Ed25519Signer, RealCrypto, random_bytes, random_seal_secret};
use netbill_ledger::{MemoryStore, NewAccount, Store, Transfer, commit};
use netbill_proto::billing::{
    self, AccountKind, BillingPolicy, EndorsementError, VerifiedPurchase,
};
use netbill_proto::codec::Codec;
use netbill_proto::crypto::{Crypto, GoodsKey, SealKey, SealSecret, Signer, goods_key_digest};
use netbill_proto::customer::{CustomerError, CustomerPurchase, Settlement};
use netbill_proto::merchant::{MerchantPurchase, Offer, make_quote};
use netbill_proto::messages::{
    Endorsement, Epo, EpoSecret, GoodsOffer, PriceRequest, Receipt, ResultCode, Sealed, SealedKey,
};
use netbill_proto::{AccountId, Amount, ProductCode, Signed, sealing};

const NOW: u64 = 1_700_000_000_000;
const C: RealCrypto = RealCrypto;

struct World {
    customer: Ed25519Signer,
    customer_seal: SealSecret,
    merchant: Ed25519Signer,
    merchant_seal: SealSecret,
    billing: Ed25519Signer,
    billing_secret: SealSecret,
    billing_seal_key: SealKey,
    ledger: MemoryStore,
}

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

impl World {
    fn new() -> World {
        let billing_secret = random_seal_secret();
        let mut w = World {
            customer: Ed25519Signer::generate(),
            customer_seal: random_seal_secret(),
            merchant: Ed25519Signer::generate(),
            merchant_seal: random_seal_secret(),
            billing: Ed25519Signer::generate(),
            billing_seal_key: C.seal_key(&billing_secret),
            billing_secret,
            ledger: MemoryStore::in_memory(),
        };
        for (name, kind, key) in [
            ("alice", AccountKind::Customer, w.customer.public_key()),
            ("acme", AccountKind::Merchant, w.merchant.public_key()),
        ] {
            let new = NewAccount {
                id: id(name),
                kind,
                key,
                credit_limit_minor: 0,
                low_water_minor: 0,
            };
            w.ledger.create_account(&new, NOW).unwrap();
        }
        w.ledger
            .transfer(
                &id("alice"),
                Transfer::Deposit,
                Amount::from_minor(10_000).unwrap(),
                None,
                NOW,
            )
            .unwrap();
        w
    }

    /// Steps 1–5 of purchase `serial`: quote, delivery, the customer's (v2) EPO.
    fn through_epo(&self, serial: u64) -> (CustomerPurchase, MerchantPurchase, Signed<Epo>) {
        let offer = Offer {
            product: ProductCode::new("article").unwrap(),
            description: "An article".into(),
            price: Amount::from_minor(2_000).unwrap(),
            group_prices: vec![],
            goods_digest: C.digest(&[b"goods"]),
            goods_len: 5,
        };
        let req = PriceRequest {
            identity: "alice".into(),
            customer_key: self.customer.public_key(),
            product: offer.product.clone(),
            prd_hex: String::new(),
            bid: None,
            credentials: vec![],
        };
        let quote = make_quote(
            &C,
            &self.merchant,
            &id("acme"),
            &req,
            &offer,
            &|_| None,
            serial,
            NOW,
            60_000,
        )
        .unwrap();
        let goods = GoodsOffer {
            purchase: format!("p{serial}"),
            checksum: C.digest(&[b"ciphertext", &serial.to_be_bytes()]),
            ciphertext_len: 42,
        };
        let key = GoodsKey(random_bytes());
        let mut m = MerchantPurchase::new(quote.clone(), key, goods.clone());
        let note = m.deliver(serial, NOW, 600_000);
        let mut c = CustomerPurchase::new(quote, goods.clone(), self.customer_seal.clone());
        c.delivered(goods.checksum, goods.ciphertext_len, note, NOW)
            .unwrap();
        let epo = c
            .sign_epo(
                &C,
                &self.customer,
                &self.billing_seal_key,
                &id("alice"),
                random_bytes(),
                "memo",
                NOW,
                random_bytes(),
            )
            .unwrap();
        (c, m, epo)
    }

    fn endorse(&self, m: &mut MerchantPurchase, epo: Signed<Epo>) -> Signed<Endorsement> {
        m.endorse(
            &C,
            &self.merchant,
            &self.merchant_seal,
            &self.billing_seal_key,
            epo,
            "",
            NOW,
        )
        .unwrap()
    }

    fn verify(&self, e: Signed<Endorsement>) -> Result<VerifiedPurchase, EndorsementError> {
        billing::verify_endorsement(&C, &self.billing_secret, &BillingPolicy::default(), e)
    }

    /// N: verify, then the billing server's own commit over the ledger's rules in memory.
    fn bill(&mut self, e: Signed<Endorsement>) -> Signed<Receipt> {
        let v = self.verify(e).unwrap();
        let n = commit::Billing {
            crypto: &C,
            signer: &self.billing,
            seal: &self.billing_secret,
        };
        let done = commit::commit_purchases(
            &mut self.ledger,
            &n,
            &[&v],
            NOW + 1,
            &mut random_bytes,
            commit::Faults::default(),
            &mut |_| Ok(()),
        )
        .unwrap();
        self.ledger.check_conservation().unwrap();
        match done.answers.into_iter().next() {
            Some(commit::PurchaseAnswer::Receipt(r)) => {
                assert_eq!(r.body_unverified().result, ResultCode::Committed);
                *r
            }
            other => panic!("expected a commit, got {other:?}"),
        }
    }
}

/// A signed object's trip over the wire: JSON, then back.
fn wire<T: netbill_proto::signed::SignedBody>(s: &Signed<T>) -> Signed<T> {
    serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap()
}

#[test]
fn a_v2_purchase_seals_with_pair_keys_and_settles() {
    let mut w = World::new();
    let (mut c, mut m, epo) = w.through_epo(1);
    assert_eq!(epo.version(), 2);
    assert!(matches!(
        epo.body_unverified().sealed_for_billing,
        Sealed::Pair(_)
    ));
    assert_eq!(
        epo.body_unverified().reply_key,
        C.seal_key(&w.customer_seal),
        "v2: the reply key is the wallet's static sealing key"
    );
    let e = w.endorse(&mut m, wire(&epo));
    assert_eq!(e.version(), 2);
    let receipt = w.bill(wire(&e));
    assert_eq!(
        m.settle(&C, &w.billing.public_key(), receipt.clone()),
        Ok(ResultCode::Committed)
    );
    match c
        .settle(
            &C,
            &w.billing.public_key(),
            &w.billing_seal_key,
            wire(&receipt),
        )
        .unwrap()
    {
        Settlement::Paid { goods_key, .. } => assert_eq!(goods_key, m.goods_key),
        other => panic!("expected paid, got {other:?}"),
    }
}

/// Builds purchase `serial` the way a v1 wallet and merchant did: a fresh reply key per
/// purchase, the EPO secret and K sealed with HPKE.
fn v1_purchase(
    w: &World,
    serial: u64,
) -> (CustomerPurchase, MerchantPurchase, Signed<Endorsement>) {
    let (mut c, m, v2) = w.through_epo(serial);
    let reply_secret = random_seal_secret();
    let mut body = v2.body_unverified().clone();
    let secret = EpoSecret {
        account: id("alice"),
        account_nonce: [5; 16],
        memo: "memo".into(),
    };
    body.account_commitment =
        billing::account_commitment(&C, &secret.account, &secret.account_nonce);
    body.reply_key = C.seal_key(&reply_secret);
    body.sealed_for_billing = Sealed::Hpke(C.seal(
        &w.billing_seal_key,
        EpoSecret::SEAL_INFO,
        &secret.to_bytes(),
        random_bytes(),
    ));
    let epo = Signed::sign(body, &w.customer);
    c.reply_secret = reply_secret;
    c.epo = Some(epo.clone());
    let epoid = epo.body_unverified().epoid.clone();
    let e = Signed::sign(
        Endorsement {
            epo,
            merchant_key: w.merchant.public_key(),
            memo: String::new(),
            sealed_key: SealedKey::Hpke(C.seal(
                &w.billing_seal_key,
                &billing::sealed_key_info(&epoid),
                &m.goods_key.0,
                random_bytes(),
            )),
            key_digest: goods_key_digest(&C, &m.goods_key),
        },
        &w.merchant,
    );
    (c, m, e)
}

#[test]
fn a_v1_purchase_is_still_accepted_and_settled() {
    let mut w = World::new();
    let (mut c, m, e) = v1_purchase(&w, 7);
    assert_eq!(e.version(), 1);
    assert_eq!(e.body_unverified().epo.version(), 1);
    // The v1 wire form decodes as v1, and N still opens both HPKE seals.
    let e = wire(&e);
    assert!(matches!(e.body_unverified().sealed_key, SealedKey::Hpke(_)));
    let receipt = w.bill(e.clone());
    // …and seals the customer's part the v1 way, to her per-purchase reply key.
    match c
        .settle(&C, &w.billing.public_key(), &w.billing_seal_key, receipt)
        .unwrap()
    {
        Settlement::Paid { goods_key, .. } => assert_eq!(goods_key, m.goods_key),
        other => panic!("expected paid, got {other:?}"),
    }
    // The v1 EPO endorsed by an upgraded (v2) merchant: K pair-sealed, the EPO still v1.
    let (_, mut m2, e1) = v1_purchase(&w, 8);
    let v1_epo = e1.body_unverified().epo.clone();
    let e2 = w.endorse(&mut m2, v1_epo);
    assert_eq!((e2.version(), e2.body_unverified().epo.version()), (2, 1));
    let v = w.verify(e2).unwrap();
    assert_eq!(v.goods_key, m2.goods_key);
}

#[test]
fn a_sealed_part_moved_to_another_purchase_opens_nowhere() {
    let w = World::new();
    let (_, mut m1, epo1) = w.through_epo(1);
    let (_, mut m2, epo2) = w.through_epo(2);
    // The customer's secret part of purchase 1 replayed in purchase 2 (even re-signed by
    // her): the additional data binds it to EPOID 1.
    let mut body = epo2.body_unverified().clone();
    body.sealed_for_billing = epo1.body_unverified().sealed_for_billing.clone();
    let replayed = Signed::sign(body, &w.customer);
    let e = w.endorse(&mut m2.clone(), replayed);
    assert_eq!(
        w.verify(e).unwrap_err(),
        EndorsementError::EpoSecretUnreadable
    );
    // K sealed for purchase 1 moved into the endorsement of purchase 2.
    let e1 = w.endorse(&mut m1, epo1);
    let e2 = w.endorse(&mut m2, epo2.clone());
    let mut body = e2.body_unverified().clone();
    body.sealed_key = e1.body_unverified().sealed_key.clone();
    let moved = Signed::sign(body, &w.merchant);
    assert_eq!(
        w.verify(moved).unwrap_err(),
        EndorsementError::SealedKeyUnreadable
    );
    // A merchant claiming another sealing key than the one that sealed K.
    let mut body = e2.body_unverified().clone();
    if let SealedKey::Pair { sealed, .. } = &body.sealed_key {
        body.sealed_key = SealedKey::Pair {
            merchant_seal_key: C.seal_key(&random_seal_secret()),
            sealed: sealed.clone(),
        };
    }
    let claimed = Signed::sign(body, &w.merchant);
    assert_eq!(
        w.verify(claimed).unwrap_err(),
        EndorsementError::SealedKeyUnreadable
    );
}

#[test]
fn a_receipt_part_of_another_purchase_does_not_settle() {
    let mut w = World::new();
    let (_, mut m1, epo1) = w.through_epo(1);
    let (mut c2, mut m2, epo2) = w.through_epo(2);
    let e1 = w.endorse(&mut m1, epo1);
    let e2 = w.endorse(&mut m2, epo2);
    let r1 = w.bill(e1);
    let r2 = w.bill(e2);
    // N's receipt for purchase 2 carrying the (validly sealed) private part of purchase 1.
    let mut body = r2.body_unverified().clone();
    body.customer_part = r1.body_unverified().customer_part.clone();
    let forged = Signed::sign(body, &w.billing);
    assert_eq!(
        c2.settle(&C, &w.billing.public_key(), &w.billing_seal_key, forged),
        Err(CustomerError::CustomerPartUnreadable)
    );
    assert!(
        sealing::open_customer_part(
            &C,
            &w.customer_seal,
            &w.billing_seal_key,
            c2.epo.as_ref().unwrap().body_unverified(),
            &r2.body_unverified().customer_part
        )
        .is_some()
    );
}

#[test]
fn an_overlong_memo_is_refused_before_the_epo_is_signed() {
    let w = World::new();
    let (mut c, _, _) = w.through_epo(3);
    c.epo = None;
    let memo = "m".repeat(201);
    let r = c.sign_epo(
        &C,
        &w.customer,
        &w.billing_seal_key,
        &id("alice"),
        random_bytes(),
        &memo,
        NOW,
        random_bytes(),
    );
    assert_eq!(r.unwrap_err(), CustomerError::MemoTooLong(201));
    assert!(c.epo.is_none(), "nothing signed");
}

//! N's writer signs once per durable write: the receipts of one batch (commits, failures,
//! a retried endorsement) share one Ed25519 signature over a Merkle root, each verifies on
//! its own with N's key, what is stored is what was answered, and the customer and the
//! merchant accept them. Real cryptography, a real SQLite ledger, the server's own writer.

use netbill_crypto::{Ed25519Signer, RealCrypto, random_bytes, random_seal_secret};
use netbill_ledger::{NewAccount, Transfer};
use netbill_proto::billing::{self, AccountKind, BillingPolicy, VerifiedPurchase};
use netbill_proto::crypto::{Crypto, GoodsKey, SealKey, SealSecret, Signer};
use netbill_proto::customer::{CustomerPurchase, Settlement};
use netbill_proto::merchant::{MerchantPurchase, Offer, make_quote};
use netbill_proto::messages::{GoodsOffer, PriceRequest, ResultCode};
use netbill_proto::signed::SignatureForm;
use netbill_proto::{AccountId, Amount, ProductCode};
use netbill_server::BillingKeys;
use netbill_server::writer::{PurchaseAnswer, Writer};

const C: RealCrypto = RealCrypto;

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

struct Parties {
    customer: Ed25519Signer,
    customer_seal: SealSecret,
    merchant: Ed25519Signer,
    merchant_seal: SealSecret,
    billing_secret: SealSecret,
    billing_seal_key: SealKey,
}

/// Purchase `serial` of a 2 000-unit article, through the merchant's endorsement and N's
/// stateless checks: what the API hands the writer.
fn purchase(p: &Parties, serial: u64, now: u64) -> (CustomerPurchase, VerifiedPurchase) {
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
        customer_key: p.customer.public_key(),
        product: offer.product.clone(),
        prd_hex: String::new(),
        bid: None,
        credentials: vec![],
    };
    let quote = make_quote(
        &C,
        &p.merchant,
        &id("acme"),
        &req,
        &offer,
        &|_| None,
        serial,
        now,
        600_000,
    )
    .unwrap();
    let goods = GoodsOffer {
        purchase: format!("p{serial}"),
        checksum: C.digest(&[b"ciphertext", &serial.to_be_bytes()]),
        ciphertext_len: 42,
    };
    let mut m = MerchantPurchase::new(quote.clone(), GoodsKey(random_bytes()), goods.clone());
    let note = m.deliver(serial, now, 600_000);
    let mut c = CustomerPurchase::new(quote, goods.clone(), p.customer_seal.clone());
    c.delivered(goods.checksum, goods.ciphertext_len, note, now)
        .unwrap();
    let epo = c
        .sign_epo(
            &C,
            &p.customer,
            &p.billing_seal_key,
            &id("alice"),
            random_bytes(),
            "",
            now,
            random_bytes(),
        )
        .unwrap();
    let e = m
        .endorse(
            &C,
            &p.merchant,
            &p.merchant_seal,
            &p.billing_seal_key,
            epo,
            "",
            now,
        )
        .unwrap();
    let v =
        billing::verify_endorsement(&C, &p.billing_secret, &BillingPolicy::default(), e).unwrap();
    (c, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipts_of_one_durable_write_share_one_root_signature() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let billing_secret = random_seal_secret();
    let p = Parties {
        customer: Ed25519Signer::generate(),
        customer_seal: random_seal_secret(),
        merchant: Ed25519Signer::generate(),
        merchant_seal: random_seal_secret(),
        billing_seal_key: C.seal_key(&billing_secret),
        billing_secret,
    };
    let now = netbill_http::now_ms();
    let mut store = netbill_ledger::open_store(&url).unwrap();
    for (account, kind, key) in [
        ("alice", AccountKind::Customer, p.customer.public_key()),
        ("acme", AccountKind::Merchant, p.merchant.public_key()),
    ] {
        store
            .create_account(
                &NewAccount {
                    id: id(account),
                    kind,
                    key,
                    credit_limit_minor: 0,
                    low_water_minor: 0,
                },
                now,
            )
            .unwrap();
    }
    // Enough for five of the seven purchases: the last two fail, in the same batch.
    let deposit = Amount::from_minor(10_000).unwrap();
    store
        .transfer(&id("alice"), Transfer::Deposit, deposit, None, now)
        .unwrap();
    let n = Ed25519Signer::generate();
    let n_key = n.public_key();
    let writer = Writer::start(
        store,
        BillingKeys {
            signer: n,
            seal: p.billing_secret.clone(),
        },
        64,
        64,
    );

    // Hold the writer so that every purchase is queued before it drains them into a batch.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let held = {
        let w = writer.clone();
        tokio::spawn(async move { w.run(move |_| wait.recv().is_ok()).await })
    };
    let purchases: Vec<_> = (1..=7).map(|i| purchase(&p, i, now)).collect();
    // Requests of several purchases and of one share the transaction: the first three as one
    // request (a merchant's batch), the rest, and a retry of the first, one per request.
    let all: Vec<_> = purchases
        .iter()
        .map(|(_, v)| v.clone())
        .chain([purchases[0].1.clone()])
        .collect();
    let mut waiting = Vec::new();
    for request in [
        &all[..3],
        &all[3..4],
        &all[4..5],
        &all[5..6],
        &all[6..7],
        &all[7..],
    ] {
        let w = writer.clone();
        let request = request.to_vec();
        waiting.push(tokio::spawn(async move { w.purchases(request).await }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    go.send(()).unwrap();
    assert!(held.await.unwrap().unwrap());

    let mut receipts = Vec::new();
    for (t, n) in waiting.into_iter().zip([3, 1, 1, 1, 1, 1]) {
        let answers = t.await.unwrap().unwrap().unwrap();
        assert_eq!(answers.len(), n, "one answer per purchase of the request");
        for a in answers {
            match a {
                PurchaseAnswer::Receipt(r) => receipts.push(*r),
                PurchaseAnswer::Conflict => panic!("no conflict expected"),
            }
        }
    }
    let root_signature = *receipts[0].signature();
    let results: Vec<_> = receipts
        .iter()
        .map(|r| {
            r.verify(&C, &n_key)
                .expect("each receipt verifies alone")
                .result
        })
        .collect();
    // The writer drains the queue in arrival order, which the tasks above do not fix: five
    // of the seven commit and two run out of funds, whichever they are.
    let count = |code| results[..7].iter().filter(|r| **r == code).count();
    assert_eq!(count(ResultCode::Committed), 5);
    assert_eq!(count(ResultCode::InsufficientFunds), 2);
    let mut indexes = Vec::new();
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(*r.signature(), root_signature, "receipt {i}: one signature");
        let SignatureForm::Batch { proof, .. } = r.form() else {
            panic!("receipt {i} is not batch-signed");
        };
        // Seven new receipts: the retry gets the first's.
        assert_eq!(proof.count(), 7);
        indexes.push(proof.index());
    }
    assert_eq!(
        receipts[7], receipts[0],
        "a retry in the batch gets the same receipt"
    );
    indexes.truncate(7);
    indexes.sort();
    assert_eq!(indexes, (0..7).collect::<Vec<u32>>());

    // What is stored is exactly what was answered (bytes, signature and path).
    for ((_, v), r) in purchases.iter().zip(&receipts) {
        let epoid = v.epo().epoid.clone();
        let stored = writer
            .run(move |s| s.outcome(&epoid).unwrap().unwrap().receipt)
            .await
            .unwrap();
        assert_eq!(&stored, r);
    }
    // (The writer counts a batch after answering it, before it runs the next job.)
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(writer.stats().batches.load(Relaxed), 1, "one durable write");
    assert_eq!(writer.stats().purchases.load(Relaxed), 8);
    assert_eq!(
        writer.stats().receipt_signatures.load(Relaxed),
        1,
        "one signature for the batch's seven receipts"
    );

    // The customer accepts a batch-signed receipt and gets K; and its JSON round trip
    // keeps the proof.
    let k = results
        .iter()
        .position(|r| *r == ResultCode::Committed)
        .unwrap();
    let (mut c, v) = purchases[k].clone();
    let wire: netbill_proto::Signed<netbill_proto::messages::Receipt> =
        serde_json::from_str(&serde_json::to_string(&receipts[k]).unwrap()).unwrap();
    match c.settle(&C, &n_key, &p.billing_seal_key, wire).unwrap() {
        Settlement::Paid { goods_key, .. } => assert_eq!(goods_key, v.goods_key),
        other => panic!("expected paid, got {other:?}"),
    }
    // A receipt with another receipt's path does not verify.
    let SignatureForm::Batch { proof, .. } = receipts[1].form().clone() else {
        unreachable!()
    };
    let moved = netbill_proto::Signed::<netbill_proto::messages::Receipt>::from_form(
        receipts[0].bytes().to_vec(),
        SignatureForm::Batch {
            root_signature,
            proof,
        },
    )
    .unwrap();
    assert!(moved.verify(&C, &n_key).is_err());
}

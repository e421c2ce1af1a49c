//! The audit checks batch-signed receipts from the signed records alone: a ledger whose
//! receipts N signed a batch at a time audits clean, and a receipt carrying another
//! receipt's path, or a path of another batch, is a purchase N's signature does not back.

use netbill_audit::{FindingKind, Snapshot, audit};
use netbill_crypto::{Ed25519Signer, RealCrypto, random_bytes, random_seal_secret};
use netbill_ledger::{NewAccount, PurchaseRecord, Store, Transfer};
use netbill_proto::billing::{self, AccountKind, BatchDecision, BillingPolicy, Decision};
use netbill_proto::crypto::{Crypto, GoodsKey, SealKey, SealSecret, Signer};
use netbill_proto::customer::CustomerPurchase;
use netbill_proto::merchant::{MerchantPurchase, Offer, make_quote};
use netbill_proto::messages::{GoodsOffer, PriceRequest, ResultCode};
use netbill_proto::signed::SignatureForm;
use netbill_proto::{AccountId, Amount, ProductCode, Signed};

const C: RealCrypto = RealCrypto;
const NOW: u64 = 1_700_000_000_000;

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}

struct Parties {
    customer: Ed25519Signer,
    customer_seal: SealSecret,
    merchant: Ed25519Signer,
    merchant_seal: SealSecret,
    billing: Ed25519Signer,
    billing_secret: SealSecret,
    billing_seal_key: SealKey,
}

/// Purchase `serial` (1 000 units), verified as N's API hands it to the writer.
fn purchase(p: &Parties, serial: u64) -> billing::VerifiedPurchase {
    let offer = Offer {
        product: ProductCode::new("article").unwrap(),
        description: "An article".into(),
        price: Amount::from_minor(1_000).unwrap(),
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
        NOW,
        600_000,
    )
    .unwrap();
    let goods = GoodsOffer {
        purchase: format!("p{serial}"),
        checksum: C.digest(&[b"ciphertext", &serial.to_be_bytes()]),
        ciphertext_len: 42,
    };
    let mut m = MerchantPurchase::new(quote.clone(), GoodsKey(random_bytes()), goods.clone());
    let note = m.deliver(serial, NOW, 600_000);
    let mut c = CustomerPurchase::new(quote, goods.clone(), p.customer_seal.clone());
    c.delivered(goods.checksum, goods.ciphertext_len, note, NOW)
        .unwrap();
    let epo = c
        .sign_epo(
            &C,
            &p.customer,
            &p.billing_seal_key,
            &id("alice"),
            random_bytes(),
            "",
            NOW,
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
            NOW,
        )
        .unwrap();
    billing::verify_endorsement(&C, &p.billing_secret, &BillingPolicy::default(), e).unwrap()
}

/// Commits purchases `serials` in one transaction, their receipts under one signature, as
/// N's writer does.
fn commit_batch(s: &mut dyn Store, p: &Parties, serials: std::ops::RangeInclusive<u64>) {
    let purchases: Vec<_> = serials.map(|i| purchase(p, i)).collect();
    s.batch(&mut |tx| {
        let refs: Vec<_> = purchases.iter().collect();
        let bodies: Vec<_> = billing::decide_batch(&refs, &*tx, NOW + 1)
            .into_iter()
            .zip(&purchases)
            .map(|(d, v)| {
                let BatchDecision::Decided(Decision::Commit {
                    customer_balance_minor,
                    low_balance,
                    ..
                }) = d
                else {
                    panic!("should commit: {d:?}");
                };
                billing::receipt_body(
                    &C,
                    &p.billing_secret,
                    v,
                    ResultCode::Committed,
                    customer_balance_minor,
                    low_balance,
                    NOW + 1,
                    random_bytes(),
                )
            })
            .collect();
        let receipts = Signed::sign_batch(bodies, &C, &p.billing);
        for (v, r) in purchases.iter().zip(&receipts) {
            tx.record_purchase(v, r, NOW + 1)?;
        }
        Ok(())
    })
    .unwrap();
}

fn proof_of(r: &PurchaseRecord) -> SignatureForm {
    r.receipt.form().clone()
}

#[test]
fn batch_signed_receipts_audit_clean_and_moved_paths_are_unbacked() {
    let billing_secret = random_seal_secret();
    let p = Parties {
        customer: Ed25519Signer::generate(),
        customer_seal: random_seal_secret(),
        merchant: Ed25519Signer::generate(),
        merchant_seal: random_seal_secret(),
        billing: Ed25519Signer::generate(),
        billing_seal_key: C.seal_key(&billing_secret),
        billing_secret,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s =
        netbill_ledger::open_store(&format!("sqlite://{}", dir.path().join("l.db").display()))
            .unwrap();
    for (account, kind, key) in [
        ("alice", AccountKind::Customer, p.customer.public_key()),
        ("acme", AccountKind::Merchant, p.merchant.public_key()),
    ] {
        s.create_account(
            &NewAccount {
                id: id(account),
                kind,
                key,
                credit_limit_minor: 0,
                low_water_minor: 0,
            },
            NOW,
        )
        .unwrap();
    }
    s.transfer(
        &id("alice"),
        Transfer::Deposit,
        Amount::from_minor(100_000).unwrap(),
        None,
        NOW,
    )
    .unwrap();
    commit_batch(s.as_mut(), &p, 1..=3); // batch A
    commit_batch(s.as_mut(), &p, 4..=6); // batch B

    let snap = Snapshot::from_store(s.as_mut()).unwrap();
    assert_eq!(snap.purchases.len(), 6);
    assert!(
        snap.purchases
            .iter()
            .all(|r| matches!(r.receipt.form(), SignatureForm::Batch { .. }))
    );
    let report = audit(&snap, &p.billing.public_key());
    assert_eq!(report.findings, [], "a batch-signed ledger audits clean");
    assert_eq!(report.purchases, 6);

    // Purchases are listed by EPOID: serials 1–3 are batch A, 4–6 batch B.
    let index_of = |serial: u64| {
        snap.purchases
            .iter()
            .position(|r| r.epoid.serial == serial)
            .unwrap()
    };
    let (a0, a1, b0) = (index_of(1), index_of(2), index_of(4));
    let SignatureForm::Batch {
        root_signature: sig_a,
        proof: path_a1,
    } = proof_of(&snap.purchases[a1])
    else {
        unreachable!()
    };
    let SignatureForm::Batch {
        root_signature: sig_b,
        proof: path_b0,
    } = proof_of(&snap.purchases[b0])
    else {
        unreachable!()
    };
    for (what, form) in [
        (
            "another receipt's path",
            SignatureForm::Batch {
                root_signature: sig_a,
                proof: path_a1,
            },
        ),
        (
            "a path and signature of another batch",
            SignatureForm::Batch {
                root_signature: sig_b,
                proof: path_b0.clone(),
            },
        ),
        (
            "its own path under another batch's signature",
            match proof_of(&snap.purchases[a0]) {
                SignatureForm::Batch { proof, .. } => SignatureForm::Batch {
                    root_signature: sig_b,
                    proof,
                },
                SignatureForm::Single(_) => unreachable!(),
            },
        ),
        ("the root signature alone", SignatureForm::Single(sig_a)),
    ] {
        let mut bad = snap.clone();
        let r = &mut bad.purchases[a0];
        r.receipt = Signed::from_form(r.receipt.bytes().to_vec(), form).unwrap();
        let report = audit(&bad, &p.billing.public_key());
        let unbacked: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::UnbackedEntry)
            .collect();
        assert_eq!(unbacked.len(), 1, "{what}: {:?}", report.findings);
        assert_eq!(
            unbacked[0].epoid.as_ref(),
            Some(&snap.purchases[a0].epoid),
            "{what}"
        );
    }
}

//! The SQLite store: accounts, transfers, idempotency, outcomes, journal, conservation.

use netbill_ledger::{AccountChange, NewAccount, SqliteStore, Store, StoreError, Transfer};
use netbill_proto::billing::{self, AccountKind, BillingPolicy, Decision};
use netbill_proto::crypto::symbolic::{SymbolicCrypto, SymbolicSigner, seal_secret};
use netbill_proto::crypto::{Crypto, GoodsKey, PublicKey, Signer};
use netbill_proto::customer::CustomerPurchase;
use netbill_proto::merchant::{MerchantPurchase, Offer, make_quote};
use netbill_proto::messages::{GoodsOffer, PriceRequest, ResultCode};
use netbill_proto::{AccountId, Amount, ProductCode};

const C: SymbolicCrypto = SymbolicCrypto;
const NOW: u64 = 1_700_000_000_000;

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}
fn usd(s: &str) -> Amount {
    s.parse().unwrap()
}

fn store_with_accounts() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = SqliteStore::open(&dir.path().join("ledger.db")).unwrap();
    for (name, kind) in [
        ("alice", AccountKind::Customer),
        ("acme", AccountKind::Merchant),
    ] {
        s.create_account(
            &NewAccount {
                id: id(name),
                kind,
                key: SymbolicSigner::new(name).public_key(),
                credit_limit_minor: 0,
                low_water_minor: 50_000,
            },
            NOW,
        )
        .unwrap();
    }
    (dir, s)
}

#[test]
fn transfers_are_idempotent_and_conserve_money() {
    let (_dir, mut s) = store_with_accounts();
    let b = s
        .transfer(
            &id("alice"),
            Transfer::Deposit,
            usd("USD:1"),
            Some("k1"),
            NOW,
        )
        .unwrap();
    assert_eq!(b, 100_000);
    // Same key, same request: same answer, no second deposit.
    assert_eq!(
        s.transfer(
            &id("alice"),
            Transfer::Deposit,
            usd("USD:1"),
            Some("k1"),
            NOW
        )
        .unwrap(),
        100_000
    );
    assert!(matches!(
        s.transfer(
            &id("alice"),
            Transfer::Deposit,
            usd("USD:2"),
            Some("k1"),
            NOW
        ),
        Err(StoreError::IdempotencyConflict(_))
    ));
    assert!(matches!(
        s.transfer(&id("alice"), Transfer::Payout, usd("USD:5"), None, NOW),
        Err(StoreError::WouldOverdraw { .. })
    ));
    assert!(matches!(
        s.transfer(&id("nobody"), Transfer::Deposit, usd("USD:5"), None, NOW),
        Err(StoreError::NoSuchAccount(_))
    ));
    s.transfer(&id("alice"), Transfer::Payout, usd("USD:0.25"), None, NOW)
        .unwrap();
    let t = s.check_conservation().unwrap();
    assert_eq!(
        (t.balances_minor, t.deposits_minor, t.payouts_minor),
        (75_000, 100_000, 25_000)
    );
    let j = s.journal(0, 10).unwrap();
    assert_eq!(
        j.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["deposit", "payout"]
    );
    assert_ne!(j[0].hash, j[1].hash);
}

#[test]
fn accounts_are_unique_and_changes_apply() {
    let (_dir, mut s) = store_with_accounts();
    let dup = NewAccount {
        id: id("alice"),
        kind: AccountKind::Customer,
        key: PublicKey([1; 32]),
        credit_limit_minor: 0,
        low_water_minor: 0,
    };
    assert!(matches!(
        s.create_account(&dup, NOW),
        Err(StoreError::AccountExists(_))
    ));
    s.change_account(&id("alice"), &AccountChange::Freeze)
        .unwrap();
    s.change_account(&id("alice"), &AccountChange::RevokeKey)
        .unwrap();
    let a = s.account(&id("alice")).unwrap().unwrap();
    assert!(a.frozen && a.key_revoked);
    assert!(matches!(
        s.change_account(&id("zed"), &AccountChange::Freeze),
        Err(StoreError::NoSuchAccount(_))
    ));
}

/// A verified purchase of `price` from alice at acme, made with the real protocol core.
fn verified_purchase(serial: u64, price: &str) -> billing::VerifiedPurchase {
    let customer = SymbolicSigner::new("alice");
    let merchant = SymbolicSigner::new("acme");
    let billing_secret = seal_secret("netbill");
    let offer = Offer {
        product: ProductCode::new("a").unwrap(),
        description: "An article".into(),
        price: usd(price),
        group_prices: vec![],
        goods_digest: C.digest(&[b"g"]),
        goods_len: 1,
    };
    let req = PriceRequest {
        identity: "alice".into(),
        customer_key: customer.public_key(),
        product: offer.product.clone(),
        prd_hex: String::new(),
        bid: None,
        credentials: vec![],
    };
    let quote = make_quote(
        &C,
        &merchant,
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
        purchase: "p".into(),
        checksum: C.digest(&[b"ct"]),
        ciphertext_len: 2,
    };
    let mut m = MerchantPurchase::new(quote.clone(), GoodsKey([3; 32]), goods.clone());
    let note = m.deliver(serial, NOW, 60_000);
    let mut c = CustomerPurchase::new(quote, goods.clone(), seal_secret("r"));
    c.delivered(goods.checksum, 2, note, NOW).unwrap();
    let n_key = C.seal_key(&billing_secret);
    let epo = c
        .sign_epo(
            &C,
            &customer,
            &n_key,
            &id("alice"),
            [0; 16],
            "",
            NOW,
            [0; 32],
        )
        .unwrap();
    let e = m
        .endorse(&C, &merchant, &n_key, epo, "", NOW, [0; 32])
        .unwrap();
    billing::verify_endorsement(&C, &billing_secret, &BillingPolicy::default(), e).unwrap()
}

#[test]
fn a_batch_of_purchases_commits_atomically_with_one_outcome_each() {
    let (_dir, mut s) = store_with_accounts();
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:0.05"), None, NOW)
        .unwrap();
    let n = SymbolicSigner::new("netbill");
    let purchases: Vec<_> = (1..=4).map(|i| verified_purchase(i, "USD:0.02")).collect();
    let mut results = Vec::new();
    s.batch(&mut |tx| {
        for v in &purchases {
            let (code, bal, low) = match billing::decide(v, &*tx, NOW + 1) {
                Decision::Commit {
                    customer_balance_minor,
                    low_balance,
                    ..
                } => (ResultCode::Committed, customer_balance_minor, low_balance),
                Decision::Fail {
                    code,
                    customer_balance_minor,
                    low_balance,
                } => (code, customer_balance_minor, low_balance),
                other => panic!("unexpected {other:?}"),
            };
            let r = billing::make_receipt(&C, &n, v, code, bal, low, NOW + 1, [0; 32]);
            tx.record_purchase(v, &r, NOW + 1)?;
            results.push(code);
        }
        Ok(())
    })
    .unwrap();
    // Later purchases in the batch see the earlier debits.
    assert_eq!(
        results,
        [
            ResultCode::Committed,
            ResultCode::Committed,
            ResultCode::InsufficientFunds,
            ResultCode::InsufficientFunds
        ]
    );
    assert_eq!(
        s.account(&id("alice")).unwrap().unwrap().balance_minor,
        1_000
    );
    assert_eq!(
        s.account(&id("acme")).unwrap().unwrap().balance_minor,
        4_000
    );
    s.check_conservation().unwrap();
    let hist = s.history(&id("alice"), 0, u64::MAX, 10).unwrap();
    assert_eq!(hist.len(), 4);
    // The outcome is stored with its receipt and endorsement digest.
    let o = s.outcome(&purchases[0].epo().epoid).unwrap().unwrap();
    assert_eq!(o.endorsement_digest, Some(purchases[0].endorsement_digest));

    // Recording the same EPOID again fails and the failed batch changes nothing.
    let r = billing::make_receipt(
        &C,
        &n,
        &purchases[0],
        ResultCode::Committed,
        0,
        false,
        NOW,
        [0; 32],
    );
    let err = s
        .batch(&mut |tx| tx.record_purchase(&purchases[0], &r, NOW))
        .unwrap_err();
    assert!(matches!(err, StoreError::OutcomeExists(_)));
    assert_eq!(
        s.account(&id("alice")).unwrap().unwrap().balance_minor,
        1_000
    );
    assert_eq!(s.journal(0, 100).unwrap().len(), 3);
}

#[test]
fn a_batch_that_fails_midway_is_rolled_back() {
    let (_dir, mut s) = store_with_accounts();
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:1"), None, NOW)
        .unwrap();
    let n = SymbolicSigner::new("netbill");
    let v = verified_purchase(1, "USD:0.02");
    let r = billing::make_receipt(&C, &n, &v, ResultCode::Committed, 0, false, NOW, [0; 32]);
    let err = s
        .batch(&mut |tx| {
            tx.record_purchase(&v, &r, NOW)?;
            assert!(
                tx.outcome(&v.epo().epoid).is_some(),
                "the batch sees its own writes"
            );
            Err(StoreError::Corrupt("injected".into()))
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)));
    assert_eq!(
        s.account(&id("alice")).unwrap().unwrap().balance_minor,
        100_000
    );
    assert!(s.outcome(&v.epo().epoid).unwrap().is_none());
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    {
        let mut s = SqliteStore::open(&path).unwrap();
        s.create_account(
            &NewAccount {
                id: id("bob"),
                kind: AccountKind::Customer,
                key: PublicKey([2; 32]),
                credit_limit_minor: 0,
                low_water_minor: 0,
            },
            NOW,
        )
        .unwrap();
        s.transfer(&id("bob"), Transfer::Deposit, usd("USD:3"), None, NOW)
            .unwrap();
    }
    let mut s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        s.account(&id("bob")).unwrap().unwrap().balance_minor,
        300_000
    );
    assert_eq!(s.check_conservation().unwrap().deposits_minor, 300_000);
}

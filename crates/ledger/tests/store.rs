//! One conformance suite for every backend under the one rules layer (SQLite, PostgreSQL and
//! the in-memory rows the model checker runs): accounts, transfers, idempotency, outcomes,
//! journal, conservation. Each test runs once per backend, on a fresh database; PostgreSQL is
//! a throwaway server started from the installed binaries.
//! PostgreSQL-only tests (several stores over one database, migrations) follow.

use netbill_ledger::throwaway_pg as pg;

use std::sync::{Arc, Mutex};

use netbill_ledger::commit;
use netbill_ledger::rules::{Rows, TotalsLock};
use netbill_ledger::{
    AccountChange, AccountRecord, Adjustment, Backend, ChainHead, HistoryLine, JournalEntry,
    Ledger, MemoryBackend, NewAccount, PostgresStore, PurchaseRecord, RefundFilter, RefundRecord,
    Store, StoreError, Totals, Transfer, follow_chain, open_store, verify_journal,
};
use netbill_proto::billing::StoredOutcome;
use netbill_proto::billing::{self, AccountKind, BillingPolicy, Decision, RefundError};
use netbill_proto::crypto::symbolic::{SymbolicCrypto, SymbolicSigner, seal_secret};
use netbill_proto::crypto::{Crypto, GoodsKey, PublicKey, Signer};
use netbill_proto::customer::CustomerPurchase;
use netbill_proto::merchant::{MerchantPurchase, Offer, make_quote};
use netbill_proto::messages::{Checkpoint, Endorsement, Receipt};
use netbill_proto::messages::{GoodsOffer, PriceRequest, RefundReceipt, RefundRequest, ResultCode};
use netbill_proto::signed::SignatureForm;
use netbill_proto::{AccountId, Amount, EpoId, ProductCode, Signed};

const C: SymbolicCrypto = SymbolicCrypto;
const NOW: u64 = 1_700_000_000_000;

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}
fn usd(s: &str) -> Amount {
    s.parse().unwrap()
}

/// A fresh, empty ledger of one kind; `open` opens it (again).
struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
    /// The rows of an in-memory ledger, shared by every `open`.
    memory: SharedMemory,
}

/// In-memory rows shared by several handles, so that "reopening" an in-memory ledger finds
/// what an earlier handle committed.
#[derive(Clone, Default)]
struct SharedMemory(Arc<Mutex<MemoryBackend>>);

impl SharedMemory {
    fn rows(&self) -> std::sync::MutexGuard<'_, MemoryBackend> {
        self.0.lock().unwrap()
    }
}

impl Backend for SharedMemory {
    fn transaction(
        &mut self,
        lock: TotalsLock,
        f: &mut dyn FnMut(&mut dyn Rows) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.rows().transaction(lock, f)
    }
    fn account(&mut self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        self.rows().account(id)
    }
    fn outcome(&mut self, epoid: &EpoId) -> Result<Option<StoredOutcome>, StoreError> {
        self.rows().outcome(epoid)
    }
    fn history(
        &mut self,
        id: &AccountId,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<HistoryLine>, StoreError> {
        self.rows().history(id, from_ms, to_ms, limit)
    }
    fn journal(&mut self, after: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        self.rows().journal(after, limit)
    }
    fn totals(&mut self) -> Result<Totals, StoreError> {
        Backend::totals(&mut *self.rows())
    }
    fn endorsement(&mut self, epoid: &EpoId) -> Result<Option<Signed<Endorsement>>, StoreError> {
        self.rows().endorsement(epoid)
    }
    fn purchases(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PurchaseRecord>, StoreError> {
        self.rows().purchases(after, limit)
    }
    fn accounts(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        self.rows().accounts(after, limit)
    }
    fn refunds(
        &mut self,
        filter: RefundFilter<'_>,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        self.rows().refunds(filter, limit)
    }
    fn add_checkpoint(&mut self, c: &Signed<Checkpoint>) -> Result<bool, StoreError> {
        self.rows().add_checkpoint(c)
    }
    fn checkpoints(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Signed<Checkpoint>>, StoreError> {
        self.rows().checkpoints(after, limit)
    }
}

impl Db {
    fn open(&self) -> Box<dyn Store> {
        if self.url == "memory:" {
            return Box::new(Ledger::new(self.memory.clone()));
        }
        open_store(&self.url).unwrap_or_else(|e| panic!("opening {}: {e}", self.url))
    }
}

fn sqlite_db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    Db {
        url: format!("sqlite://{}", dir.path().join("ledger.db").display()),
        _dir: Some(dir),
        memory: SharedMemory::default(),
    }
}

fn postgres_db() -> Db {
    Db {
        url: pg::fresh_database(),
        _dir: None,
        memory: SharedMemory::default(),
    }
}

/// A ledger in memory: the same rules over the checker's backend. "Reopening" it hands out
/// the same rows again (what the checker's N keeps across a crash).
fn memory_db() -> Db {
    Db {
        url: "memory:".into(),
        _dir: None,
        memory: SharedMemory::default(),
    }
}

/// Runs each named test against SQLite (`sqlite::…`), PostgreSQL (`postgres::…`) and the
/// in-memory backend (`memory::…`): one rules layer, three row stores.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $test() { super::$test(&super::sqlite_db()) })*
        }
        mod postgres {
            $(#[test] fn $test() { super::$test(&super::postgres_db()) })*
        }
        mod memory {
            $(#[test] fn $test() { super::$test(&super::memory_db()) })*
        }
    };
}

conformance!(
    transfers_are_idempotent_and_conserve_money,
    accounts_are_unique_and_changes_apply,
    a_batch_of_purchases_commits_atomically_with_one_outcome_each,
    a_batch_that_fails_midway_is_rolled_back,
    reopening_keeps_everything,
    history_is_newest_first_within_the_window,
    refunds_never_exceed_what_was_paid_and_a_replay_refunds_once,
    checkpoints_sign_the_head_and_adjustments_never_break_conservation,
    batch_signed_receipts_are_stored_whole_and_single_signed_ones_still_read,
    the_billing_commit_answers_each_endorsement_once_and_signs_once_per_batch,
    the_billing_abort_records_once_and_answers_the_stored_outcome_after,
    a_debit_may_reach_the_credit_limit_and_never_pass_it,
);

fn store_with_accounts(db: &Db) -> Box<dyn Store> {
    let mut s = db.open();
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
    s
}

fn transfers_are_idempotent_and_conserve_money(db: &Db) {
    let mut s = store_with_accounts(db);
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
    // A transaction after a payout checks conservation against what the totals held before.
    s.transfer(&id("acme"), Transfer::Deposit, usd("USD:0.01"), None, NOW)
        .unwrap();
    // A payout of the whole balance is allowed; one minor unit more is not.
    assert!(matches!(
        s.transfer(
            &id("acme"),
            Transfer::Payout,
            Amount::from_minor(1_001).unwrap(),
            None,
            NOW
        ),
        Err(StoreError::WouldOverdraw { .. })
    ));
    assert_eq!(
        s.transfer(&id("acme"), Transfer::Payout, usd("USD:0.01"), None, NOW)
            .unwrap(),
        0
    );
    s.transfer(&id("acme"), Transfer::Deposit, usd("USD:0.01"), None, NOW)
        .unwrap();
    s.transfer(&id("acme"), Transfer::Payout, usd("USD:0.01"), None, NOW)
        .unwrap();
    let j = s.journal(0, 10).unwrap();
    // Opening an account journals its key (moving nothing).
    assert_eq!(
        j.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        [
            "key", "key", "deposit", "payout", "deposit", "payout", "deposit", "payout"
        ]
    );
    assert_eq!(
        j[0].memo,
        SymbolicSigner::new("alice").public_key().to_hex()
    );
    assert_eq!(
        (j[0].amount, j[0].credit.clone()),
        (Amount::ZERO, Some(id("alice")))
    );
    assert_ne!(j[2].hash, j[3].hash);
    // With payouts made, an adjustment's refusal gives deposits minus payouts.
    let err = s
        .adjust(
            &[Adjustment {
                account: id("alice"),
                delta_minor: 500,
                memo: "one-sided".into(),
            }],
            NOW,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("balances would sum to USD:0.75500 but deposits - payouts = USD:0.75000"),
        "{err}"
    );
    // A balanced adjustment applies, checked against deposits minus payouts.
    s.adjust(
        &[
            Adjustment {
                account: id("alice"),
                delta_minor: -500,
                memo: "moved".into(),
            },
            Adjustment {
                account: id("acme"),
                delta_minor: 500,
                memo: "moved".into(),
            },
        ],
        NOW,
    )
    .unwrap();
    assert_eq!(s.account(&id("acme")).unwrap().unwrap().balance_minor, 500);
}

fn accounts_are_unique_and_changes_apply(db: &Db) {
    let mut s = store_with_accounts(db);
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
    s.change_account(&id("alice"), &AccountChange::Freeze, NOW)
        .unwrap();
    s.change_account(&id("alice"), &AccountChange::RevokeKey, NOW)
        .unwrap();
    let a = s.account(&id("alice")).unwrap().unwrap();
    assert!(a.frozen && a.key_revoked);
    assert!(matches!(
        s.change_account(&id("zed"), &AccountChange::Freeze, NOW),
        Err(StoreError::NoSuchAccount(_))
    ));
}

/// A verified purchase of `price` from alice at acme, made with the real protocol core.
fn verified_purchase(serial: u64, price: &str) -> billing::VerifiedPurchase {
    purchase_by("alice", serial, price)
}

/// A verified purchase of `price` by `who` at acme.
fn purchase_by(who: &str, serial: u64, price: &str) -> billing::VerifiedPurchase {
    endorsed_with_memo(who, serial, price, "")
}

/// The same, endorsed with `memo` (another memo: another endorsement of the same EPOID).
fn endorsed_with_memo(
    who: &str,
    serial: u64,
    price: &str,
    memo: &str,
) -> billing::VerifiedPurchase {
    let customer = SymbolicSigner::new(who);
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
        identity: who.into(),
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
        .sign_epo(&C, &customer, &n_key, &id(who), [0; 16], "", NOW, [0; 32])
        .unwrap();
    let e = m
        .endorse(
            &C,
            &merchant,
            &seal_secret("acme-seal"),
            &n_key,
            epo,
            memo,
            NOW,
        )
        .unwrap();
    billing::verify_endorsement(&C, &billing_secret, &BillingPolicy::default(), e).unwrap()
}

fn a_batch_of_purchases_commits_atomically_with_one_outcome_each(db: &Db) {
    let mut s = store_with_accounts(db);
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
            let r = billing::make_receipt(
                &C,
                &n,
                &seal_secret("netbill"),
                v,
                code,
                bal,
                low,
                NOW + 1,
                [0; 32],
            );
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
        &seal_secret("netbill"),
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
    assert_eq!(s.journal(0, 100).unwrap().len(), 5);
}

/// Commits `v` in a batch of its own.
fn commit(s: &mut dyn Store, v: &billing::VerifiedPurchase) {
    let n = SymbolicSigner::new("netbill");
    s.batch(&mut |tx| {
        let Decision::Commit {
            customer_balance_minor,
            ..
        } = billing::decide(v, &*tx, NOW + 1)
        else {
            panic!("the purchase should commit");
        };
        let r = billing::make_receipt(
            &C,
            &n,
            &seal_secret("netbill"),
            v,
            ResultCode::Committed,
            customer_balance_minor,
            false,
            NOW + 1,
            [0; 32],
        );
        tx.record_purchase(v, &r, NOW + 1)
    })
    .unwrap();
}

fn refund_of(epoid: &EpoId, id: &str, amount: &str, at: u64) -> Signed<RefundRequest> {
    Signed::sign(
        RefundRequest {
            refund_id: id.into(),
            epoid: epoid.clone(),
            merchant: self::id("acme"),
            amount: usd(amount),
            reason: "damaged".into(),
            time_ms: at,
        },
        &SymbolicSigner::new("acme"),
    )
}

fn do_refund(
    s: &mut dyn Store,
    req: &Signed<RefundRequest>,
) -> Result<Signed<RefundReceipt>, StoreError> {
    let n = SymbolicSigner::new("netbill");
    let digest = req.digest(&C);
    let body = req.body_unverified().clone();
    s.refund(
        req,
        digest,
        &mut |total, price| billing::make_refund_receipt(&n, &body, digest, total, price, NOW + 2),
        NOW + 2,
    )
}

fn refunds_never_exceed_what_was_paid_and_a_replay_refunds_once(db: &Db) {
    let mut s = store_with_accounts(db);
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:1"), None, NOW)
        .unwrap();
    let v = verified_purchase(1, "USD:0.02");
    commit(s.as_mut(), &v);
    let epoid = v.epo().epoid.clone();
    let balance =
        |s: &mut Box<dyn Store>, who: &str| s.account(&id(who)).unwrap().unwrap().balance_minor;
    assert_eq!(balance(&mut s, "alice"), 98_000);

    let first = do_refund(s.as_mut(), &refund_of(&epoid, "r1", "USD:0.01", NOW)).unwrap();
    assert_eq!(first.body_unverified().refunded_total, usd("USD:0.01"));
    assert_eq!(first.body_unverified().price, usd("USD:0.02"));
    assert_eq!(balance(&mut s, "alice"), 99_000);
    assert_eq!(balance(&mut s, "acme"), 1_000);

    // The same refund sent again (later, for another reason) answers with the first receipt.
    let again = do_refund(s.as_mut(), &refund_of(&epoid, "r1", "USD:0.01", NOW + 50)).unwrap();
    assert_eq!(again, first);
    assert_eq!(balance(&mut s, "alice"), 99_000);
    // The same id for another amount is a conflict.
    let err = do_refund(s.as_mut(), &refund_of(&epoid, "r1", "USD:0.005", NOW)).unwrap_err();
    assert!(
        matches!(err, StoreError::Refund(RefundError::IdConflict(_))),
        "{err}"
    );
    // More than what is left of the price is refused, and changes nothing.
    let err = do_refund(s.as_mut(), &refund_of(&epoid, "r2", "USD:0.01001", NOW)).unwrap_err();
    assert!(
        matches!(err, StoreError::Refund(RefundError::OverLimit { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("USD:0.01000 is already refunded"),
        "{err}"
    );
    let last = do_refund(s.as_mut(), &refund_of(&epoid, "r2", "USD:0.01", NOW)).unwrap();
    assert_eq!(last.body_unverified().refunded_total, usd("USD:0.02"));
    let err = do_refund(s.as_mut(), &refund_of(&epoid, "r3", "USD:0.00001", NOW)).unwrap_err();
    assert!(
        matches!(err, StoreError::Refund(RefundError::OverLimit { .. })),
        "{err}"
    );
    // A purchase that does not exist cannot be refunded.
    let other = verified_purchase(2, "USD:0.02").epo().epoid.clone();
    let err = do_refund(s.as_mut(), &refund_of(&other, "r4", "USD:0.01", NOW)).unwrap_err();
    assert!(
        matches!(err, StoreError::Refund(RefundError::NoSuchPurchase(_))),
        "{err}"
    );

    assert_eq!(balance(&mut s, "alice"), 100_000);
    assert_eq!(balance(&mut s, "acme"), 0);
    s.check_conservation().unwrap();
    assert_eq!(
        s.refunds(RefundFilter::Purchase(&epoid), 10).unwrap().len(),
        2
    );
    assert_eq!(
        s.refunds(RefundFilter::All { after: Some("r1") }, 10)
            .unwrap()
            .len(),
        1
    );
    let mine = s
        .refunds(
            RefundFilter::Account {
                id: &id("alice"),
                from_ms: NOW,
                to_ms: NOW + 3,
            },
            10,
        )
        .unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].decided_ms, NOW + 2);
    let none = s
        .refunds(
            RefundFilter::Account {
                id: &id("alice"),
                from_ms: 0,
                to_ms: NOW,
            },
            10,
        )
        .unwrap();
    assert!(none.is_empty());
    let j = s.journal(0, 100).unwrap();
    let refunds: Vec<_> = j.iter().filter(|e| e.kind == "refund").collect();
    assert_eq!(refunds.len(), 2);
    assert_eq!(refunds[0].memo, "r1");
    assert_eq!(refunds[0].debit, Some(id("acme")));
    assert_eq!(verify_journal(s.as_mut()).unwrap(), 6);
    // The evidence: the endorsement with the customer's EPO, and the committed purchase.
    let e = s.endorsement(&epoid).unwrap().unwrap();
    assert_eq!(e, v.endorsement);
    let p = s.purchases(None, 10).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].customer, id("alice"));
}

fn checkpoints_sign_the_head_and_adjustments_never_break_conservation(db: &Db) {
    let n = SymbolicSigner::new("netbill");
    let head = follow_chain(db.open().as_mut(), ChainHead::genesis(), false).unwrap();
    assert_eq!(head, ChainHead::genesis(), "empty journal");
    let mut s = store_with_accounts(db);
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:1"), None, NOW)
        .unwrap();
    let head = follow_chain(s.as_mut(), ChainHead::genesis(), false).unwrap();
    assert_eq!((head.seq, head.deposits_minor), (3, 100_000));
    let c = Signed::sign(head.checkpoint(NOW), &n);
    assert!(s.add_checkpoint(&c).unwrap());
    assert!(!s.add_checkpoint(&c).unwrap(), "one checkpoint per seq");
    let body = c.verify(&C, &n.public_key()).unwrap();
    assert_eq!(hex::encode(body.hash.0), s.journal(2, 1).unwrap()[0].hash);
    assert_eq!(s.checkpoints(0, 10).unwrap(), vec![c]);
    // Following on from a head finds nothing new; a changed head breaks the chain.
    assert_eq!(follow_chain(s.as_mut(), head.clone(), false).unwrap(), head);
    let mut wrong = head.clone();
    wrong.hash[0] ^= 1;
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:1"), None, NOW)
        .unwrap();
    assert!(matches!(
        follow_chain(s.as_mut(), wrong.clone(), false),
        Err(StoreError::ChainBroken(_))
    ));
    assert_eq!(follow_chain(s.as_mut(), wrong, true).unwrap().seq, 4);

    // An adjustment that would break conservation is refused and changes nothing.
    let one_sided = [Adjustment {
        account: id("alice"),
        delta_minor: 500,
        memo: "test".into(),
    }];
    let err = s.adjust(&one_sided, NOW).unwrap_err();
    assert!(matches!(err, StoreError::BadAdjustment(_)), "{err}");
    assert!(err.to_string().contains("never break it"), "{err}");
    // The message gives both sides: the balances after, and deposits minus payouts.
    assert!(
        err.to_string()
            .contains("balances would sum to USD:2.00500 but deposits - payouts = USD:2.00000"),
        "{err}"
    );
    let err = s
        .adjust(
            &[Adjustment {
                account: id("alice"),
                delta_minor: 0,
                memo: "x".into(),
            }],
            NOW,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::BadAdjustment(_)), "{err}");
    assert_eq!(
        s.account(&id("alice")).unwrap().unwrap().balance_minor,
        200_000
    );
    // Balanced adjustments apply, journaled with their memo.
    let moves = [
        Adjustment {
            account: id("alice"),
            delta_minor: -300,
            memo: "unwind entry 7".into(),
        },
        Adjustment {
            account: id("acme"),
            delta_minor: 300,
            memo: "unwind entry 7".into(),
        },
    ];
    s.adjust(&moves, NOW).unwrap();
    assert_eq!(
        s.account(&id("alice")).unwrap().unwrap().balance_minor,
        199_700
    );
    s.check_conservation().unwrap();
    let j = s.journal(4, 10).unwrap();
    assert_eq!(j.len(), 2);
    assert_eq!(j[0].kind, "adjustment");
    assert_eq!(j[0].debit, Some(id("alice")));
    assert_eq!(j[0].memo, "unwind entry 7");
    assert_eq!(verify_journal(s.as_mut()).unwrap(), 6);
    let accounts = s.accounts(None, 10).unwrap();
    assert_eq!(
        accounts
            .iter()
            .map(|a| a.id.to_string())
            .collect::<Vec<_>>(),
        ["acme", "alice"]
    );
    assert_eq!(s.accounts(Some("acme"), 10).unwrap().len(), 1);
}

fn a_batch_that_fails_midway_is_rolled_back(db: &Db) {
    let mut s = store_with_accounts(db);
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:1"), None, NOW)
        .unwrap();
    let n = SymbolicSigner::new("netbill");
    let v = verified_purchase(1, "USD:0.02");
    let r = billing::make_receipt(
        &C,
        &n,
        &seal_secret("netbill"),
        &v,
        ResultCode::Committed,
        0,
        false,
        NOW,
        [0; 32],
    );
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

fn reopening_keeps_everything(db: &Db) {
    {
        let mut s = db.open();
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
    let mut s = db.open();
    assert_eq!(
        s.account(&id("bob")).unwrap().unwrap().balance_minor,
        300_000
    );
    assert_eq!(s.check_conservation().unwrap().deposits_minor, 300_000);
    // bob's key and his deposit.
    assert_eq!(verify_journal(s.as_mut()).unwrap(), 2);
}

fn batch_signed_receipts_are_stored_whole_and_single_signed_ones_still_read(db: &Db) {
    let n = SymbolicSigner::new("netbill");
    let mut s = store_with_accounts(db);
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:1"), None, NOW)
        .unwrap();
    // A receipt signed alone, as every receipt before batch signing was.
    let old = verified_purchase(1, "USD:0.01");
    commit(s.as_mut(), &old);
    // Three receipts under one signature, decided and signed before the write.
    let purchases: Vec<_> = (2..=4).map(|i| verified_purchase(i, "USD:0.01")).collect();
    let mut signed = Vec::new();
    s.batch(&mut |tx| {
        let refs: Vec<_> = purchases.iter().collect();
        let bodies: Vec<_> = billing::decide_batch(&refs, &*tx, NOW + 1)
            .into_iter()
            .zip(&purchases)
            .map(|(d, v)| {
                let billing::BatchDecision::Decided(Decision::Commit {
                    customer_balance_minor,
                    low_balance,
                    ..
                }) = d
                else {
                    panic!("should commit: {d:?}");
                };
                billing::receipt_body(
                    &C,
                    &seal_secret("netbill"),
                    v,
                    ResultCode::Committed,
                    customer_balance_minor,
                    low_balance,
                    NOW + 1,
                    [0; 32],
                )
            })
            .collect();
        signed = Signed::sign_batch(bodies, &C, &n);
        for (v, r) in purchases.iter().zip(&signed) {
            tx.record_purchase(v, r, NOW + 1)?;
        }
        Ok(())
    })
    .unwrap();
    drop(s);
    let mut s = db.open();
    let root_signature = *signed[0].signature();
    for (v, r) in purchases.iter().zip(&signed) {
        let stored = s.outcome(&v.epo().epoid).unwrap().unwrap().receipt;
        assert_eq!(&stored, r, "the whole signature form comes back");
        assert!(matches!(stored.form(), SignatureForm::Batch { .. }));
        assert_eq!(*stored.signature(), root_signature);
        assert!(stored.verify(&C, &n.public_key()).is_ok());
    }
    let single = s.outcome(&old.epo().epoid).unwrap().unwrap().receipt;
    assert!(matches!(single.form(), SignatureForm::Single(_)));
    assert!(single.verify(&C, &n.public_key()).is_ok());
    // The audit's listing carries the same records.
    let listed = s.purchases(None, 10).unwrap();
    assert_eq!(listed.len(), 4);
    for p in &listed {
        assert!(p.receipt.verify(&C, &n.public_key()).is_ok(), "{}", p.epoid);
    }
    assert_eq!(
        listed
            .iter()
            .filter(|p| matches!(p.receipt.form(), SignatureForm::Batch { .. }))
            .count(),
        3
    );
}

/// What one purchase came to in [`decide_batch`].
#[derive(Debug)]
enum Answer {
    /// A new or stored receipt.
    Receipt(ResultCode, Vec<u8>),
    Conflict,
}

/// Decides and records `purchases` in one batch as the billing server's writer does
/// (announcing the accounts first); returns each answer.
fn decide_batch(
    s: &mut dyn Store,
    purchases: &[billing::VerifiedPurchase],
    at: u64,
) -> Result<Vec<Answer>, StoreError> {
    let n = SymbolicSigner::new("netbill");
    let accounts: Vec<AccountId> = purchases
        .iter()
        .flat_map(|v| [v.secret.account.clone(), v.epo().merchant.clone()])
        .collect();
    let mut answers = Vec::new();
    s.batch(&mut |tx| {
        answers.clear();
        tx.lock_accounts(&accounts)?;
        for v in purchases {
            let (code, bal, low) = match billing::decide(v, &*tx, at) {
                Decision::Settled(r) => {
                    let code = r.body_unverified().result;
                    answers.push(Answer::Receipt(code, r.bytes().to_vec()));
                    continue;
                }
                Decision::Conflict => {
                    answers.push(Answer::Conflict);
                    continue;
                }
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
            };
            let r = billing::make_receipt(
                &C,
                &n,
                &seal_secret("netbill"),
                v,
                code,
                bal,
                low,
                at,
                [0; 32],
            );
            tx.record_purchase(v, &r, at)?;
            answers.push(Answer::Receipt(code, r.bytes().to_vec()));
        }
        Ok(())
    })?;
    Ok(answers)
}

fn history_is_newest_first_within_the_window(db: &Db) {
    let mut s = store_with_accounts(db);
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:1"), None, NOW)
        .unwrap();
    for i in 1..=3 {
        let v = verified_purchase(i, "USD:0.01");
        let a = decide_batch(s.as_mut(), &[v], NOW + i).unwrap();
        assert!(matches!(a[..], [Answer::Receipt(ResultCode::Committed, _)]));
    }
    let h = s.history(&id("alice"), NOW + 2, u64::MAX, 10).unwrap();
    assert_eq!(
        h.iter().map(|l| l.decided_ms).collect::<Vec<_>>(),
        [NOW + 3, NOW + 2]
    );
    assert!(h.iter().all(|l| l.result == ResultCode::Committed
        && l.merchant == id("acme")
        && l.customer == Some(id("alice"))
        && l.price == usd("USD:0.01")));
    let h = s.history(&id("acme"), 0, NOW + 2, 10).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].decided_ms, NOW + 1);
    assert_eq!(s.history(&id("acme"), 0, u64::MAX, 2).unwrap().len(), 2);
    // Two keys, a deposit and three purchases, chained.
    assert_eq!(verify_journal(s.as_mut()).unwrap(), 6);
    let t = s.check_conservation().unwrap();
    assert_eq!((t.accounts, t.outcomes), (2, 3));
}

#[test]
fn store_urls_select_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.db");
    open_store(plain.to_str().unwrap()).unwrap();
    assert!(plain.exists(), "a plain path opens SQLite");
    let url = format!("sqlite://{}", dir.path().join("url.db").display());
    open_store(&url).unwrap();
    assert!(dir.path().join("url.db").exists(), "sqlite:// opens SQLite");
    for bad in ["mysql://x/y", "sqlite://", ""] {
        assert!(
            matches!(open_store(bad), Err(StoreError::BadUrl(_))),
            "{bad:?} is refused"
        );
    }
    // Nothing listens on port 1: a clear connection error, password hidden.
    let err = open_store("postgres://u:secret@127.0.0.1:1/db")
        .err()
        .expect("no server there");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{msg}");
    assert!(
        msg.contains("127.0.0.1:1") && !msg.contains("secret"),
        "{msg}"
    );
}

#[test]
fn postgres_migrations_apply_once_and_a_newer_schema_is_refused() {
    let url = pg::fresh_database();
    // Several servers starting together: the migration runs once, all of them open.
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::open(&url).map(|_| ()))
        })
        .collect();
    for t in opened {
        t.join().unwrap().unwrap();
    }
    let mut s = PostgresStore::open(&url).unwrap();
    assert_eq!(s.schema_version().unwrap(), 2);
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let applied: i64 = c
        .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(applied, 2);
    c.execute("INSERT INTO schema_migrations (version) VALUES (99)", &[])
        .unwrap();
    match PostgresStore::open(&url) {
        Err(e @ StoreError::SchemaTooNew { found: 99, .. }) => {
            assert!(e.to_string().contains("newer netbill"), "{e}")
        }
        Err(e) => panic!("expected SchemaTooNew, got {e}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
}

/// Several stores (as several servers would) over one PostgreSQL database, each committing
/// batches on its own thread: customers buying from one hot merchant, with every purchase
/// sent through two stores at once.
#[test]
fn postgres_stores_sharing_a_database_commit_each_epoid_once_and_lose_no_update() {
    let db = postgres_db();
    let mut s = db.open();
    let customers: Vec<String> = (0..8).map(|i| format!("cust{i}")).collect();
    s.create_account(
        &NewAccount {
            id: id("acme"),
            kind: AccountKind::Merchant,
            key: SymbolicSigner::new("acme").public_key(),
            credit_limit_minor: 0,
            low_water_minor: 0,
        },
        NOW,
    )
    .unwrap();
    for c in &customers {
        s.create_account(
            &NewAccount {
                id: id(c),
                kind: AccountKind::Customer,
                key: SymbolicSigner::new(c).public_key(),
                credit_limit_minor: 0,
                low_water_minor: 0,
            },
            NOW,
        )
        .unwrap();
        // 0.10 each: 12 purchases of 0.01 per customer, so the last two fail.
        s.transfer(&id(c), Transfer::Deposit, usd("USD:0.10"), None, NOW)
            .unwrap();
    }
    let mut purchases = Vec::new();
    let mut serial = 0;
    for _ in 0..12 {
        for c in &customers {
            serial += 1;
            purchases.push(purchase_by(c, serial, "USD:0.01"));
        }
    }
    let purchases = std::sync::Arc::new(purchases);
    // Four writers; writer w handles the purchases with index % 2 == w % 2, so each
    // purchase goes through two writers concurrently, in batches of 7.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let purchases = purchases.clone();
            let url = db.url.clone();
            std::thread::spawn(move || {
                let mut s = PostgresStore::open(&url).unwrap();
                let mine: Vec<(usize, billing::VerifiedPurchase)> = purchases
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % 2 == w % 2)
                    .map(|(i, v)| (i, v.clone()))
                    .collect();
                let mut out = Vec::new();
                for chunk in mine.chunks(7) {
                    let vs: Vec<_> = chunk.iter().map(|(_, v)| v.clone()).collect();
                    let answers = decide_batch(&mut s, &vs, NOW + 10).unwrap();
                    out.extend(chunk.iter().map(|(i, _)| *i).zip(answers));
                }
                out
            })
        })
        .collect();
    let mut by_purchase: Vec<Vec<Answer>> = (0..purchases.len()).map(|_| Vec::new()).collect();
    for w in writers {
        for (i, a) in w.join().unwrap() {
            by_purchase[i].push(a);
        }
    }
    let mut committed = 0i64;
    for (i, answers) in by_purchase.iter().enumerate() {
        let v = &purchases[i];
        let stored = s.outcome(&v.epo().epoid).unwrap().expect("an outcome");
        assert_eq!(answers.len(), 2, "purchase {i} went through two writers");
        for a in answers {
            match a {
                // Both writers answer with the one stored receipt.
                Answer::Receipt(_, bytes) => assert_eq!(bytes, stored.receipt.bytes()),
                Answer::Conflict => panic!("the same endorsement is never a conflict"),
            }
        }
        if stored.receipt.body_unverified().result == ResultCode::Committed {
            committed += 1;
        }
    }
    let t = s.check_conservation().unwrap();
    assert_eq!(t.outcomes, purchases.len() as u64, "one outcome per EPOID");
    assert_eq!(committed, 80, "each customer could pay for exactly 10");
    assert_eq!(
        s.account(&id("acme")).unwrap().unwrap().balance_minor,
        committed * 1_000,
        "the hot merchant lost no update"
    );
    for c in &customers {
        assert_eq!(s.account(&id(c)).unwrap().unwrap().balance_minor, 0);
    }
    // 9 keys (8 customers, 1 merchant) + 8 deposits + 80 purchases, one chain.
    assert_eq!(verify_journal(s.as_mut()).unwrap(), 97);
}

#[test]
fn a_version_1_sqlite_ledger_migrates_and_keeps_its_chain() {
    let db = sqlite_db();
    {
        let mut s = store_with_accounts(&db);
        s.transfer(&id("alice"), Transfer::Deposit, usd("USD:1"), None, NOW)
            .unwrap();
    }
    // Turn it back into a version-1 database: no refunds, no checkpoints, no memos.
    let path = db.url.strip_prefix("sqlite://").unwrap();
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "DROP TABLE refunds; DROP TABLE checkpoints;
         DROP INDEX IF EXISTS refunds_by_epoid;
         UPDATE journal SET memo = '' WHERE kind = 'key';
         DELETE FROM journal WHERE kind = 'key';
         UPDATE journal SET seq = 1;
         ALTER TABLE journal DROP COLUMN memo;
         UPDATE meta SET value = 1 WHERE key = 'schema_version';",
    )
    .unwrap();
    // The one deposit, hashed as version 1 hashed it (no memo).
    let at: i64 = c
        .query_row("SELECT at_ms FROM journal", [], |r| r.get(0))
        .unwrap();
    let hash = netbill_ledger::journal_hash(
        &[0; 32],
        1,
        "deposit",
        None,
        Some(&id("alice")),
        usd("USD:1"),
        None,
        "",
        at as u64,
    );
    c.execute("UPDATE journal SET hash = ?1", [hash]).unwrap();
    drop(c);
    let mut s = db.open();
    let j = s.journal(0, 10).unwrap();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].memo, "");
    assert_eq!(verify_journal(s.as_mut()).unwrap(), 1);
    let v: i64 = rusqlite::Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, 2);
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:1"), None, NOW)
        .unwrap();
    assert_eq!(verify_journal(s.as_mut()).unwrap(), 2);
    assert!(
        s.refunds(RefundFilter::All { after: None }, 10)
            .unwrap()
            .is_empty()
    );
    // A newer schema than this build knows is refused.
    rusqlite::Connection::open(path)
        .unwrap()
        .execute(
            "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    assert!(matches!(
        open_store(&db.url),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}

fn receipt_of(a: &commit::PurchaseAnswer) -> Signed<Receipt> {
    match a {
        commit::PurchaseAnswer::Receipt(r) => (**r).clone(),
        commit::PurchaseAnswer::Conflict => panic!("expected a receipt, got a conflict"),
    }
}

/// N's commit (the server's writer thread and the model checker run it) over every backend:
/// one answer per endorsement in order, one signature per batch of new receipts, the same
/// receipt for the same endorsement, a conflict for another one, nothing stored until the
/// transaction commits, and a retry answered from what is stored.
fn the_billing_commit_answers_each_endorsement_once_and_signs_once_per_batch(db: &Db) {
    let signer = SymbolicSigner::new("netbill");
    let seal = seal_secret("netbill");
    let n = commit::Billing {
        crypto: &C,
        signer: &signer,
        seal: &seal,
    };
    let mut s = store_with_accounts(db);
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:0.05"), None, NOW)
        .unwrap();
    let p1 = verified_purchase(1, "USD:0.02");
    let p2 = verified_purchase(2, "USD:0.02");
    let p3 = verified_purchase(3, "USD:0.02");
    let other = endorsed_with_memo("alice", 1, "USD:0.02", "another endorsement");
    let mut nonces = 0u8;
    let mut entropy = || {
        nonces += 1;
        [nonces; 32]
    };
    let mut seen_inside = 0;
    let done = commit::commit_purchases(
        s.as_mut(),
        &n,
        &[&p1, &p1, &p2, &p3, &other],
        NOW + 1,
        &mut entropy,
        commit::Faults::default(),
        &mut |answers| {
            seen_inside = answers.len();
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(
        seen_inside, 5,
        "`inside` sees every answer before the commit"
    );
    assert_eq!(
        done.signatures, 1,
        "one signature over the batch's new receipts"
    );
    let a = &done.answers;
    assert_eq!(a.len(), 5);
    let r1 = receipt_of(&a[0]);
    assert_eq!(r1.body_unverified().result, ResultCode::Committed);
    assert_eq!(
        receipt_of(&a[1]),
        r1,
        "the same endorsement twice: the same receipt"
    );
    let r2 = receipt_of(&a[2]);
    assert_eq!(r2.body_unverified().result, ResultCode::Committed);
    let r3 = receipt_of(&a[3]);
    assert_eq!(r3.body_unverified().result, ResultCode::InsufficientFunds);
    assert_eq!(a[4], commit::PurchaseAnswer::Conflict);
    for r in [&r1, &r2, &r3] {
        r.verify(&C, &signer.public_key()).unwrap();
        assert!(matches!(r.form(), SignatureForm::Batch { .. }));
        assert_eq!(r.signature(), r1.signature(), "one root signature");
    }
    assert_eq!(
        s.account(&id("alice")).unwrap().unwrap().balance_minor,
        1_000
    );
    assert_eq!(
        s.account(&id("acme")).unwrap().unwrap().balance_minor,
        4_000
    );
    for (v, r) in [(&p1, &r1), (&p2, &r2), (&p3, &r3)] {
        assert_eq!(&s.outcome(&v.epo().epoid).unwrap().unwrap().receipt, r);
    }
    s.check_conservation().unwrap();

    // Sent again: answered from the ledger, nothing signed, nothing moved.
    let again = commit::commit_purchases(
        s.as_mut(),
        &n,
        &[&p3, &p1, &other],
        NOW + 2,
        &mut || [9; 32],
        commit::Faults::default(),
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(again.signatures, 0);
    assert_eq!(receipt_of(&again.answers[0]), r3);
    assert_eq!(receipt_of(&again.answers[1]), r1);
    assert_eq!(again.answers[2], commit::PurchaseAnswer::Conflict);
    assert_eq!(
        s.account(&id("alice")).unwrap().unwrap().balance_minor,
        1_000
    );

    // The test-only fault: a fresh receipt for a retry, revealed but never stored.
    let fresh = commit::commit_purchases(
        s.as_mut(),
        &n,
        &[&p1],
        NOW + 3,
        &mut || [7; 32],
        commit::Faults {
            fresh_receipt_on_retry: true,
        },
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(fresh.signatures, 1);
    assert_ne!(receipt_of(&fresh.answers[0]), r1);
    assert_eq!(s.outcome(&p1.epo().epoid).unwrap().unwrap().receipt, r1);

    // A failure inside the transaction (a crash before it commits): nothing is stored.
    let p4 = verified_purchase(4, "USD:0.01");
    let err = commit::commit_purchases(
        s.as_mut(),
        &n,
        &[&p4],
        NOW + 4,
        &mut || [5; 32],
        commit::Faults::default(),
        &mut |_| Err(StoreError::Corrupt("crash before commit".into())),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)));
    assert!(s.outcome(&p4.epo().epoid).unwrap().is_none());
    assert_eq!(
        s.account(&id("alice")).unwrap().unwrap().balance_minor,
        1_000
    );
    s.check_conservation().unwrap();
    verify_journal(s.as_mut()).unwrap();
}

fn the_billing_abort_records_once_and_answers_the_stored_outcome_after(db: &Db) {
    let signer = SymbolicSigner::new("netbill");
    let mut s = store_with_accounts(db);
    let epoid: EpoId = "acme:1700000000000:77".parse().unwrap();
    let (first, signed) = commit::abort(s.as_mut(), &signer, &epoid, NOW + 5).unwrap();
    assert!(signed, "a new abort is signed");
    assert_eq!(first.body_unverified().result, ResultCode::Aborted);
    first.verify(&C, &signer.public_key()).unwrap();
    let (again, signed) = commit::abort(s.as_mut(), &signer, &epoid, NOW + 6).unwrap();
    assert!(!signed, "the stored abort is answered, not signed again");
    assert_eq!(again, first);
    // A committed purchase is never aborted: its receipt is the answer.
    let v = verified_purchase(8, "USD:0.01");
    s.transfer(&id("alice"), Transfer::Deposit, usd("USD:0.01"), None, NOW)
        .unwrap();
    commit(s.as_mut(), &v);
    let stored = s.outcome(&v.epo().epoid).unwrap().unwrap().receipt;
    let (answer, signed) = commit::abort(s.as_mut(), &signer, &v.epo().epoid, NOW + 7).unwrap();
    assert!(!signed);
    assert_eq!(answer, stored);
    assert_eq!(answer.body_unverified().result, ResultCode::Committed);
}

/// Records `v` as committed with no decision first (what only a faulty caller would do): the
/// rules layer's own check of the credit limit is what stands between it and the money.
fn record_committed(s: &mut dyn Store, v: &billing::VerifiedPurchase) -> Result<(), StoreError> {
    let n = SymbolicSigner::new("netbill");
    let r = billing::make_receipt(
        &C,
        &n,
        &seal_secret("netbill"),
        v,
        ResultCode::Committed,
        0,
        false,
        NOW + 1,
        [0; 32],
    );
    s.batch(&mut |tx| tx.record_purchase(v, &r, NOW + 1))
}

fn a_debit_may_reach_the_credit_limit_and_never_pass_it(db: &Db) {
    let mut s = store_with_accounts(db);
    s.create_account(
        &NewAccount {
            id: id("carol"),
            kind: AccountKind::Customer,
            key: SymbolicSigner::new("carol").public_key(),
            credit_limit_minor: 2_000,
            low_water_minor: 0,
        },
        NOW,
    )
    .unwrap();
    // Exactly to the limit: the money moves.
    record_committed(s.as_mut(), &purchase_by("carol", 1, "USD:0.02")).unwrap();
    assert_eq!(
        s.account(&id("carol")).unwrap().unwrap().balance_minor,
        -2_000
    );
    // One minor unit past it: refused, nothing stored.
    let over = purchase_by("carol", 2, "USD:0.00001");
    let err = record_committed(s.as_mut(), &over).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(s.outcome(&over.epo().epoid).unwrap().is_none());
    assert_eq!(
        s.account(&id("carol")).unwrap().unwrap().balance_minor,
        -2_000
    );
    assert_eq!(
        s.account(&id("acme")).unwrap().unwrap().balance_minor,
        2_000
    );
    s.check_conservation().unwrap();
}

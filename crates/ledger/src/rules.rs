//! The ledger's one rules layer: what a purchase, a transfer, a refund or an adjustment does to
//! the books, the journal's hash chain, idempotency, and the conservation check after every
//! transaction — written once, over [`Backend`]s that only store and fetch rows (SQLite,
//! PostgreSQL, and [`MemoryBackend`] for the model checker and the simulator).
//!
//! A transaction is a working set in memory: the accounts it locked with their pending
//! balances, the outcomes it saw or made, the journal entries it will append. At the end
//! ([`Tx::finish`]) it hands the backend a fixed number of writes — the new outcomes, each
//! touched account's net change, the totals' change, the chained journal entries — reads back
//! what the backend holds, and refuses to commit unless the balances moved by exactly what
//! the totals moved by.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use netbill_proto::billing::{
    self, AccountView, LedgerView, RefundError, RefundFacts, StoredOutcome, VerifiedPurchase,
};
use netbill_proto::crypto::Digest;
use netbill_proto::messages::{
    Checkpoint, Endorsement, Receipt, RefundReceipt, RefundRequest, ResultCode,
};
use netbill_proto::{AccountId, Amount, EpoId, Signed};

use crate::sqlite::corrupt;
use crate::{
    AccountChange, AccountRecord, Adjustment, HistoryLine, JournalEntry, LedgerTx, NewAccount,
    PurchaseRecord, RefundFilter, RefundRecord, Store, StoreError, Totals, Transfer, journal_hash,
};

/// How a transaction holds the totals row while it runs (what a store shared by several
/// servers needs to serialise; a single-writer backend may ignore it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotalsLock {
    /// Purchases, refunds, account changes: they do not change the totals.
    Share,
    /// Transfers and adjustments: they change the totals, or check them whole.
    Update,
}

/// One outcome row, as the rules layer hands it to a backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutcomeRow {
    pub epoid: EpoId,
    pub result: ResultCode,
    /// The account debited (`None` for an abort).
    pub customer: Option<AccountId>,
    pub merchant: AccountId,
    pub description: String,
    pub price: Amount,
    pub endorsement_digest: Option<Digest>,
    /// The endorsement decided on, in its JSON wire form (evidence for disputes).
    pub endorsement: Option<String>,
    pub receipt: Signed<Receipt>,
    pub decided_ms: u64,
}

impl OutcomeRow {
    /// The outcome as the decision functions see it.
    pub fn stored(&self) -> StoredOutcome {
        StoredOutcome {
            customer: self.customer.clone(),
            endorsement_digest: self.endorsement_digest,
            receipt: self.receipt.clone(),
        }
    }
}

/// A refund row: the record and the digest of the merchant's request.
#[derive(Clone, Debug)]
pub struct RefundRow {
    pub record: RefundRecord,
    pub request_digest: Digest,
}

/// A refund as stored: the merchant's request and N's receipt.
pub type StoredRefund = (Signed<RefundRequest>, Signed<RefundReceipt>);

/// The rows of one transaction. A backend stores and fetches; it decides nothing: every
/// check of money, every journal hash and every conservation check is the rules layer's.
pub trait Rows {
    /// The totals row: (deposits, payouts), as stored now.
    fn totals(&mut self) -> Result<(i64, i64), StoreError>;
    /// Adds to the totals row.
    fn add_totals(&mut self, deposits_minor: i64, payouts_minor: i64) -> Result<(), StoreError>;
    /// Reads the accounts among `ids` that exist, locking them (`ids` sorted, no duplicates:
    /// a shared store locks in this one global order).
    fn lock_accounts(&mut self, ids: &[&str]) -> Result<Vec<AccountRecord>, StoreError>;
    /// Inserts a new account with a zero balance; `false` if the id exists.
    fn insert_account(&mut self, new: &NewAccount, now_ms: u64) -> Result<bool, StoreError>;
    /// Writes an account's key, flags and limits (never its balance).
    fn update_account(&mut self, account: &AccountRecord) -> Result<(), StoreError>;
    /// Adds each delta to its account's balance (`deltas` sorted by id); returns every
    /// changed account's balance as stored afterwards.
    fn apply_deltas(&mut self, deltas: &[(&str, i64)])
    -> Result<Vec<(AccountId, i64)>, StoreError>;
    /// The outcomes stored for the EPOIDs among `epoids` that have one.
    fn outcomes(&mut self, epoids: &[&EpoId]) -> Result<Vec<(EpoId, StoredOutcome)>, StoreError>;
    /// Inserts outcome rows whose EPOID has none; returns the EPOIDs inserted.
    fn insert_outcomes(&mut self, rows: &[OutcomeRow]) -> Result<Vec<EpoId>, StoreError>;
    /// The journal's last entry (seq, hash), or (0, 32 zero bytes); locks the journal's head.
    fn journal_head(&mut self) -> Result<(u64, Vec<u8>), StoreError>;
    /// Appends entries (already numbered and chained) after the head.
    fn append_journal(&mut self, entries: &[JournalEntry]) -> Result<(), StoreError>;
    /// The request and answer stored under an idempotency key.
    fn idempotency(&mut self, key: &str) -> Result<Option<(String, i64)>, StoreError>;
    /// Stores an idempotency key's request and answer.
    fn insert_idempotency(
        &mut self,
        key: &str,
        request: &str,
        balance_minor: i64,
    ) -> Result<(), StoreError>;
    /// What the ledger holds about a purchase a refund names, locking it (refunds of one
    /// purchase run one at a time).
    fn refund_facts(&mut self, epoid: &EpoId) -> Result<Option<RefundFacts>, StoreError>;
    /// The refund stored under an id: its request and receipt.
    fn refund_by_id(&mut self, refund_id: &str) -> Result<Option<StoredRefund>, StoreError>;
    /// Inserts a refund; `false` if its id exists.
    fn insert_refund(&mut self, row: &RefundRow) -> Result<bool, StoreError>;
    /// The sum of all balances.
    fn balances_sum(&mut self) -> Result<i64, StoreError>;
}

/// A ledger's storage: transactions over [`Rows`], and the read-only queries.
pub trait Backend: Send {
    /// Runs `f` in one transaction; commits it durably if `f` returns `Ok`, changes nothing
    /// otherwise. A store shared by several servers runs `f` again when another writer got
    /// in the way (contention, or [`StoreError::Raced`]).
    fn transaction(
        &mut self,
        lock: TotalsLock,
        f: &mut dyn FnMut(&mut dyn Rows) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    fn account(&mut self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError>;
    fn outcome(&mut self, epoid: &EpoId) -> Result<Option<StoredOutcome>, StoreError>;
    fn history(
        &mut self,
        id: &AccountId,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<HistoryLine>, StoreError>;
    fn journal(&mut self, after: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError>;
    fn totals(&mut self) -> Result<Totals, StoreError>;
    fn endorsement(&mut self, epoid: &EpoId) -> Result<Option<Signed<Endorsement>>, StoreError>;
    fn purchases(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PurchaseRecord>, StoreError>;
    fn accounts(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError>;
    fn refunds(
        &mut self,
        filter: RefundFilter<'_>,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError>;
    fn add_checkpoint(&mut self, checkpoint: &Signed<Checkpoint>) -> Result<bool, StoreError>;
    fn checkpoints(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Signed<Checkpoint>>, StoreError>;
}

/// The ledger: the rules over a backend. `Ledger<SqliteBackend>` is [`crate::SqliteStore`],
/// `Ledger<PostgresBackend>` is [`crate::PostgresStore`], `Ledger<MemoryBackend>` is
/// [`MemoryStore`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ledger<B> {
    backend: B,
}

impl<B: Backend> Ledger<B> {
    /// The rules over `backend`.
    pub fn new(backend: B) -> Self {
        Self { backend }
    }

    /// The backend (its own queries and settings).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }
}

/// Test-only bug switch (`NETBILL_BUG=ledger.skip_journal`, docs/reliability.md): money
/// moves unjournaled. Read once, not per purchase.
#[cfg(feature = "test-support")]
fn skip_journal_bug() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| {
        std::env::var("NETBILL_BUG")
            .is_ok_and(|b| b.split(',').any(|b| b.trim() == "ledger.skip_journal"))
    })
}

/// Without the `test-support` feature there is no bug switch: every purchase is journaled.
#[cfg(not(feature = "test-support"))]
#[inline(always)]
fn skip_journal_bug() -> bool {
    false
}

/// A journal entry waiting for the end of the transaction, when the journal head is locked
/// (last, so that the lock order stays global) and its seq and hash are known.
struct PendingEntry {
    kind: &'static str,
    debit: Option<AccountId>,
    credit: Option<AccountId>,
    amount: Amount,
    epoid: Option<EpoId>,
    memo: String,
    at_ms: u64,
}

fn key_entry(id: &AccountId, key: &netbill_proto::crypto::PublicKey, now_ms: u64) -> PendingEntry {
    PendingEntry {
        kind: "key",
        debit: None,
        credit: Some(id.clone()),
        amount: Amount::ZERO,
        epoid: None,
        memo: key.to_hex(),
        at_ms: now_ms,
    }
}

/// An account this transaction holds: `rec.balance_minor` with its pending changes;
/// `before` as the backend held it.
struct Held {
    rec: AccountRecord,
    before: i64,
}

/// One transaction's working set (see the module's documentation).
pub(crate) struct Tx<'r> {
    rows: RefCell<&'r mut dyn Rows>,
    totals_before: (i64, i64),
    totals_delta: (i64, i64),
    accounts: RefCell<HashMap<AccountId, Held>>,
    /// Outcomes as this transaction sees them (`None`: none yet).
    outcomes: RefCell<HashMap<EpoId, Option<StoredOutcome>>>,
    pending: Vec<OutcomeRow>,
    journal: Vec<PendingEntry>,
    /// The first backend error met in a [`LedgerView`] query (which cannot return errors).
    view_error: RefCell<Option<StoreError>>,
    /// Check conservation over all accounts (adjustments, which may restore it).
    check_all: bool,
}

impl<'r> Tx<'r> {
    fn start(rows: &'r mut dyn Rows) -> Result<Self, StoreError> {
        let totals_before = rows.totals()?;
        Ok(Self {
            rows: RefCell::new(rows),
            totals_before,
            totals_delta: (0, 0),
            accounts: RefCell::default(),
            outcomes: RefCell::default(),
            pending: Vec::new(),
            journal: Vec::new(),
            view_error: RefCell::default(),
            check_all: false,
        })
    }

    fn remember<T>(&self, r: Result<Option<T>, StoreError>) -> Option<T> {
        r.unwrap_or_else(|e| {
            self.view_error.borrow_mut().get_or_insert(e);
            None
        })
    }

    /// Locks and loads the accounts among `ids` not yet held, in one call.
    fn hold(&self, ids: &[&AccountId]) -> Result<(), StoreError> {
        let mut want: Vec<&str> = {
            let held = self.accounts.borrow();
            ids.iter()
                .filter(|id| !held.contains_key(**id))
                .map(|id| id.as_str())
                .collect()
        };
        if want.is_empty() {
            return Ok(());
        }
        want.sort_unstable();
        want.dedup();
        let found = self.rows.borrow_mut().lock_accounts(&want)?;
        let mut held = self.accounts.borrow_mut();
        for rec in found {
            let before = rec.balance_minor;
            held.entry(rec.id.clone()).or_insert(Held { rec, before });
        }
        Ok(())
    }

    /// The account as this transaction sees it.
    fn account_record(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        self.hold(&[id])?;
        Ok(self.accounts.borrow().get(id).map(|a| a.rec.clone()))
    }

    /// The account, which must exist.
    fn existing(&self, id: &AccountId) -> Result<AccountRecord, StoreError> {
        self.account_record(id)?
            .ok_or_else(|| StoreError::NoSuchAccount(id.clone()))
    }

    /// Adds `delta` to a held account's pending balance.
    fn add(&mut self, id: &AccountId, delta: i64) -> Result<(), StoreError> {
        let a = self
            .accounts
            .get_mut()
            .get_mut(id)
            .ok_or_else(|| corrupt(format!("account {id} changed without its lock")))?;
        a.rec.balance_minor = a
            .rec
            .balance_minor
            .checked_add(delta)
            .ok_or_else(|| corrupt(format!("balance of {id} overflows")))?;
        Ok(())
    }

    /// Moves `amount` from `from` to `to` unless that takes `from` below its credit limit,
    /// in which case it moves nothing and gives `from`'s balance as the inner error.
    fn move_money(
        &mut self,
        from: &AccountId,
        to: &AccountId,
        amount: Amount,
    ) -> Result<Result<(), i64>, StoreError> {
        self.hold(&[from, to])?;
        let payer = self.existing(from)?;
        self.existing(to)?;
        let price = amount.signed();
        if payer
            .balance_minor
            .checked_sub(price)
            .is_none_or(|after| after < -payer.credit_limit_minor)
        {
            return Ok(Err(payer.balance_minor));
        }
        self.add(from, -price)?;
        self.add(to, price)?;
        Ok(Ok(()))
    }

    fn lookup_outcome(&self, epoid: &EpoId) -> Result<Option<StoredOutcome>, StoreError> {
        if let Some(o) = self.outcomes.borrow().get(epoid) {
            return Ok(o.clone());
        }
        self.read_outcomes(&[epoid])?;
        Ok(self.outcomes.borrow().get(epoid).cloned().flatten())
    }

    fn read_outcomes(&self, epoids: &[&EpoId]) -> Result<(), StoreError> {
        let mut want: Vec<&EpoId> = {
            let known = self.outcomes.borrow();
            epoids
                .iter()
                .copied()
                .filter(|e| !known.contains_key(*e))
                .collect()
        };
        if want.is_empty() {
            return Ok(());
        }
        want.sort_unstable();
        want.dedup();
        let found: HashMap<EpoId, StoredOutcome> = self
            .rows
            .borrow_mut()
            .outcomes(&want)?
            .into_iter()
            .collect();
        let mut known = self.outcomes.borrow_mut();
        for e in want {
            known.insert(e.clone(), found.get(e).cloned());
        }
        Ok(())
    }

    /// Queues an outcome; `OutcomeExists` if the EPOID has one.
    fn push_outcome(&mut self, row: OutcomeRow) -> Result<(), StoreError> {
        if self.lookup_outcome(&row.epoid)?.is_some() {
            return Err(StoreError::OutcomeExists(row.epoid.clone()));
        }
        self.outcomes
            .get_mut()
            .insert(row.epoid.clone(), Some(row.stored()));
        self.pending.push(row);
        Ok(())
    }

    /// Hands the backend everything queued and checks conservation: the outcomes, each
    /// account's net change, the totals' change and the chained journal, then what the
    /// backend holds read back.
    fn finish(mut self) -> Result<(), StoreError> {
        let rows = self.rows.get_mut();
        if !self.pending.is_empty() {
            let inserted = rows.insert_outcomes(&self.pending)?;
            if inserted.len() != self.pending.len() {
                // This transaction saw the EPOID undecided, so another server decided it
                // meanwhile: run the transaction again.
                let lost = self
                    .pending
                    .iter()
                    .find(|o| !inserted.contains(&o.epoid))
                    .map_or_else(String::new, |o| o.epoid.to_string());
                return Err(StoreError::Raced(format!(
                    "EPOID {lost} was decided meanwhile"
                )));
            }
        }
        let accounts = self.accounts.get_mut();
        let mut changed: Vec<(&str, i64)> = accounts
            .values()
            .filter(|a| a.rec.balance_minor != a.before)
            .map(|a| (a.rec.id.as_str(), a.rec.balance_minor - a.before))
            .collect();
        let mut moved: i128 = 0;
        if !changed.is_empty() {
            changed.sort_unstable();
            let now = rows.apply_deltas(&changed)?;
            if now.len() != changed.len() {
                return Err(corrupt("an account touched by this transaction vanished"));
            }
            for (id, balance) in now {
                let a = accounts
                    .get(&id)
                    .ok_or_else(|| corrupt(format!("unexpected account {id}")))?;
                // The row was locked since it was read: the backend must hold exactly the
                // balance this transaction computed.
                if balance != a.rec.balance_minor {
                    return Err(corrupt(format!(
                        "account {id} holds {balance} after the transaction, not {}",
                        a.rec.balance_minor
                    )));
                }
                moved += i128::from(balance) - i128::from(a.before);
            }
        }
        if self.totals_delta != (0, 0) {
            rows.add_totals(self.totals_delta.0, self.totals_delta.1)?;
        }
        if !self.journal.is_empty() {
            let (mut seq, mut prev) = rows.journal_head()?;
            let mut entries = Vec::with_capacity(self.journal.len());
            for e in self.journal.drain(..) {
                seq += 1;
                let epoid = e.epoid.as_ref().map(|x| x.to_string());
                let hash = journal_hash(
                    &prev,
                    seq,
                    e.kind,
                    e.debit.as_ref(),
                    e.credit.as_ref(),
                    e.amount,
                    epoid.as_deref(),
                    &e.memo,
                    e.at_ms,
                );
                entries.push(JournalEntry {
                    seq,
                    kind: e.kind.to_string(),
                    debit: e.debit,
                    credit: e.credit,
                    amount: e.amount,
                    epoid: e.epoid,
                    memo: e.memo,
                    at_ms: e.at_ms,
                    hash: hex::encode(&hash),
                });
                prev = hash;
            }
            rows.append_journal(&entries)?;
        }
        let (d, p) = rows.totals()?;
        if self.check_all {
            let balances = rows.balances_sum()?;
            if i128::from(balances) != i128::from(d) - i128::from(p) {
                return Err(StoreError::BadAdjustment(format!(
                    "afterwards balances would sum to {} but deposits - payouts = {}: an adjustment may restore conservation, never break it",
                    netbill_proto::money::format_minor(balances),
                    netbill_proto::money::format_minor(d - p)
                )));
            }
            return Ok(());
        }
        let expected = i128::from(d)
            - i128::from(self.totals_before.0)
            - (i128::from(p) - i128::from(self.totals_before.1));
        if moved != expected {
            return Err(StoreError::ConservationViolated {
                balances_minor: moved,
                expected_minor: expected,
            });
        }
        Ok(())
    }

    /// Runs `f` over a fresh working set and finishes it.
    fn run<T>(
        rows: &'r mut dyn Rows,
        f: impl FnOnce(&mut Tx<'r>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut tx = Tx::start(rows)?;
        let out = f(&mut tx);
        if let Some(e) = tx.view_error.get_mut().take() {
            return Err(e);
        }
        let out = out?;
        tx.finish()?;
        Ok(out)
    }
}

impl LedgerView for Tx<'_> {
    fn account(&self, id: &AccountId) -> Option<AccountView> {
        let r = self.account_record(id);
        self.remember(r).map(|a| AccountView {
            kind: a.kind,
            key: a.key,
            key_revoked: a.key_revoked,
            frozen: a.frozen,
            balance_minor: a.balance_minor,
            credit_limit_minor: a.credit_limit_minor,
            low_water_minor: a.low_water_minor,
        })
    }
    fn outcome(&self, epoid: &EpoId) -> Option<StoredOutcome> {
        let r = self.lookup_outcome(epoid);
        self.remember(r)
    }
}

impl LedgerTx for Tx<'_> {
    fn record_purchase(
        &mut self,
        v: &VerifiedPurchase,
        receipt: &Signed<Receipt>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let epo = v.epo();
        let r = receipt.body_unverified();
        self.push_outcome(OutcomeRow {
            epoid: epo.epoid.clone(),
            result: r.result,
            customer: Some(v.secret.account.clone()),
            merchant: epo.merchant.clone(),
            description: epo.description.clone(),
            price: epo.price,
            endorsement_digest: Some(v.endorsement_digest),
            endorsement: Some(serde_json::to_string(&v.endorsement).unwrap_or_default()),
            receipt: receipt.clone(),
            decided_ms: r.time_ms,
        })?;
        if r.result == ResultCode::Committed {
            let customer = &v.secret.account;
            if self
                .move_money(customer, &epo.merchant, epo.price)?
                .is_err()
            {
                return Err(corrupt(format!(
                    "purchase {} could not move money",
                    epo.epoid
                )));
            }
            if !skip_journal_bug() {
                self.journal.push(PendingEntry {
                    kind: "purchase",
                    debit: Some(customer.clone()),
                    credit: Some(epo.merchant.clone()),
                    amount: epo.price,
                    epoid: Some(epo.epoid.clone()),
                    memo: String::new(),
                    at_ms: now_ms,
                });
            }
        }
        Ok(())
    }

    fn record_abort(&mut self, epoid: &EpoId, receipt: &Signed<Receipt>) -> Result<(), StoreError> {
        self.push_outcome(OutcomeRow {
            epoid: epoid.clone(),
            result: ResultCode::Aborted,
            customer: None,
            merchant: epoid.merchant.clone(),
            description: String::new(),
            price: Amount::ZERO,
            endorsement_digest: None,
            endorsement: None,
            receipt: receipt.clone(),
            decided_ms: receipt.body_unverified().time_ms,
        })
    }

    fn lock_accounts(&mut self, ids: &[AccountId]) -> Result<(), StoreError> {
        let ids: Vec<&AccountId> = ids.iter().collect();
        self.hold(&ids)
    }

    fn prefetch_outcomes(&mut self, epoids: &[EpoId]) -> Result<(), StoreError> {
        let epoids: Vec<&EpoId> = epoids.iter().collect();
        self.read_outcomes(&epoids)
    }
}

impl<B: Backend> Store for Ledger<B> {
    fn create_account(&mut self, new: &NewAccount, now_ms: u64) -> Result<(), StoreError> {
        self.backend.transaction(TotalsLock::Share, &mut |rows| {
            Tx::run(rows, |tx| {
                if !tx.rows.get_mut().insert_account(new, now_ms)? {
                    return Err(StoreError::AccountExists(new.id.clone()));
                }
                tx.journal.push(key_entry(&new.id, &new.key, now_ms));
                Ok(())
            })
        })
    }

    fn change_account(
        &mut self,
        id: &AccountId,
        change: &AccountChange,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.backend.transaction(TotalsLock::Share, &mut |rows| {
            Tx::run(rows, |tx| {
                let mut rec = tx.existing(id)?;
                match change {
                    AccountChange::Freeze => rec.frozen = true,
                    AccountChange::Unfreeze => rec.frozen = false,
                    AccountChange::RevokeKey => rec.key_revoked = true,
                    AccountChange::SetKey(k) => {
                        rec.key = *k;
                        rec.key_revoked = false;
                        tx.journal.push(key_entry(id, k, now_ms));
                    }
                    AccountChange::SetCreditLimit(c) => rec.credit_limit_minor = *c,
                    AccountChange::SetLowWater(l) => rec.low_water_minor = *l,
                }
                tx.rows.get_mut().update_account(&rec)?;
                if let Some(held) = tx.accounts.get_mut().get_mut(id) {
                    held.rec = rec;
                }
                Ok(())
            })
        })
    }

    fn transfer(
        &mut self,
        id: &AccountId,
        kind: Transfer,
        amount: Amount,
        idempotency_key: Option<&str>,
        now_ms: u64,
    ) -> Result<i64, StoreError> {
        let request = format!("{kind:?}:{id}:{}", amount.minor());
        let mut answer = 0;
        self.backend.transaction(TotalsLock::Update, &mut |rows| {
            answer = Tx::run(rows, |tx| {
                // The totals are locked: another transfer with this key has committed or
                // not started.
                if let Some(key) = idempotency_key
                    && let Some((req, balance)) = tx.rows.get_mut().idempotency(key)?
                {
                    return if req == request {
                        Ok(balance)
                    } else {
                        Err(StoreError::IdempotencyConflict(key.to_string()))
                    };
                }
                let before = tx.existing(id)?.balance_minor;
                let (delta, kind_s) = match kind {
                    Transfer::Deposit => (amount.signed(), "deposit"),
                    Transfer::Payout => {
                        if before < amount.signed() {
                            return Err(StoreError::WouldOverdraw {
                                account: id.clone(),
                                balance: netbill_proto::money::format_minor(before),
                                amount,
                            });
                        }
                        (-amount.signed(), "payout")
                    }
                };
                tx.add(id, delta)?;
                let (debit, credit) = match kind {
                    Transfer::Deposit => {
                        tx.totals_delta.0 += amount.signed();
                        (None, Some(id.clone()))
                    }
                    Transfer::Payout => {
                        tx.totals_delta.1 += amount.signed();
                        (Some(id.clone()), None)
                    }
                };
                let after = before + delta;
                if let Some(key) = idempotency_key {
                    tx.rows.get_mut().insert_idempotency(key, &request, after)?;
                }
                tx.journal.push(PendingEntry {
                    kind: kind_s,
                    debit,
                    credit,
                    amount,
                    epoid: None,
                    memo: String::new(),
                    at_ms: now_ms,
                });
                Ok(after)
            })?;
            Ok(())
        })?;
        Ok(answer)
    }

    fn account(&mut self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        self.backend.account(id)
    }

    fn outcome(&mut self, epoid: &EpoId) -> Result<Option<StoredOutcome>, StoreError> {
        self.backend.outcome(epoid)
    }

    fn history(
        &mut self,
        id: &AccountId,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<HistoryLine>, StoreError> {
        self.backend.history(id, from_ms, to_ms, limit)
    }

    fn journal(&mut self, after: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        self.backend.journal(after, limit)
    }

    fn batch(
        &mut self,
        f: &mut dyn FnMut(&mut dyn LedgerTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.backend
            .transaction(TotalsLock::Share, &mut |rows| Tx::run(rows, |tx| f(tx)))
    }

    fn totals(&mut self) -> Result<Totals, StoreError> {
        self.backend.totals()
    }

    fn endorsement(&mut self, epoid: &EpoId) -> Result<Option<Signed<Endorsement>>, StoreError> {
        self.backend.endorsement(epoid)
    }

    fn purchases(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PurchaseRecord>, StoreError> {
        self.backend.purchases(after, limit)
    }

    fn accounts(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        self.backend.accounts(after, limit)
    }

    fn refund(
        &mut self,
        request: &Signed<RefundRequest>,
        request_digest: Digest,
        sign: &mut dyn FnMut(Amount, Amount) -> Signed<RefundReceipt>,
        now_ms: u64,
    ) -> Result<Signed<RefundReceipt>, StoreError> {
        let req = request.body_unverified();
        let mut answer = None;
        self.backend.transaction(TotalsLock::Share, &mut |rows| {
            answer = Some(Tx::run(rows, |tx| {
                let rows = tx.rows.get_mut();
                let facts = rows.refund_facts(&req.epoid)?;
                // Under the purchase's lock: an earlier refund with this id has committed or
                // not begun.
                if let Some((earlier, receipt)) = rows.refund_by_id(&req.refund_id)? {
                    return if crate::same_refund(earlier.body_unverified(), req) {
                        Ok(receipt)
                    } else {
                        Err(RefundError::IdConflict(req.refund_id.clone()).into())
                    };
                }
                let (customer, total) = billing::decide_refund(req, facts.as_ref())?;
                let price = facts.map_or(Amount::ZERO, |f| f.price);
                if let Err(balance) = tx.move_money(&req.merchant, &customer, req.amount)? {
                    return Err(RefundError::MerchantFunds {
                        merchant: req.merchant.clone(),
                        balance: netbill_proto::money::format_minor(balance),
                        amount: req.amount,
                    }
                    .into());
                }
                let receipt = sign(total, price);
                let row = RefundRow {
                    record: RefundRecord {
                        refund_id: req.refund_id.clone(),
                        epoid: req.epoid.clone(),
                        merchant: req.merchant.clone(),
                        customer: customer.clone(),
                        amount: req.amount,
                        request: request.clone(),
                        receipt: receipt.clone(),
                        decided_ms: now_ms,
                    },
                    request_digest,
                };
                if !tx.rows.get_mut().insert_refund(&row)? {
                    // Another server used this id meanwhile: run again, and answer from what
                    // it stored.
                    return Err(StoreError::Raced(format!(
                        "refund id {:?} was used meanwhile",
                        req.refund_id
                    )));
                }
                tx.journal.push(PendingEntry {
                    kind: "refund",
                    debit: Some(req.merchant.clone()),
                    credit: Some(customer),
                    amount: req.amount,
                    epoid: Some(req.epoid.clone()),
                    memo: req.refund_id.clone(),
                    at_ms: now_ms,
                });
                Ok(receipt)
            })?);
            Ok(())
        })?;
        answer.ok_or_else(|| corrupt("the refund transaction made no receipt"))
    }

    fn refunds(
        &mut self,
        filter: RefundFilter<'_>,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        self.backend.refunds(filter, limit)
    }

    fn add_checkpoint(&mut self, checkpoint: &Signed<Checkpoint>) -> Result<bool, StoreError> {
        self.backend.add_checkpoint(checkpoint)
    }

    fn checkpoints(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Signed<Checkpoint>>, StoreError> {
        self.backend.checkpoints(after, limit)
    }

    fn adjust(&mut self, adjustments: &[Adjustment], now_ms: u64) -> Result<(), StoreError> {
        crate::check_adjustments(adjustments)?;
        self.backend.transaction(TotalsLock::Update, &mut |rows| {
            Tx::run(rows, |tx| {
                tx.check_all = true;
                let ids: Vec<&AccountId> = adjustments.iter().map(|a| &a.account).collect();
                tx.hold(&ids)?;
                for a in adjustments {
                    tx.existing(&a.account)?;
                    tx.add(&a.account, a.delta_minor)?;
                    let (debit, credit) = crate::adjustment_sides(a);
                    tx.journal.push(PendingEntry {
                        kind: "adjustment",
                        debit: debit.cloned(),
                        credit: credit.cloned(),
                        amount: crate::adjustment_amount(a)?,
                        epoid: None,
                        memo: a.memo.clone(),
                        at_ms: now_ms,
                    });
                }
                Ok(())
            })
        })
    }
}

// ---------------------------------------------------------------------------------------
// The in-memory backend.

/// A ledger in memory: the production rules over rows kept in ordered maps. What the model
/// checker's and the simulator's N runs; a transaction works on a copy that replaces the
/// rows only when it commits. Values, so a checker can hash and compare whole ledgers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MemoryBackend {
    accounts: BTreeMap<AccountId, AccountRecord>,
    outcomes: BTreeMap<EpoId, OutcomeRow>,
    journal: Vec<JournalEntry>,
    deposits_minor: i64,
    payouts_minor: i64,
    idempotency: BTreeMap<String, (String, i64)>,
    refunds: BTreeMap<String, MemoryRefund>,
    checkpoints: BTreeMap<u64, Signed<Checkpoint>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MemoryRefund {
    epoid: EpoId,
    merchant: AccountId,
    customer: AccountId,
    amount: Amount,
    request: Signed<RefundRequest>,
    receipt: Signed<RefundReceipt>,
    decided_ms: u64,
}

/// The ledger in memory.
pub type MemoryStore = Ledger<MemoryBackend>;

impl Ledger<MemoryBackend> {
    /// An empty ledger in memory.
    pub fn in_memory() -> Self {
        Self::default()
    }
}

impl Rows for MemoryBackend {
    fn totals(&mut self) -> Result<(i64, i64), StoreError> {
        Ok((self.deposits_minor, self.payouts_minor))
    }
    fn add_totals(&mut self, deposits_minor: i64, payouts_minor: i64) -> Result<(), StoreError> {
        self.deposits_minor += deposits_minor;
        self.payouts_minor += payouts_minor;
        Ok(())
    }
    fn lock_accounts(&mut self, ids: &[&str]) -> Result<Vec<AccountRecord>, StoreError> {
        Ok(ids
            .iter()
            .filter_map(|id| AccountId::new(id).ok())
            .filter_map(|id| self.accounts.get(&id).cloned())
            .collect())
    }
    fn insert_account(&mut self, new: &NewAccount, now_ms: u64) -> Result<bool, StoreError> {
        if self.accounts.contains_key(&new.id) {
            return Ok(false);
        }
        let rec = AccountRecord {
            id: new.id.clone(),
            kind: new.kind,
            key: new.key,
            key_revoked: false,
            frozen: false,
            balance_minor: 0,
            credit_limit_minor: new.credit_limit_minor,
            low_water_minor: new.low_water_minor,
        };
        let _ = now_ms;
        self.accounts.insert(new.id.clone(), rec);
        Ok(true)
    }
    fn update_account(&mut self, account: &AccountRecord) -> Result<(), StoreError> {
        let a = self
            .accounts
            .get_mut(&account.id)
            .ok_or_else(|| StoreError::NoSuchAccount(account.id.clone()))?;
        let balance = a.balance_minor;
        *a = account.clone();
        a.balance_minor = balance;
        Ok(())
    }
    fn apply_deltas(
        &mut self,
        deltas: &[(&str, i64)],
    ) -> Result<Vec<(AccountId, i64)>, StoreError> {
        let mut out = Vec::with_capacity(deltas.len());
        for (id, delta) in deltas {
            let Some(a) = AccountId::new(id)
                .ok()
                .and_then(|id| self.accounts.get_mut(&id))
            else {
                continue;
            };
            a.balance_minor += delta;
            out.push((a.id.clone(), a.balance_minor));
        }
        Ok(out)
    }
    fn outcomes(&mut self, epoids: &[&EpoId]) -> Result<Vec<(EpoId, StoredOutcome)>, StoreError> {
        Ok(epoids
            .iter()
            .filter_map(|e| self.outcomes.get(*e).map(|o| ((*e).clone(), o.stored())))
            .collect())
    }
    fn insert_outcomes(&mut self, rows: &[OutcomeRow]) -> Result<Vec<EpoId>, StoreError> {
        let mut inserted = Vec::with_capacity(rows.len());
        for r in rows {
            if !self.outcomes.contains_key(&r.epoid) {
                self.outcomes.insert(r.epoid.clone(), r.clone());
                inserted.push(r.epoid.clone());
            }
        }
        Ok(inserted)
    }
    fn journal_head(&mut self) -> Result<(u64, Vec<u8>), StoreError> {
        match self.journal.last() {
            Some(e) => Ok((
                e.seq,
                hex::decode(&e.hash).map_err(|_| corrupt("journal hash"))?,
            )),
            None => Ok((0, vec![0; 32])),
        }
    }
    fn append_journal(&mut self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        self.journal.extend_from_slice(entries);
        Ok(())
    }
    fn idempotency(&mut self, key: &str) -> Result<Option<(String, i64)>, StoreError> {
        Ok(self.idempotency.get(key).cloned())
    }
    fn insert_idempotency(
        &mut self,
        key: &str,
        request: &str,
        balance_minor: i64,
    ) -> Result<(), StoreError> {
        self.idempotency
            .insert(key.to_string(), (request.to_string(), balance_minor));
        Ok(())
    }
    fn refund_facts(&mut self, epoid: &EpoId) -> Result<Option<RefundFacts>, StoreError> {
        let Some(o) = self.outcomes.get(epoid) else {
            return Ok(None);
        };
        let refunded: u64 = self
            .refunds
            .values()
            .filter(|r| &r.epoid == epoid)
            .map(|r| r.amount.minor())
            .sum();
        Ok(Some(RefundFacts {
            result: o.result,
            merchant: o.merchant.clone(),
            customer: o.customer.clone(),
            price: o.price,
            refunded: Amount::from_minor(refunded).map_err(|_| corrupt("refunded"))?,
        }))
    }
    fn refund_by_id(&mut self, refund_id: &str) -> Result<Option<StoredRefund>, StoreError> {
        Ok(self
            .refunds
            .get(refund_id)
            .map(|r| (r.request.clone(), r.receipt.clone())))
    }
    fn insert_refund(&mut self, row: &RefundRow) -> Result<bool, StoreError> {
        let r = &row.record;
        if self.refunds.contains_key(&r.refund_id) {
            return Ok(false);
        }
        self.refunds.insert(
            r.refund_id.clone(),
            MemoryRefund {
                epoid: r.epoid.clone(),
                merchant: r.merchant.clone(),
                customer: r.customer.clone(),
                amount: r.amount,
                request: r.request.clone(),
                receipt: r.receipt.clone(),
                decided_ms: r.decided_ms,
            },
        );
        Ok(true)
    }
    fn balances_sum(&mut self) -> Result<i64, StoreError> {
        Ok(self.accounts.values().map(|a| a.balance_minor).sum())
    }
}

impl Backend for MemoryBackend {
    fn transaction(
        &mut self,
        _lock: TotalsLock,
        f: &mut dyn FnMut(&mut dyn Rows) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut work = self.clone();
        f(&mut work)?;
        *self = work;
        Ok(())
    }
    fn account(&mut self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        Ok(self.accounts.get(id).cloned())
    }
    fn outcome(&mut self, epoid: &EpoId) -> Result<Option<StoredOutcome>, StoreError> {
        Ok(self.outcomes.get(epoid).map(OutcomeRow::stored))
    }
    fn history(
        &mut self,
        id: &AccountId,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<HistoryLine>, StoreError> {
        let mut lines: Vec<HistoryLine> = self
            .outcomes
            .values()
            .filter(|o| o.customer.as_ref() == Some(id) || &o.merchant == id)
            .filter(|o| o.decided_ms >= from_ms && o.decided_ms < to_ms)
            .map(|o| HistoryLine {
                epoid: o.epoid.clone(),
                result: o.result,
                customer: o.customer.clone(),
                merchant: o.merchant.clone(),
                description: o.description.clone(),
                price: o.price,
                decided_ms: o.decided_ms,
            })
            .collect();
        lines.sort_by(|a, b| {
            (b.decided_ms, b.epoid.to_string()).cmp(&(a.decided_ms, a.epoid.to_string()))
        });
        lines.truncate(limit);
        Ok(lines)
    }
    fn journal(&mut self, after: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        Ok(self
            .journal
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }
    fn totals(&mut self) -> Result<Totals, StoreError> {
        Ok(Totals {
            balances_minor: self.accounts.values().map(|a| a.balance_minor).sum(),
            deposits_minor: self.deposits_minor,
            payouts_minor: self.payouts_minor,
            accounts: self.accounts.len() as u64,
            outcomes: self.outcomes.len() as u64,
        })
    }
    fn endorsement(&mut self, epoid: &EpoId) -> Result<Option<Signed<Endorsement>>, StoreError> {
        self.outcomes
            .get(epoid)
            .and_then(|o| o.endorsement.as_deref())
            .map(crate::sqlite::parse_endorsement)
            .transpose()
    }
    fn purchases(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PurchaseRecord>, StoreError> {
        let mut out: Vec<PurchaseRecord> = Vec::new();
        let mut committed: Vec<&OutcomeRow> = self
            .outcomes
            .values()
            .filter(|o| o.result == ResultCode::Committed)
            .filter(|o| after.is_none_or(|a| o.epoid.to_string().as_str() > a))
            .collect();
        committed.sort_by_key(|o| o.epoid.to_string());
        for o in committed.into_iter().take(limit) {
            out.push(PurchaseRecord {
                epoid: o.epoid.clone(),
                customer: o
                    .customer
                    .clone()
                    .ok_or_else(|| corrupt("a committed outcome without a customer"))?,
                merchant: o.merchant.clone(),
                price: o.price,
                endorsement: o
                    .endorsement
                    .as_deref()
                    .map(crate::sqlite::parse_endorsement)
                    .transpose()?,
                receipt: o.receipt.clone(),
            });
        }
        Ok(out)
    }
    fn accounts(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        Ok(self
            .accounts
            .values()
            .filter(|a| after.is_none_or(|x| a.id.as_str() > x))
            .take(limit)
            .cloned()
            .collect())
    }
    fn refunds(
        &mut self,
        filter: RefundFilter<'_>,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        let record = |id: &String, r: &MemoryRefund| RefundRecord {
            refund_id: id.clone(),
            epoid: r.epoid.clone(),
            merchant: r.merchant.clone(),
            customer: r.customer.clone(),
            amount: r.amount,
            request: r.request.clone(),
            receipt: r.receipt.clone(),
            decided_ms: r.decided_ms,
        };
        let mut out: Vec<RefundRecord> = match filter {
            RefundFilter::All { after } => self
                .refunds
                .iter()
                .filter(|(id, _)| after.is_none_or(|a| id.as_str() > a))
                .map(|(id, r)| record(id, r))
                .collect(),
            RefundFilter::Purchase(epoid) => {
                let mut v: Vec<RefundRecord> = self
                    .refunds
                    .iter()
                    .filter(|(_, r)| &r.epoid == epoid)
                    .map(|(id, r)| record(id, r))
                    .collect();
                v.sort_by(|a, b| (a.decided_ms, &a.refund_id).cmp(&(b.decided_ms, &b.refund_id)));
                v
            }
            RefundFilter::Account { id, from_ms, to_ms } => {
                let mut v: Vec<RefundRecord> = self
                    .refunds
                    .iter()
                    .filter(|(_, r)| &r.customer == id || &r.merchant == id)
                    .filter(|(_, r)| r.decided_ms >= from_ms && r.decided_ms < to_ms)
                    .map(|(rid, r)| record(rid, r))
                    .collect();
                v.sort_by(|a, b| (b.decided_ms, &b.refund_id).cmp(&(a.decided_ms, &a.refund_id)));
                v
            }
        };
        out.truncate(limit);
        Ok(out)
    }
    fn add_checkpoint(&mut self, checkpoint: &Signed<Checkpoint>) -> Result<bool, StoreError> {
        let seq = checkpoint.body_unverified().seq;
        if self.checkpoints.contains_key(&seq) {
            return Ok(false);
        }
        self.checkpoints.insert(seq, checkpoint.clone());
        Ok(true)
    }
    fn checkpoints(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Signed<Checkpoint>>, StoreError> {
        Ok(self
            .checkpoints
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect())
    }
}

/// Read-only looks into the rows, for a model checker's observations (which may not change
/// what they observe).
impl MemoryBackend {
    /// An account as stored.
    pub fn peek_account(&self, id: &AccountId) -> Option<&AccountRecord> {
        self.accounts.get(id)
    }

    /// An outcome row as stored.
    pub fn peek_outcome(&self, epoid: &EpoId) -> Option<&OutcomeRow> {
        self.outcomes.get(epoid)
    }

    /// The endorsement stored with an outcome.
    pub fn peek_endorsement(&self, epoid: &EpoId) -> Option<Signed<Endorsement>> {
        self.outcomes
            .get(epoid)
            .and_then(|o| o.endorsement.as_deref())
            .and_then(|j| crate::sqlite::parse_endorsement(j).ok())
    }

    /// The sum of all balances, and deposits and payouts.
    pub fn peek_totals(&self) -> (i64, i64, i64) {
        (
            self.accounts.values().map(|a| a.balance_minor).sum(),
            self.deposits_minor,
            self.payouts_minor,
        )
    }
}

impl Ledger<MemoryBackend> {
    /// The rows, to look at without changing them.
    pub fn rows(&self) -> &MemoryBackend {
        &self.backend
    }
}

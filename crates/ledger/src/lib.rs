//! NetBill's ledger: accounts, purchase outcomes and a hash-chained journal of every money
//! movement, behind one [`Store`] trait. [`SqliteStore`] is the embedded default;
//! [`PostgresStore`] is for production, and several servers may share one database.
//! [`open_store`] picks one by URL.
//!
//! Invariants kept here (and asserted after every committed batch):
//! - **Conservation**: the sum of all balances equals deposits minus payouts.
//! - **One outcome per EPOID**: the `outcomes` table's primary key; an outcome is never
//!   updated or deleted.
//! - **Journal**: every change of a balance has a journal entry, chained by SHA-256.

pub mod commit;
pub mod filler;
mod postgres;
pub mod rules;
mod sqlite;
#[cfg(feature = "test-support")]
pub mod throwaway_pg;

use netbill_proto::billing::{
    AccountKind, LedgerView, RefundError, StoredOutcome, VerifiedPurchase,
};
use netbill_proto::crypto::{Digest, PublicKey};
use netbill_proto::messages::{
    Checkpoint, Endorsement, Receipt, RefundReceipt, RefundRequest, ResultCode,
};
use netbill_proto::{AccountId, Amount, EpoId, Signed};
use serde::Serialize;
use thiserror::Error;

pub use postgres::{PostgresBackend, PostgresStore, redact_url};
pub use rules::{Backend, Ledger, MemoryBackend, MemoryStore};
pub use sqlite::{SqliteBackend, SqliteStore};

/// A throwaway PostgreSQL server with one fresh database (`netbill bench --store postgres`):
/// the server, which runs until dropped, and the database's URL. `throwaway_pg` is a test
/// helper, so a build without the `test-support` feature refuses with an error saying so.
pub fn throwaway_postgres(
    durable: bool,
) -> Result<(Box<dyn std::any::Any + Send>, String), String> {
    #[cfg(feature = "test-support")]
    {
        let pg = throwaway_pg::PgServer::start(durable)?;
        let url = pg.create_database()?;
        Ok((Box::new(pg), url))
    }
    #[cfg(not(feature = "test-support"))]
    {
        let _ = durable;
        Err(
            "a throwaway PostgreSQL is a test helper, not in this build: build netbill with \
             `--features test-support` (e.g. `cargo run --release --features test-support -- \
             bench --store postgres`), or pass the URL of a PostgreSQL database"
                .to_string(),
        )
    }
}

/// What can go wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("account {0} already exists")]
    AccountExists(AccountId),
    #[error("no account {0}")]
    NoSuchAccount(AccountId),
    #[error("account {account} holds {balance}; a payout of {amount} would overdraw it")]
    WouldOverdraw {
        account: AccountId,
        balance: String,
        amount: Amount,
    },
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyConflict(String),
    #[error("the EPOID {0} already has an outcome")]
    OutcomeExists(EpoId),
    #[error("{0}")]
    Refund(#[from] RefundError),
    #[error("adjustment refused: {0}")]
    BadAdjustment(String),
    #[error(
        "conservation violated: balances sum to {balances_minor} but deposits - payouts = {expected_minor}"
    )]
    ConservationViolated {
        balances_minor: i128,
        expected_minor: i128,
    },
    /// Another server decided what this transaction saw undecided; a shared store runs the
    /// transaction again (this error leaves the store only if it keeps happening).
    #[error("another server got in the way: {0}")]
    Raced(String),
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
    #[error("the journal was changed: {0}")]
    ChainBroken(String),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("PostgreSQL error: {}", crate::postgres::describe(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error(
        "cannot connect to PostgreSQL at {url}: {reason} (is the server running, and do the user, password and database in the URL exist?)"
    )]
    Connect { url: String, reason: String },
    #[error(
        "unsupported store URL {0:?}: use sqlite://PATH, a plain file path, or postgres://USER@HOST:PORT/DATABASE"
    )]
    BadUrl(String),
    #[error(
        "the database schema is version {found} but this netbill knows versions up to {supported}: run a newer netbill against this database"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error(
        "gave up after {attempts} attempts because of concurrent writers (last: {last}); nothing was committed, the request may be retried"
    )]
    Busy { attempts: u32, last: String },
}

/// A new account, as the operator creates it.
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub id: AccountId,
    pub kind: AccountKind,
    pub key: PublicKey,
    pub credit_limit_minor: i64,
    pub low_water_minor: i64,
}

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AccountRecord {
    pub id: AccountId,
    pub kind: AccountKind,
    pub key: PublicKey,
    pub key_revoked: bool,
    pub frozen: bool,
    pub balance_minor: i64,
    pub credit_limit_minor: i64,
    pub low_water_minor: i64,
}

/// A change the operator makes to an account.
#[derive(Clone, Debug)]
pub enum AccountChange {
    Freeze,
    Unfreeze,
    RevokeKey,
    /// Replace the key (which also un-revokes).
    SetKey(PublicKey),
    SetCreditLimit(i64),
    SetLowWater(i64),
}

/// Money in or out of the system through the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transfer {
    Deposit,
    Payout,
}

/// One purchase outcome as it appears in an account's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryLine {
    pub epoid: EpoId,
    pub result: ResultCode,
    pub customer: Option<AccountId>,
    pub merchant: AccountId,
    pub description: String,
    pub price: Amount,
    pub decided_ms: u64,
}

/// One journal entry: a movement of money.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct JournalEntry {
    pub seq: u64,
    /// `deposit`, `payout`, `purchase`, `refund`, `adjustment`, or `key` (an account's key
    /// registered: credit = the account, memo = the key in hex, amount zero).
    pub kind: String,
    /// The account debited (payout, purchase, refund, negative adjustment), if any.
    pub debit: Option<AccountId>,
    /// The account credited (deposit, purchase, refund, positive adjustment), if any.
    pub credit: Option<AccountId>,
    pub amount: Amount,
    pub epoid: Option<EpoId>,
    /// The refund id of a refund; the reason of an adjustment; empty otherwise.
    #[serde(default)]
    pub memo: String,
    pub at_ms: u64,
    /// SHA-256 chaining this entry to the previous one, hex.
    pub hash: String,
}

impl JournalEntry {
    /// The chain hash this entry should have after the entry whose hash is `prev`.
    pub fn expected_hash(&self, prev: &[u8]) -> Vec<u8> {
        let epoid = self.epoid.as_ref().map(|x| x.to_string());
        journal_hash(
            prev,
            self.seq,
            &self.kind,
            self.debit.as_ref(),
            self.credit.as_ref(),
            self.amount,
            epoid.as_deref(),
            &self.memo,
            self.at_ms,
        )
    }
}

/// The SHA-256 chaining a journal entry to the previous entry's hash `prev` (see
/// docs/audit.md for the exact bytes). The memo is appended only when non-empty, so the
/// entries written before memos existed keep their hashes.
#[allow(clippy::too_many_arguments)]
pub fn journal_hash(
    prev: &[u8],
    seq: u64,
    kind: &str,
    debit: Option<&AccountId>,
    credit: Option<&AccountId>,
    amount: Amount,
    epoid: Option<&str>,
    memo: &str,
    at_ms: u64,
) -> Vec<u8> {
    use sha2::Digest as _;
    let mut w = netbill_proto::codec::Writer::new();
    w.fixed(b"netbill/v1/journal\0");
    w.fixed(prev);
    w.u64(seq);
    w.str(kind);
    w.str(debit.map_or("", |a| a.as_str()));
    w.str(credit.map_or("", |a| a.as_str()));
    w.u64(amount.minor());
    w.str(epoid.unwrap_or(""));
    w.u64(at_ms);
    if !memo.is_empty() {
        w.str(memo);
    }
    sha2::Sha256::digest(w.into_bytes()).to_vec()
}

/// A committed purchase with the signed records that back its journal entry.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct PurchaseRecord {
    pub epoid: EpoId,
    /// The account debited, as N opened it from the EPO.
    pub customer: AccountId,
    pub merchant: AccountId,
    pub price: Amount,
    /// The merchant-signed endorsement carrying the customer-signed EPO.
    pub endorsement: Option<Signed<Endorsement>>,
    pub receipt: Signed<Receipt>,
}

/// A refund as the ledger holds it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RefundRecord {
    pub refund_id: String,
    pub epoid: EpoId,
    pub merchant: AccountId,
    pub customer: AccountId,
    pub amount: Amount,
    /// The merchant's signed request.
    pub request: Signed<RefundRequest>,
    /// N's signed receipt.
    pub receipt: Signed<RefundReceipt>,
    pub decided_ms: u64,
}

/// Which refunds [`Store::refunds`] lists.
#[derive(Clone, Copy, Debug)]
pub enum RefundFilter<'a> {
    /// All, ordered by refund id, after this id.
    All { after: Option<&'a str> },
    /// Those of one purchase, oldest first.
    Purchase(&'a EpoId),
    /// Those an account took part in (as customer or merchant), decided in
    /// `[from_ms, to_ms)`, newest first.
    Account {
        id: &'a AccountId,
        from_ms: u64,
        to_ms: u64,
    },
}

/// A correction of one account's balance (made by `netbill audit --unwind`), journaled as
/// an `adjustment` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Adjustment {
    pub account: AccountId,
    /// Added to the balance (negative: taken away).
    pub delta_minor: i64,
    /// Why: it names the audit finding it resolves.
    pub memo: String,
}

/// Most adjustments in one request.
pub const ADJUSTMENTS_MAX: usize = 1000;

/// A batch of purchase decisions inside one atomic, durable transaction.
pub trait LedgerTx: LedgerView {
    /// Records a verified purchase's outcome with its receipt, moving the money if it
    /// committed. Fails if the EPOID already has an outcome.
    fn record_purchase(
        &mut self,
        v: &VerifiedPurchase,
        receipt: &Signed<Receipt>,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// Records an abort for an EPOID with no outcome.
    fn record_abort(&mut self, epoid: &EpoId, receipt: &Signed<Receipt>) -> Result<(), StoreError>;
    /// Announces the accounts this batch will touch, so that a store shared by several
    /// servers can lock them up front in one global order (avoiding deadlocks). Optional:
    /// accounts not announced are still locked when first used.
    fn lock_accounts(&mut self, ids: &[AccountId]) -> Result<(), StoreError> {
        let _ = ids;
        Ok(())
    }
    /// Announces the EPOIDs this batch will look up, so that a store can read their
    /// outcomes in one query instead of one each. Optional; call after `lock_accounts`.
    fn prefetch_outcomes(&mut self, epoids: &[EpoId]) -> Result<(), StoreError> {
        let _ = epoids;
        Ok(())
    }
}

/// The ledger's storage.
pub trait Store: Send {
    /// Opens an account; its key is journaled (a `key` entry moving nothing), so that an
    /// audit knows every key an account ever had.
    fn create_account(&mut self, new: &NewAccount, now_ms: u64) -> Result<(), StoreError>;
    /// Changes an account; a new key is journaled (a `key` entry moving nothing).
    fn change_account(
        &mut self,
        id: &AccountId,
        change: &AccountChange,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// Moves money in or out. With an idempotency key, a repeated identical request
    /// returns the first answer and changes nothing. Returns the new balance.
    fn transfer(
        &mut self,
        id: &AccountId,
        kind: Transfer,
        amount: Amount,
        idempotency_key: Option<&str>,
        now_ms: u64,
    ) -> Result<i64, StoreError>;
    fn account(&mut self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError>;
    fn outcome(&mut self, epoid: &EpoId) -> Result<Option<StoredOutcome>, StoreError>;
    /// Purchases an account took part in, newest first, decided in `[from_ms, to_ms)`.
    fn history(
        &mut self,
        id: &AccountId,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<HistoryLine>, StoreError>;
    /// Journal entries with `seq > after`, oldest first.
    fn journal(&mut self, after: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError>;
    /// Runs `f` over a batch inside one transaction; commits durably if it returns `Ok`,
    /// after checking conservation for the batch.
    fn batch(
        &mut self,
        f: &mut dyn FnMut(&mut dyn LedgerTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Checks conservation over all accounts: Σ balances = deposits − payouts.
    fn check_conservation(&mut self) -> Result<Totals, StoreError> {
        let t = self.totals()?;
        let expected = i128::from(t.deposits_minor) - i128::from(t.payouts_minor);
        if i128::from(t.balances_minor) != expected {
            return Err(StoreError::ConservationViolated {
                balances_minor: t.balances_minor.into(),
                expected_minor: expected,
            });
        }
        Ok(t)
    }
    /// The totals as stored, whether or not they conserve.
    fn totals(&mut self) -> Result<Totals, StoreError>;

    /// The endorsement recorded with an EPOID's outcome (evidence for disputes).
    fn endorsement(&mut self, epoid: &EpoId) -> Result<Option<Signed<Endorsement>>, StoreError>;
    /// Committed purchases with their signed records, ordered by EPOID, after `after`.
    fn purchases(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PurchaseRecord>, StoreError>;
    /// Accounts ordered by id, after `after`.
    fn accounts(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError>;

    /// Makes a refund the merchant signed (`request`, whose signature the caller checked):
    /// in one transaction, decides it with [`netbill_proto::billing::decide_refund`] (a
    /// refund id seen before for the same purchase, merchant and amount answers with its
    /// first receipt; for anything else, a conflict), moves the
    /// money from merchant to customer, journals it and stores the receipt `sign` makes
    /// from the refunded total and the price.
    fn refund(
        &mut self,
        request: &Signed<RefundRequest>,
        request_digest: Digest,
        sign: &mut dyn FnMut(Amount, Amount) -> Signed<RefundReceipt>,
        now_ms: u64,
    ) -> Result<Signed<RefundReceipt>, StoreError>;
    /// Refunds, as `filter` selects them.
    fn refunds(
        &mut self,
        filter: RefundFilter<'_>,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError>;

    /// Stores N's signed checkpoint, unless one exists at its seq; whether it was new.
    fn add_checkpoint(&mut self, checkpoint: &Signed<Checkpoint>) -> Result<bool, StoreError>;
    /// Checkpoints with `seq > after`, oldest first.
    fn checkpoints(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Signed<Checkpoint>>, StoreError>;

    /// Applies balance corrections in one transaction, each journaled as an `adjustment`.
    /// Refused (changing nothing) unless conservation holds over all accounts afterwards:
    /// an adjustment can restore conservation, never break it.
    fn adjust(&mut self, adjustments: &[Adjustment], now_ms: u64) -> Result<(), StoreError>;
}

/// Opens the store a URL names: `sqlite://PATH` or a plain file path (SQLite), or
/// `postgres://…` / `postgresql://…` (PostgreSQL, applying schema migrations).
pub fn open_store(url: &str) -> Result<Box<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(PostgresStore::open(url)?));
    }
    let path = match url.strip_prefix("sqlite://") {
        Some(p) => p,
        None if url.contains("://") => return Err(StoreError::BadUrl(url.to_string())),
        None => url,
    };
    if path.is_empty() {
        return Err(StoreError::BadUrl(url.to_string()));
    }
    Ok(Box::new(SqliteStore::open(std::path::Path::new(path))?))
}

/// Whether two refund requests with one refund id are the same refund (sent again): the
/// same purchase, merchant and amount. Their times and reasons may differ.
pub(crate) fn same_refund(a: &RefundRequest, b: &RefundRequest) -> bool {
    a.epoid == b.epoid && a.merchant == b.merchant && a.amount == b.amount
}

/// Checks a list of adjustments before any is applied.
pub(crate) fn check_adjustments(adjustments: &[Adjustment]) -> Result<(), StoreError> {
    if adjustments.is_empty() || adjustments.len() > ADJUSTMENTS_MAX {
        return Err(StoreError::BadAdjustment(format!(
            "a request holds 1 to {ADJUSTMENTS_MAX} adjustments"
        )));
    }
    for a in adjustments {
        adjustment_amount(a)?;
        if a.memo.is_empty() || a.memo.len() > netbill_proto::messages::MEMO_LEN_MAX {
            return Err(StoreError::BadAdjustment(format!(
                "the adjustment of {} needs a memo of 1 to {} bytes saying why",
                a.account,
                netbill_proto::messages::MEMO_LEN_MAX
            )));
        }
    }
    Ok(())
}

/// The debited and credited account of an adjustment's journal entry.
pub(crate) fn adjustment_sides(a: &Adjustment) -> (Option<&AccountId>, Option<&AccountId>) {
    if a.delta_minor < 0 {
        (Some(&a.account), None)
    } else {
        (None, Some(&a.account))
    }
}

/// The (positive) amount an adjustment moves.
pub(crate) fn adjustment_amount(a: &Adjustment) -> Result<Amount, StoreError> {
    Amount::from_minor(a.delta_minor.unsigned_abs())
        .ok()
        .filter(|m| !m.is_zero())
        .ok_or_else(|| {
            StoreError::BadAdjustment(format!(
                "the adjustment of {} must be non-zero and within the amount limit",
                a.account
            ))
        })
}

/// How far a journal's chain has been followed: an entry's seq and chain hash, and the money
/// that entered and left the system up to it (what a checkpoint signs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: Vec<u8>,
    pub deposits_minor: u64,
    pub payouts_minor: u64,
}

impl ChainHead {
    /// Before the first entry.
    pub fn genesis() -> Self {
        ChainHead {
            seq: 0,
            hash: vec![0; 32],
            deposits_minor: 0,
            payouts_minor: 0,
        }
    }

    /// Where a checkpoint says the chain was.
    pub fn of(c: &Checkpoint) -> Self {
        ChainHead {
            seq: c.seq,
            hash: c.hash.0.to_vec(),
            deposits_minor: c.deposits_minor,
            payouts_minor: c.payouts_minor,
        }
    }

    /// The checkpoint of this head, made at `time_ms`.
    pub fn checkpoint(&self, time_ms: u64) -> Checkpoint {
        let mut hash = [0u8; 32];
        if self.hash.len() == 32 {
            hash.copy_from_slice(&self.hash);
        }
        Checkpoint {
            seq: self.seq,
            hash: Digest(hash),
            deposits_minor: self.deposits_minor,
            payouts_minor: self.payouts_minor,
            time_ms,
        }
    }
}

/// Follows the journal from `from` to its last entry, checking that every entry follows
/// and chains to the one before (`StoreError::ChainBroken` if not). With `trust`, takes the
/// stored hashes as they are (to move past a break an audit has dealt with).
pub fn follow_chain(
    store: &mut dyn Store,
    from: ChainHead,
    trust: bool,
) -> Result<ChainHead, StoreError> {
    let mut head = from;
    loop {
        let page = store.journal(head.seq, 1000)?;
        let done = page.len() < 1000;
        for e in page {
            if !trust {
                if e.seq != head.seq + 1 {
                    return Err(StoreError::ChainBroken(format!(
                        "journal entry {} follows entry {}",
                        e.seq, head.seq
                    )));
                }
                if hex::encode(e.expected_hash(&head.hash)) != e.hash {
                    return Err(StoreError::ChainBroken(format!(
                        "journal entry {} does not chain to entry {}",
                        e.seq, head.seq
                    )));
                }
            }
            match e.kind.as_str() {
                "deposit" => {
                    head.deposits_minor = head.deposits_minor.saturating_add(e.amount.minor())
                }
                "payout" => {
                    head.payouts_minor = head.payouts_minor.saturating_add(e.amount.minor())
                }
                _ => {}
            }
            head.seq = e.seq;
            head.hash = hex::decode(&e.hash).map_err(|_| corrupt_hash(e.seq))?;
        }
        if done {
            return Ok(head);
        }
    }
}

fn corrupt_hash(seq: u64) -> StoreError {
    StoreError::Corrupt(format!("journal entry {seq} has a malformed hash"))
}

/// Reads the whole journal and checks its hash chain: sequence numbers 1, 2, 3… and each
/// hash chaining the entry to the one before. Returns the number of entries.
pub fn verify_journal(store: &mut dyn Store) -> Result<u64, StoreError> {
    Ok(follow_chain(store, ChainHead::genesis(), false)?.seq)
}

/// The ledger's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Totals {
    pub balances_minor: i64,
    pub deposits_minor: i64,
    pub payouts_minor: i64,
    pub accounts: u64,
    pub outcomes: u64,
}

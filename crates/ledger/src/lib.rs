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

mod postgres;
mod sqlite;
pub mod throwaway_pg;

use netbill_proto::billing::{AccountKind, LedgerView, StoredOutcome, VerifiedPurchase};
use netbill_proto::crypto::PublicKey;
use netbill_proto::messages::{Receipt, ResultCode};
use netbill_proto::{AccountId, Amount, EpoId, Signed};
use serde::Serialize;
use thiserror::Error;

pub use postgres::{PostgresStore, redact_url};
pub use sqlite::SqliteStore;

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
    #[error(
        "conservation violated: balances sum to {balances_minor} but deposits - payouts = {expected_minor}"
    )]
    ConservationViolated {
        balances_minor: i128,
        expected_minor: i128,
    },
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    pub seq: u64,
    /// `deposit`, `payout` or `purchase`.
    pub kind: String,
    /// The account debited (for a payout or purchase), if any.
    pub debit: Option<AccountId>,
    /// The account credited (for a deposit or purchase), if any.
    pub credit: Option<AccountId>,
    pub amount: Amount,
    pub epoid: Option<EpoId>,
    pub at_ms: u64,
    /// SHA-256 chaining this entry to the previous one, hex.
    pub hash: String,
}

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
    fn create_account(&mut self, new: &NewAccount, now_ms: u64) -> Result<(), StoreError>;
    fn change_account(&mut self, id: &AccountId, change: &AccountChange) -> Result<(), StoreError>;
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
    fn check_conservation(&mut self) -> Result<Totals, StoreError>;
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

/// Reads the whole journal and checks its hash chain: sequence numbers 1, 2, 3… and each
/// hash chaining the entry to the one before. Returns the number of entries.
pub fn verify_journal(store: &mut dyn Store) -> Result<u64, StoreError> {
    let mut prev = vec![0u8; 32];
    let mut seq = 0u64;
    loop {
        let page = store.journal(seq, 1000)?;
        if page.is_empty() {
            return Ok(seq);
        }
        for e in page {
            if e.seq != seq + 1 {
                return Err(StoreError::Corrupt(format!(
                    "journal entry {} follows entry {seq}",
                    e.seq
                )));
            }
            let epoid = e.epoid.as_ref().map(|x| x.to_string());
            let hash = sqlite::journal_hash(
                &prev,
                e.seq,
                &e.kind,
                e.debit.as_ref(),
                e.credit.as_ref(),
                e.amount,
                epoid.as_deref(),
                e.at_ms,
            );
            if hex::encode(&hash) != e.hash {
                return Err(StoreError::Corrupt(format!(
                    "journal entry {} does not chain to the entry before it",
                    e.seq
                )));
            }
            prev = hash;
            seq = e.seq;
        }
    }
}

/// The ledger's totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Totals {
    pub balances_minor: i64,
    pub deposits_minor: i64,
    pub payouts_minor: i64,
    pub accounts: u64,
    pub outcomes: u64,
}

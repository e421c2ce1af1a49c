//! NetBill's ledger: accounts, purchase outcomes and a hash-chained journal of every money
//! movement, behind one [`Store`] trait. [`SqliteStore`] is the embedded default.
//!
//! Invariants kept here (and asserted after every committed batch):
//! - **Conservation**: the sum of all balances equals deposits minus payouts.
//! - **One outcome per EPOID**: the `outcomes` table's primary key; an outcome is never
//!   updated or deleted.
//! - **Journal**: every change of a balance has a journal entry, chained by SHA-256.

mod sqlite;

use netbill_proto::billing::{AccountKind, LedgerView, StoredOutcome, VerifiedPurchase};
use netbill_proto::crypto::PublicKey;
use netbill_proto::messages::{Receipt, ResultCode};
use netbill_proto::{AccountId, Amount, EpoId, Signed};
use serde::Serialize;
use thiserror::Error;

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

/// The ledger's totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Totals {
    pub balances_minor: i64,
    pub deposits_minor: i64,
    pub payouts_minor: i64,
    pub accounts: u64,
    pub outcomes: u64,
}

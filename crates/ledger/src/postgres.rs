//! The production store: PostgreSQL, shared safely by several billing servers.
//!
//! Concurrency rules (see docs/storage.md):
//! - Every write runs in one READ COMMITTED transaction that takes its row locks in one
//!   global order: the `totals` row (shared for purchase batches, exclusive for transfers),
//!   then the accounts it touches sorted by id (`… WHERE id = ANY($1) ORDER BY id FOR
//!   UPDATE`), then the single `journal_head` row. Balances only ever change by
//!   `balance_minor = balance_minor ± x`.
//! - An outcome is inserted with `ON CONFLICT DO NOTHING` and the row count checked, so an
//!   EPOID never gets two outcomes, whichever server asks.
//! - Deadlocks, serialization failures and an EPOID decided meanwhile by another server
//!   make the whole batch run again, at most [`MAX_ATTEMPTS`] times.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use netbill_proto::billing::{
    AccountKind, AccountView, LedgerView, StoredOutcome, VerifiedPurchase,
};
use netbill_proto::crypto::{Digest, PublicKey};
use netbill_proto::messages::{
    Checkpoint, Endorsement, Receipt, RefundReceipt, RefundRequest, ResultCode,
};
use netbill_proto::{AccountId, Amount, EpoId, Signed};
use postgres::error::SqlState;
use postgres::{Client, GenericClient, IsolationLevel, NoTls, Row, Statement, Transaction};

use crate::sqlite::{account_id, corrupt, kind_str, parse_result, result_str};
use crate::{
    AccountChange, AccountRecord, Adjustment, HistoryLine, JournalEntry, LedgerTx, NewAccount,
    PurchaseRecord, RefundFilter, RefundRecord, Store, StoreError, Totals, Transfer, journal_hash,
};

mod records;

/// How many times a batch runs before giving up on contention.
pub const MAX_ATTEMPTS: u32 = 5;

/// An arbitrary constant naming the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x4e42_4d49_4752;

/// The schema migrations, in order; each runs once, in the transaction that records it.
const MIGRATIONS: &[(i64, &str)] = &[(1, SCHEMA_V1), (2, SCHEMA_V2)];

/// Version 2: refunds, signed checkpoints, and a memo in journal entries.
const SCHEMA_V2: &str = r#"
ALTER TABLE journal ADD COLUMN memo TEXT NOT NULL DEFAULT '';
CREATE TABLE refunds (
    refund_id TEXT COLLATE "C" PRIMARY KEY,
    epoid TEXT COLLATE "C" NOT NULL,
    merchant TEXT COLLATE "C" NOT NULL,
    customer TEXT COLLATE "C" NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    request BYTEA NOT NULL,
    request_sig BYTEA NOT NULL,
    request_digest BYTEA NOT NULL,
    receipt BYTEA NOT NULL,
    receipt_sig BYTEA NOT NULL,
    decided_ms BIGINT NOT NULL
);
CREATE INDEX refunds_by_epoid ON refunds (epoid);
CREATE INDEX refunds_by_customer ON refunds (customer, decided_ms);
CREATE INDEX refunds_by_merchant ON refunds (merchant, decided_ms);
CREATE TABLE checkpoints (
    seq BIGINT PRIMARY KEY,
    body BYTEA NOT NULL,
    sig BYTEA NOT NULL
);
"#;

const SCHEMA_V1: &str = r#"
CREATE TABLE accounts (
    id TEXT COLLATE "C" PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('customer', 'merchant')),
    public_key BYTEA NOT NULL CHECK (octet_length(public_key) = 32),
    key_revoked BOOLEAN NOT NULL DEFAULT FALSE,
    frozen BOOLEAN NOT NULL DEFAULT FALSE,
    balance_minor BIGINT NOT NULL DEFAULT 0,
    credit_limit_minor BIGINT NOT NULL DEFAULT 0 CHECK (credit_limit_minor >= 0),
    low_water_minor BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL
);
CREATE TABLE totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    deposits_minor BIGINT NOT NULL,
    payouts_minor BIGINT NOT NULL
);
INSERT INTO totals (id, deposits_minor, payouts_minor) VALUES (1, 0, 0);
CREATE TABLE outcomes (
    epoid TEXT COLLATE "C" PRIMARY KEY,
    result TEXT NOT NULL,
    customer TEXT COLLATE "C",
    merchant TEXT COLLATE "C" NOT NULL,
    description TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    endorsement_digest BYTEA,
    endorsement TEXT,
    receipt BYTEA NOT NULL,
    receipt_sig BYTEA NOT NULL,
    decided_ms BIGINT NOT NULL
);
CREATE INDEX outcomes_by_customer ON outcomes (customer, decided_ms);
CREATE INDEX outcomes_by_merchant ON outcomes (merchant, decided_ms);
CREATE TABLE journal (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    debit TEXT COLLATE "C",
    credit TEXT COLLATE "C",
    amount_minor BIGINT NOT NULL,
    epoid TEXT COLLATE "C",
    at_ms BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
CREATE TABLE journal_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO journal_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
CREATE TABLE idempotency (
    key TEXT COLLATE "C" PRIMARY KEY,
    request TEXT NOT NULL,
    balance_minor BIGINT NOT NULL
);
"#;

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 2;

/// The PostgreSQL store. Reconnects on the next call if the connection was lost.
pub struct PostgresStore {
    client: Client,
    /// The write path's statements, prepared on `client`.
    stmts: Stmts,
    url: String,
}

/// A readable description of a PostgreSQL error (the server's message when there is one).
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

/// A store URL with any password hidden, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

fn connect(url: &str) -> Result<Client, StoreError> {
    Client::connect(url, NoTls).map_err(|e| StoreError::Connect {
        url: redact_url(url),
        reason: describe(&e),
    })
}

/// Whether an error means "another writer got in the way; run the batch again".
fn is_contention(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(pe) => matches!(
            pe.code(),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
        ),
        _ => false,
    }
}

fn parse_kind(s: &str) -> Result<AccountKind, StoreError> {
    match s {
        "customer" => Ok(AccountKind::Customer),
        "merchant" => Ok(AccountKind::Merchant),
        other => Err(corrupt(format!("account kind {other:?}"))),
    }
}

fn nonneg(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(format!("negative {what} {v}")))
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const ACCOUNT_COLUMNS: &str =
    "kind, public_key, key_revoked, frozen, balance_minor, credit_limit_minor, low_water_minor";

/// An account from a row holding [`ACCOUNT_COLUMNS`] from column `at` on.
fn account_from_row_at(id: &AccountId, r: &Row, at: usize) -> Result<AccountRecord, StoreError> {
    let key: Vec<u8> = r.try_get(at + 1)?;
    Ok(AccountRecord {
        id: id.clone(),
        kind: parse_kind(r.try_get::<_, &str>(at)?)?,
        key: PublicKey(key.try_into().map_err(|_| corrupt("key length"))?),
        key_revoked: r.try_get(at + 2)?,
        frozen: r.try_get(at + 3)?,
        balance_minor: r.try_get(at + 4)?,
        credit_limit_minor: r.try_get(at + 5)?,
        low_water_minor: r.try_get(at + 6)?,
    })
}

fn read_account(
    c: &mut impl GenericClient,
    id: &AccountId,
) -> Result<Option<AccountRecord>, StoreError> {
    c.query_opt(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"),
        &[&id.as_str()],
    )?
    .map(|r| account_from_row_at(id, &r, 0))
    .transpose()
}

fn read_outcome(
    c: &mut impl GenericClient,
    epoid: &EpoId,
) -> Result<Option<StoredOutcome>, StoreError> {
    c.query_opt(
        "SELECT endorsement_digest, receipt, receipt_sig, customer FROM outcomes WHERE epoid = $1",
        &[&epoid.to_string()],
    )?
    .map(|r| outcome_from_row_at(&r, 0))
    .transpose()
}

/// An outcome from a row holding its digest, receipt, signature and customer from column
/// `at` on.
fn outcome_from_row_at(r: &Row, at: usize) -> Result<StoredOutcome, StoreError> {
    crate::sqlite::stored_outcome(
        r.try_get(at)?,
        r.try_get(at + 1)?,
        r.try_get(at + 2)?,
        r.try_get(at + 3)?,
    )
}

fn totals_row(c: &mut impl GenericClient, lock: &str) -> Result<(i64, i64), StoreError> {
    let r = c.query_one(
        &format!("SELECT deposits_minor, payouts_minor FROM totals WHERE id = 1 {lock}"),
        &[],
    )?;
    Ok((r.try_get(0)?, r.try_get(1)?))
}

/// Applies the migrations this database lacks, in one transaction, under an advisory lock
/// so that several servers starting together do not race.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )?
        .try_get(0)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Which lock a write transaction takes on the `totals` row first.
#[derive(Clone, Copy)]
enum TotalsLock {
    /// Purchases: totals may not change under the batch's conservation check.
    Share,
    /// Transfers: they change the totals.
    Update,
}

/// The statements of the write path, prepared once per connection (PostgreSQL then plans
/// each once, and every use is one round trip instead of a parse, a plan and an execute).
struct Stmts {
    totals_share: Statement,
    totals_update: Statement,
    totals: Statement,
    /// Locks accounts in the global order and reads them whole.
    lock_accounts: Statement,
    lock_account: Statement,
    outcomes: Statement,
    insert_outcomes: Statement,
    apply_deltas: Statement,
    journal_head: Statement,
    append_journal: Statement,
}

impl Stmts {
    fn prepare(c: &mut Client) -> Result<Self, StoreError> {
        Ok(Self {
            totals_share: c.prepare(
                "SELECT deposits_minor, payouts_minor FROM totals WHERE id = 1 FOR SHARE",
            )?,
            totals_update: c.prepare(
                "SELECT deposits_minor, payouts_minor FROM totals WHERE id = 1 FOR UPDATE",
            )?,
            totals: c.prepare("SELECT deposits_minor, payouts_minor FROM totals WHERE id = 1")?,
            lock_accounts: c.prepare(&format!(
                "SELECT id, {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1::TEXT[])
                 ORDER BY id FOR UPDATE"
            ))?,
            lock_account: c.prepare(&format!(
                "SELECT id, {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1 FOR UPDATE"
            ))?,
            outcomes: c.prepare(
                "SELECT epoid, endorsement_digest, receipt, receipt_sig, customer FROM outcomes
                 WHERE epoid = ANY($1::TEXT[])",
            )?,
            insert_outcomes: c.prepare(
                "INSERT INTO outcomes (epoid, result, customer, merchant, description,
                   price_minor, endorsement_digest, endorsement, receipt, receipt_sig, decided_ms)
                 SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                   $6::BIGINT[], $7::BYTEA[], $8::TEXT[], $9::BYTEA[], $10::BYTEA[], $11::BIGINT[])
                 ON CONFLICT (epoid) DO NOTHING
                 RETURNING epoid",
            )?,
            apply_deltas: c.prepare(
                "UPDATE accounts AS a SET balance_minor = a.balance_minor + d.delta
                 FROM unnest($1::TEXT[], $2::BIGINT[]) AS d(id, delta)
                 WHERE a.id = d.id
                 RETURNING a.id, a.balance_minor",
            )?,
            journal_head: c
                .prepare("SELECT seq, hash FROM journal_head WHERE id = 1 FOR UPDATE")?,
            append_journal: c.prepare(
                "WITH appended AS (
                   INSERT INTO journal (seq, kind, debit, credit, amount_minor, epoid, at_ms, hash, memo)
                   SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[],
                                        $5::BIGINT[], $6::TEXT[], $7::BIGINT[], $8::BYTEA[],
                                        $11::TEXT[])
                 )
                 UPDATE journal_head SET seq = $9, hash = $10 WHERE id = 1",
            )?,
        })
    }
}

/// A journal entry waiting for the end of the transaction, when the journal head is
/// locked (last, so that the lock order stays global).
struct PendingEntry {
    kind: &'static str,
    debit: Option<AccountId>,
    credit: Option<AccountId>,
    amount: Amount,
    epoid: Option<EpoId>,
    memo: String,
    at_ms: u64,
}

/// An outcome row waiting for the end of the transaction (inserted with all the others in
/// one statement).
struct PendingOutcome {
    epoid: String,
    result: &'static str,
    customer: Option<String>,
    merchant: String,
    description: String,
    price_minor: i64,
    digest: Option<Vec<u8>>,
    endorsement: Option<String>,
    receipt: Vec<u8>,
    receipt_sig: Vec<u8>,
    decided_ms: i64,
}

/// The journal entry registering an account's key (it moves nothing).
fn key_entry(id: &AccountId, key: &PublicKey, now_ms: u64) -> PendingEntry {
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

/// An account row this transaction holds locked. `rec.balance_minor` is its balance with
/// this transaction's pending changes; `before` is what the database holds.
struct LockedAccount {
    rec: AccountRecord,
    before: i64,
}

/// One write transaction in progress.
///
/// Reads lock and load rows into memory (accounts `FOR UPDATE`, in one statement when the
/// caller announces them); writes are kept in memory and applied at the end in a fixed
/// number of set-based statements, whatever the number of purchases: one `INSERT … SELECT
/// FROM unnest(…)` for the outcomes, one `UPDATE … FROM unnest(…)` with each account's net
/// change, and one for the journal.
struct PgTx<'a> {
    tx: RefCell<Transaction<'a>>,
    st: &'a Stmts,
    totals_before: (i64, i64),
    /// Accounts locked so far, with their pending balances.
    accounts: RefCell<HashMap<AccountId, LockedAccount>>,
    /// Outcomes as this transaction sees them: read from the database (`None`: none yet)
    /// or recorded by it.
    outcomes: RefCell<HashMap<EpoId, Option<StoredOutcome>>>,
    /// EPOIDs this transaction saw without an outcome in the database.
    absent: RefCell<HashSet<EpoId>>,
    /// Another server decided an EPOID this batch saw undecided: run it again.
    raced: bool,
    pending: Vec<PendingOutcome>,
    journal: Vec<PendingEntry>,
    /// The first database error met in a [`LedgerView`] query (which cannot return errors).
    view_error: RefCell<Option<StoreError>>,
    /// Check conservation over all accounts at commit, not only this transaction's change
    /// (for adjustments, which may restore it).
    check_all: bool,
}

impl<'a> PgTx<'a> {
    fn start(mut tx: Transaction<'a>, st: &'a Stmts, lock: TotalsLock) -> Result<Self, StoreError> {
        let r = tx.query_one(
            match lock {
                TotalsLock::Share => &st.totals_share,
                TotalsLock::Update => &st.totals_update,
            },
            &[],
        )?;
        Ok(Self {
            tx: RefCell::new(tx),
            st,
            totals_before: (r.try_get(0)?, r.try_get(1)?),
            accounts: RefCell::default(),
            outcomes: RefCell::default(),
            absent: RefCell::default(),
            raced: false,
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

    /// Keeps locked account rows (`id` first, then [`ACCOUNT_COLUMNS`]).
    fn keep_accounts(&self, rows: &[Row]) -> Result<(), StoreError> {
        let mut accounts = self.accounts.borrow_mut();
        for r in rows {
            let id = account_id(r.try_get(0)?)?;
            if accounts.contains_key(&id) {
                continue;
            }
            let rec = account_from_row_at(&id, r, 1)?;
            let before = rec.balance_minor;
            accounts.insert(id, LockedAccount { rec, before });
        }
        Ok(())
    }

    /// The account as this transaction sees it, locking its row on first use.
    fn lock_one(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        if let Some(a) = self.accounts.borrow().get(id) {
            return Ok(Some(a.rec.clone()));
        }
        let rows = self
            .tx
            .borrow_mut()
            .query(&self.st.lock_account, &[&id.as_str()])?;
        self.keep_accounts(&rows)?;
        Ok(self.accounts.borrow().get(id).map(|a| a.rec.clone()))
    }

    /// Locks `id`'s row; returns its balance as this transaction sees it.
    fn touch(&mut self, id: &AccountId) -> Result<i64, StoreError> {
        self.lock_one(id)?
            .map(|a| a.balance_minor)
            .ok_or_else(|| StoreError::NoSuchAccount(id.clone()))
    }

    /// Adds `delta` to a locked account's pending balance.
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

    /// The stored outcome of `epoid`, reading the database on first use.
    fn lookup_outcome(&self, epoid: &EpoId) -> Result<Option<StoredOutcome>, StoreError> {
        if let Some(o) = self.outcomes.borrow().get(epoid) {
            return Ok(o.clone());
        }
        self.read_outcomes(std::slice::from_ref(epoid))?;
        Ok(self.outcomes.borrow().get(epoid).cloned().flatten())
    }

    /// Reads the outcomes of `epoids` not yet known to this transaction, in one query.
    fn read_outcomes(&self, epoids: &[EpoId]) -> Result<(), StoreError> {
        let want: Vec<String> = {
            let known = self.outcomes.borrow();
            let mut w: Vec<String> = epoids
                .iter()
                .filter(|e| !known.contains_key(*e))
                .map(|e| e.to_string())
                .collect();
            w.sort_unstable();
            w.dedup();
            w
        };
        if want.is_empty() {
            return Ok(());
        }
        let rows = self.tx.borrow_mut().query(&self.st.outcomes, &[&want])?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            let epoid: EpoId = r
                .try_get::<_, &str>(0)?
                .parse()
                .map_err(|_| corrupt("epoid"))?;
            found.insert(epoid, outcome_from_row_at(r, 1)?);
        }
        let mut known = self.outcomes.borrow_mut();
        let mut absent = self.absent.borrow_mut();
        for e in epoids {
            if known.contains_key(e) {
                continue;
            }
            let o = found.remove(e);
            if o.is_none() {
                absent.insert(e.clone());
            }
            known.insert(e.clone(), o);
        }
        Ok(())
    }

    /// Queues an outcome; `OutcomeExists` if the EPOID has one.
    fn push_outcome(
        &mut self,
        epoid: &EpoId,
        row: PendingOutcome,
        stored: StoredOutcome,
    ) -> Result<(), StoreError> {
        if self.lookup_outcome(epoid)?.is_some() {
            return Err(StoreError::OutcomeExists(epoid.clone()));
        }
        self.outcomes.get_mut().insert(epoid.clone(), Some(stored));
        self.pending.push(row);
        Ok(())
    }

    /// Writes everything this transaction queued and checks conservation: one statement
    /// each for the outcomes, the balances and the journal, then the totals read back.
    fn finish(&mut self) -> Result<(), StoreError> {
        self.flush_outcomes()?;
        let changed = self.flush_balances()?;
        self.flush_journal()?;
        self.check(changed)
    }

    fn flush_outcomes(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let p = &self.pending;
        let epoids: Vec<&str> = p.iter().map(|o| o.epoid.as_str()).collect();
        let results: Vec<&str> = p.iter().map(|o| o.result).collect();
        let customers: Vec<Option<&str>> = p.iter().map(|o| o.customer.as_deref()).collect();
        let merchants: Vec<&str> = p.iter().map(|o| o.merchant.as_str()).collect();
        let descriptions: Vec<&str> = p.iter().map(|o| o.description.as_str()).collect();
        let prices: Vec<i64> = p.iter().map(|o| o.price_minor).collect();
        let digests: Vec<Option<&[u8]>> = p.iter().map(|o| o.digest.as_deref()).collect();
        let endorsements: Vec<Option<&str>> = p.iter().map(|o| o.endorsement.as_deref()).collect();
        let receipts: Vec<&[u8]> = p.iter().map(|o| o.receipt.as_slice()).collect();
        let sigs: Vec<&[u8]> = p.iter().map(|o| o.receipt_sig.as_slice()).collect();
        let times: Vec<i64> = p.iter().map(|o| o.decided_ms).collect();
        let rows = self.tx.get_mut().query(
            &self.st.insert_outcomes,
            &[
                &epoids,
                &results,
                &customers,
                &merchants,
                &descriptions,
                &prices,
                &digests,
                &endorsements,
                &receipts,
                &sigs,
                &times,
            ],
        )?;
        if rows.len() == p.len() {
            return Ok(());
        }
        // Some EPOID got an outcome from another server after this transaction saw it
        // undecided (the account locks make this rare): run the batch again.
        let inserted: HashSet<String> = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<_, _>>()?;
        let lost = p
            .iter()
            .find(|o| !inserted.contains(&o.epoid))
            .ok_or_else(|| corrupt("an outcome was inserted twice in one batch"))?;
        let epoid: EpoId = lost.epoid.parse().map_err(|_| corrupt("epoid"))?;
        if self.absent.get_mut().contains(&epoid) {
            self.raced = true;
        }
        Err(StoreError::OutcomeExists(epoid))
    }

    /// Applies each touched account's net change in one statement; returns the sum of the
    /// changes as the database reports them.
    fn flush_balances(&mut self) -> Result<i128, StoreError> {
        let accounts = self.accounts.get_mut();
        let mut changed: Vec<(&str, i64)> = accounts
            .values()
            .filter(|a| a.rec.balance_minor != a.before)
            .map(|a| (a.rec.id.as_str(), a.rec.balance_minor - a.before))
            .collect();
        if changed.is_empty() {
            return Ok(0);
        }
        changed.sort_unstable();
        let (ids, deltas): (Vec<&str>, Vec<i64>) = changed.iter().copied().unzip();
        let rows = self
            .tx
            .get_mut()
            .query(&self.st.apply_deltas, &[&ids, &deltas])?;
        if rows.len() != ids.len() {
            return Err(corrupt("an account touched by this transaction vanished"));
        }
        let mut sum: i128 = 0;
        for r in rows {
            let id = account_id(r.try_get(0)?)?;
            let now: i64 = r.try_get(1)?;
            let a = accounts
                .get(&id)
                .ok_or_else(|| corrupt(format!("unexpected account {id}")))?;
            // The row was locked since it was read: the database must hold exactly the
            // balance this transaction computed.
            if now != a.rec.balance_minor {
                return Err(corrupt(format!(
                    "account {id} holds {now} after the batch, not {}",
                    a.rec.balance_minor
                )));
            }
            sum += i128::from(now) - i128::from(a.before);
        }
        Ok(sum)
    }

    /// Writes the pending journal entries after the chain's head, under its lock.
    fn flush_journal(&mut self) -> Result<(), StoreError> {
        if self.journal.is_empty() {
            return Ok(());
        }
        let tx = self.tx.get_mut();
        let head = tx.query_one(&self.st.journal_head, &[])?;
        let mut seq = nonneg(head.try_get(0)?, "journal seq")?;
        let mut prev: Vec<u8> = head.try_get(1)?;
        let n = self.journal.len();
        let (mut seqs, mut kinds, mut debits, mut credits) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut amounts, mut epoids, mut ats, mut hashes) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut memos = Vec::with_capacity(n);
        for e in &self.journal {
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
            seqs.push(ms(seq));
            memos.push(e.memo.as_str());
            kinds.push(e.kind);
            debits.push(e.debit.as_ref().map(|a| a.as_str()));
            credits.push(e.credit.as_ref().map(|a| a.as_str()));
            amounts.push(e.amount.signed());
            epoids.push(epoid);
            ats.push(ms(e.at_ms));
            hashes.push(hash.clone());
            prev = hash;
        }
        tx.execute(
            &self.st.append_journal,
            &[
                &seqs,
                &kinds,
                &debits,
                &credits,
                &amounts,
                &epoids,
                &ats,
                &hashes,
                &ms(seq),
                &prev,
                &memos,
            ],
        )?;
        self.journal.clear();
        Ok(())
    }

    /// Conservation for this transaction: the balances it changed (`changed`, as the
    /// database reported them after the update) moved by exactly what the totals moved
    /// by, read back from the database.
    fn check(&mut self, changed: i128) -> Result<(), StoreError> {
        if self.check_all {
            return records::check_all(self.tx.get_mut());
        }
        let r = self.tx.get_mut().query_one(&self.st.totals, &[])?;
        let (d, p): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
        let expected = i128::from(d)
            - i128::from(self.totals_before.0)
            - (i128::from(p) - i128::from(self.totals_before.1));
        if changed != expected {
            return Err(StoreError::ConservationViolated {
                balances_minor: changed,
                expected_minor: expected,
            });
        }
        Ok(())
    }
}

impl LedgerView for PgTx<'_> {
    fn account(&self, id: &AccountId) -> Option<AccountView> {
        let r = self.lock_one(id);
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

impl LedgerTx for PgTx<'_> {
    fn record_purchase(
        &mut self,
        v: &VerifiedPurchase,
        receipt: &Signed<Receipt>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let epo = v.epo();
        let r = receipt.body_unverified();
        let row = PendingOutcome {
            epoid: epo.epoid.to_string(),
            result: result_str(r.result),
            customer: Some(v.secret.account.as_str().to_string()),
            merchant: epo.merchant.as_str().to_string(),
            description: epo.description.clone(),
            price_minor: epo.price.signed(),
            digest: Some(v.endorsement_digest.0.to_vec()),
            endorsement: Some(serde_json::to_string(&v.endorsement).unwrap_or_default()),
            receipt: receipt.bytes().to_vec(),
            receipt_sig: receipt.form().to_bytes(),
            decided_ms: ms(r.time_ms),
        };
        let stored = StoredOutcome {
            customer: Some(v.secret.account.clone()),
            endorsement_digest: Some(v.endorsement_digest),
            receipt: receipt.clone(),
        };
        self.push_outcome(&epo.epoid, row, stored)?;
        if r.result == ResultCode::Committed {
            let customer = &v.secret.account;
            let price = epo.price.signed();
            let balance = self.touch(customer)?;
            self.touch(&epo.merchant)?;
            let limit = self
                .accounts
                .get_mut()
                .get(customer)
                .map_or(0, |a| a.rec.credit_limit_minor);
            // What the debit's `WHERE balance - price >= -credit_limit` guarded before.
            if balance
                .checked_sub(price)
                .is_none_or(|after| after < -limit)
            {
                return Err(corrupt(format!(
                    "purchase {} could not move money",
                    epo.epoid
                )));
            }
            self.add(customer, -price)?;
            self.add(&epo.merchant, price)?;
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
        Ok(())
    }

    fn record_abort(&mut self, epoid: &EpoId, receipt: &Signed<Receipt>) -> Result<(), StoreError> {
        let row = PendingOutcome {
            epoid: epoid.to_string(),
            result: "aborted",
            customer: None,
            merchant: epoid.merchant.as_str().to_string(),
            description: String::new(),
            price_minor: 0,
            digest: None,
            endorsement: None,
            receipt: receipt.bytes().to_vec(),
            receipt_sig: receipt.form().to_bytes(),
            decided_ms: ms(receipt.body_unverified().time_ms),
        };
        let stored = StoredOutcome {
            customer: None,
            endorsement_digest: None,
            receipt: receipt.clone(),
        };
        self.push_outcome(epoid, row, stored)
    }

    fn lock_accounts(&mut self, ids: &[AccountId]) -> Result<(), StoreError> {
        let mut want: Vec<&str> = {
            let locked = self.accounts.get_mut();
            ids.iter()
                .filter(|id| !locked.contains_key(*id))
                .map(|id| id.as_str())
                .collect()
        };
        want.sort_unstable();
        want.dedup();
        if want.is_empty() {
            return Ok(());
        }
        let rows = self.tx.get_mut().query(&self.st.lock_accounts, &[&want])?;
        self.keep_accounts(&rows)
    }

    fn prefetch_outcomes(&mut self, epoids: &[EpoId]) -> Result<(), StoreError> {
        self.read_outcomes(epoids)
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`) and
    /// applies any schema migrations it lacks. Refuses a database whose schema is newer.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut client = connect(url)?;
        migrate(&mut client)?;
        let stmts = Stmts::prepare(&mut client)?;
        Ok(Self {
            client,
            stmts,
            url: url.to_string(),
        })
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .client()?
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
                &[],
            )?
            .try_get(0)?)
    }

    /// Reconnects (and prepares the statements again) if the connection was lost.
    fn ensure_connected(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            let mut client = connect(&self.url)?;
            let stmts = Stmts::prepare(&mut client)?;
            self.client = client;
            self.stmts = stmts;
        }
        Ok(())
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        self.ensure_connected()?;
        Ok(&mut self.client)
    }

    /// Runs `f` in one transaction (locking totals first), checks conservation and commits;
    /// runs it again on contention, at most [`MAX_ATTEMPTS`] times.
    fn write<T>(
        &mut self,
        lock: TotalsLock,
        mut f: impl FnMut(&mut PgTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            match self.attempt(lock, &mut f) {
                Ok(v) => return Ok(v),
                Err((e, retry)) if retry => {
                    last = e.to_string();
                    // Back off a little, more each time, so the writers spread out.
                    std::thread::sleep(Duration::from_millis(u64::from(attempt) * 5));
                }
                Err((e, _)) => return Err(e),
            }
        }
        Err(StoreError::Busy {
            attempts: MAX_ATTEMPTS,
            last,
        })
    }

    /// One attempt: the error, and whether running again may succeed.
    fn attempt<T>(
        &mut self,
        lock: TotalsLock,
        f: &mut impl FnMut(&mut PgTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, (StoreError, bool)> {
        let plain = |e: StoreError| {
            let retry = is_contention(&e);
            (e, retry)
        };
        self.ensure_connected().map_err(|e| (e, false))?;
        let tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .map_err(|e| plain(e.into()))?;
        let mut t = PgTx::start(tx, &self.stmts, lock).map_err(plain)?;
        let out = f(&mut t);
        // A failed view query comes first: later errors may only be its consequence.
        if let Some(e) = t.view_error.get_mut().take() {
            return Err(plain(e));
        }
        let out = match out {
            Ok(v) => v,
            Err(e) => {
                let retry = t.raced || is_contention(&e);
                return Err((e, retry));
            }
        };
        if let Err(e) = t.finish() {
            let retry = t.raced || is_contention(&e);
            return Err((e, retry));
        }
        t.tx.into_inner().commit().map_err(|e| plain(e.into()))?;
        Ok(out)
    }
}

impl Store for PostgresStore {
    fn create_account(&mut self, new: &NewAccount, now_ms: u64) -> Result<(), StoreError> {
        self.write(TotalsLock::Share, |t| {
            let n = t.tx.get_mut().execute(
                "INSERT INTO accounts (id, kind, public_key, credit_limit_minor, low_water_minor, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                &[
                    &new.id.as_str(),
                    &kind_str(new.kind),
                    &new.key.0.as_slice(),
                    &new.credit_limit_minor,
                    &new.low_water_minor,
                    &ms(now_ms),
                ],
            )?;
            if n == 0 {
                return Err(StoreError::AccountExists(new.id.clone()));
            }
            t.journal.push(key_entry(&new.id, &new.key, now_ms));
            Ok(())
        })
    }

    fn change_account(
        &mut self,
        id: &AccountId,
        change: &AccountChange,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(TotalsLock::Share, |t| {
            let c = t.tx.get_mut();
            let i = id.as_str();
            let n = match change {
                AccountChange::Freeze => {
                    c.execute("UPDATE accounts SET frozen = TRUE WHERE id = $1", &[&i])?
                }
                AccountChange::Unfreeze => {
                    c.execute("UPDATE accounts SET frozen = FALSE WHERE id = $1", &[&i])?
                }
                AccountChange::RevokeKey => c.execute(
                    "UPDATE accounts SET key_revoked = TRUE WHERE id = $1",
                    &[&i],
                )?,
                AccountChange::SetKey(k) => c.execute(
                    "UPDATE accounts SET public_key = $2, key_revoked = FALSE WHERE id = $1",
                    &[&i, &k.0.as_slice()],
                )?,
                AccountChange::SetCreditLimit(l) => c.execute(
                    "UPDATE accounts SET credit_limit_minor = $2 WHERE id = $1",
                    &[&i, l],
                )?,
                AccountChange::SetLowWater(l) => c.execute(
                    "UPDATE accounts SET low_water_minor = $2 WHERE id = $1",
                    &[&i, l],
                )?,
            };
            if n == 0 {
                return Err(StoreError::NoSuchAccount(id.clone()));
            }
            if let AccountChange::SetKey(k) = change {
                t.journal.push(key_entry(id, k, now_ms));
            }
            Ok(())
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
        self.write(TotalsLock::Update, |t| {
            // The totals row is locked: another server's transfer with this key has
            // committed or not started.
            if let Some(key) = idempotency_key
                && let Some(r) = t.tx.get_mut().query_opt(
                    "SELECT request, balance_minor FROM idempotency WHERE key = $1",
                    &[&key],
                )?
            {
                let (req, bal): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
                return if req == request {
                    Ok(bal)
                } else {
                    Err(StoreError::IdempotencyConflict(key.to_string()))
                };
            }
            let before = t.touch(id)?;
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
            t.add(id, delta)?;
            let tx = t.tx.get_mut();
            match kind {
                Transfer::Deposit => tx.execute(
                    "UPDATE totals SET deposits_minor = deposits_minor + $1 WHERE id = 1",
                    &[&amount.signed()],
                )?,
                Transfer::Payout => tx.execute(
                    "UPDATE totals SET payouts_minor = payouts_minor + $1 WHERE id = 1",
                    &[&amount.signed()],
                )?,
            };
            let after = before + delta;
            if let Some(key) = idempotency_key {
                tx.execute(
                    "INSERT INTO idempotency (key, request, balance_minor) VALUES ($1, $2, $3)",
                    &[&key, &request, &after],
                )?;
            }
            let (debit, credit) = match kind {
                Transfer::Deposit => (None, Some(id.clone())),
                Transfer::Payout => (Some(id.clone()), None),
            };
            t.journal.push(PendingEntry {
                kind: kind_s,
                debit,
                credit,
                amount,
                epoid: None,
                memo: String::new(),
                at_ms: now_ms,
            });
            Ok(after)
        })
    }

    fn account(&mut self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        read_account(self.client()?, id)
    }

    fn outcome(&mut self, epoid: &EpoId) -> Result<Option<StoredOutcome>, StoreError> {
        read_outcome(self.client()?, epoid)
    }

    fn history(
        &mut self,
        id: &AccountId,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<HistoryLine>, StoreError> {
        let rows = self.client()?.query(
            "SELECT epoid, result, customer, merchant, description, price_minor, decided_ms
             FROM outcomes
             WHERE (customer = $1 OR merchant = $1) AND decided_ms >= $2 AND decided_ms < $3
             ORDER BY decided_ms DESC, epoid DESC LIMIT $4",
            &[
                &id.as_str(),
                &ms(from_ms),
                &ms(to_ms),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )?;
        rows.iter()
            .map(|r| {
                Ok(HistoryLine {
                    epoid: r
                        .try_get::<_, &str>(0)?
                        .parse()
                        .map_err(|_| corrupt("epoid"))?,
                    result: parse_result(r.try_get(1)?)?,
                    customer: r
                        .try_get::<_, Option<String>>(2)?
                        .map(account_id)
                        .transpose()?,
                    merchant: account_id(r.try_get(3)?)?,
                    description: r.try_get(4)?,
                    price: Amount::from_minor(nonneg(r.try_get(5)?, "price")?)
                        .map_err(|_| corrupt("price"))?,
                    decided_ms: nonneg(r.try_get(6)?, "time")?,
                })
            })
            .collect()
    }

    fn journal(&mut self, after: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let rows = self.client()?.query(
            "SELECT seq, kind, debit, credit, amount_minor, epoid, at_ms, hash, memo FROM journal
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&ms(after), &i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        rows.iter()
            .map(|r| {
                Ok(JournalEntry {
                    seq: nonneg(r.try_get(0)?, "journal seq")?,
                    kind: r.try_get(1)?,
                    debit: r
                        .try_get::<_, Option<String>>(2)?
                        .map(account_id)
                        .transpose()?,
                    credit: r
                        .try_get::<_, Option<String>>(3)?
                        .map(account_id)
                        .transpose()?,
                    amount: Amount::from_minor(nonneg(r.try_get(4)?, "amount")?)
                        .map_err(|_| corrupt("amount"))?,
                    epoid: r
                        .try_get::<_, Option<&str>>(5)?
                        .map(|e| e.parse().map_err(|_| corrupt("epoid")))
                        .transpose()?,
                    at_ms: nonneg(r.try_get(6)?, "time")?,
                    hash: hex::encode(r.try_get::<_, Vec<u8>>(7)?),
                    memo: r.try_get(8)?,
                })
            })
            .collect()
    }

    fn batch(
        &mut self,
        f: &mut dyn FnMut(&mut dyn LedgerTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.write(TotalsLock::Share, |t| f(t))
    }

    fn totals(&mut self) -> Result<Totals, StoreError> {
        // One snapshot for every figure, whatever other servers commit meanwhile.
        let mut tx = self
            .client()?
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let r = tx.query_one(
            "SELECT COALESCE(SUM(balance_minor), 0)::BIGINT, COUNT(*) FROM accounts",
            &[],
        )?;
        let (balances, accounts): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
        let outcomes: i64 = tx
            .query_one("SELECT COUNT(*) FROM outcomes", &[])?
            .try_get(0)?;
        let (deposits, payouts) = totals_row(&mut tx, "")?;
        tx.commit()?;
        Ok(Totals {
            balances_minor: balances,
            deposits_minor: deposits,
            payouts_minor: payouts,
            accounts: nonneg(accounts, "count")?,
            outcomes: nonneg(outcomes, "count")?,
        })
    }

    fn endorsement(&mut self, epoid: &EpoId) -> Result<Option<Signed<Endorsement>>, StoreError> {
        records::endorsement(self.client()?, epoid)
    }

    fn purchases(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PurchaseRecord>, StoreError> {
        records::purchases(self.client()?, after, limit)
    }

    fn accounts(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        records::accounts(self.client()?, after, limit)
    }

    fn refund(
        &mut self,
        request: &Signed<RefundRequest>,
        request_digest: Digest,
        sign: &mut dyn FnMut(Amount, Amount) -> Signed<RefundReceipt>,
        now_ms: u64,
    ) -> Result<Signed<RefundReceipt>, StoreError> {
        self.write(TotalsLock::Share, |t| {
            records::refund(t, request, request_digest, sign, now_ms)
        })
    }

    fn refunds(
        &mut self,
        filter: RefundFilter<'_>,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        records::refunds(self.client()?, filter, limit)
    }

    fn add_checkpoint(&mut self, c: &Signed<Checkpoint>) -> Result<bool, StoreError> {
        records::add_checkpoint(self.client()?, c)
    }

    fn checkpoints(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Signed<Checkpoint>>, StoreError> {
        records::checkpoints(self.client()?, after, limit)
    }

    fn adjust(&mut self, adjustments: &[Adjustment], now_ms: u64) -> Result<(), StoreError> {
        crate::check_adjustments(adjustments)?;
        self.write(TotalsLock::Update, |t| {
            records::adjust(t, adjustments, now_ms)
        })
    }
}

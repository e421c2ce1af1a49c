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
use netbill_proto::crypto::{Digest, PublicKey, Signature};
use netbill_proto::messages::{
    Checkpoint, Endorsement, Receipt, RefundReceipt, RefundRequest, ResultCode,
};
use netbill_proto::{AccountId, Amount, EpoId, Signed};
use postgres::error::SqlState;
use postgres::{Client, GenericClient, IsolationLevel, NoTls, Row, Transaction};

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

fn account_from_row(id: &AccountId, r: &Row) -> Result<AccountRecord, StoreError> {
    let key: Vec<u8> = r.try_get(1)?;
    Ok(AccountRecord {
        id: id.clone(),
        kind: parse_kind(r.try_get::<_, &str>(0)?)?,
        key: PublicKey(key.try_into().map_err(|_| corrupt("key length"))?),
        key_revoked: r.try_get(2)?,
        frozen: r.try_get(3)?,
        balance_minor: r.try_get(4)?,
        credit_limit_minor: r.try_get(5)?,
        low_water_minor: r.try_get(6)?,
    })
}

fn read_account(
    c: &mut impl GenericClient,
    id: &AccountId,
    lock: bool,
) -> Result<Option<AccountRecord>, StoreError> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    c.query_opt(&sql, &[&id.as_str()])?
        .map(|r| account_from_row(id, &r))
        .transpose()
}

fn read_outcome(
    c: &mut impl GenericClient,
    epoid: &EpoId,
) -> Result<Option<StoredOutcome>, StoreError> {
    let Some(r) = c.query_opt(
        "SELECT endorsement_digest, receipt, receipt_sig, customer FROM outcomes WHERE epoid = $1",
        &[&epoid.to_string()],
    )?
    else {
        return Ok(None);
    };
    let digest: Option<Vec<u8>> = r.try_get(0)?;
    let receipt: Vec<u8> = r.try_get(1)?;
    let sig: Vec<u8> = r.try_get(2)?;
    let customer: Option<String> = r.try_get(3)?;
    let sig = Signature(
        sig.try_into()
            .map_err(|_| corrupt("receipt signature length"))?,
    );
    Ok(Some(StoredOutcome {
        customer: customer.map(account_id).transpose()?,
        endorsement_digest: digest
            .map(|d| {
                d.try_into()
                    .map(Digest)
                    .map_err(|_| corrupt("digest length"))
            })
            .transpose()?,
        receipt: Signed::from_parts(receipt, sig).map_err(|e| corrupt(e.to_string()))?,
    }))
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

/// One write transaction in progress.
struct PgTx<'a> {
    tx: RefCell<Transaction<'a>>,
    /// Balances of the accounts touched, as they were before (locked since).
    before: HashMap<AccountId, i64>,
    totals_before: (i64, i64),
    /// Accounts locked so far.
    locked: RefCell<HashSet<AccountId>>,
    /// EPOIDs this transaction saw without an outcome.
    absent: RefCell<HashSet<EpoId>>,
    /// Another server decided an EPOID this batch saw undecided: run it again.
    raced: bool,
    journal: Vec<PendingEntry>,
    /// The first database error met in a [`LedgerView`] query (which cannot return errors).
    view_error: RefCell<Option<StoreError>>,
    /// Check conservation over all accounts at commit, not only this transaction's change
    /// (for adjustments, which may restore it).
    check_all: bool,
}

impl<'a> PgTx<'a> {
    fn start(mut tx: Transaction<'a>, lock: TotalsLock) -> Result<Self, StoreError> {
        let totals_before = totals_row(
            &mut tx,
            match lock {
                TotalsLock::Share => "FOR SHARE",
                TotalsLock::Update => "FOR UPDATE",
            },
        )?;
        Ok(Self {
            tx: RefCell::new(tx),
            before: HashMap::new(),
            totals_before,
            locked: RefCell::default(),
            absent: RefCell::default(),
            raced: false,
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

    /// Locks `id`'s row and remembers its balance before this transaction changes it.
    fn touch(&mut self, id: &AccountId) -> Result<i64, StoreError> {
        if let Some(b) = self.before.get(id) {
            return Ok(*b);
        }
        let b: i64 = self
            .tx
            .get_mut()
            .query_opt(
                "SELECT balance_minor FROM accounts WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )?
            .ok_or_else(|| StoreError::NoSuchAccount(id.clone()))?
            .try_get(0)?;
        self.locked.get_mut().insert(id.clone());
        self.before.insert(id.clone(), b);
        Ok(b)
    }

    /// Writes the pending journal entries after the chain's head, under its lock.
    fn flush_journal(&mut self) -> Result<(), StoreError> {
        if self.journal.is_empty() {
            return Ok(());
        }
        let tx = self.tx.get_mut();
        let head = tx.query_one(
            "SELECT seq, hash FROM journal_head WHERE id = 1 FOR UPDATE",
            &[],
        )?;
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
            "INSERT INTO journal (seq, kind, debit, credit, amount_minor, epoid, at_ms, hash, memo)
             SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[],
                                  $5::BIGINT[], $6::TEXT[], $7::BIGINT[], $8::BYTEA[], $9::TEXT[])",
            &[
                &seqs, &kinds, &debits, &credits, &amounts, &epoids, &ats, &hashes, &memos,
            ],
        )?;
        tx.execute(
            "UPDATE journal_head SET seq = $1, hash = $2 WHERE id = 1",
            &[&ms(seq), &prev],
        )?;
        self.journal.clear();
        Ok(())
    }

    /// Conservation for this transaction: the balances it touched changed by exactly what
    /// the totals changed by, read back from the database.
    fn check(&mut self) -> Result<(), StoreError> {
        if self.check_all {
            return records::check_all(self.tx.get_mut());
        }
        let tx = self.tx.get_mut();
        let ids: Vec<&str> = self.before.keys().map(|a| a.as_str()).collect();
        let mut delta: i128 = 0;
        if !ids.is_empty() {
            let rows = tx.query(
                "SELECT id, balance_minor FROM accounts WHERE id = ANY($1)",
                &[&ids],
            )?;
            if rows.len() != ids.len() {
                return Err(corrupt("an account touched by this transaction vanished"));
            }
            for r in rows {
                let id = account_id(r.try_get(0)?)?;
                let now: i64 = r.try_get(1)?;
                let before = self
                    .before
                    .get(&id)
                    .ok_or_else(|| corrupt(format!("unexpected account {id}")))?;
                delta += i128::from(now) - i128::from(*before);
            }
        }
        let (d, p) = totals_row(tx, "")?;
        let expected = i128::from(d)
            - i128::from(self.totals_before.0)
            - (i128::from(p) - i128::from(self.totals_before.1));
        if delta != expected {
            return Err(StoreError::ConservationViolated {
                balances_minor: delta,
                expected_minor: expected,
            });
        }
        Ok(())
    }

    /// Inserts an outcome; `OutcomeExists` if the EPOID has one (and notes a race if this
    /// transaction had seen it undecided).
    fn insert_outcome(
        &mut self,
        epoid: &EpoId,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<(), StoreError> {
        let n = self.tx.get_mut().execute(
            "INSERT INTO outcomes (epoid, result, customer, merchant, description,
               price_minor, endorsement_digest, endorsement, receipt, receipt_sig, decided_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (epoid) DO NOTHING",
            params,
        )?;
        if n != 1 {
            if self.absent.get_mut().contains(epoid) {
                self.raced = true;
            }
            return Err(StoreError::OutcomeExists(epoid.clone()));
        }
        Ok(())
    }
}

impl LedgerView for PgTx<'_> {
    fn account(&self, id: &AccountId) -> Option<AccountView> {
        let r = read_account(&mut *self.tx.borrow_mut(), id, true);
        if matches!(r, Ok(Some(_))) {
            self.locked.borrow_mut().insert(id.clone());
        }
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
        let r = read_outcome(&mut *self.tx.borrow_mut(), epoid);
        if matches!(r, Ok(None)) {
            self.absent.borrow_mut().insert(epoid.clone());
        }
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
        let endorsement_json = serde_json::to_string(&v.endorsement).unwrap_or_default();
        self.insert_outcome(
            &epo.epoid,
            &[
                &epo.epoid.to_string(),
                &result_str(r.result),
                &v.secret.account.as_str(),
                &epo.merchant.as_str(),
                &epo.description,
                &epo.price.signed(),
                &v.endorsement_digest.0.as_slice(),
                &endorsement_json,
                &receipt.bytes(),
                &receipt.signature().0.as_slice(),
                &ms(r.time_ms),
            ],
        )?;
        if r.result == ResultCode::Committed {
            let customer = &v.secret.account;
            self.touch(customer)?;
            self.touch(&epo.merchant)?;
            let price = epo.price.signed();
            let tx = self.tx.get_mut();
            let debited = tx.execute(
                "UPDATE accounts SET balance_minor = balance_minor - $2
                 WHERE id = $1 AND balance_minor - $2 >= -credit_limit_minor",
                &[&customer.as_str(), &price],
            )?;
            let credited = tx.execute(
                "UPDATE accounts SET balance_minor = balance_minor + $2 WHERE id = $1",
                &[&epo.merchant.as_str(), &price],
            )?;
            if debited != 1 || credited != 1 {
                return Err(corrupt(format!(
                    "purchase {} could not move money",
                    epo.epoid
                )));
            }
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
        let none: Option<&str> = None;
        let no_bytes: Option<&[u8]> = None;
        self.insert_outcome(
            epoid,
            &[
                &epoid.to_string(),
                &"aborted",
                &none,
                &epoid.merchant.as_str(),
                &"",
                &0i64,
                &no_bytes,
                &none,
                &receipt.bytes(),
                &receipt.signature().0.as_slice(),
                &ms(receipt.body_unverified().time_ms),
            ],
        )
    }

    fn lock_accounts(&mut self, ids: &[AccountId]) -> Result<(), StoreError> {
        let locked = self.locked.get_mut();
        let mut want: Vec<&str> = ids
            .iter()
            .filter(|id| !locked.contains(*id))
            .map(|id| id.as_str())
            .collect();
        want.sort_unstable();
        want.dedup();
        if want.is_empty() {
            return Ok(());
        }
        let rows = self.tx.get_mut().query(
            "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&want],
        )?;
        for r in rows {
            locked.insert(account_id(r.try_get(0)?)?);
        }
        Ok(())
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`) and
    /// applies any schema migrations it lacks. Refuses a database whose schema is newer.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut client = connect(url)?;
        migrate(&mut client)?;
        Ok(Self {
            client,
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

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.is_closed() {
            self.client = connect(&self.url)?;
        }
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
        let tx = self
            .client()
            .map_err(|e| (e, false))?
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .map_err(|e| plain(e.into()))?;
        let mut t = PgTx::start(tx, lock).map_err(plain)?;
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
        t.flush_journal().map_err(plain)?;
        t.check().map_err(plain)?;
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
            let tx = t.tx.get_mut();
            tx.execute(
                "UPDATE accounts SET balance_minor = balance_minor + $2 WHERE id = $1",
                &[&id.as_str(), &delta],
            )?;
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
        read_account(self.client()?, id, false)
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

    fn check_conservation(&mut self) -> Result<Totals, StoreError> {
        let t = self.totals()?;
        if i128::from(t.balances_minor)
            != i128::from(t.deposits_minor) - i128::from(t.payouts_minor)
        {
            return Err(StoreError::ConservationViolated {
                balances_minor: t.balances_minor.into(),
                expected_minor: i128::from(t.deposits_minor) - i128::from(t.payouts_minor),
            });
        }
        Ok(t)
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

    fn checkpoint(
        &mut self,
        sign: &mut dyn FnMut(Checkpoint) -> Option<Signed<Checkpoint>>,
        now_ms: u64,
    ) -> Result<Option<Signed<Checkpoint>>, StoreError> {
        self.write(TotalsLock::Share, |t| records::checkpoint(t, sign, now_ms))
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

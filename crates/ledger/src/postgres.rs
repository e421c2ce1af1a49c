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

use std::time::Duration;

use netbill_proto::billing::{AccountKind, RefundFacts, StoredOutcome};
use netbill_proto::crypto::PublicKey;
use netbill_proto::messages::{Checkpoint, Endorsement};
use netbill_proto::{AccountId, Amount, EpoId, Signed};
use postgres::error::SqlState;
use postgres::{Client, GenericClient, IsolationLevel, NoTls, Row, Statement, Transaction};

use crate::rules::{Backend, Ledger, OutcomeRow, RefundRow, Rows, StoredRefund, TotalsLock};
use crate::sqlite::{account_id, corrupt, kind_str, parse_result, result_str};
use crate::{
    AccountRecord, HistoryLine, JournalEntry, NewAccount, PurchaseRecord, RefundFilter,
    RefundRecord, StoreError, Totals,
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

/// The PostgreSQL backend. Reconnects on the next call if the connection was lost.
pub struct PostgresBackend {
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

/// The ledger on PostgreSQL: the rules of [`crate::rules`] over [`PostgresBackend`]. Several
/// servers may share one database.
pub type PostgresStore = Ledger<PostgresBackend>;

impl Ledger<PostgresBackend> {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`) and
    /// applies any schema migrations it lacks. Refuses a database whose schema is newer.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut client = connect(url)?;
        migrate(&mut client)?;
        let stmts = Stmts::prepare(&mut client)?;
        Ok(Ledger::new(PostgresBackend {
            client,
            stmts,
            url: url.to_string(),
        }))
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .backend_mut()
            .client()?
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
                &[],
            )?
            .try_get(0)?)
    }
}

/// The rows of one PostgreSQL transaction. Every write of the rules layer's batch is one
/// set-based statement whatever the number of purchases: one `INSERT … SELECT FROM unnest(…)`
/// for the outcomes, one `UPDATE … FROM unnest(…)` with each account's net change, one for
/// the journal. Accounts are locked `FOR UPDATE` in id order, the journal head last.
struct PgRows<'a> {
    tx: Transaction<'a>,
    st: &'a Stmts,
}

impl Rows for PgRows<'_> {
    fn totals(&mut self) -> Result<(i64, i64), StoreError> {
        let r = self.tx.query_one(&self.st.totals, &[])?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }

    fn add_totals(&mut self, deposits_minor: i64, payouts_minor: i64) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE totals SET deposits_minor = deposits_minor + $1,
               payouts_minor = payouts_minor + $2 WHERE id = 1",
            &[&deposits_minor, &payouts_minor],
        )?;
        Ok(())
    }

    fn lock_accounts(&mut self, ids: &[&str]) -> Result<Vec<AccountRecord>, StoreError> {
        let rows = match ids {
            [one] => self.tx.query(&self.st.lock_account, &[one])?,
            _ => self.tx.query(&self.st.lock_accounts, &[&ids])?,
        };
        rows.iter()
            .map(|r| account_from_row_at(&account_id(r.try_get(0)?)?, r, 1))
            .collect()
    }

    fn insert_account(&mut self, new: &NewAccount, now_ms: u64) -> Result<bool, StoreError> {
        let n = self.tx.execute(
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
        Ok(n == 1)
    }

    fn update_account(&mut self, a: &AccountRecord) -> Result<(), StoreError> {
        let n = self.tx.execute(
            "UPDATE accounts SET public_key = $2, key_revoked = $3, frozen = $4,
               credit_limit_minor = $5, low_water_minor = $6 WHERE id = $1",
            &[
                &a.id.as_str(),
                &a.key.0.as_slice(),
                &a.key_revoked,
                &a.frozen,
                &a.credit_limit_minor,
                &a.low_water_minor,
            ],
        )?;
        if n != 1 {
            return Err(StoreError::NoSuchAccount(a.id.clone()));
        }
        Ok(())
    }

    fn apply_deltas(
        &mut self,
        deltas: &[(&str, i64)],
    ) -> Result<Vec<(AccountId, i64)>, StoreError> {
        let (ids, amounts): (Vec<&str>, Vec<i64>) = deltas.iter().copied().unzip();
        let rows = self.tx.query(&self.st.apply_deltas, &[&ids, &amounts])?;
        rows.iter()
            .map(|r| Ok((account_id(r.try_get(0)?)?, r.try_get(1)?)))
            .collect()
    }

    fn outcomes(&mut self, epoids: &[&EpoId]) -> Result<Vec<(EpoId, StoredOutcome)>, StoreError> {
        let want: Vec<String> = epoids.iter().map(|e| e.to_string()).collect();
        let rows = self.tx.query(&self.st.outcomes, &[&want])?;
        rows.iter()
            .map(|r| {
                let epoid: EpoId = r
                    .try_get::<_, &str>(0)?
                    .parse()
                    .map_err(|_| corrupt("epoid"))?;
                Ok((epoid, outcome_from_row_at(r, 1)?))
            })
            .collect()
    }

    fn insert_outcomes(&mut self, p: &[OutcomeRow]) -> Result<Vec<EpoId>, StoreError> {
        let epoids: Vec<String> = p.iter().map(|o| o.epoid.to_string()).collect();
        let results: Vec<&str> = p.iter().map(|o| result_str(o.result)).collect();
        let customers: Vec<Option<&str>> = p
            .iter()
            .map(|o| o.customer.as_ref().map(|c| c.as_str()))
            .collect();
        let merchants: Vec<&str> = p.iter().map(|o| o.merchant.as_str()).collect();
        let descriptions: Vec<&str> = p.iter().map(|o| o.description.as_str()).collect();
        let prices: Vec<i64> = p.iter().map(|o| o.price.signed()).collect();
        let digests: Vec<Option<&[u8]>> = p
            .iter()
            .map(|o| o.endorsement_digest.as_ref().map(|d| d.0.as_slice()))
            .collect();
        let endorsements: Vec<Option<&str>> = p.iter().map(|o| o.endorsement.as_deref()).collect();
        let receipts: Vec<&[u8]> = p.iter().map(|o| o.receipt.bytes()).collect();
        let sigs: Vec<Vec<u8>> = p.iter().map(|o| o.receipt.form().to_bytes()).collect();
        let times: Vec<i64> = p.iter().map(|o| ms(o.decided_ms)).collect();
        let rows = self.tx.query(
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
        rows.iter()
            .map(|r| {
                r.try_get::<_, &str>(0)?
                    .parse()
                    .map_err(|_| corrupt("epoid"))
            })
            .collect()
    }

    fn journal_head(&mut self) -> Result<(u64, Vec<u8>), StoreError> {
        let head = self.tx.query_one(&self.st.journal_head, &[])?;
        Ok((nonneg(head.try_get(0)?, "journal seq")?, head.try_get(1)?))
    }

    fn append_journal(&mut self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        let Some(last) = entries.last() else {
            return Ok(());
        };
        let seqs: Vec<i64> = entries.iter().map(|e| ms(e.seq)).collect();
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        let debits: Vec<Option<&str>> = entries
            .iter()
            .map(|e| e.debit.as_ref().map(|a| a.as_str()))
            .collect();
        let credits: Vec<Option<&str>> = entries
            .iter()
            .map(|e| e.credit.as_ref().map(|a| a.as_str()))
            .collect();
        let amounts: Vec<i64> = entries.iter().map(|e| e.amount.signed()).collect();
        let epoids: Vec<Option<String>> = entries
            .iter()
            .map(|e| e.epoid.as_ref().map(|x| x.to_string()))
            .collect();
        let ats: Vec<i64> = entries.iter().map(|e| ms(e.at_ms)).collect();
        let hashes: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| hex::decode(&e.hash).map_err(|_| corrupt("journal hash")))
            .collect::<Result<_, _>>()?;
        let memos: Vec<&str> = entries.iter().map(|e| e.memo.as_str()).collect();
        let head = hashes.last().cloned().unwrap_or_default();
        self.tx.execute(
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
                &ms(last.seq),
                &head,
                &memos,
            ],
        )?;
        Ok(())
    }

    fn idempotency(&mut self, key: &str) -> Result<Option<(String, i64)>, StoreError> {
        self.tx
            .query_opt(
                "SELECT request, balance_minor FROM idempotency WHERE key = $1",
                &[&key],
            )?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
    }

    fn insert_idempotency(
        &mut self,
        key: &str,
        request: &str,
        balance_minor: i64,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO idempotency (key, request, balance_minor) VALUES ($1, $2, $3)",
            &[&key, &request, &balance_minor],
        )?;
        Ok(())
    }

    fn refund_facts(&mut self, epoid: &EpoId) -> Result<Option<RefundFacts>, StoreError> {
        records::refund_facts(&mut self.tx, epoid)
    }

    fn refund_by_id(&mut self, refund_id: &str) -> Result<Option<StoredRefund>, StoreError> {
        records::refund_by_id(&mut self.tx, refund_id)
    }

    fn insert_refund(&mut self, row: &RefundRow) -> Result<bool, StoreError> {
        records::insert_refund(&mut self.tx, row)
    }

    fn balances_sum(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .tx
            .query_one(
                "SELECT COALESCE(SUM(balance_minor), 0)::BIGINT FROM accounts",
                &[],
            )?
            .try_get(0)?)
    }
}

impl PostgresBackend {
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

    /// One attempt: the error, and whether running again may succeed.
    fn attempt(
        &mut self,
        lock: TotalsLock,
        f: &mut dyn FnMut(&mut dyn Rows) -> Result<(), StoreError>,
    ) -> Result<(), (StoreError, bool)> {
        let retry = |e: StoreError| {
            let again = is_contention(&e) || matches!(e, StoreError::Raced(_));
            (e, again)
        };
        self.ensure_connected().map_err(|e| (e, false))?;
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .map_err(|e| retry(e.into()))?;
        // The totals row first, in every transaction: purchases share it (the totals may not
        // change under their conservation check), transfers and adjustments take it alone.
        tx.query_one(
            match lock {
                TotalsLock::Share => &self.stmts.totals_share,
                TotalsLock::Update => &self.stmts.totals_update,
            },
            &[],
        )
        .map_err(|e| retry(e.into()))?;
        let mut rows = PgRows {
            tx,
            st: &self.stmts,
        };
        f(&mut rows).map_err(retry)?;
        rows.tx.commit().map_err(|e| retry(e.into()))?;
        Ok(())
    }
}

impl Backend for PostgresBackend {
    /// Runs `f` in one transaction (locking totals first) and commits; runs it again on
    /// contention, at most [`MAX_ATTEMPTS`] times.
    fn transaction(
        &mut self,
        lock: TotalsLock,
        f: &mut dyn FnMut(&mut dyn Rows) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            match self.attempt(lock, f) {
                Ok(()) => return Ok(()),
                Err((e, true)) => {
                    last = e.to_string();
                    // Back off a little, more each time, so the writers spread out.
                    std::thread::sleep(Duration::from_millis(u64::from(attempt) * 5));
                }
                Err((e, false)) => return Err(e),
            }
        }
        Err(StoreError::Busy {
            attempts: MAX_ATTEMPTS,
            last,
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
}

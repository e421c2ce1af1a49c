//! The embedded store: one SQLite file, WAL mode, `synchronous=FULL` (a commit is on disk
//! before it returns).

use std::path::Path;

use netbill_proto::billing::{AccountKind, RefundFacts, StoredOutcome};
use netbill_proto::crypto::{Digest, PublicKey};
use netbill_proto::messages::{Checkpoint, Endorsement, ResultCode};
use netbill_proto::signed::SignatureForm;
use netbill_proto::{AccountId, Amount, EpoId, Signed};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::rules::{Backend, Ledger, OutcomeRow, RefundRow, Rows, StoredRefund, TotalsLock};
use crate::{
    AccountRecord, HistoryLine, JournalEntry, NewAccount, PurchaseRecord, RefundFilter,
    RefundRecord, StoreError, Totals,
};

/// The newest schema version this build knows.
const SCHEMA_VERSION: i64 = 2;

/// The schema migrations, in order; each runs once, in one transaction with the version it
/// records.
const MIGRATIONS: &[(i64, &str)] = &[(1, SCHEMA_V1), (2, SCHEMA_V2)];

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('customer', 'merchant')),
    public_key BLOB NOT NULL CHECK (length(public_key) = 32),
    key_revoked INTEGER NOT NULL DEFAULT 0,
    frozen INTEGER NOT NULL DEFAULT 0,
    balance_minor INTEGER NOT NULL DEFAULT 0,
    credit_limit_minor INTEGER NOT NULL DEFAULT 0 CHECK (credit_limit_minor >= 0),
    low_water_minor INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    deposits_minor INTEGER NOT NULL,
    payouts_minor INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals (id, deposits_minor, payouts_minor) VALUES (1, 0, 0);
CREATE TABLE IF NOT EXISTS outcomes (
    epoid TEXT PRIMARY KEY,
    result TEXT NOT NULL,
    customer TEXT,
    merchant TEXT NOT NULL,
    description TEXT NOT NULL,
    price_minor INTEGER NOT NULL,
    endorsement_digest BLOB,
    endorsement TEXT,
    receipt BLOB NOT NULL,
    receipt_sig BLOB NOT NULL,
    decided_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_by_customer ON outcomes (customer, decided_ms);
CREATE INDEX IF NOT EXISTS outcomes_by_merchant ON outcomes (merchant, decided_ms);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    debit TEXT,
    credit TEXT,
    amount_minor INTEGER NOT NULL,
    epoid TEXT,
    at_ms INTEGER NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    balance_minor INTEGER NOT NULL
);
";

/// Version 2: refunds, signed checkpoints, and a memo in journal entries.
const SCHEMA_V2: &str = "
ALTER TABLE journal ADD COLUMN memo TEXT NOT NULL DEFAULT '';
CREATE TABLE refunds (
    refund_id TEXT PRIMARY KEY,
    epoid TEXT NOT NULL,
    merchant TEXT NOT NULL,
    customer TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    request BLOB NOT NULL,
    request_sig BLOB NOT NULL,
    request_digest BLOB NOT NULL,
    receipt BLOB NOT NULL,
    receipt_sig BLOB NOT NULL,
    decided_ms INTEGER NOT NULL
);
CREATE INDEX refunds_by_epoid ON refunds (epoid);
CREATE INDEX refunds_by_customer ON refunds (customer, decided_ms);
CREATE INDEX refunds_by_merchant ON refunds (merchant, decided_ms);
CREATE TABLE checkpoints (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    sig BLOB NOT NULL
);
";

pub(crate) fn kind_str(k: AccountKind) -> &'static str {
    match k {
        AccountKind::Customer => "customer",
        AccountKind::Merchant => "merchant",
    }
}

pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

/// The snake_case name of a result code, as in JSON.
pub(crate) fn result_str(r: ResultCode) -> &'static str {
    match r {
        ResultCode::Committed => "committed",
        ResultCode::InsufficientFunds => "insufficient_funds",
        ResultCode::Expired => "expired",
        ResultCode::Aborted => "aborted",
        ResultCode::KeyRevoked => "key_revoked",
        ResultCode::AccountFrozen => "account_frozen",
        ResultCode::UnknownAccount => "unknown_account",
        ResultCode::Refused => "refused",
    }
}

pub(crate) fn parse_result(s: &str) -> Result<ResultCode, StoreError> {
    [
        ResultCode::Committed,
        ResultCode::InsufficientFunds,
        ResultCode::Expired,
        ResultCode::Aborted,
        ResultCode::KeyRevoked,
        ResultCode::AccountFrozen,
        ResultCode::UnknownAccount,
        ResultCode::Refused,
    ]
    .into_iter()
    .find(|r| result_str(*r) == s)
    .ok_or_else(|| corrupt(format!("unknown result {s:?}")))
}

pub(crate) fn account_id(s: String) -> Result<AccountId, StoreError> {
    AccountId::new(&s).map_err(|e| corrupt(e.to_string()))
}

fn read_account(conn: &Connection, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT kind, public_key, key_revoked, frozen, balance_minor, credit_limit_minor, low_water_minor
         FROM accounts WHERE id = ?1",
    )?
    .query_row([id.as_str()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, i64>(6)?,
        ))
    })
    .optional()?
    .map(|(kind, key, key_revoked, frozen, balance, credit, low)| {
        Ok(AccountRecord {
            id: id.clone(),
            kind: match kind.as_str() {
                "customer" => AccountKind::Customer,
                "merchant" => AccountKind::Merchant,
                other => return Err(corrupt(format!("account kind {other:?}"))),
            },
            key: PublicKey(key.try_into().map_err(|_| corrupt("key length"))?),
            key_revoked,
            frozen,
            balance_minor: balance,
            credit_limit_minor: credit,
            low_water_minor: low,
        })
    })
    .transpose()
}

fn read_outcome(conn: &Connection, epoid: &EpoId) -> Result<Option<StoredOutcome>, StoreError> {
    conn.prepare_cached(
        "SELECT endorsement_digest, receipt, receipt_sig, customer FROM outcomes WHERE epoid = ?1",
    )?
    .query_row([epoid.to_string()], |r| {
        Ok((
            r.get::<_, Option<Vec<u8>>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })
    .optional()?
    .map(|(digest, receipt, sig, customer)| stored_outcome(digest, receipt, sig, customer))
    .transpose()
}

/// An outcome from its stored columns: endorsement digest, receipt, its signature, customer.
pub(crate) fn stored_outcome(
    digest: Option<Vec<u8>>,
    receipt: Vec<u8>,
    sig: Vec<u8>,
    customer: Option<String>,
) -> Result<StoredOutcome, StoreError> {
    Ok(StoredOutcome {
        customer: customer.map(account_id).transpose()?,
        endorsement_digest: digest
            .map(|d| {
                d.try_into()
                    .map(Digest)
                    .map_err(|_| corrupt("digest length"))
            })
            .transpose()?,
        receipt: signed_from(receipt, sig)?,
    })
}

fn totals_row(conn: &Connection) -> Result<(i64, i64), StoreError> {
    Ok(conn
        .prepare_cached("SELECT deposits_minor, payouts_minor FROM totals WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// The SQLite backend: one file, one writer (an immediate transaction holds the write lock).
pub struct SqliteBackend {
    conn: Connection,
}

/// The ledger on SQLite: the rules of [`crate::rules`] over [`SqliteBackend`].
pub type SqliteStore = Ledger<SqliteBackend>;

impl Ledger<SqliteBackend> {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Ledger::new(SqliteBackend::init(Connection::open(path)?)?))
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Ok(Ledger::new(SqliteBackend::init(
            Connection::open_in_memory()?,
        )?))
    }
}

impl SqliteBackend {
    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        )?;
        let version: i64 = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [v],
            )?;
        }
        tx.commit()?;
        Ok(Self { conn })
    }
}

/// The rows of one SQLite transaction.
struct SqliteRows<'a> {
    tx: &'a Transaction<'a>,
}

impl Rows for SqliteRows<'_> {
    fn totals(&mut self) -> Result<(i64, i64), StoreError> {
        totals_row(self.tx)
    }

    fn add_totals(&mut self, deposits_minor: i64, payouts_minor: i64) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "UPDATE totals SET deposits_minor = deposits_minor + ?1,
                   payouts_minor = payouts_minor + ?2 WHERE id = 1",
            )?
            .execute(params![deposits_minor, payouts_minor])?;
        Ok(())
    }

    fn lock_accounts(&mut self, ids: &[&str]) -> Result<Vec<AccountRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Ok(id) = AccountId::new(id) else { continue };
            out.extend(read_account(self.tx, &id)?);
        }
        Ok(out)
    }

    fn insert_account(&mut self, new: &NewAccount, now_ms: u64) -> Result<bool, StoreError> {
        let n = self.tx.execute(
            "INSERT OR IGNORE INTO accounts (id, kind, public_key, credit_limit_minor, low_water_minor, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                new.id.as_str(),
                kind_str(new.kind),
                new.key.0.to_vec(),
                new.credit_limit_minor,
                new.low_water_minor,
                now_ms as i64
            ],
        )?;
        Ok(n == 1)
    }

    fn update_account(&mut self, a: &AccountRecord) -> Result<(), StoreError> {
        let n = self.tx.execute(
            "UPDATE accounts SET public_key = ?2, key_revoked = ?3, frozen = ?4,
               credit_limit_minor = ?5, low_water_minor = ?6 WHERE id = ?1",
            params![
                a.id.as_str(),
                a.key.0.to_vec(),
                a.key_revoked,
                a.frozen,
                a.credit_limit_minor,
                a.low_water_minor
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
        let mut stmt = self.tx.prepare_cached(
            "UPDATE accounts SET balance_minor = balance_minor + ?2 WHERE id = ?1
             RETURNING balance_minor",
        )?;
        let mut out = Vec::with_capacity(deltas.len());
        for (id, delta) in deltas {
            let now: Option<i64> = stmt
                .query_row(params![id, delta], |r| r.get(0))
                .optional()?;
            if let Some(now) = now {
                out.push((account_id(id.to_string())?, now));
            }
        }
        Ok(out)
    }

    fn outcomes(&mut self, epoids: &[&EpoId]) -> Result<Vec<(EpoId, StoredOutcome)>, StoreError> {
        let mut out = Vec::new();
        for e in epoids {
            if let Some(o) = read_outcome(self.tx, e)? {
                out.push(((*e).clone(), o));
            }
        }
        Ok(out)
    }

    fn insert_outcomes(&mut self, rows: &[OutcomeRow]) -> Result<Vec<EpoId>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO outcomes (epoid, result, customer, merchant, description,
               price_minor, endorsement_digest, endorsement, receipt, receipt_sig, decided_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut inserted = Vec::with_capacity(rows.len());
        for o in rows {
            let n = stmt.execute(params![
                o.epoid.to_string(),
                result_str(o.result),
                o.customer.as_ref().map(|c| c.as_str()),
                o.merchant.as_str(),
                o.description,
                o.price.signed(),
                o.endorsement_digest.map(|d| d.0.to_vec()),
                o.endorsement,
                o.receipt.bytes(),
                o.receipt.form().to_bytes(),
                o.decided_ms.min(i64::MAX as u64) as i64,
            ])?;
            if n == 1 {
                inserted.push(o.epoid.clone());
            }
        }
        Ok(inserted)
    }

    fn journal_head(&mut self) -> Result<(u64, Vec<u8>), StoreError> {
        Ok(self
            .tx
            .prepare_cached("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .optional()?
            .unwrap_or((0, vec![0; 32])))
    }

    fn append_journal(&mut self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO journal (seq, kind, debit, credit, amount_minor, epoid, memo, at_ms, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for e in entries {
            let hash = hex::decode(&e.hash).map_err(|_| corrupt("journal hash"))?;
            stmt.execute(params![
                e.seq as i64,
                e.kind,
                e.debit.as_ref().map(|a| a.as_str()),
                e.credit.as_ref().map(|a| a.as_str()),
                e.amount.signed(),
                e.epoid.as_ref().map(|x| x.to_string()),
                e.memo,
                e.at_ms.min(i64::MAX as u64) as i64,
                hash
            ])?;
        }
        Ok(())
    }

    fn idempotency(&mut self, key: &str) -> Result<Option<(String, i64)>, StoreError> {
        Ok(self
            .tx
            .query_row(
                "SELECT request, balance_minor FROM idempotency WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn insert_idempotency(
        &mut self,
        key: &str,
        request: &str,
        balance_minor: i64,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO idempotency (key, request, balance_minor) VALUES (?1, ?2, ?3)",
            params![key, request, balance_minor],
        )?;
        Ok(())
    }

    fn refund_facts(&mut self, epoid: &EpoId) -> Result<Option<RefundFacts>, StoreError> {
        refund_facts(self.tx, epoid)
    }

    fn refund_by_id(&mut self, refund_id: &str) -> Result<Option<StoredRefund>, StoreError> {
        type Parts = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);
        let seen: Option<Parts> = self
            .tx
            .prepare_cached(
                "SELECT request, request_sig, receipt, receipt_sig FROM refunds WHERE refund_id = ?1",
            )?
            .query_row([refund_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        seen.map(|(request, request_sig, receipt, sig)| {
            Ok((
                signed_from(request, request_sig)?,
                signed_from(receipt, sig)?,
            ))
        })
        .transpose()
    }

    fn insert_refund(&mut self, row: &RefundRow) -> Result<bool, StoreError> {
        let r = &row.record;
        let n = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO refunds (refund_id, epoid, merchant, customer, amount_minor,
                   request, request_sig, request_digest, receipt, receipt_sig, decided_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                r.refund_id,
                r.epoid.to_string(),
                r.merchant.as_str(),
                r.customer.as_str(),
                r.amount.signed(),
                r.request.bytes(),
                r.request.signature().0.to_vec(),
                row.request_digest.0.to_vec(),
                r.receipt.bytes(),
                r.receipt.form().to_bytes(),
                r.decided_ms.min(i64::MAX as u64) as i64,
            ])?;
        Ok(n == 1)
    }

    fn balances_sum(&mut self) -> Result<i64, StoreError> {
        Ok(self.tx.query_row(
            "SELECT COALESCE(SUM(balance_minor), 0) FROM accounts",
            [],
            |r| r.get(0),
        )?)
    }
}

impl Backend for SqliteBackend {
    fn transaction(
        &mut self,
        _lock: TotalsLock,
        f: &mut dyn FnMut(&mut dyn Rows) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // One writer: the immediate transaction holds the database's write lock throughout.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        f(&mut SqliteRows { tx: &tx })?;
        tx.commit()?;
        Ok(())
    }

    fn account(&mut self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        read_account(&self.conn, id)
    }

    fn outcome(&mut self, epoid: &EpoId) -> Result<Option<StoredOutcome>, StoreError> {
        read_outcome(&self.conn, epoid)
    }

    fn history(
        &mut self,
        id: &AccountId,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<HistoryLine>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT epoid, result, customer, merchant, description, price_minor, decided_ms FROM outcomes
             WHERE (customer = ?1 OR merchant = ?1) AND decided_ms >= ?2 AND decided_ms < ?3
             ORDER BY decided_ms DESC, epoid DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                id.as_str(),
                from_ms as i64,
                to_ms.min(i64::MAX as u64) as i64,
                limit as i64
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (epoid, result, customer, merchant, description, price, at) = row?;
            out.push(HistoryLine {
                epoid: epoid.parse().map_err(|_| corrupt("epoid"))?,
                result: parse_result(&result)?,
                customer: customer.map(account_id).transpose()?,
                merchant: account_id(merchant)?,
                description,
                price: Amount::from_minor(price as u64).map_err(|_| corrupt("price"))?,
                decided_ms: at as u64,
            });
        }
        Ok(out)
    }

    fn journal(&mut self, after: u64, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, kind, debit, credit, amount_minor, epoid, at_ms, hash, memo FROM journal
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after as i64, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, Vec<u8>>(7)?,
                r.get::<_, String>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, kind, debit, credit, amount, epoid, at, hash, memo) = row?;
            out.push(JournalEntry {
                seq: seq as u64,
                kind,
                debit: debit.map(account_id).transpose()?,
                credit: credit.map(account_id).transpose()?,
                amount: Amount::from_minor(amount as u64).map_err(|_| corrupt("amount"))?,
                epoid: epoid
                    .map(|e| e.parse().map_err(|_| corrupt("epoid")))
                    .transpose()?,
                memo,
                at_ms: at as u64,
                hash: hex::encode(hash),
            });
        }
        Ok(out)
    }

    fn totals(&mut self) -> Result<Totals, StoreError> {
        let (balances, accounts): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(balance_minor), 0), COUNT(*) FROM accounts",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let outcomes: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM outcomes", [], |r| r.get(0))?;
        let (deposits, payouts) = totals_row(&self.conn)?;
        Ok(Totals {
            balances_minor: balances,
            deposits_minor: deposits,
            payouts_minor: payouts,
            accounts: accounts as u64,
            outcomes: outcomes as u64,
        })
    }

    fn endorsement(&mut self, epoid: &EpoId) -> Result<Option<Signed<Endorsement>>, StoreError> {
        let json: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT endorsement FROM outcomes WHERE epoid = ?1")?
            .query_row([epoid.to_string()], |r| r.get(0))
            .optional()?;
        json.flatten().map(|j| parse_endorsement(&j)).transpose()
    }

    fn purchases(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PurchaseRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT epoid, customer, merchant, price_minor, endorsement, receipt, receipt_sig
             FROM outcomes WHERE result = 'committed' AND epoid > ?1 ORDER BY epoid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after.unwrap_or(""), limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, Vec<u8>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (epoid, customer, merchant, price, endorsement, receipt, sig) = row?;
            out.push(PurchaseRecord {
                epoid: epoid.parse().map_err(|_| corrupt("epoid"))?,
                customer: account_id(
                    customer.ok_or_else(|| corrupt("purchase with no customer"))?,
                )?,
                merchant: account_id(merchant)?,
                price: Amount::from_minor(price as u64).map_err(|_| corrupt("price"))?,
                endorsement: endorsement.map(|j| parse_endorsement(&j)).transpose()?,
                receipt: signed_from(receipt, sig)?,
            });
        }
        Ok(out)
    }

    fn accounts(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let ids: Vec<String> = self
            .conn
            .prepare_cached("SELECT id FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2")?
            .query_map(params![after.unwrap_or(""), limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let id = account_id(id)?;
            out.extend(read_account(&self.conn, &id)?);
        }
        Ok(out)
    }

    fn refunds(
        &mut self,
        filter: RefundFilter<'_>,
        limit: usize,
    ) -> Result<Vec<RefundRecord>, StoreError> {
        const COLUMNS: &str = "refund_id, epoid, merchant, customer, amount_minor, request,
            request_sig, receipt, receipt_sig, decided_ms";
        let limit = limit as i64;
        let (sql, args): (String, Vec<rusqlite::types::Value>) = match filter {
            RefundFilter::All { after } => (
                format!(
                    "SELECT {COLUMNS} FROM refunds WHERE refund_id > ?1 ORDER BY refund_id LIMIT ?2"
                ),
                vec![after.unwrap_or("").to_string().into(), limit.into()],
            ),
            RefundFilter::Purchase(epoid) => (
                format!(
                    "SELECT {COLUMNS} FROM refunds WHERE epoid = ?1 ORDER BY decided_ms, refund_id LIMIT ?2"
                ),
                vec![epoid.to_string().into(), limit.into()],
            ),
            RefundFilter::Account { id, from_ms, to_ms } => (
                format!(
                    "SELECT {COLUMNS} FROM refunds WHERE (customer = ?1 OR merchant = ?1)
                     AND decided_ms >= ?2 AND decided_ms < ?3
                     ORDER BY decided_ms DESC, refund_id DESC LIMIT ?4"
                ),
                vec![
                    id.as_str().to_string().into(),
                    (from_ms.min(i64::MAX as u64) as i64).into(),
                    (to_ms.min(i64::MAX as u64) as i64).into(),
                    limit.into(),
                ],
            ),
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                (r.get::<_, Vec<u8>>(5)?, r.get::<_, Vec<u8>>(6)?),
                (r.get::<_, Vec<u8>>(7)?, r.get::<_, Vec<u8>>(8)?),
                r.get::<_, i64>(9)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (refund_id, epoid, merchant, customer, amount, (req, req_sig), (rec, rec_sig), at) =
                row?;
            out.push(RefundRecord {
                refund_id,
                epoid: epoid.parse().map_err(|_| corrupt("epoid"))?,
                merchant: account_id(merchant)?,
                customer: account_id(customer)?,
                amount: Amount::from_minor(amount as u64).map_err(|_| corrupt("amount"))?,
                request: signed_from(req, req_sig)?,
                receipt: signed_from(rec, rec_sig)?,
                decided_ms: at as u64,
            });
        }
        Ok(out)
    }

    fn add_checkpoint(&mut self, c: &Signed<Checkpoint>) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO checkpoints (seq, body, sig) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                c.body_unverified().seq.min(i64::MAX as u64) as i64,
                c.bytes(),
                c.signature().0.to_vec()
            ])?;
        Ok(n == 1)
    }

    fn checkpoints(
        &mut self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Signed<Checkpoint>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT body, sig FROM checkpoints WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after as i64, limit as i64], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (body, sig) = row?;
            out.push(signed_from(body, sig)?);
        }
        Ok(out)
    }
}

/// An endorsement from its stored JSON.
pub(crate) fn parse_endorsement(json: &str) -> Result<Signed<Endorsement>, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt(format!("stored endorsement: {e}")))
}

/// A signed object from its stored bytes and signature form (64 bytes: a single signature,
/// as every row written before batch signing holds; longer: a batch signature and path).
pub(crate) fn signed_from<T: netbill_proto::signed::SignedBody>(
    body: Vec<u8>,
    sig: Vec<u8>,
) -> Result<Signed<T>, StoreError> {
    let form = SignatureForm::from_bytes(&sig).map_err(|e| corrupt(format!("signature: {e}")))?;
    Signed::from_form(body, form).map_err(|e| corrupt(e.to_string()))
}

/// What the ledger holds about the purchase a refund names, with its earlier refunds.
fn refund_facts(conn: &Connection, epoid: &EpoId) -> Result<Option<RefundFacts>, StoreError> {
    let row: Option<(String, String, Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT result, merchant, customer, price_minor FROM outcomes WHERE epoid = ?1",
        )?
        .query_row([epoid.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((result, merchant, customer, price)) = row else {
        return Ok(None);
    };
    let refunded: i64 = conn
        .prepare_cached("SELECT COALESCE(SUM(amount_minor), 0) FROM refunds WHERE epoid = ?1")?
        .query_row([epoid.to_string()], |r| r.get(0))?;
    Ok(Some(RefundFacts {
        result: parse_result(&result)?,
        merchant: account_id(merchant)?,
        customer: customer.map(account_id).transpose()?,
        price: Amount::from_minor(price as u64).map_err(|_| corrupt("price"))?,
        refunded: Amount::from_minor(refunded as u64).map_err(|_| corrupt("refunded"))?,
    }))
}

//! The merchant's durable state: one SQLite file with every purchase record (including its
//! goods key, so the file is readable by the owner only) and the serial counters.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use netbill_proto::EpoId;
use netbill_proto::merchant::{MerchantPurchase, MerchantState};
use rusqlite::{Connection, OptionalExtension, params};

/// How many counter values [`MerchantStore::next`] reserves with one durable write.
pub const COUNTER_BLOCK: u64 = 1000;

/// The merchant's store. Writes are durable when they return (`synchronous=FULL`), except
/// [`MerchantStore::put_relaxed`].
#[derive(Clone)]
pub struct MerchantStore {
    conn: Arc<Mutex<Connection>>,
    /// Counter values reserved durably and not yet handed out: name → (next, last).
    reserved: Arc<Mutex<HashMap<String, (u64, u64)>>>,
}

fn state_name(s: MerchantState) -> String {
    serde_json::to_value(s)
        .ok()
        .map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// Sets whether the connection's next commits wait for the disk. Every write sets it, so a
/// relaxed write never leaves a durable one relaxed.
fn durable(conn: &Connection, yes: bool) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", if yes { "FULL" } else { "NORMAL" })
}

impl MerchantStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS purchases (
                id TEXT PRIMARY KEY,
                epoid TEXT UNIQUE,
                state TEXT NOT NULL,
                record TEXT NOT NULL,
                updated_ms INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS purchases_by_state ON purchases (state);
             CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reserved: Arc::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (it has its own
        // transactions), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes (inserts or replaces) a purchase record, durably.
    pub fn put(&self, id: &str, p: &MerchantPurchase, now_ms: u64) -> anyhow::Result<()> {
        let conn = self.lock();
        durable(&conn, true)?;
        Self::put_on(&conn, id, p, now_ms)
    }

    fn put_on(
        conn: &Connection,
        id: &str,
        p: &MerchantPurchase,
        now_ms: u64,
    ) -> anyhow::Result<()> {
        let record = serde_json::to_string(p)?;
        conn.prepare_cached(
            "INSERT INTO purchases (id, epoid, state, record, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET epoid = ?2, state = ?3, record = ?4, updated_ms = ?5",
        )?
        .execute(params![id, p.epoid().map(|e| e.to_string()), state_name(p.state()), record, now_ms as i64],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> anyhow::Result<Option<MerchantPurchase>> {
        let conn = self.lock();
        let rec: Option<String> = conn
            .prepare_cached("SELECT record FROM purchases WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        Ok(rec.map(|r| serde_json::from_str(&r)).transpose()?)
    }

    pub fn by_epoid(&self, epoid: &EpoId) -> anyhow::Result<Option<(String, MerchantPurchase)>> {
        let rec: Option<(String, String)> = self
            .lock()
            .query_row(
                "SELECT id, record FROM purchases WHERE epoid = ?1",
                [epoid.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        rec.map(|(id, r)| Ok((id, serde_json::from_str(&r)?)))
            .transpose()
    }

    /// Purchases endorsed but with no receipt yet: recovery re-sends them to N.
    pub fn unsettled(&self) -> anyhow::Result<Vec<(String, MerchantPurchase)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT id, record FROM purchases WHERE state = 'endorsed'")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, rec) = row?;
            out.push((id, serde_json::from_str(&rec)?));
        }
        Ok(out)
    }

    /// Writes a purchase record without waiting for the disk: for a record whose loss a
    /// crash recovery repairs (a receipt, which N keeps and hands out again to a merchant
    /// that re-sends its endorsement). Durable with the next durable write (the WAL is
    /// flushed whole); never torn (SQLite's WAL keeps it consistent either way).
    pub fn put_relaxed(&self, id: &str, p: &MerchantPurchase, now_ms: u64) -> anyhow::Result<()> {
        let conn = self.lock();
        durable(&conn, false)?;
        Self::put_on(&conn, id, p, now_ms)
    }

    /// The next value of a counter (EPOID serials, quote ids): unique forever, across
    /// crashes and processes sharing the file. Values are reserved [`COUNTER_BLOCK`] at a
    /// time with one durable write and handed out from memory, so a quote or a delivery
    /// costs no fsync of its own; a crash skips the rest of a block (the values need only
    /// be unique, not dense). The table holds the last value reserved.
    pub fn next(&self, name: &str) -> anyhow::Result<u64> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((next, last)) = reserved.get_mut(name)
            && *next <= *last
        {
            *next += 1;
            return Ok(*next - 1);
        }
        let block = COUNTER_BLOCK as i64;
        let conn = self.lock();
        durable(&conn, true)?;
        let last: i64 = conn.query_row(
            "INSERT INTO counters (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = value + ?2 RETURNING value",
            rusqlite::params![name, block],
            |r| r.get(0),
        )?;
        let last = u64::try_from(last)?;
        let first = last + 1 - COUNTER_BLOCK;
        reserved.insert(name.to_string(), (first + 1, last));
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_unique_across_reopening_and_shared_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut seen = std::collections::HashSet::new();
        let a = MerchantStore::open(&path).unwrap();
        let b = MerchantStore::open(&path).unwrap();
        for _ in 0..(COUNTER_BLOCK + 5) {
            assert!(seen.insert(a.next("epoid").unwrap()));
            assert!(seen.insert(b.next("epoid").unwrap()));
        }
        let before = *seen.iter().max().unwrap();
        // A crash loses the rest of the reserved blocks, never hands a value out twice.
        drop((a, b));
        let c = MerchantStore::open(&path).unwrap();
        let v = c.next("epoid").unwrap();
        assert!(v > before && seen.insert(v));
        // Counters are independent.
        assert_eq!(c.next("quote").unwrap(), 1);
        assert_eq!(c.next("quote").unwrap(), 2);
    }

    #[test]
    fn a_relaxed_write_leaves_the_next_write_durable() {
        let dir = tempfile::tempdir().unwrap();
        let s = MerchantStore::open(&dir.path().join("m.db")).unwrap();
        let full = |s: &MerchantStore| -> i64 {
            s.lock()
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        durable(&s.lock(), false).unwrap();
        s.next("quote").unwrap();
        assert_eq!(full(&s), 2, "FULL");
    }
}

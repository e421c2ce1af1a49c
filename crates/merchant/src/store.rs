//! The merchant's durable state: one SQLite file with every purchase record (including its
//! goods key, so the file is readable by the owner only) and the serial counters.

use std::path::Path;
use std::sync::{Arc, Mutex};

use netbill_proto::EpoId;
use netbill_proto::merchant::{MerchantPurchase, MerchantState};
use rusqlite::{Connection, OptionalExtension, params};

/// The merchant's store. Writes are durable when they return (`synchronous=FULL`).
#[derive(Clone)]
pub struct MerchantStore {
    conn: Arc<Mutex<Connection>>,
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
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (it has its own
        // transactions), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes (inserts or replaces) a purchase record, durably.
    pub fn put(&self, id: &str, p: &MerchantPurchase, now_ms: u64) -> anyhow::Result<()> {
        let record = serde_json::to_string(p)?;
        self.lock().execute(
            "INSERT INTO purchases (id, epoid, state, record, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET epoid = ?2, state = ?3, record = ?4, updated_ms = ?5",
            params![id, p.epoid().map(|e| e.to_string()), state_name(p.state()), record, now_ms as i64],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> anyhow::Result<Option<MerchantPurchase>> {
        let rec: Option<String> = self
            .lock()
            .query_row("SELECT record FROM purchases WHERE id = ?1", [id], |r| {
                r.get(0)
            })
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

    /// The next value of a durable counter (EPOID serials, quote ids).
    pub fn next(&self, name: &str) -> anyhow::Result<u64> {
        let conn = self.lock();
        let v: i64 = conn.query_row(
            "INSERT INTO counters (name, value) VALUES (?1, 1)
             ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
            [name],
            |r| r.get(0),
        )?;
        Ok(v as u64)
    }
}

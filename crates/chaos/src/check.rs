//! The checkers run after every schedule, each reading the parties' durable state directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use netbill_proto::customer::CustomerState;
use netbill_wallet::PurchaseRecord;
use rusqlite::{Connection, OpenFlags};

/// The five guarantees checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checker {
    /// Σ balances = deposits − payouts (`netbill admin conservation`).
    Conservation,
    /// At most one outcome per EPOID; every acknowledged outcome is still there.
    OneOutcome,
    /// After recovery the customer holds the plaintext iff she was debited.
    GoodsAtomicity,
    /// Replaying the EPO and the endorsement changes nothing and gives the same receipt.
    Idempotence,
    /// The journal replayed from zero equals the account table.
    JournalReplay,
}

impl Checker {
    /// Every checker.
    pub const ALL: [Checker; 5] = [
        Checker::Conservation,
        Checker::OneOutcome,
        Checker::GoodsAtomicity,
        Checker::Idempotence,
        Checker::JournalReplay,
    ];
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Checker::Conservation => "conservation",
            Checker::OneOutcome => "one outcome per EPOID",
            Checker::GoodsAtomicity => "goods atomicity",
            Checker::Idempotence => "idempotence",
            Checker::JournalReplay => "journal replay = accounts",
        }
    }
}

/// A broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which checker found it.
    pub checker: Checker,
    /// What it found.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.checker.name(), self.detail)
    }
}

/// Opens a SQLite file of a running process for reading.
pub fn open_db(path: &Path) -> Result<Connection, String> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("opening {}: {e}", path.display()))?;
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(c)
}

/// Every account's balance, from the ledger.
pub fn balances(db: &Connection) -> Result<BTreeMap<String, i64>, String> {
    let mut st = db
        .prepare("SELECT id, balance_minor FROM accounts")
        .map_err(|e| e.to_string())?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
}

/// Every outcome: EPOID → result, from the ledger.
pub fn outcomes(db: &Connection) -> Result<BTreeMap<String, String>, String> {
    let mut st = db
        .prepare("SELECT epoid, result FROM outcomes")
        .map_err(|e| e.to_string())?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(|e| e.to_string())?;
    rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
}

/// Checker 5: replays the journal from zero and compares it with the account table.
pub fn journal_replay(db: &Connection) -> Result<Option<String>, String> {
    let mut st = db
        .prepare("SELECT debit, credit, amount_minor FROM journal ORDER BY seq")
        .map_err(|e| e.to_string())?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(|e| e.to_string())?;
    let mut replayed: HashMap<String, i64> = HashMap::new();
    for row in rows {
        let (debit, credit, amount) = row.map_err(|e| e.to_string())?;
        if let Some(d) = debit {
            *replayed.entry(d).or_default() -= amount;
        }
        if let Some(c) = credit {
            *replayed.entry(c).or_default() += amount;
        }
    }
    for (id, balance) in balances(db)? {
        let r = replayed.get(&id).copied().unwrap_or(0);
        if r != balance {
            return Ok(Some(format!(
                "account {id}: the journal replays to {r} but the account table says {balance}"
            )));
        }
    }
    Ok(None)
}

/// Every purchase record of the wallet, by purchase id, as the wallet itself reads them.
pub fn wallet_records(wallet: &Path) -> Result<BTreeMap<String, PurchaseRecord>, String> {
    Ok(netbill_wallet::read_purchases(wallet)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|rec| (rec.purchase.offer.purchase.clone(), rec))
        .collect())
}

/// A record's EPOID, once its EPO is signed.
pub fn record_epoid(r: &PurchaseRecord) -> Option<String> {
    r.purchase
        .epo
        .as_ref()
        .map(|e| e.body_unverified().epoid.to_string())
}

/// The state the checkers carry from one schedule to the next.
#[derive(Default)]
pub struct Memory {
    /// Every outcome seen so far: EPOID → result.
    pub outcomes: BTreeMap<String, String>,
    /// Purchase ids already checked.
    pub records: BTreeSet<String>,
}

/// Checker 2: outcomes never change or vanish, and every receipt the wallet holds is the
/// ledger's outcome.
pub fn one_outcome(
    now: &BTreeMap<String, String>,
    memory: &Memory,
    records: &BTreeMap<String, PurchaseRecord>,
) -> Option<String> {
    for (epoid, result) in &memory.outcomes {
        match now.get(epoid) {
            None => return Some(format!("the outcome {result} of {epoid} vanished")),
            Some(r) if r != result => {
                return Some(format!("{epoid} was {result} and is now {r}"));
            }
            _ => {}
        }
    }
    for r in records.values() {
        if let Some(receipt) = &r.purchase.receipt {
            let b = receipt.body_unverified();
            let acked = serde_json::to_value(b.result)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            match now.get(&b.epoid.to_string()) {
                None => {
                    return Some(format!(
                        "the wallet holds a {acked} receipt for {} that the ledger does not have",
                        b.epoid
                    ));
                }
                Some(stored) if *stored != acked => {
                    return Some(format!(
                        "the wallet holds a {acked} receipt for {} but the ledger says {stored}",
                        b.epoid
                    ));
                }
                _ => {}
            }
        }
    }
    None
}

/// Checker 3 for the purchases new in this schedule: none is left unfinished, and each
/// holds the plaintext iff the ledger committed it; the balance moved by exactly that.
pub fn goods_atomicity(
    new: &[&PurchaseRecord],
    outcomes: &BTreeMap<String, String>,
    expected: &str,
    debited_minor: i64,
    price_minor: i64,
) -> Option<String> {
    let mut committed = 0i64;
    for r in new {
        let id = &r.purchase.offer.purchase;
        if r.purchase.state() == CustomerState::Committed {
            return Some(format!(
                "purchase {id} is still unfinished after recovery (EPO signed, no outcome)"
            ));
        }
        let paid = record_epoid(r)
            .and_then(|e| outcomes.get(&e))
            .is_some_and(|res| res == "committed");
        committed += i64::from(paid);
        let holds = std::fs::read_to_string(&r.out).is_ok_and(|s| s == expected);
        if paid != holds {
            return Some(if paid {
                format!("purchase {id} was paid but the customer has no goods")
            } else {
                format!("the customer holds the goods of purchase {id} without being debited")
            });
        }
    }
    if debited_minor != committed * price_minor {
        return Some(format!(
            "the customer was debited {debited_minor} for {committed} committed purchases of {price_minor}"
        ));
    }
    None
}

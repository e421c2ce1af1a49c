//! `netbill audit` against real databases that a test corrupts directly, the way a
//! compromised billing server (or an operator with a SQL prompt) would: a changed balance, a
//! deleted, altered or reordered journal entry, a purchase with no valid EPO, a journal
//! rewritten to hide a deletion. Each runs on SQLite and on a throwaway PostgreSQL server.

mod common;

use std::process::Output;

use common::{Deployment, Proc, billing_key, netbill, ok, text};
use netbill_ledger::throwaway_pg as pg;
use netbill_ledger::{JournalEntry, Store, open_store};

/// A deployment on one store, with three purchases, a partial refund and a checkpoint
/// after the first two purchases.
struct Ledger {
    d: Deployment,
    store_url: String,
    server_flags: Vec<String>,
}

fn start(postgres: bool) -> Ledger {
    let pg_url = postgres.then(pg::fresh_database);
    // Checkpoints only when the test asks, so that each case knows what they cover.
    let mut server_flags = vec!["--checkpoint-interval-ms".to_string(), "0".to_string()];
    server_flags.extend(
        pg_url
            .iter()
            .flat_map(|u| ["--store".to_string(), u.clone()]),
    );
    let flags: Vec<&str> = server_flags.iter().map(String::as_str).collect();
    let d = Deployment::start_full(&flags, &[]);
    let store_url = pg_url
        .unwrap_or_else(|| format!("sqlite://{}", d.root().join("billing/ledger.db").display()));
    let buy = |product: &str| {
        let out = d.wallet(&["buy", &d.merchant.url, product]);
        assert!(out.status.success(), "buying {product}: {}", text(&out));
    };
    buy("article");
    buy("article");
    d.admin(&["checkpoint"]);
    buy("note");
    let first = journal(&store_url)
        .into_iter()
        .find(|e| e.kind == "purchase")
        .and_then(|e| e.epoid)
        .expect("a purchase");
    let mdir = d.root().join("merchant").to_string_lossy().into_owned();
    ok(&[
        "merchant",
        "refund",
        "--dir",
        &mdir,
        "--epoid",
        &first.to_string(),
        "--amount",
        "USD:0.005",
    ]);
    Ledger {
        d,
        store_url,
        server_flags,
    }
}

fn store(url: &str) -> Box<dyn Store> {
    open_store(url).expect("opening the store")
}

fn journal(url: &str) -> Vec<JournalEntry> {
    store(url).journal(0, 1000).expect("journal")
}

/// Runs raw SQL on the ledger, as an attacker with database access.
fn sql(url: &str, statements: &str) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let c = rusqlite::Connection::open(path).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        c.execute_batch(statements).unwrap();
    } else {
        let mut c = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
        c.batch_execute(statements).unwrap();
    }
}

/// A byte string as an SQL literal of the store's dialect.
fn blob(url: &str, bytes: &[u8]) -> String {
    if url.starts_with("sqlite://") {
        format!("X'{}'", hex::encode(bytes))
    } else {
        format!("'\\x{}'::bytea", hex::encode(bytes))
    }
}

/// Points PostgreSQL's journal head at the last entry (SQLite has no head row).
fn fix_head(url: &str) {
    if url.starts_with("postgres") {
        sql(
            url,
            "UPDATE journal_head SET (seq, hash) = (SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1) WHERE id = 1",
        );
    }
}

impl Ledger {
    fn audit(&self, extra: &[&str]) -> (Output, serde_json::Value) {
        let key = billing_key(&self.d);
        let mut args = vec![
            "audit",
            "--store",
            &self.store_url,
            "--billing-key",
            &key,
            "--json",
        ];
        args.extend(extra);
        let out = netbill(&args);
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        (out, report)
    }

    /// Audits, unwinds through the admin API, audits again: the report after.
    fn unwind(&self) -> (Output, String) {
        let key = billing_key(&self.d);
        let out = netbill(&[
            "audit",
            "--store",
            &self.store_url,
            "--billing-key",
            &key,
            "--unwind",
            "--unwind-via",
            &self.d.server.url,
            "--yes",
        ]);
        let t = text(&out);
        (out, t)
    }

    fn balances(&self) -> (i64, i64) {
        (self.d.balance_minor("alice"), self.d.balance_minor("acme"))
    }
}

fn kinds(report: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k.dedup();
    k
}

/// The seq of the `n`th purchase entry (0-based).
fn purchase_seq(url: &str, n: usize) -> u64 {
    journal(url)
        .into_iter()
        .filter(|e| e.kind == "purchase")
        .nth(n)
        .expect("purchase entry")
        .seq
}

fn intact(postgres: bool) {
    let l = start(postgres);
    let (out, report) = l.audit(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report["findings"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["purchases"], 3);
    assert_eq!(report["refunds"], 1);
    assert!(report["checkpoints"].as_u64().unwrap() >= 1);
    // The same over HTTP, human-readable.
    let out = netbill(&["audit", "--server", &l.d.server.url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("ledger intact"), "{}", text(&out));
}

fn rotated_key(postgres: bool) {
    let l = start(postgres);
    // alice moves to a new key: her purchases signed with the old one stay backed, because
    // the journal records every key she had.
    use netbill_proto::crypto::Signer as _;
    let new_key = netbill_crypto::Ed25519Signer::generate()
        .public_key()
        .to_hex();
    l.d.admin(&["set-key", "alice", &new_key]);
    let (out, report) = l.audit(&[]);
    assert_eq!(out.status.code(), Some(0), "{report}");
    let key_entries = journal(&l.store_url)
        .into_iter()
        .filter(|e| e.kind == "key")
        .count();
    assert_eq!(key_entries, 3, "acme, alice, alice's new key");
}

fn tampering_stops_n_until_acknowledged(postgres: bool) {
    let l = start(postgres);
    // A careless edit after the last checkpoint: N finds it when it next checkpoints, and
    // refuses to sign over it.
    let seq = purchase_seq(&l.store_url, 2);
    sql(
        &l.store_url,
        &format!("UPDATE journal SET at_ms = at_ms + 1 WHERE seq = {seq}"),
    );
    let url = l.d.server.url.clone();
    let out = netbill(&["admin", "--server", &url, "checkpoint"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("does not chain"), "{}", text(&out));
    // No money moves until an operator who audited acknowledges.
    let out = netbill(&["admin", "--server", &url, "deposit", "alice", "USD:1"]);
    assert!(
        text(&out).contains("changed behind the billing server's back"),
        "{}",
        text(&out)
    );
    let (out, report) = l.audit(&[]);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(kinds(&report), ["chain_break"]);
    let out = ok(&[
        "admin",
        "--server",
        &url,
        "checkpoint",
        "--acknowledge-audit",
    ]);
    assert!(out.contains("signed checkpoint"), "{out}");
    l.d.admin(&["deposit", "alice", "USD:1"]);
    // Later checkpoints chain on from the acknowledged head.
    l.d.admin(&["checkpoint"]);
}

fn changed_balance(postgres: bool) {
    let mut l = start(postgres);
    let before = l.balances();
    sql(
        &l.store_url,
        "UPDATE accounts SET balance_minor = balance_minor + 500000 WHERE id = 'alice'",
    );
    let (out, report) = l.audit(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        kinds(&report),
        ["balance_mismatch", "conservation_violated"]
    );
    assert_eq!(report["unwind"][0]["delta_minor"], -500000);

    // Restarted on a ledger that does not conserve, N moves no money until repaired.
    l.d.server.kill();
    let billing = l.d.root().join("billing").to_string_lossy().into_owned();
    let mut args = vec![
        "server",
        "run",
        "--dir",
        &billing,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(l.server_flags.iter().map(String::as_str));
    l.d.server = Proc::start(&args);
    let out = netbill(&[
        "admin",
        "--server",
        &l.d.server.url,
        "deposit",
        "alice",
        "USD:1",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("does not conserve money"),
        "{}",
        text(&out)
    );

    let (out, t) = l.unwind();
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("applied 1 adjustments"), "{t}");
    assert_eq!(l.balances(), before);
    assert!(l.d.conservation_holds());
    // Open again for business; the adjustment is journaled and the audit is clean.
    l.d.admin(&["deposit", "alice", "USD:1"]);
    let (out, report) = l.audit(&[]);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["adjustments"], 1);
}

fn deleted_entry(postgres: bool) {
    let l = start(postgres);
    let before = l.balances();
    let seq = purchase_seq(&l.store_url, 1);
    sql(
        &l.store_url,
        &format!("DELETE FROM journal WHERE seq = {seq}"),
    );
    let (out, report) = l.audit(&[]);
    // Evidence of tampering, but the signed purchase proves the money moved: balances stand.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        kinds(&report),
        ["chain_break", "checkpoint_mismatch", "missing_entry"]
    );
    let (out, t) = l.unwind();
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("nothing to unwind"), "{t}");
    assert_eq!(l.balances(), before);
    assert!(l.d.conservation_holds());
}

fn altered_entry(postgres: bool) {
    let l = start(postgres);
    let before = l.balances();
    // Purchase 3 (after the checkpoint) is rewritten from USD:0.00125 to USD:0.50125, and
    // the extra money moved from alice to acme.
    let seq = purchase_seq(&l.store_url, 2);
    sql(
        &l.store_url,
        &format!(
            "UPDATE journal SET amount_minor = amount_minor + 50000 WHERE seq = {seq};
             UPDATE accounts SET balance_minor = balance_minor - 50000 WHERE id = 'alice';
             UPDATE accounts SET balance_minor = balance_minor + 50000 WHERE id = 'acme';"
        ),
    );
    let (out, report) = l.audit(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        kinds(&report),
        [
            "balance_mismatch",
            "chain_break",
            "missing_entry",
            "unbacked_entry"
        ]
    );
    let (out, t) = l.unwind();
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert_eq!(l.balances(), before);
    assert!(l.d.conservation_holds());
}

fn reordered_entries(postgres: bool) {
    let l = start(postgres);
    let before = l.balances();
    let (a, b) = (purchase_seq(&l.store_url, 0), purchase_seq(&l.store_url, 1));
    sql(
        &l.store_url,
        &format!(
            "UPDATE journal SET seq = -1 WHERE seq = {a};
             UPDATE journal SET seq = {a} WHERE seq = {b};
             UPDATE journal SET seq = {b} WHERE seq = -1;"
        ),
    );
    let (out, report) = l.audit(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(kinds(&report), ["chain_break", "checkpoint_mismatch"]);
    assert_eq!(l.balances(), before);
}

fn purchase_without_valid_epo(postgres: bool) {
    let l = start(postgres);
    let before = l.balances();
    let url = &l.store_url;
    // The attacker records a purchase of USD:0.3 by alice, backed by the endorsement and
    // receipt of another purchase (valid signatures, but not for this EPOID and price),
    // chains a journal entry to the head properly, and moves the money.
    let mut s = store(url);
    let real = s.purchases(None, 1).unwrap().remove(0);
    let endorsement = serde_json::to_string(&s.endorsement(&real.epoid).unwrap().unwrap()).unwrap();
    let receipt = s.outcome(&real.epoid).unwrap().unwrap().receipt;
    let last = journal(url).pop().unwrap();
    let forged = JournalEntry {
        seq: last.seq + 1,
        kind: "purchase".into(),
        debit: Some("alice".parse().unwrap()),
        credit: Some("acme".parse().unwrap()),
        amount: "USD:0.3".parse().unwrap(),
        epoid: Some("acme:1700000000000:999".parse().unwrap()),
        memo: String::new(),
        at_ms: 1_700_000_000_000,
        hash: String::new(),
    };
    let hash = forged.expected_hash(&hex::decode(&last.hash).unwrap());
    sql(
        url,
        &format!(
            "INSERT INTO outcomes (epoid, result, customer, merchant, description, price_minor,
               endorsement_digest, endorsement, receipt, receipt_sig, decided_ms)
             VALUES ('acme:1700000000000:999', 'committed', 'alice', 'acme', 'forged', 30000,
               NULL, '{}', {}, {}, 1700000000000);
             INSERT INTO journal (seq, kind, debit, credit, amount_minor, epoid, memo, at_ms, hash)
             VALUES ({}, 'purchase', 'alice', 'acme', 30000, 'acme:1700000000000:999', '',
               1700000000000, {});
             UPDATE accounts SET balance_minor = balance_minor - 30000 WHERE id = 'alice';
             UPDATE accounts SET balance_minor = balance_minor + 30000 WHERE id = 'acme';",
            endorsement.replace('\'', "''"),
            blob(url, receipt.bytes()),
            blob(url, &receipt.form().to_bytes()),
            forged.seq,
            blob(url, &hash),
        ),
    );
    fix_head(url);
    let (out, report) = l.audit(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(kinds(&report), ["balance_mismatch", "unbacked_entry"]);
    let unbacked = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "unbacked_entry")
        .unwrap();
    assert_eq!(unbacked["seq"], forged.seq);
    assert!(
        unbacked["detail"]
            .as_str()
            .unwrap()
            .contains("another EPOID"),
        "{unbacked}"
    );
    // With --json, one document: the report before and after the unwind.
    let key = billing_key(&l.d);
    let out = netbill(&[
        "audit",
        "--store",
        url,
        "--billing-key",
        &key,
        "--unwind",
        "--unwind-via",
        &l.d.server.url,
        "--yes",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let both: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(both["before"]["unwind"].as_array().unwrap().len(), 2);
    assert_eq!(both["after"]["unwind"].as_array().unwrap().len(), 0);
    assert_eq!(kinds(&both["after"]), ["unbacked_entry"]);
    assert_eq!(l.balances(), before);
    assert!(l.d.conservation_holds());
}

fn rewritten_chain(postgres: bool) {
    let l = start(postgres);
    let url = &l.store_url;
    // Delete the first purchase's entry (before the checkpoint) and rewrite every later
    // entry so that the chain links up again: only N's signed checkpoint tells.
    let seq = purchase_seq(url, 0);
    let mut entries = journal(url);
    entries.retain(|e| e.seq != seq);
    let mut prev = vec![0u8; 32];
    let mut statements = String::from("DELETE FROM journal;");
    for (i, e) in entries.iter_mut().enumerate() {
        e.seq = i as u64 + 1;
        let h = e.expected_hash(&prev);
        statements.push_str(&format!(
            "INSERT INTO journal (seq, kind, debit, credit, amount_minor, epoid, memo, at_ms, hash)
             VALUES ({}, '{}', {}, {}, {}, {}, '{}', {}, {});",
            e.seq,
            e.kind,
            e.debit.as_ref().map_or("NULL".into(), |a| format!("'{a}'")),
            e.credit
                .as_ref()
                .map_or("NULL".into(), |a| format!("'{a}'")),
            e.amount.minor(),
            e.epoid.as_ref().map_or("NULL".into(), |x| format!("'{x}'")),
            e.memo,
            e.at_ms,
            blob(url, &h)
        ));
        prev = h;
    }
    sql(url, &statements);
    fix_head(url);
    let (out, report) = l.audit(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(kinds(&report), ["checkpoint_mismatch", "missing_entry"]);
}

/// Each case once per store.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $case() { super::$case(false) })*
        }
        mod postgres {
            $(#[test] fn $case() { super::$case(true) })*
        }
    };
}

cases!(
    intact,
    rotated_key,
    tampering_stops_n_until_acknowledged,
    changed_balance,
    deleted_entry,
    altered_entry,
    reordered_entries,
    purchase_without_valid_epo,
    rewritten_chain,
);

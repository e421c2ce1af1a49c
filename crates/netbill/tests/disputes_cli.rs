//! Disputes and refunds with real processes and real signed records: a merchant who
//! delivers garbage, a customer who tampers with the ciphertext, a billing server that
//! cannot show the EPO behind a debit; refunds over the limit, replayed and forged.

mod common;

use std::path::Path;
use std::process::Output;

use common::{Deployment, get_json, netbill, ok, text};

/// N's receipt signing key and the merchant's key, as an arbitrator would be given them.
fn keys(d: &Deployment) -> (String, String) {
    let n = get_json(&d.server.url, "/v1/keys");
    let m = get_json(&d.server.url, "/v1/merchants/acme");
    (
        n["sign_key"].as_str().unwrap().to_string(),
        m["public_key"].as_str().unwrap().to_string(),
    )
}

/// The EPOID of the wallet's only purchase.
fn only_epoid(d: &Deployment) -> String {
    let out = d.wallet(&["history"]);
    let history = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<_> = history.lines().collect();
    assert_eq!(lines.len(), 1, "{history}");
    lines[0].split_whitespace().next().unwrap().to_string()
}

fn dispute(
    d: &Deployment,
    claim: &str,
    evidence: &Path,
    extra: &[&str],
) -> (Output, serde_json::Value) {
    let (n, m) = keys(d);
    let ev = evidence.to_string_lossy().into_owned();
    let mut args = vec![
        "dispute",
        claim,
        "--billing-key",
        &n,
        "--merchant-key",
        &m,
        "--evidence",
        &ev,
        "--json",
    ];
    args.extend(extra);
    let out = netbill(&args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out, v)
}

fn export_evidence(d: &Deployment, epoid: &str, name: &str) -> std::path::PathBuf {
    let dir = d.root().join(name);
    let out = d.wallet(&["evidence", epoid, "--out", &dir.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out));
    dir
}

#[test]
fn garbage_goods_are_ruled_for_the_customer_and_the_ruling_is_executed_as_a_refund() {
    let d = Deployment::start_with(&["--fault-garbage-goods"]);
    let out = d.wallet(&["buy", &d.merchant.url, "article"]);
    // She paid, and the wallet noticed the goods are not what the quote promised.
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not what the quote promised"),
        "{}",
        text(&out)
    );
    assert_eq!(d.balance_minor("alice"), 98_000);
    let epoid = only_epoid(&d);
    let ev = export_evidence(&d, &epoid, "evidence");
    for f in [
        "customer-evidence.json",
        "billing-evidence.json",
        "goods.nbg",
    ] {
        assert!(ev.join(f).exists(), "{f} exported");
    }

    let (out, v) = dispute(&d, "wrong-goods", &ev, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(v["ruling"], "for_customer");
    assert_eq!(v["amount"], "USD:0.02000");
    assert_eq!(v["epoid"], epoid.as_str());
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("matches the checksum she signed"),
        "{reasons}"
    );
    assert!(
        reasons.contains("not what the signed quote promised"),
        "{reasons}"
    );

    // The merchant carries out the ruling; running it again refunds once.
    let verdict = d.root().join("verdict.json");
    std::fs::write(&verdict, &out.stdout).unwrap();
    let mdir = d.root().join("merchant").to_string_lossy().into_owned();
    let v = verdict.to_string_lossy().into_owned();
    let first = ok(&["merchant", "refund", "--dir", &mdir, "--verdict", &v]);
    assert!(first.contains("refunded USD:0.02000"), "{first}");
    assert_eq!(d.balance_minor("alice"), 100_000);
    assert_eq!(d.balance_minor("acme"), 0);
    let again = ok(&["merchant", "refund", "--dir", &mdir, "--verdict", &v]);
    assert_eq!(again, first);
    assert_eq!(d.balance_minor("alice"), 100_000);
    assert!(d.conservation_holds());
    // N's evidence now lists the refund, signed.
    let ev2 = export_evidence(&d, &epoid, "evidence-after");
    let billing: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ev2.join("billing-evidence.json")).unwrap()).unwrap();
    assert_eq!(billing["refunds"].as_array().unwrap().len(), 1);
}

#[test]
fn honest_goods_stand_and_a_tampered_ciphertext_is_the_customers_fault() {
    let d = Deployment::start();
    assert!(
        d.wallet(&["buy", &d.merchant.url, "article"])
            .status
            .success()
    );
    let epoid = only_epoid(&d);
    let ev = export_evidence(&d, &epoid, "evidence");

    let (out, v) = dispute(&d, "wrong-goods", &ev, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_eq!(v["ruling"], "for_merchant");
    assert!(
        v["reasons"]
            .to_string()
            .contains("exactly what the signed quote promised")
    );

    // She alters the ciphertext she holds and claims the goods are damaged.
    let goods = ev.join("goods.nbg");
    let mut bytes = std::fs::read(&goods).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&goods, bytes).unwrap();
    let (out, v) = dispute(&d, "wrong-goods", &ev, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        v["reasons"].to_string().contains("altered after delivery"),
        "{v}"
    );

    // "I never got the key": N produces it, nothing is owed.
    let (out, v) = dispute(&d, "never-got-key", &ev, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(v["ruling"], "key_produced");
    // "I never bought this": N shows her signed EPO.
    let (out, v) = dispute(&d, "never-bought", &ev, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        v["reasons"]
            .to_string()
            .contains("the customer signed an EPO"),
        "{v}"
    );
    // "I agreed to pay less": her signature says otherwise.
    let (out, _) = dispute(&d, "charged-wrong-amount", &ev, &["--agreed", "USD:0.01"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    // The merchant: "I was not paid" — N's committed receipt says N owes it.
    let (out, v) = dispute(&d, "merchant-not-paid", &ev, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert_eq!(v["amount"], "USD:0.02000");

    // A human-readable verdict without --json, and clear errors for bad input.
    let (n, m) = keys(&d);
    let e = ev.to_string_lossy().into_owned();
    let out = netbill(&[
        "dispute",
        "never-got-key",
        "--billing-key",
        &n,
        "--merchant-key",
        &m,
        "--evidence",
        &e,
    ]);
    assert!(
        text(&out).contains("verdict: KEY PRODUCED"),
        "{}",
        text(&out)
    );
    let out = netbill(&[
        "dispute",
        "charged-wrong-amount",
        "--billing-key",
        &n,
        "--merchant-key",
        &m,
        "--evidence",
        &e,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("needs --agreed"), "{}", text(&out));
    let missing = d.root().join("no-such-dir").to_string_lossy().into_owned();
    let out = netbill(&[
        "dispute",
        "never-bought",
        "--billing-key",
        &n,
        "--merchant-key",
        &m,
        "--evidence",
        &missing,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no evidence directory"),
        "{}",
        text(&out)
    );
    std::fs::write(ev.join("billing-evidence.json"), "{not json").unwrap();
    let out = netbill(&[
        "dispute",
        "never-bought",
        "--billing-key",
        &n,
        "--merchant-key",
        &m,
        "--evidence",
        &e,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is not N's evidence"), "{}", text(&out));
    assert_eq!(text(&out).lines().count(), 1, "{}", text(&out));
}

#[test]
fn a_debit_without_a_customer_signed_epo_is_refunded() {
    let d = Deployment::start();
    assert!(
        d.wallet(&["buy", &d.merchant.url, "article"])
            .status
            .success()
    );
    let epoid = only_epoid(&d);
    // The billing server loses (or never had) the endorsement carrying her EPO.
    let db = rusqlite::Connection::open(d.root().join("billing/ledger.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute(
        "UPDATE outcomes SET endorsement = NULL WHERE epoid = ?1",
        [&epoid],
    )
    .unwrap();
    let ev = export_evidence(&d, &epoid, "evidence");
    // She claims she never bought it, and brings no EPO of her own.
    std::fs::remove_file(ev.join("customer-evidence.json")).unwrap();
    let (out, v) = dispute(&d, "never-bought", &ev, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(v["ruling"], "for_customer");
    assert_eq!(v["amount"], "USD:0.02000");
    assert!(
        v["reasons"]
            .to_string()
            .contains("cannot show an EPO signed by the customer"),
        "{v}"
    );
}

#[test]
fn refunds_over_the_limit_replayed_or_forged_are_refused() {
    let d = Deployment::start();
    assert!(
        d.wallet(&["buy", &d.merchant.url, "article"])
            .status
            .success()
    );
    let epoid = only_epoid(&d);
    let mdir = d.root().join("merchant").to_string_lossy().into_owned();
    let refund = |dir: &str, amount: &str, id: &str| {
        netbill(&[
            "merchant",
            "refund",
            "--dir",
            dir,
            "--epoid",
            &epoid,
            "--amount",
            amount,
            "--refund-id",
            id,
        ])
    };
    // Over the price: refused with a clear one-line error, nothing moves.
    let out = refund(&mdir, "USD:0.03", "r1");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refusing to refund USD:0.03"),
        "{}",
        text(&out)
    );
    assert_eq!(text(&out).lines().count(), 1, "{}", text(&out));
    assert_eq!(d.balance_minor("alice"), 98_000);
    // A partial refund, replayed: money moves once.
    assert!(refund(&mdir, "USD:0.015", "r1").status.success());
    assert!(refund(&mdir, "USD:0.015", "r1").status.success());
    assert_eq!(d.balance_minor("alice"), 99_500);
    // The same id for a different refund is a conflict.
    let out = refund(&mdir, "USD:0.001", "r1");
    assert!(
        text(&out).contains("already used for a different refund"),
        "{}",
        text(&out)
    );
    // What is left is 0.005: a second refund of 0.006 is over the limit.
    let out = refund(&mdir, "USD:0.006", "r2");
    assert!(
        text(&out).contains("USD:0.01500 is already refunded"),
        "{}",
        text(&out)
    );
    assert!(refund(&mdir, "USD:0.005", "r2").status.success());
    assert_eq!(d.balance_minor("alice"), 100_000);

    // A forged refund: signed by a key that is not acme's.
    let evil = d.root().join("evil").to_string_lossy().into_owned();
    ok(&[
        "merchant",
        "init",
        "--dir",
        &evil,
        "--id",
        "acme",
        "--billing",
        &d.server.url,
    ]);
    let out = refund(&evil, "USD:0.001", "r3");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not signed by the key of merchant acme"),
        "{}",
        text(&out)
    );
    // A purchase of another merchant, or one that never committed, cannot be refunded.
    let out = netbill(&[
        "merchant", "refund", "--dir", &mdir, "--epoid", "acme:1:1", "--amount", "USD:0.01",
    ]);
    assert!(
        text(&out).contains("no purchase acme:1:1"),
        "{}",
        text(&out)
    );
    assert_eq!(d.balance_minor("alice"), 100_000);
    assert_eq!(d.balance_minor("acme"), 0);
    assert!(d.conservation_holds());
    // The operator sees it in the metrics.
    let metrics = common::get_text(&d.server.url, "/metrics");
    for line in [
        "netbill_receipts_total{result=\"committed\"} 1",
        "netbill_refunds_total 3",
        "netbill_refunds_refused_total 5",
        "netbill_ledger_not_conserving 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    // Her statement lists the purchase and both refunds.
    let out = d.wallet(&["statement"]);
    let st = text(&out);
    assert!(
        st.contains("Tygar: Atomicity in Electronic Commerce"),
        "{st}"
    );
    assert!(st.contains("refund r1") && st.contains("refund r2"), "{st}");
    assert!(st.contains("refunded: USD:0.02000"), "{st}");
    // The merchant's evidence lists them too, with K.
    let ev = d
        .root()
        .join("m-evidence.json")
        .to_string_lossy()
        .into_owned();
    ok(&["merchant", "evidence", "--dir", &mdir, &epoid, "--out", &ev]);
    let billing: serde_json::Value = serde_json::from_slice(&std::fs::read(&ev).unwrap()).unwrap();
    assert_eq!(billing["refunds"].as_array().unwrap().len(), 2);
    assert!(billing["goods_key"].is_string());
}

#[test]
fn an_arbitrator_fetches_n_records_under_a_partys_grant_and_no_one_else_can() {
    let d = Deployment::start();
    assert!(
        d.wallet(&["buy", &d.merchant.url, "article"])
            .status
            .success()
    );
    let epoid = only_epoid(&d);
    let arb = d.root().join("arbitrator").to_string_lossy().into_owned();
    let out = ok(&["arbitrator", "init", "--dir", &arb]);
    let arb_key = common::key_from(&out);
    let grant = String::from_utf8_lossy(
        &d.wallet(&["grant", &epoid, "--arbitrator-key", &arb_key])
            .stdout,
    )
    .trim()
    .to_string();
    let fetched = d
        .root()
        .join("n-records.json")
        .to_string_lossy()
        .into_owned();
    ok(&[
        "arbitrator",
        "fetch",
        "--dir",
        &arb,
        "--server",
        &d.server.url,
        "--grant",
        &grant,
        "--out",
        &fetched,
    ]);
    let records: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fetched).unwrap()).unwrap();
    assert_eq!(records["epoid"], epoid.as_str());
    assert!(records["goods_key"].is_string());
    // The arbitrator decides from what it fetched itself (and the customer's own files).
    let ev = export_evidence(&d, &epoid, "evidence");
    let (n, m) = keys(&d);
    let c = ev
        .join("customer-evidence.json")
        .to_string_lossy()
        .into_owned();
    let g = ev.join("goods.nbg").to_string_lossy().into_owned();
    let out = netbill(&[
        "dispute",
        "wrong-goods",
        "--billing-key",
        &n,
        "--merchant-key",
        &m,
        "--customer-evidence",
        &c,
        "--billing-evidence",
        &fetched,
        "--ciphertext",
        &g,
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    // Another arbitrator cannot use the grant.
    let other = d.root().join("other").to_string_lossy().into_owned();
    ok(&["arbitrator", "init", "--dir", &other]);
    let out = netbill(&[
        "arbitrator",
        "fetch",
        "--dir",
        &other,
        "--server",
        &d.server.url,
        "--grant",
        &grant,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("the grant is for arbitrator key"),
        "{}",
        text(&out)
    );
    // An expired grant is refused by N.
    let expired = String::from_utf8_lossy(
        &d.wallet(&[
            "grant",
            &epoid,
            "--arbitrator-key",
            &arb_key,
            "--valid-for-ms",
            "0",
        ])
        .stdout,
    )
    .trim()
    .to_string();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let out = netbill(&[
        "arbitrator",
        "fetch",
        "--dir",
        &arb,
        "--server",
        &d.server.url,
        "--grant",
        &expired,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("the grant has expired"),
        "{}",
        text(&out)
    );
    // A grant tampered with (another EPOID) does not verify.
    let out = netbill(&[
        "arbitrator",
        "fetch",
        "--dir",
        &arb,
        "--server",
        &d.server.url,
        "--grant",
        "AAAA.BBBB",
    ]);
    assert!(
        text(&out).contains("the grant is malformed"),
        "{}",
        text(&out)
    );
    // The merchant can grant too.
    let mdir = d.root().join("merchant").to_string_lossy().into_owned();
    let mgrant = ok(&[
        "merchant",
        "grant",
        "--dir",
        &mdir,
        &epoid,
        "--arbitrator-key",
        &arb_key,
    ]);
    ok(&[
        "arbitrator",
        "fetch",
        "--dir",
        &arb,
        "--server",
        &d.server.url,
        "--grant",
        mgrant.trim(),
    ]);
}

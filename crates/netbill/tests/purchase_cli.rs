//! The purchase protocol end to end, with the real `netbill` binary as separate processes.

mod common;

use common::{ARTICLE, Deployment, netbill, ok, text};

#[test]
fn a_full_purchase_delivers_the_goods_and_moves_the_price() {
    let d = Deployment::start();
    let out_path = d.root().join("article.out");
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "article",
        "--out",
        out_path.to_str().unwrap(),
        "--verbose",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // v2: six messages, two customer–merchant round trips (1–2 and 3–6).
    for step in 1..=6 {
        assert!(
            t.contains(&format!("  {step}. ")),
            "step {step} missing from the transcript:\n{t}"
        );
    }
    assert!(!t.contains("  7. "), "{t}");
    assert!(t.contains("402: signed quote"), "{t}");
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), ARTICLE);
    assert_eq!(d.balance_minor("alice"), 100_000 - 2_000);
    assert_eq!(d.balance_minor("acme"), 2_000);
    assert!(d.conservation_holds());
    // The wallet's own views agree.
    assert!(text(&d.wallet(&["balance"])).contains("USD:0.98000"));
    let statement = text(&d.wallet(&["statement"]));
    assert!(
        statement.contains("Tygar: Atomicity in Electronic Commerce"),
        "{statement}"
    );
    assert!(statement.contains("total: USD:0.02000"), "{statement}");
    assert!(text(&d.wallet(&["history"])).contains("Settled(Committed)"));
}

#[test]
fn a_sub_cent_purchase_moves_exactly_its_price() {
    let d = Deployment::start();
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "note",
        "--out",
        d.root().join("n").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("paid USD:0.00125"));
    assert_eq!(d.balance_minor("alice"), 100_000 - 125);
    assert_eq!(d.balance_minor("acme"), 125);
}

#[test]
fn a_group_credential_buys_at_the_group_price() {
    let d = Deployment::start();
    let key = ok(&["wallet", "--dir", &d.wallet_arg(), "key"])
        .trim()
        .to_string();
    let cred = d.root().join("cred.json");
    ok(&[
        "group",
        "issue",
        "--dir",
        d.authority.to_str().unwrap(),
        "--group",
        "acm-student",
        "--holder",
        &key,
        "--out",
        cred.to_str().unwrap(),
    ]);
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "survey",
        "--credential",
        cred.to_str().unwrap(),
        "--out",
        d.root().join("s").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(d.balance_minor("alice"), 100_000 - 3_000);
    // Without the credential, the full price.
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "survey",
        "--out",
        d.root().join("s2").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(d.balance_minor("alice"), 100_000 - 3_000 - 5_000);
    // A credential issued to someone else's key is refused with a clear error.
    let other = d.root().join("other.json");
    ok(&[
        "group",
        "issue",
        "--dir",
        d.authority.to_str().unwrap(),
        "--group",
        "acm-student",
        "--holder",
        &"11".repeat(32),
        "--out",
        other.to_str().unwrap(),
    ]);
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "survey",
        "--credential",
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("credential-not-for-you"),
        "{}",
        text(&out)
    );
}

#[test]
fn goods_over_the_in_memory_limit_are_streamed_and_arrive_whole() {
    let d = Deployment::start();
    let out_path = d.root().join("big.out");
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "big",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&out_path).unwrap(),
        std::fs::read(d.root().join("catalog/big.bin")).unwrap()
    );
    assert_eq!(d.balance_minor("alice"), 100_000 - 1_000);
    assert!(d.conservation_holds());
}

#[test]
fn insufficient_funds_yields_a_signed_failure_receipt_and_no_debit() {
    let d = Deployment::start();
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "dataset",
        "--out",
        d.root().join("d").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("insufficient funds"), "{}", text(&out));
    assert!(!d.root().join("d").exists(), "no goods without payment");
    assert_eq!(d.balance_minor("alice"), 100_000);
    assert_eq!(d.balance_minor("acme"), 0);
    assert!(text(&d.wallet(&["history"])).contains("Settled(InsufficientFunds)"));
}

#[test]
fn the_customer_recovers_k_from_the_billing_server_when_the_merchant_drops_the_receipt() {
    let mut d = Deployment::start_with(&["--fault-drop-receipt"]);
    let goods = d.root().join("recovered.txt");
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "article",
        "--out",
        goods.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "pending expected: {}",
        text(&out)
    );
    assert!(!goods.exists());
    // She was debited, and the merchant is gone: only N can give her K now.
    assert_eq!(d.balance_minor("alice"), 98_000);
    d.merchant.kill();
    let out = d.wallet(&["recover"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&goods).unwrap(), ARTICLE);
    // Recovering again finds nothing to do and charges nothing.
    assert!(text(&d.wallet(&["recover"])).contains("nothing to recover"));
    assert_eq!(d.balance_minor("alice"), 98_000);
}

/// The record a wallet saves after the receipt is not waited for (no fsync): if a crash
/// tears it or loses it, the durable EPO record stands and `recover` finishes the purchase
/// again, from the receipt N keeps, without paying twice.
#[test]
fn a_torn_or_lost_settled_record_leaves_the_epo_record_and_recover_finishes_again() {
    let mut d = Deployment::start();
    let goods = d.root().join("article.out");
    let buy = d.wallet(&[
        "buy",
        &d.merchant.url,
        "article",
        "--out",
        goods.to_str().unwrap(),
    ]);
    assert!(buy.status.success(), "{}", text(&buy));
    let purchases = d.wallet.join("purchases");
    let settled: Vec<_> = std::fs::read_dir(&purchases)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "settled"))
        .collect();
    assert_eq!(settled.len(), 1, "one settled record after one purchase");
    let settled = &settled[0];
    let whole = std::fs::read(settled).unwrap();
    // Torn (cut in half, as a crash before the data reached the disk can leave it), then
    // lost altogether; each time without the merchant, so the receipt comes from N.
    d.merchant.kill();
    for damage in ["torn", "lost"] {
        match damage {
            "torn" => std::fs::write(settled, &whole[..whole.len() / 2]).unwrap(),
            _ => std::fs::remove_file(settled).unwrap(),
        }
        std::fs::remove_file(&goods).unwrap();
        // The wallet reads the EPO record (signed, no receipt yet), not a damaged file.
        let history = d.wallet(&["history"]);
        let shown = text(&history);
        assert!(history.status.success(), "{damage}: {shown}");
        assert!(shown.contains("Committed"), "{damage}: {shown}");
        assert!(!shown.contains("Settled(Committed)"), "{damage}: {shown}");
        let out = d.wallet(&["recover"]);
        assert!(out.status.success(), "{damage}: {}", text(&out));
        assert_eq!(
            std::fs::read_to_string(&goods).unwrap(),
            ARTICLE,
            "{damage}"
        );
        assert!(text(&d.wallet(&["history"])).contains("Settled(Committed)"));
        assert!(text(&d.wallet(&["recover"])).contains("nothing to recover"));
    }
    assert_eq!(d.balance_minor("alice"), 98_000, "paid once");
    assert!(d.conservation_holds());
}

#[test]
fn a_revoked_key_or_frozen_account_gets_a_failure_receipt_and_changes_nothing() {
    let d = Deployment::start();
    d.admin(&["freeze", "acme"]);
    let out = d.wallet(&["buy", &d.merchant.url, "article"]);
    assert!(!out.status.success());
    d.admin(&["unfreeze", "acme"]);
    d.admin(&["freeze", "alice"]);
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "article",
        "--out",
        d.root().join("a").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("frozen"), "{}", text(&out));
    d.admin(&["unfreeze", "alice"]);
    d.admin(&["revoke-key", "alice"]);
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "article",
        "--out",
        d.root().join("b").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("revoked"), "{}", text(&out));
    // A revoked key cannot even read the balance.
    let out = d.wallet(&["balance"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("unauthorized"), "{}", text(&out));
    assert_eq!(d.balance_minor("alice"), 100_000);
    assert_eq!(d.balance_minor("acme"), 0);
    assert!(d.conservation_holds());
}

#[test]
fn cli_bad_input_gets_one_line_and_a_nonzero_exit() {
    let d = Deployment::start();
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "admin",
                "--server",
                &d.server.url,
                "deposit",
                "alice",
                "USD:-1",
            ],
            "USD:0.00125",
        ),
        (
            &[
                "admin",
                "--server",
                &d.server.url,
                "deposit",
                "alice",
                "USD:0",
            ],
            "zero-amount",
        ),
        (
            &[
                "admin",
                "--server",
                &d.server.url,
                "deposit",
                "alice",
                "USD:99999999999",
            ],
            "over the limit",
        ),
        (
            &[
                "admin",
                "--server",
                &d.server.url,
                "deposit",
                "alice",
                "USD:0.000001",
            ],
            "more than 5 decimals",
        ),
        (
            &[
                "admin",
                "--server",
                &d.server.url,
                "deposit",
                "nobody",
                "USD:1",
            ],
            "no account nobody",
        ),
        (
            &[
                "admin",
                "--server",
                &d.server.url,
                "payout",
                "alice",
                "USD:2",
            ],
            "would overdraw",
        ),
    ];
    for (args, expect) in cases {
        let out = netbill(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let t = text(&out);
        assert!(t.contains(expect), "{args:?}: expected {expect:?} in {t}");
    }
    let w = d.wallet_arg();
    let out = netbill(&[
        "wallet",
        "--dir",
        &w,
        "buy",
        &d.merchant.url,
        "no-such-product",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("unknown-product"), "{}", text(&out));
    assert_eq!(
        text(&out).trim().lines().count(),
        1,
        "one line: {}",
        text(&out)
    );
    // A wallet pointed at a server that is down.
    let out = netbill(&[
        "wallet",
        "--dir",
        &w,
        "buy",
        "http://127.0.0.1:9",
        "article",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("cannot reach http://127.0.0.1:9"),
        "{}",
        text(&out)
    );
    // Not a wallet.
    let out = netbill(&[
        "wallet",
        "--dir",
        d.root().join("nope").to_str().unwrap(),
        "balance",
    ]);
    assert!(text(&out).contains("netbill wallet init"), "{}", text(&out));
    // A server refuses a non-loopback address.
    let out = netbill(&[
        "server",
        "run",
        "--dir",
        d.root().join("billing").to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(text(&out).contains("only loopback"), "{}", text(&out));
    // Nothing changed.
    assert_eq!(d.balance_minor("alice"), 100_000);
    assert!(d.conservation_holds());
}

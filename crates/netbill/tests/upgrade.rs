//! The upgrade from protocol v1 to v2 with real processes: a ledger, a merchant directory
//! and a wallet written by the v1 release (`tests/fixtures/v1.tar.gz`, made by
//! `tests/fixtures/make-v1.sh`; see `tests/fixtures/README.md`) are opened by the current
//! binary. Nothing is converted; the pending v1 purchases settle to their one outcome, old
//! signed records still verify, and a new v2 purchase works between the upgraded parties.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{BIN, Proc, TOKEN, get_json, text};
use netbill_crypto::RealCrypto;
use netbill_proto::crypto::PublicKey;
use netbill_proto::messages::{BillingEvidence, Epo, ResultCode};
use netbill_proto::signed::Signed;

const ARTICLE: &str = "On atomicity: money, goods and proof move together.\n";
const SURVEY: &str = "a survey of payment protocols\n";
/// What the fixture's merchant set: P's EPO commits for 10 years after its delivery.
const TEN_YEARS_MS: &str = "315360000000";

/// The v1 deployment, unpacked into a fresh directory.
struct V1 {
    dir: tempfile::TempDir,
    /// `KEY=value` lines of `urls.env`: the URLs the v1 run used.
    urls: Vec<(String, String)>,
}

impl V1 {
    fn unpack() -> V1 {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1.tar.gz");
        let out = Command::new("tar")
            .arg("-xzf")
            .arg(&fixture)
            .arg("-C")
            .arg(dir.path())
            .output()
            .expect("running tar");
        assert!(
            out.status.success(),
            "unpacking {}: {}",
            fixture.display(),
            text(&out)
        );
        let env = std::fs::read_to_string(dir.path().join("urls.env")).expect("urls.env");
        let urls = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        V1 { dir, urls }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn arg(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }

    fn url(&self, key: &str) -> &str {
        self.urls
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{key} in urls.env"))
    }

    /// Replaces the v1 run's URL `key` by `new` in the JSON files under `rel` (the URLs are
    /// configuration: merchant.json, wallet.json and the wallet's purchase records).
    fn rewrite_url(&self, key: &str, new: &str, rel: &str) -> usize {
        let old = self.url(key).to_string();
        let mut changed = 0;
        let mut stack = vec![self.path(rel)];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                for e in std::fs::read_dir(&p).expect("read_dir") {
                    stack.push(e.expect("dir entry").path());
                }
            } else if p.extension().is_some_and(|e| e == "json") {
                let s = std::fs::read_to_string(&p).expect("json file");
                if s.contains(&old) {
                    std::fs::write(&p, s.replace(&old, new)).expect("rewriting");
                    changed += 1;
                }
            }
        }
        changed
    }

    /// `netbill args…` with the current binary, run in the fixture's directory (the
    /// wallet's purchases name their goods files relative to it).
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .env("NETBILL_ADMIN_TOKEN", TOKEN)
            .env_remove("NETBILL_WALLET")
            .env_remove("NETBILL_CRASH_AT")
            .output()
            .expect("running netbill")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "netbill {args:?} failed ({}):\n{}",
            out.status,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wallet(&self, args: &[&str]) -> Output {
        let w = self.arg("wallet");
        let mut all = vec!["wallet", "--dir", &w];
        all.extend(args);
        self.run(&all)
    }

    /// N's receipt key, as the v1 merchant pinned it at `merchant init`.
    fn billing_key(&self) -> String {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.path("merchant/merchant.json")).unwrap())
                .expect("merchant.json");
        m["billing"]["sign_key"]
            .as_str()
            .expect("pinned sign_key")
            .to_string()
    }

    fn audit(&self) -> Output {
        let key = self.billing_key();
        self.run(&[
            "audit",
            "--store",
            &self.arg("billing/ledger.db"),
            "--billing-key",
            &key,
            "--json",
        ])
    }

    /// The signed EPO of the wallet purchase whose EPOID is `epoid`.
    fn wallet_epo(&self, epoid: &str) -> Signed<Epo> {
        for e in std::fs::read_dir(self.path("wallet/purchases")).expect("purchases") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|e| e == "json") {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).expect("record")).expect("json");
                let epo: Option<Signed<Epo>> =
                    serde_json::from_value(v["purchase"]["epo"].clone()).expect("an EPO");
                if let Some(epo) = epo
                    && epo.body_unverified().epoid.to_string() == epoid
                {
                    return epo;
                }
            }
        }
        panic!("no wallet purchase {epoid}");
    }
}

/// `(epoid, price, description, state)` of each line of `wallet history`.
fn history(out: &str) -> Vec<(String, String, String, String)> {
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = f.len();
            assert!(n >= 5, "history line {l:?}");
            (
                f[0].to_string(),
                f[2].to_string(),
                f[3..n - 1].join(" "),
                f[n - 1].to_string(),
            )
        })
        .collect()
}

/// An account's balance in minor units, from `admin show`.
fn balance_minor(v1: &V1, n: &str, account: &str) -> i64 {
    let out = v1.ok(&["admin", "--server", n, "show", account]);
    let s = out.split("balance USD:").nth(1).expect("balance in output");
    let amount = s.split(',').next().expect("amount").trim();
    let neg = amount.starts_with('-');
    let (i, f) = amount
        .trim_start_matches('-')
        .split_once('.')
        .expect("decimal");
    let v = i.parse::<i64>().expect("int") * 100_000 + f.parse::<i64>().expect("frac");
    if neg { -v } else { v }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_v1_ledger_merchant_and_wallet_keep_working_after_the_upgrade() {
    let v1 = V1::unpack();
    // As v1 left them: no static seal secrets yet.
    assert!(!v1.path("wallet/customer-seal.key").exists());
    assert!(!v1.path("merchant/merchant-seal.key").exists());

    // The v1 ledger audits clean as it is, before any v2 process has touched it.
    let out = v1.audit();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("audit json");
    assert_eq!(report["findings"], serde_json::json!([]), "{report}");
    assert_eq!(
        (
            &report["purchases"],
            &report["refunds"],
            &report["checkpoints"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{report}"
    );

    // What the v1 wallet holds: three settled purchases, P and Q signed without a receipt.
    let h = history(&String::from_utf8_lossy(&v1.wallet(&["history"]).stdout));
    let states: Vec<(&str, &str, &str)> = h
        .iter()
        .map(|(_, price, desc, state)| (price.as_str(), desc.as_str(), state.as_str()))
        .collect();
    let article = "Tygar: Atomicity in Electronic Commerce";
    let note = "A sub-cent note";
    assert_eq!(
        states,
        vec![
            ("USD:0.02000", article, "Settled(Committed)"),
            ("USD:0.00125", note, "Settled(Committed)"),
            (
                "USD:0.05000",
                "Payment protocols survey",
                "Settled(Committed)"
            ),
            ("USD:0.02000", article, "Committed"),
            ("USD:0.00125", note, "Committed"),
        ],
        "{h:?}"
    );
    let first_article = h[0].0.clone();
    let p = h[3].0.clone();
    let q = h[4].0.clone();
    for (epoid, _, _, _) in &h {
        assert_eq!(
            v1.wallet_epo(epoid).version(),
            1,
            "{epoid} was signed by v1"
        );
    }

    // N, upgraded, over the v1 ledger. Its EPO limit covers P's 10 years.
    let billing = v1.arg("billing");
    let server = Proc::start(&[
        "server",
        "run",
        "--dir",
        &billing,
        "--listen",
        "127.0.0.1:0",
        "--expiry-max-ms",
        TEN_YEARS_MS,
    ]);
    let n = server.url.clone();
    assert_eq!(v1.rewrite_url("N_URL", &n, "merchant"), 1);
    assert_eq!(v1.rewrite_url("N_URL", &n, "wallet"), 1);
    // The v1 history: USD:1 in, three purchases (0.07125) out, USD:0.01 of the article back.
    assert_eq!(balance_minor(&v1, &n, "alice"), 100_000 - 7_125 + 1_000);
    assert_eq!(balance_minor(&v1, &n, "acme"), 7_125 - 1_000);

    // M, upgraded, first settles what its v1 self endorsed and never sent (Q): it re-sends
    // the stored v1 endorsement unchanged, and N answers that Q's EPO expired (its merchant
    // gave it 1 s): a signed failure, no money moves.
    let mdir = v1.arg("merchant");
    let out = v1.ok(&["merchant", "recover", "--dir", &mdir]);
    assert_eq!(
        out.trim(),
        "1 endorsed purchases had no receipt; 1 settled, 0 still unsettled"
    );
    // N's signed record of Q, as the merchant fetches it: an "expired" receipt, no K.
    let ev: BillingEvidence =
        serde_json::from_str(&v1.ok(&["merchant", "evidence", "--dir", &mdir, &q]))
            .expect("N's evidence of Q");
    let n_key = PublicKey::from_hex(&v1.billing_key()).expect("N's key");
    let receipt = ev.receipt.verify(&RealCrypto, &n_key).expect("N signed it");
    assert_eq!(receipt.result, ResultCode::Expired);
    assert_eq!(receipt.epoid.to_string(), q);
    assert!(ev.goods_key.is_none());
    let endorsement = ev.endorsement.expect("the endorsement N decided on");
    assert_eq!(endorsement.version(), 1, "re-sent as v1 stored it");
    assert_eq!(endorsement.body_unverified().epo.version(), 1);
    assert_eq!(balance_minor(&v1, &n, "alice"), 93_875);

    let catalog = v1.arg("catalog/catalog.toml");
    let merchant = Proc::start(&[
        "merchant",
        "run",
        "--dir",
        &mdir,
        "--catalog",
        &catalog,
        "--listen",
        "127.0.0.1:0",
        "--epo-expiry-ms",
        "60000",
    ]);
    let m = merchant.url.clone();
    assert!(v1.path("merchant/merchant-seal.key").exists());
    assert_eq!(mode(&v1.path("merchant/merchant-seal.key")), 0o600);
    assert_eq!(v1.rewrite_url("M_URL", &m, "wallet"), 4);
    assert_eq!(v1.rewrite_url("M2_URL", &m, "wallet"), 1);

    // The wallet recovers: P's v1 EPO goes to the upgraded merchant, which endorses it (v2
    // endorsement of a v1 EPO); N commits it and seals the customer part as v1, to P's
    // per-purchase reply key; the goods decrypt. Q gets N's signed failure.
    let out = v1.wallet(&["recover"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(t.lines().count(), 2, "{t}");
    assert!(
        t.contains(
            ": paid USD:0.02000; goods written to goods/pending-article.txt; balance USD:0.91875"
        ),
        "{t}"
    );
    assert!(
        t.contains(": not paid — failed: the purchase order expired"),
        "{t}"
    );
    assert_eq!(
        std::fs::read_to_string(v1.path("goods/pending-article.txt")).expect("P's goods"),
        ARTICLE
    );
    assert!(
        !v1.path("goods/pending-note.txt").exists(),
        "no goods for Q"
    );
    assert!(
        text(&v1.wallet(&["recover"])).contains("nothing to recover"),
        "one outcome each, already reached"
    );
    assert!(v1.path("wallet/customer-seal.key").exists());
    assert_eq!(mode(&v1.path("wallet/customer-seal.key")), 0o600);
    // P stays a v1 EPO: nothing stored is re-signed; the upgraded merchant endorsed it as v2.
    assert_eq!(v1.wallet_epo(&p).version(), 1);
    let ev: BillingEvidence =
        serde_json::from_str(&v1.ok(&["merchant", "evidence", "--dir", &mdir, &p]))
            .expect("N's evidence of P");
    let receipt = ev.receipt.verify(&RealCrypto, &n_key).expect("N signed it");
    assert_eq!(receipt.result, ResultCode::Committed);
    let endorsement = ev.endorsement.expect("the endorsement N decided on");
    assert_eq!(endorsement.version(), 2);
    assert_eq!(endorsement.body_unverified().epo.version(), 1);

    // Balances: the v1 history, plus P; Q moved nothing. Conservation holds.
    assert_eq!(balance_minor(&v1, &n, "alice"), 93_875 - 2_000);
    assert_eq!(balance_minor(&v1, &n, "acme"), 6_125 + 2_000);
    v1.ok(&["admin", "--server", &n, "conservation"]);
    let out = text(&v1.wallet(&["balance"]));
    assert_eq!(out.trim(), "alice: USD:0.91875");
    let h = history(&String::from_utf8_lossy(&v1.wallet(&["history"]).stdout));
    let state_of = |epoid: &str| {
        h.iter()
            .find(|(e, ..)| e == epoid)
            .map(|(.., s)| s.clone())
            .unwrap_or_else(|| panic!("{epoid} in {h:?}"))
    };
    assert_eq!(state_of(&p), "Settled(Committed)");
    assert_eq!(state_of(&q), "Settled(Expired)");

    // The statement from N lists the v1 purchases, P, and the v1 refund.
    let st = text(&v1.wallet(&["statement"]));
    assert!(
        st.contains("statement for alice — balance USD:0.91875"),
        "{st}"
    );
    assert!(st.contains("total: USD:0.09125"), "{st}");
    assert!(st.contains("refunded: USD:0.01000"), "{st}");
    assert!(st.contains(&format!("  {first_article} ")), "{st}");

    // Old signed records still verify: an arbitrator rules on the v1 article purchase from
    // the v1 receipt, EPO and endorsement, and on P (v1 EPO, v2 endorsement).
    let n_keys = get_json(&n, "/v1/keys");
    let n_key = n_keys["sign_key"].as_str().expect("sign_key").to_string();
    let m_key = get_json(&n, "/v1/merchants/acme")["public_key"]
        .as_str()
        .expect("merchant key")
        .to_string();
    for (epoid, name) in [(&first_article, "ev-v1"), (&p, "ev-p")] {
        let ev = v1.arg(name);
        let out = v1.wallet(&["evidence", epoid, "--out", &ev]);
        assert!(out.status.success(), "{}", text(&out));
        for claim in ["never-got-key", "wrong-goods"] {
            let out = v1.run(&[
                "dispute",
                claim,
                "--billing-key",
                &n_key,
                "--merchant-key",
                &m_key,
                "--evidence",
                &ev,
                "--json",
            ]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
            assert_eq!(v["epoid"], epoid.as_str(), "{v}");
            if claim == "never-got-key" {
                assert_eq!(out.status.code(), Some(0), "{v}");
                assert_eq!(v["ruling"], "key_produced", "{v}");
            } else {
                assert_eq!(out.status.code(), Some(4), "{v}");
                assert_eq!(v["ruling"], "for_merchant", "{v}");
                assert!(
                    v["reasons"]
                        .to_string()
                        .contains("exactly what the signed quote promised"),
                    "{v}"
                );
            }
        }
    }
    let billing_ev: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v1.path("ev-v1/billing-evidence.json")).unwrap())
            .expect("N's evidence");
    assert_eq!(
        billing_ev["refunds"].as_array().map(Vec::len),
        Some(1),
        "{billing_ev}"
    );

    // A new purchase between the upgraded parties is v2, end to end.
    let out = v1.wallet(&["buy", &m, "survey", "--out", "goods/v2-survey.txt"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "survey: paid USD:0.05000; goods written to goods/v2-survey.txt; balance USD:0.86875"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(v1.path("goods/v2-survey.txt")).expect("v2 goods"),
        SURVEY
    );
    let h = history(&String::from_utf8_lossy(&v1.wallet(&["history"]).stdout));
    assert_eq!(h.len(), 6, "{h:?}");
    let new: Vec<_> = h
        .iter()
        .filter(|(e, ..)| v1.wallet_epo(e).version() == 2)
        .collect();
    assert_eq!(new.len(), 1, "exactly one v2 EPO: {h:?}");
    assert_eq!(new[0].1, "USD:0.05000");
    assert_eq!(new[0].3, "Settled(Committed)");
    assert_eq!(balance_minor(&v1, &n, "alice"), 91_875 - 5_000);
    assert_eq!(balance_minor(&v1, &n, "acme"), 8_125 + 5_000);
    v1.ok(&["admin", "--server", &n, "conservation"]);

    // The ledger, with v1 and v2 records side by side, audits clean (N signs a checkpoint
    // of the new head first).
    v1.ok(&["admin", "--server", &n, "checkpoint"]);
    let out = v1.audit();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("audit json");
    assert_eq!(report["findings"], serde_json::json!([]), "{report}");
    assert_eq!(
        (
            &report["purchases"],
            &report["refunds"],
            &report["checkpoints"]
        ),
        (
            &serde_json::json!(5),
            &serde_json::json!(1),
            &serde_json::json!(2)
        ),
        "{report}"
    );
    drop(merchant);
    drop(server);
}

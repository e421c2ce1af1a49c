//! A real deployment for tests: `netbill server`, `netbill merchant` and wallets as
//! separate processes on loopback, set up through the CLI the way a user would.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const TOKEN: &str = "test-admin-token-0123456789";
pub const BIN: &str = env!("CARGO_BIN_EXE_netbill");

/// Runs `netbill args…` to completion.
pub fn netbill(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NETBILL_ADMIN_TOKEN", TOKEN)
        .env_remove("NETBILL_WALLET")
        .output()
        .expect("running netbill")
}

/// Runs `netbill args…`, which must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = netbill(args);
    assert!(
        out.status.success(),
        "netbill {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stdout and stderr together, for asserting on messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A long-running `netbill` process, killed on drop.
pub struct Proc {
    child: Child,
    pub url: String,
}

impl Proc {
    /// Starts `netbill args…` and waits for its "listening on http://…" line.
    pub fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env("NETBILL_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting netbill");
        let addr =
            netbill_chaos::process::wait_listening(&mut child, std::time::Duration::from_secs(30))
                .unwrap_or_else(|| panic!("netbill {args:?} did not start listening"));
        let url = format!("http://{addr}");
        Proc { child, url }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub const ARTICLE: &str = "On atomicity: money, goods and proof move together.\n";

/// A billing server, one merchant (with the catalog below) and one funded customer.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub server: Proc,
    pub merchant: Proc,
    pub wallet: PathBuf,
    pub authority: PathBuf,
}

impl Deployment {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn start() -> Deployment {
        Self::start_with(&[])
    }

    /// Starts everything; `merchant_flags` are extra flags for `merchant run`.
    pub fn start_with(merchant_flags: &[&str]) -> Deployment {
        Self::start_full(&[], merchant_flags)
    }

    /// Starts everything with extra flags for `server run` and `merchant run`.
    pub fn start_full(server_flags: &[&str], merchant_flags: &[&str]) -> Deployment {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |s: &str| dir.path().join(s).to_string_lossy().into_owned();
        ok(&["server", "init", "--dir", &p("billing")]);
        let billing_dir = p("billing");
        let mut sargs = vec![
            "server",
            "run",
            "--dir",
            &billing_dir,
            "--listen",
            "127.0.0.1:0",
        ];
        sargs.extend(server_flags);
        let server = Proc::start(&sargs);
        let n = server.url.clone();

        let out = ok(&["group", "init", "--dir", &p("acm")]);
        let authority_key = key_from(&out);

        let out = ok(&[
            "merchant",
            "init",
            "--dir",
            &p("merchant"),
            "--id",
            "acme",
            "--billing",
            &n,
        ]);
        let mkey = key_from(&out);
        ok(&[
            "admin",
            "--server",
            &n,
            "create-account",
            "acme",
            "--kind",
            "merchant",
            "--key",
            &mkey,
        ]);

        std::fs::create_dir_all(p("catalog")).expect("catalog dir");
        std::fs::write(p("catalog/article.txt"), ARTICLE).expect("goods");
        std::fs::write(p("catalog/note.txt"), "a sub-cent note\n").expect("goods");
        std::fs::write(
            p("catalog/survey.txt"),
            "a survey, cheaper for ACM members\n",
        )
        .expect("goods");
        std::fs::write(p("catalog/dataset.bin"), vec![7u8; 200_000]).expect("goods");
        // Over the merchant's in-memory limit (1 MiB): encrypted twice, streamed.
        let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
            .map(|i: u32| (i % 251) as u8)
            .collect();
        std::fs::write(p("catalog/big.bin"), big).expect("goods");
        std::fs::write(
            p("catalog/catalog.toml"),
            format!(
                r#"merchant = "acme"

[groups]
acm-student = "{authority_key}"

[[product]]
code = "article"
description = "Tygar: Atomicity in Electronic Commerce"
price = "USD:0.02"
file = "article.txt"

[[product]]
code = "note"
description = "A sub-cent note"
price = "USD:0.00125"
file = "note.txt"

[[product]]
code = "survey"
description = "Payment protocols survey"
price = "USD:0.05"
file = "survey.txt"
group_prices = {{ acm-student = "USD:0.03" }}

[[product]]
code = "dataset"
description = "A large dataset"
price = "USD:50"
file = "dataset.bin"

[[product]]
code = "big"
description = "Three mebibytes, streamed"
price = "USD:0.01"
file = "big.bin"
"#
            ),
        )
        .expect("catalog");
        let mdir = p("merchant");
        let mut margs = vec!["merchant", "run", "--dir", &mdir];
        let catalog = p("catalog/catalog.toml");
        margs.extend(["--catalog", &catalog, "--listen", "127.0.0.1:0"]);
        margs.extend(merchant_flags);
        let merchant = Proc::start(&margs);

        let wallet = dir.path().join("wallet");
        let w = wallet.to_string_lossy().into_owned();
        let out = ok(&[
            "wallet",
            "--dir",
            &w,
            "init",
            "--account",
            "alice",
            "--billing",
            &n,
        ]);
        let ckey = key_from(&out);
        ok(&[
            "admin",
            "--server",
            &n,
            "create-account",
            "alice",
            "--kind",
            "customer",
            "--key",
            &ckey,
        ]);
        ok(&["admin", "--server", &n, "deposit", "alice", "USD:1"]);
        Deployment {
            authority: dir.path().join("acm"),
            dir,
            server,
            merchant,
            wallet,
        }
    }

    pub fn wallet_arg(&self) -> String {
        self.wallet.to_string_lossy().into_owned()
    }

    /// `netbill wallet --dir <wallet> args…`, run in the deployment's directory (so that
    /// goods bought without `--out` land there, not in the crate shared by every test).
    pub fn wallet(&self, args: &[&str]) -> Output {
        let w = self.wallet_arg();
        let mut all = vec!["wallet", "--dir", &w];
        all.extend(args);
        Command::new(BIN)
            .args(&all)
            .current_dir(self.root())
            .env("NETBILL_ADMIN_TOKEN", TOKEN)
            .env_remove("NETBILL_WALLET")
            .output()
            .expect("running netbill")
    }

    /// `netbill admin --server <N> args…`, which must succeed.
    pub fn admin(&self, args: &[&str]) -> String {
        let mut all = vec!["admin", "--server", &self.server.url];
        all.extend(args);
        ok(&all)
    }

    /// An account's balance in minor units, from `admin show`.
    pub fn balance_minor(&self, account: &str) -> i64 {
        let out = self.admin(&["show", account]);
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

    pub fn conservation_holds(&self) -> bool {
        netbill(&["admin", "--server", &self.server.url, "conservation"])
            .status
            .success()
    }
}

/// The hex key after "public key: " in a command's output.
pub fn key_from(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .map(|k| k.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no public key in {out:?}"))
}

/// `GET url path` over plain HTTP/1.1 on loopback; the body.
pub fn get_text(url: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n").expect("a body").1.to_string()
}

/// `GET url path`; the JSON body.
pub fn get_json(url: &str, path: &str) -> serde_json::Value {
    let body = get_text(url, path);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// N's receipt signing key (hex), from `GET /v1/keys`.
pub fn billing_key(d: &Deployment) -> String {
    get_json(&d.server.url, "/v1/keys")["sign_key"]
        .as_str()
        .expect("sign_key")
        .to_string()
}

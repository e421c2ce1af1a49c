//! `netbill audit`: verify a ledger from its signed records; unwind what a corrupted server
//! did, through the admin API.

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use netbill_audit::{Report, Snapshot, audit};
use netbill_proto::crypto::PublicKey;
use netbill_server::AdminClient;

/// Exit status: the ledger is intact.
const EXIT_CLEAN: u8 = 0;
/// Exit status: tampering was found, but every balance is what the signed records imply
/// (e.g. after an unwind, or an entry deleted without touching money).
const EXIT_EVIDENCE: u8 = 1;
/// Exit status: money is wrong now; `--unwind` restores it.
const EXIT_MONEY_WRONG: u8 = 3;

#[derive(Args)]
#[command(
    after_help = "Exit status: 0 the ledger is intact; 1 tampering found but every \
balance is right (evidence only); 3 money is wrong now (run with --unwind); 2 bad usage. \
See docs/audit.md."
)]
pub struct AuditArgs {
    /// Read the ledger straight from its store: `sqlite://PATH` (or a path) or
    /// `postgres://…`. The audit only reads (the server may keep running); a database of an
    /// older schema is migrated when opened, as the server would.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "server",
        required_unless_present = "server"
    )]
    store: Option<String>,
    /// Read the ledger over a running billing server's admin API (needs the admin token).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The environment variable holding the admin token.
    #[arg(
        long = "token-env",
        default_value = "NETBILL_ADMIN_TOKEN",
        value_name = "VAR"
    )]
    token_env: String,
    /// N's receipt signing key (hex), as `netbill server init` printed it. Checkpoints and
    /// receipts are verified against it. Without it, `--server`'s own `/v1/keys` is used.
    #[arg(long, value_name = "HEX")]
    billing_key: Option<PublicKey>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Compute the adjustments that restore every balance to what the signed records
    /// imply, and apply them through `--unwind-via`'s admin API after confirmation.
    #[arg(long)]
    unwind: bool,
    /// The billing server that applies the unwind (default: --server).
    #[arg(long, value_name = "URL")]
    unwind_via: Option<String>,
    /// Apply the unwind without asking.
    #[arg(long)]
    yes: bool,
}

fn admin_client(url: &str, token_env: &str) -> anyhow::Result<AdminClient> {
    let token =
        std::env::var(token_env).with_context(|| format!("set the admin token in ${token_env}"))?;
    AdminClient::new(url, &token).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A spinner on standard error (hidden when it is not a terminal) counting what is read.
fn spinner() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} reading the ledger: {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar
}

async fn snapshot(a: &AuditArgs) -> anyhow::Result<Snapshot> {
    let bar = spinner();
    let progress = {
        let bar = bar.clone();
        move |what: &str, n: usize| bar.set_message(format!("{n} {what}"))
    };
    let snap = if let Some(url) = &a.store {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if !url.contains("://") || url.starts_with("sqlite://") {
            anyhow::ensure!(
                std::path::Path::new(path).exists(),
                "no ledger at {path}: give the path of the server's ledger.db"
            );
        }
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = netbill_ledger::open_store(&url)
                .with_context(|| format!("opening {}", netbill_ledger::redact_url(&url)))?;
            Snapshot::from_store_with(store.as_mut(), &progress).context("reading the ledger")
        })
        .await??
    } else {
        let server = a.server.as_deref().context("give --store or --server")?;
        let admin = admin_client(server, &a.token_env)?;
        Snapshot::from_server_with(&admin, &progress)
            .await
            .map_err(|e| anyhow::anyhow!("reading the ledger from {server}: {e}"))?
    };
    bar.finish_and_clear();
    Ok(snap)
}

async fn billing_key(a: &AuditArgs) -> anyhow::Result<PublicKey> {
    if let Some(k) = a.billing_key {
        return Ok(k);
    }
    let server = a.server.as_deref().or(a.unwind_via.as_deref()).context(
        "give --billing-key (N's receipt signing key, as `netbill server init` printed it)",
    )?;
    let keys: netbill_server::BillingPublic = netbill_http::client::Client::new(server)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .call::<(), _>(reqwest::Method::GET, "/v1/keys", None, &[])
        .await
        .map_err(|e| anyhow::anyhow!("fetching N's keys from {server}: {e}"))?;
    eprintln!(
        "note: trusting {server}'s own signing key {}; pin it with --billing-key",
        keys.sign_key
    );
    Ok(keys.sign_key)
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "audited {} journal entries, {} checkpoints, {} purchases, {} refunds, {} accounts ({} adjustments)",
        report.entries,
        report.checkpoints,
        report.purchases,
        report.refunds,
        report.accounts,
        report.adjustments
    );
    if report.findings.is_empty() {
        println!(
            "ledger intact: chain and checkpoints verify, every movement is signed, balances replay"
        );
    }
    for f in &report.findings {
        let kind = serde_json::to_value(f.kind)?;
        println!("  {:<24} {}", kind.as_str().unwrap_or("?"), f.detail);
    }
    if let Some(why) = &report.unwind_refused {
        println!("cannot unwind automatically: {why}");
    } else if !report.unwind.is_empty() {
        println!("unwind plan ({} adjustments):", report.unwind.len());
        for a in &report.unwind {
            println!(
                "  {:<20} {:>18}  {}",
                a.account.to_string(),
                netbill_proto::money::format_minor(a.delta_minor),
                a.memo
            );
        }
    }
    Ok(())
}

fn exit(report: &Report) -> ExitCode {
    ExitCode::from(if report.money_wrong() {
        EXIT_MONEY_WRONG
    } else if report.findings.is_empty() {
        EXIT_CLEAN
    } else {
        EXIT_EVIDENCE
    })
}

pub async fn run(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let key = billing_key(&a).await?;
    let snap = snapshot(&a).await?;
    let report = audit(&snap, &key);
    // With --json and --unwind, one JSON document: the report, or {before, after} once
    // adjustments were applied.
    let deferred = a.json && a.unwind;
    if !deferred {
        print(&report, a.json)?;
    }
    if !a.unwind {
        return Ok(exit(&report));
    }
    let print_before = || {
        if deferred {
            print(&report, true)
        } else {
            Ok(())
        }
    };
    if let Some(why) = &report.unwind_refused {
        print_before()?;
        anyhow::bail!("refusing to unwind: {why}");
    }
    if report.unwind.is_empty() {
        print_before()?;
        eprintln!("nothing to unwind: every balance is what the signed records imply");
        return Ok(exit(&report));
    }
    let via = a.unwind_via.as_deref().or(a.server.as_deref()).context(
        "--unwind applies adjustments through the admin API: give --server or --unwind-via",
    )?;
    if !a.yes {
        eprint!(
            "apply these {} adjustments through {via}? [y/N] ",
            report.unwind.len()
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            print_before()?;
            eprintln!("not applied");
            return Ok(exit(&report));
        }
    }
    let admin = admin_client(via, &a.token_env)?;
    let totals = admin
        .adjust(report.unwind.clone())
        .await
        .map_err(|e| anyhow::anyhow!("applying the unwind through {via}: {e}"))?;
    eprintln!(
        "applied {} adjustments; balances now sum to {} = deposits - payouts",
        report.unwind.len(),
        netbill_proto::money::format_minor(totals.balances_minor)
    );
    let after = audit(&snapshot(&a).await?, &key);
    if deferred {
        let both = serde_json::json!({ "before": report, "after": after });
        println!("{}", serde_json::to_string_pretty(&both)?);
    } else {
        println!("after the unwind:");
        print(&after, false)?;
    }
    if !after.findings.is_empty() && !after.money_wrong() {
        eprintln!(
            "every balance is right; the remaining findings stay as evidence. If N stopped because its journal was changed behind its back, let it resume with `netbill admin checkpoint --acknowledge-audit`"
        );
    }
    Ok(exit(&after))
}

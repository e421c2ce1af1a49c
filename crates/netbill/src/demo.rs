//! `netbill demo`: the whole system in one process, on loopback, with SQLite in a temporary
//! directory. Buys four articles and prints what happened.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, ensure};
use clap::Args;
use netbill_crypto::RealCrypto;
use netbill_merchant::{Fault, MerchantConfig};
use netbill_proto::billing::{AccountKind, BillingPolicy};
use netbill_proto::money::format_minor;
use netbill_proto::{AccountId, Amount, GroupName, ProductCode};
use netbill_server::{AdminClient, BillingKeys, ServerConfig};
use netbill_wallet::{BuyOptions, Outcome, Step, Wallet};

#[derive(Args)]
pub struct DemoArgs {
    /// Keep the demo's files (keys, ledger, wallet, goods) in this directory instead of a
    /// temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn id(s: &str) -> anyhow::Result<AccountId> {
    Ok(AccountId::new(s)?)
}

fn usd(s: &str) -> anyhow::Result<Amount> {
    Ok(s.parse()?)
}

const ARTICLES: [(&str, &str, &str, &str); 4] = [
    (
        "atomicity",
        "Tygar: Atomicity in Electronic Commerce (1996)",
        "USD:0.02",
        "",
    ),
    (
        "micro-note",
        "A note on sub-cent pricing",
        "USD:0.00125",
        "",
    ),
    (
        "acm-survey",
        "Survey of payment protocols (ACM members: group price)",
        "USD:0.05",
        "USD:0.03",
    ),
    ("big-dataset", "A large dataset slice", "USD:5", ""),
];

fn write_catalog(
    dir: &Path,
    authority: &netbill_proto::crypto::PublicKey,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut toml =
        format!("merchant = \"acme-press\"\n\n[groups]\nacm-student = \"{authority}\"\n");
    for (code, desc, price, group) in ARTICLES {
        std::fs::write(
            dir.join(format!("{code}.txt")),
            format!("{desc}\n\n{}\n", "Lorem ipsum. ".repeat(200)),
        )?;
        toml.push_str(&format!(
            "\n[[product]]\ncode = \"{code}\"\ndescription = \"{desc}\"\nprice = \"{price}\"\nfile = \"{code}.txt\"\n"
        ));
        if !group.is_empty() {
            toml.push_str(&format!("group_prices = {{ acm-student = \"{group}\" }}\n"));
        }
    }
    let path = dir.join("catalog.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let root = args.dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&root)?;
    println!("NetBill demo — files in {}\n", root.display());

    // The billing server N, on SQLite.
    let token = hex_token();
    BillingKeys::create(&root.join("billing"))?;
    let server = netbill_server::start(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        db: format!(
            "sqlite://{}",
            root.join("billing").join("ledger.db").display()
        ),
        keys_dir: root.join("billing"),
        admin_token: token.clone(),
        policy: BillingPolicy::default(),
        batch_max: 256,
        queue_max: 1024,
        checkpoint_interval_ms: Some(10_000),
    })
    .await?;
    let n_url = format!("http://{}", server.addr);
    println!(
        "billing server N   {n_url}  (receipt key {}…)",
        &server.public.sign_key.to_hex()[..16]
    );
    let admin = AdminClient::new(&n_url, &token)?;

    // A group authority, the merchant M and its catalog.
    let authority = crate::group::init(&root.join("acm"))?;
    let m_pk = netbill_merchant::init(
        &root.join("merchant"),
        id("acme-press")?,
        &n_url,
        server.public,
    )?;
    admin
        .create_account(&id("acme-press")?, AccountKind::Merchant, m_pk, None, None)
        .await?;
    let catalog = write_catalog(&root.join("catalog"), &authority)?;
    let merchant = netbill_merchant::start(MerchantConfig {
        dir: root.join("merchant"),
        catalog,
        listen: "127.0.0.1:0".parse()?,
        epo_expiry_ms: 600_000,
        quote_ttl_ms: 300_000,
        recovery_interval_ms: 2_000,
        fault: Fault::None,
    })
    .await?;
    let m_url = format!("http://{}", merchant.addr);
    println!("merchant M         {m_url}  (acme-press, 4 articles)");

    // The customer C: a wallet, an account funded with USD:1, an ACM credential.
    let wallet = Wallet::create(
        &root.join("wallet"),
        id("alice")?,
        None,
        &n_url,
        server.public,
    )?;
    admin
        .create_account(
            &id("alice")?,
            AccountKind::Customer,
            wallet.public_key(),
            None,
            Some(usd("USD:0.10")?),
        )
        .await?;
    admin
        .transfer(&id("alice")?, false, usd("USD:1")?, Some("demo-topup-1"))
        .await?;
    let credential = crate::group::issue(
        &root.join("acm"),
        GroupName::new("acm-student")?,
        wallet.public_key(),
        "member 4242".into(),
        30,
    )?;
    println!("customer C         alice, funded with USD:1, holds an acm-student credential\n");

    let before = (
        admin.show(&id("alice")?).await?,
        admin.show(&id("acme-press")?).await?,
    );
    println!(
        "balances before:   alice {}   acme-press {}\n",
        before.0.balance, before.1.balance
    );

    let goods_dir = root.join("goods");
    std::fs::create_dir_all(&goods_dir)?;
    let mut spent = 0i64;
    for (i, (code, _, _, group)) in ARTICLES.iter().enumerate() {
        let product = ProductCode::new(code)?;
        let opts = BuyOptions {
            max_price: None,
            credentials: if group.is_empty() {
                vec![]
            } else {
                vec![credential.clone()]
            },
            out: Some(goods_dir.join(format!("{code}.txt"))),
            memo: String::new(),
        };
        println!(
            "── purchase {}: {code}{}",
            i + 1,
            if group.is_empty() {
                ""
            } else {
                " (with the acm-student credential)"
            }
        );
        let transcript = i == 0;
        let mut report = |s: Step| {
            if let (true, Step::Protocol(n, text)) = (transcript, s) {
                println!("   {n}. {text}");
            }
        };
        let outcome = wallet
            .buy(&m_url, &product, &opts, &mut report)
            .await
            .with_context(|| format!("buying {code}"))?;
        match &outcome {
            Outcome::Paid {
                path,
                price,
                balance_minor,
                low_balance,
            } => {
                spent += price.signed();
                println!(
                    "   paid {price}; goods decrypted and checked → {}; balance {}{}",
                    path.display(),
                    format_minor(*balance_minor),
                    if *low_balance { " (low)" } else { "" }
                );
            }
            Outcome::NotPaid {
                result,
                balance_minor,
            } => println!(
                "   not paid: {}; balance {}",
                result.describe(),
                balance_minor.map(format_minor).unwrap_or_default()
            ),
            other => anyhow::bail!("purchase of {code} did not finish: {other:?}"),
        }
        print_receipt(&wallet, &server.public.sign_key)?;
        println!();
    }

    let after = (
        admin.show(&id("alice")?).await?,
        admin.show(&id("acme-press")?).await?,
    );
    println!(
        "balances after:    alice {}   acme-press {}",
        after.0.balance, after.1.balance
    );
    println!(
        "alice spent {}, acme-press earned {}",
        format_minor(before.0.balance_minor - after.0.balance_minor),
        format_minor(after.1.balance_minor - before.1.balance_minor)
    );
    let totals = admin.conservation().await?;
    println!(
        "conservation: balances {} = deposits {} - payouts {} ✓",
        format_minor(totals.balances_minor),
        format_minor(totals.deposits_minor),
        format_minor(totals.payouts_minor)
    );
    ensure!(
        before.0.balance_minor - after.0.balance_minor == spent,
        "alice was charged something other than the prices paid"
    );
    ensure!(
        after.1.balance_minor - before.1.balance_minor == spent,
        "the merchant earned something other than the prices paid"
    );
    ensure!(
        spent == usd("USD:0.05125")?.signed(),
        "expected USD:0.02 + USD:0.00125 + USD:0.03 to be paid"
    );
    // The auditor's view: N signs a checkpoint; every entry is checked against it and
    // against the customer's and merchant's signatures.
    admin.checkpoint(false).await?;
    let snapshot = netbill_audit::Snapshot::from_server(&admin).await?;
    let report = netbill_audit::audit(&snapshot, &server.public.sign_key);
    ensure!(
        report.findings.is_empty(),
        "the audit found problems: {:?}",
        report.findings
    );
    println!(
        "audit: {} journal entries chained up to N's signed checkpoint; {} purchases, each backed by the customer's and merchant's signatures; balances replay ✓",
        report.entries, report.purchases
    );
    merchant.abort();
    server.abort();
    Ok(ExitCode::SUCCESS)
}

/// Prints the latest purchase's receipt, re-verified under N's key.
fn print_receipt(wallet: &Wallet, n_key: &netbill_proto::crypto::PublicKey) -> anyhow::Result<()> {
    let latest = wallet
        .purchases()?
        .into_iter()
        .last()
        .and_then(|r| r.purchase.receipt)
        .context("no receipt recorded")?;
    let r = latest
        .verify(&RealCrypto, n_key)
        .map_err(|e| anyhow::anyhow!("receipt does not verify: {e}"))?;
    println!(
        "   receipt (signed by N, verified): {:?} | EPOID {} | {:?} | {} | merchant {} | time {}",
        r.result, r.epoid, r.description, r.price, r.merchant, r.time_ms
    );
    Ok(())
}

fn hex_token() -> String {
    netbill_crypto::random_bytes::<16>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

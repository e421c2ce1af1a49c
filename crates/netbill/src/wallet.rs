//! `netbill wallet …`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use netbill_proto::crypto::PublicKey;
use netbill_proto::messages::GroupCredential;
use netbill_proto::money::format_minor;
use netbill_proto::{AccountId, Amount, ProductCode, Signed};
use netbill_wallet::{BuyOptions, Outcome, Step, Wallet};

#[derive(Args)]
pub struct WalletArgs {
    /// The wallet directory.
    #[arg(long, env = "NETBILL_WALLET", default_value = "netbill-wallet")]
    dir: PathBuf,
    #[command(subcommand)]
    command: WalletCommand,
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Create a wallet: a signing key, and the billing server's pinned keys.
    Init {
        /// Your account id at the billing server.
        #[arg(long)]
        account: AccountId,
        /// The billing server's URL.
        #[arg(long)]
        billing: String,
        /// Pin the billing server's receipt key (hex).
        #[arg(long)]
        billing_key: Option<PublicKey>,
        /// The identity merchants see (a pseudonym); default: the account id.
        #[arg(long)]
        identity: Option<AccountId>,
    },
    /// Print the wallet's public key (for the operator to register).
    Key,
    /// Buy a product from a merchant: two round trips (the offer with the encrypted goods, then the EPO for the receipt).
    Buy {
        /// The merchant's URL.
        merchant: String,
        /// The product code.
        product: ProductCode,
        /// Refuse to pay more than this (e.g. USD:0.05). Sent to the merchant as the bid, so
        /// a higher price is refused before any goods are sent; without it the wallet accepts
        /// the price the merchant quotes.
        #[arg(long)]
        max_price: Option<Amount>,
        /// A group credential file (from `netbill group issue`), for a group price.
        #[arg(long)]
        credential: Vec<PathBuf>,
        /// Where to write the goods (default: ./<product>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the protocol transcript.
        #[arg(long)]
        verbose: bool,
    },
    /// Show the balance at the billing server.
    Balance,
    /// List this wallet's purchases and their states.
    History,
    /// Show the statement from the billing server (purchases by description, per merchant).
    Statement {
        /// Start of the period, milliseconds since the Unix epoch.
        #[arg(long)]
        from_ms: Option<u64>,
        /// End of the period (exclusive).
        #[arg(long)]
        to_ms: Option<u64>,
    },
    /// Finish every unfinished purchase: abort those not yet signed, and get the receipt
    /// and goods of those signed (from the merchant, else from the billing server).
    Recover,
    /// Export a purchase's evidence for a dispute into a directory: your signed records
    /// (customer-evidence.json), the ciphertext as received (goods.nbg) and N's signed
    /// records with the key (billing-evidence.json). Hand the directory to an arbitrator,
    /// who runs `netbill dispute` on it.
    Evidence {
        /// The purchase's wallet id or EPOID (see `netbill wallet history`).
        purchase: String,
        /// The directory to write (created).
        #[arg(long)]
        out: PathBuf,
    },
    /// Let an arbitrator fetch N's records of a purchase directly (`netbill arbitrator
    /// fetch`): prints a signed grant for the arbitrator's key, valid for a limited time.
    Grant {
        /// The purchase's wallet id or EPOID.
        purchase: String,
        /// The arbitrator's public key (hex), from `netbill arbitrator init`.
        #[arg(long)]
        arbitrator_key: PublicKey,
        /// How long the grant is valid, in milliseconds (default: 7 days).
        #[arg(long, default_value_t = 7 * 24 * 3_600_000)]
        valid_for_ms: u64,
    },
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Paid {
            path,
            price,
            balance_minor,
            low_balance,
        } => format!(
            "paid {price}; goods written to {}; balance {}{}",
            path.display(),
            format_minor(*balance_minor),
            if *low_balance {
                " (low: top up soon)"
            } else {
                ""
            }
        ),
        Outcome::NotPaid {
            result,
            balance_minor,
        } => format!(
            "not paid — {}{}",
            result.describe(),
            balance_minor
                .map(|b| format!("; balance {}", format_minor(b)))
                .unwrap_or_default()
        ),
        Outcome::Pending { reason } => {
            format!("pending: {reason}; run `netbill wallet recover` to finish it")
        }
        Outcome::Aborted => "aborted before paying; nothing was charged".into(),
    }
}

pub async fn run(args: WalletArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir;
    match args.command {
        WalletCommand::Init {
            account,
            billing,
            billing_key,
            identity,
        } => {
            let keys = netbill_wallet::fetch_billing_keys(&billing, billing_key).await?;
            let w = Wallet::create(
                &dir,
                account.clone(),
                identity.map(|i| i.to_string()),
                &billing,
                keys,
            )?;
            println!("wallet for {account} created in {}", dir.display());
            println!("public key: {}", w.public_key());
            println!("billing server receipt key (pinned): {}", keys.sign_key);
            println!(
                "next: the operator registers it with `netbill admin create-account {account} --kind customer --key {}`",
                w.public_key()
            );
            Ok(ExitCode::SUCCESS)
        }
        WalletCommand::Key => {
            println!("{}", Wallet::open(&dir)?.public_key());
            Ok(ExitCode::SUCCESS)
        }
        WalletCommand::Buy {
            merchant,
            product,
            max_price,
            credential,
            out,
            verbose,
        } => {
            let w = Wallet::open(&dir)?;
            let mut credentials = Vec::new();
            for path in credential {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("reading credential {}", path.display()))?;
                let c: Signed<GroupCredential> = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a group credential", path.display()))?;
                credentials.push(c);
            }
            let opts = BuyOptions {
                max_price,
                credentials,
                out,
                memo: String::new(),
            };
            let bar = ProgressBar::hidden();
            let mut report = |step: Step| match step {
                Step::Protocol(n, text) => {
                    if verbose {
                        bar.suspend(|| println!("  {n}. {text}"));
                    }
                }
                Step::Download(done, total) => {
                    if total > 1 << 20 && bar.is_hidden() {
                        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                        bar.set_length(total);
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                        );
                    }
                    bar.set_position(done);
                }
            };
            let outcome = w.buy(&merchant, &product, &opts, &mut report).await?;
            bar.finish_and_clear();
            println!("{product}: {}", describe(&outcome));
            Ok(match outcome {
                Outcome::Paid { .. } => ExitCode::SUCCESS,
                Outcome::NotPaid { .. } => ExitCode::from(3),
                Outcome::Pending { .. } => ExitCode::from(4),
                Outcome::Aborted => ExitCode::from(5),
            })
        }
        WalletCommand::Balance => {
            let a = Wallet::open(&dir)?.balance().await?;
            println!(
                "{}: {}{}{}",
                a.id,
                a.balance,
                if a.frozen { " (frozen)" } else { "" },
                if a.low_balance { " (low)" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        WalletCommand::History => {
            let w = Wallet::open(&dir)?;
            for r in w.purchases()? {
                let q = r.purchase.quote.body_unverified();
                let epoid = r
                    .purchase
                    .epo
                    .as_ref()
                    .map(|e| e.body_unverified().epoid.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<28} {:<12} {:>14}  {:<40} {:?}",
                    epoid,
                    q.merchant.to_string(),
                    q.price.to_string(),
                    q.description,
                    r.purchase.state()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        WalletCommand::Statement { from_ms, to_ms } => {
            let s = Wallet::open(&dir)?.statement(from_ms, to_ms).await?;
            println!(
                "statement for {} — balance {}",
                s.account.id, s.account.balance
            );
            for l in &s.lines {
                println!(
                    "  {:<28} {:<18} {:>14}  {}  [{:?}]",
                    l.epoid.to_string(),
                    l.counterparty,
                    l.amount,
                    l.description,
                    l.result
                );
            }
            println!("by merchant:");
            for g in &s.by_counterparty {
                println!(
                    "  {:<18} {:>5} purchases  {:>14}",
                    g.counterparty, g.purchases, g.total
                );
            }
            println!("total: {}", s.total);
            if !s.refunds.is_empty() {
                println!("refunds:");
                for r in &s.refunds {
                    println!(
                        "  {:<28} {:<18} {:>14}  refund {}",
                        r.epoid.to_string(),
                        r.counterparty,
                        r.amount,
                        r.refund_id
                    );
                }
                println!("refunded: {}", s.refunded);
            }
            Ok(ExitCode::SUCCESS)
        }
        WalletCommand::Grant {
            purchase,
            arbitrator_key,
            valid_for_ms,
        } => {
            let w = Wallet::open(&dir)?;
            let r = w.find(&purchase)?;
            let epo =
                r.purchase.epo.as_ref().context(
                    "you never signed an EPO for this purchase: N holds no records of it",
                )?;
            let g = w.grant(
                &epo.body_unverified().epoid,
                arbitrator_key,
                netbill_http::now_ms().saturating_add(valid_for_ms),
            );
            println!("{}", netbill_http::encode_signed(&g));
            Ok(ExitCode::SUCCESS)
        }
        WalletCommand::Evidence { purchase, out } => {
            let w = Wallet::open(&dir)?;
            let r = w.find(&purchase)?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let mine = netbill_proto::dispute::CustomerEvidence {
                quote: r.purchase.quote.clone(),
                epo: r.purchase.epo.clone(),
                receipt: r.purchase.receipt.clone(),
            };
            let write = |name: &str, bytes: Vec<u8>| {
                let path = out.join(name);
                std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
            };
            write("customer-evidence.json", serde_json::to_vec_pretty(&mine)?)?;
            let goods = w.goods_file(&r);
            if goods.exists() {
                std::fs::copy(&goods, out.join("goods.nbg"))
                    .with_context(|| format!("copying {}", goods.display()))?;
            } else {
                eprintln!("note: no ciphertext was received for this purchase");
            }
            match &r.purchase.epo {
                Some(epo) => match w.billing_evidence(&epo.body_unverified().epoid).await {
                    Ok(ev) => write("billing-evidence.json", serde_json::to_vec_pretty(&ev)?)?,
                    Err(e) => eprintln!(
                        "note: the billing server did not hand over its records ({e}); the arbitrator will hold that against it"
                    ),
                },
                None => eprintln!("note: you never signed an EPO for this purchase"),
            }
            println!("evidence written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        WalletCommand::Recover => {
            let results = Wallet::open(&dir)?.recover().await?;
            if results.is_empty() {
                println!("nothing to recover: every purchase is finished");
            }
            let mut pending = false;
            for (id, o) in &results {
                pending |= matches!(o, Outcome::Pending { .. });
                println!("{id}: {}", describe(o));
            }
            Ok(if pending {
                ExitCode::from(4)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

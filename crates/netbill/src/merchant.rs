//! `netbill merchant …`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use netbill_merchant::{Fault, MerchantConfig};
use netbill_proto::crypto::PublicKey;
use netbill_proto::dispute::Ruling;
use netbill_proto::{AccountId, Amount, EpoId};

#[derive(Subcommand)]
pub enum MerchantCommand {
    /// Create a merchant directory: a signing key, and the billing server's pinned keys.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The merchant's account id at the billing server.
        #[arg(long)]
        id: AccountId,
        /// The billing server's URL.
        #[arg(long)]
        billing: String,
        /// Pin the billing server's receipt key (hex); without it, the key fetched now is
        /// trusted from then on.
        #[arg(long)]
        billing_key: Option<PublicKey>,
    },
    /// Serve a catalog (see docs/merchant.md for its format).
    Run(RunArgs),
    /// Settle every endorsed purchase that has no receipt yet, once, without serving (the
    /// server does the same at start-up and every 2 s). Exits 4 if some are still unsettled.
    Recover {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Give back (part of) what a committed purchase paid: signed by the merchant, made by
    /// N, never more than the purchase paid in total. Running it again refunds once.
    Refund(RefundArgs),
    /// Let an arbitrator fetch N's records of one of your purchases (`netbill arbitrator
    /// fetch`): prints a signed grant for the arbitrator's key.
    Grant {
        #[arg(long)]
        dir: PathBuf,
        /// The purchase's EPOID.
        epoid: EpoId,
        /// The arbitrator's public key (hex), from `netbill arbitrator init`.
        #[arg(long)]
        arbitrator_key: PublicKey,
        /// How long the grant is valid, in milliseconds (default: 7 days).
        #[arg(long, default_value_t = 7 * 24 * 3_600_000)]
        valid_for_ms: u64,
    },
    /// Fetch N's signed records of one of your purchases (for a dispute) as JSON.
    Evidence {
        #[arg(long)]
        dir: PathBuf,
        /// The purchase's EPOID.
        epoid: EpoId,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct RefundArgs {
    #[arg(long)]
    dir: PathBuf,
    /// The purchase's EPOID.
    #[arg(long, required_unless_present = "verdict")]
    epoid: Option<EpoId>,
    /// How much to give back, e.g. USD:0.01 (default: the whole price, with --verdict the
    /// amount the arbitrator ruled).
    #[arg(long, required_unless_present = "verdict")]
    amount: Option<Amount>,
    /// Why (shown to the customer and auditors).
    #[arg(long, default_value = "refund")]
    reason: String,
    /// Carry out an arbitrator's ruling for the customer: the JSON of `netbill dispute --json`.
    #[arg(long, conflicts_with_all = ["epoid", "amount"])]
    verdict: Option<PathBuf>,
    /// The refund's id (default: derived from the purchase, amount and reason). Two
    /// different refunds of the same amount for the same reason need two ids.
    #[arg(long)]
    refund_id: Option<String>,
}

#[derive(Args)]
pub struct RunArgs {
    #[arg(long)]
    dir: PathBuf,
    /// The catalog file (TOML).
    #[arg(long)]
    catalog: PathBuf,
    /// Loopback address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8401")]
    listen: SocketAddr,
    /// How long after delivery an EPO may still commit.
    #[arg(long, default_value_t = 600_000)]
    epo_expiry_ms: u64,
    /// How long a quote stays valid.
    #[arg(long, default_value_t = 300_000)]
    quote_ttl_ms: u64,
    /// Testing only: settle with N, then drop the receipt instead of forwarding it.
    #[arg(long, hide = true)]
    fault_drop_receipt: bool,
    /// Testing only: deliver garbage instead of the quoted product (a dishonest merchant).
    #[arg(long, hide = true)]
    fault_garbage_goods: bool,
}

pub async fn run(cmd: MerchantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MerchantCommand::Init {
            dir,
            id,
            billing,
            billing_key,
        } => {
            let keys = netbill_wallet::fetch_billing_keys(&billing, billing_key).await?;
            let pk = netbill_merchant::init(&dir, id.clone(), &billing, keys)?;
            println!("merchant {id} created in {}", dir.display());
            println!("public key: {pk}");
            println!("billing server receipt key (pinned): {}", keys.sign_key);
            println!(
                "next: the operator registers it with `netbill admin create-account {id} --kind merchant --key {pk}`"
            );
            Ok(ExitCode::SUCCESS)
        }
        MerchantCommand::Recover { dir } => {
            let r = netbill_merchant::recover(&dir).await?;
            println!(
                "{} endorsed purchases had no receipt; {} settled, {} still unsettled",
                r.unsettled_before,
                r.unsettled_before.saturating_sub(r.unsettled_after),
                r.unsettled_after
            );
            Ok(if r.unsettled_after == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            })
        }
        MerchantCommand::Refund(a) => refund(a).await,
        MerchantCommand::Grant {
            dir,
            epoid,
            arbitrator_key,
            valid_for_ms,
        } => {
            let g = netbill_merchant::disputes::grant(
                &dir,
                &epoid,
                arbitrator_key,
                netbill_http::now_ms().saturating_add(valid_for_ms),
            )?;
            println!("{}", netbill_http::encode_signed(&g));
            Ok(ExitCode::SUCCESS)
        }
        MerchantCommand::Evidence { dir, epoid, out } => {
            let ev = netbill_merchant::disputes::evidence(&dir, &epoid).await?;
            let json = serde_json::to_string_pretty(&ev)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, json + "\n")
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("N's evidence for {epoid} written to {}", path.display());
                }
                None => println!("{json}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        MerchantCommand::Run(a) => {
            let running = netbill_merchant::start(MerchantConfig {
                dir: a.dir,
                catalog: a.catalog,
                listen: a.listen,
                epo_expiry_ms: a.epo_expiry_ms,
                quote_ttl_ms: a.quote_ttl_ms,
                recovery_interval_ms: 2_000,
                fault: Fault::from_test_flags(a.fault_drop_receipt, a.fault_garbage_goods)?,
            })
            .await?;
            println!("merchant listening on http://{}", running.addr);
            tokio::select! {
                r = running.wait() => r?,
                _ = tokio::signal::ctrl_c() => println!("shutting down"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `netbill dispute --json` prints (the fields a refund needs).
#[derive(serde::Deserialize)]
struct VerdictFile {
    epoid: Option<EpoId>,
    ruling: Ruling,
    amount: Option<Amount>,
}

async fn refund(a: RefundArgs) -> anyhow::Result<ExitCode> {
    let (epoid, amount, reason) = match &a.verdict {
        Some(path) => {
            let v: VerdictFile = serde_json::from_slice(
                &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| {
                format!(
                    "{} is not the JSON of `netbill dispute --json`",
                    path.display()
                )
            })?;
            anyhow::ensure!(
                v.ruling == Ruling::ForCustomer,
                "the verdict in {} does not rule for the customer: there is nothing to refund",
                path.display()
            );
            let epoid = v
                .epoid
                .with_context(|| format!("the verdict in {} names no EPOID", path.display()))?;
            let amount = v
                .amount
                .with_context(|| format!("the verdict in {} names no amount", path.display()))?;
            (epoid, amount, format!("arbitration ruling ({})", a.reason))
        }
        None => (
            a.epoid.clone().context("give --epoid")?,
            a.amount.context("give --amount")?,
            a.reason.clone(),
        ),
    };
    let id = a
        .refund_id
        .clone()
        .unwrap_or_else(|| netbill_merchant::disputes::default_refund_id(&epoid, amount, &reason));
    let receipt = netbill_merchant::disputes::refund(&a.dir, &epoid, amount, &reason, &id).await?;
    let r = receipt.body_unverified();
    println!(
        "refunded {} of {epoid} (refund {}); {} of {} refunded in total",
        r.amount, r.refund_id, r.refunded_total, r.price
    );
    Ok(ExitCode::SUCCESS)
}

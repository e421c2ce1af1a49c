//! `netbill merchant …`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use netbill_merchant::{Fault, MerchantConfig};
use netbill_proto::AccountId;
use netbill_proto::crypto::PublicKey;

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
        MerchantCommand::Run(a) => {
            let running = netbill_merchant::start(MerchantConfig {
                dir: a.dir,
                catalog: a.catalog,
                listen: a.listen,
                epo_expiry_ms: a.epo_expiry_ms,
                quote_ttl_ms: a.quote_ttl_ms,
                recovery_interval_ms: 2_000,
                fault: if a.fault_drop_receipt {
                    Fault::DropReceipt
                } else {
                    Fault::None
                },
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

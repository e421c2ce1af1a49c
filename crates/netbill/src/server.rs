//! `netbill server …`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use netbill_proto::billing::BillingPolicy;
use netbill_server::{BillingKeys, ServerConfig};

#[derive(Subcommand)]
pub enum ServerCommand {
    /// Create the billing server's keys in a directory (files readable only by you).
    Init {
        /// Directory for the keys and the ledger.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Run the billing server.
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// Directory made by `netbill server init`.
    #[arg(long)]
    dir: PathBuf,
    /// Loopback address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8400")]
    listen: SocketAddr,
    /// The ledger store: `sqlite://PATH` or `postgres://USER[:PASSWORD]@HOST:PORT/DB`
    /// (default: sqlite://<dir>/ledger.db). Several servers may share one PostgreSQL
    /// database. Set it in the environment to keep a password out of the process list.
    #[arg(long, env = "NETBILL_STORE", value_name = "URL", conflicts_with = "db")]
    store: Option<String>,
    /// The SQLite ledger file (same as --store sqlite://PATH).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Bearer token for the admin API; at least 16 characters. Read from the environment
    /// so it never shows in the process list.
    #[arg(
        long = "admin-token-env",
        default_value = "NETBILL_ADMIN_TOKEN",
        value_name = "VAR"
    )]
    admin_token_env: String,
    /// How long after delivery an EPO may still commit; older EPOIDs are aborted for good.
    #[arg(long, default_value_t = 3_600_000)]
    expiry_max_ms: u64,
    /// Most purchases committed per durable write.
    #[arg(long, default_value_t = 256)]
    batch_max: usize,
    /// How often to sign a checkpoint of the journal's head, in milliseconds (0: only when
    /// asked with `netbill admin checkpoint`).
    #[arg(long, default_value_t = 10_000)]
    checkpoint_interval_ms: u64,
}

pub async fn run(cmd: ServerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServerCommand::Init { dir } => {
            if BillingKeys::exist(&dir) {
                anyhow::bail!(
                    "{} already holds billing keys; use another --dir",
                    dir.display()
                );
            }
            let keys = BillingKeys::create(&dir)?;
            let p = keys.public();
            println!("billing server keys created in {}", dir.display());
            println!("receipt signing key: {}", p.sign_key);
            println!("sealing key:         {}", p.seal_key);
            Ok(ExitCode::SUCCESS)
        }
        ServerCommand::Run(a) => {
            let admin_token = std::env::var(&a.admin_token_env).with_context(|| {
                format!(
                    "set the admin token in ${} (16+ characters)",
                    a.admin_token_env
                )
            })?;
            let running = netbill_server::start(ServerConfig {
                db: a.store.unwrap_or_else(|| {
                    let path = a.db.clone().unwrap_or_else(|| a.dir.join("ledger.db"));
                    format!("sqlite://{}", path.display())
                }),
                keys_dir: a.dir,
                listen: a.listen,
                admin_token,
                policy: BillingPolicy {
                    expiry_max_ms: a.expiry_max_ms,
                },
                batch_max: a.batch_max.clamp(1, 4096),
                queue_max: 8192,
                checkpoint_interval_ms: Some(a.checkpoint_interval_ms),
            })
            .await?;
            println!("billing server listening on http://{}", running.addr);
            println!("receipt signing key: {}", running.public.sign_key);
            tokio::select! {
                r = running.wait() => r?,
                _ = tokio::signal::ctrl_c() => println!("shutting down"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

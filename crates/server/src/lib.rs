//! The NetBill billing server (N): a thin HTTP shell around the protocol core's billing
//! logic and the ledger. It verifies endorsements in parallel, commits them in batches on
//! one writer thread, and releases each signed receipt only once its commit is durable.

pub mod admin_client;
pub mod api;
pub mod checkpointer;
pub mod keys;
pub mod metrics;
pub mod records;
pub mod verify;
pub mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use netbill_proto::billing::BillingPolicy;

pub use admin_client::{AdminAction, AdminClient};
pub use api::{
    AccountInfo, BatchItem, CreateAccount, EndorsementBatch, MerchantKey, SetKey, Statement,
    StatementLine, StatementRefund, TransferAnswer, TransferRequest, WriterCounters,
};
pub use keys::{BillingKeys, BillingPublic};

/// How to run a billing server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The ledger store's URL: `sqlite://PATH` (or a plain path) or `postgres://…`.
    pub db: String,
    /// Directory holding N's key files.
    pub keys_dir: PathBuf,
    /// Bearer token for `/v1/admin/*`.
    pub admin_token: String,
    pub policy: BillingPolicy,
    /// Most purchases committed in one transaction.
    pub batch_max: usize,
    /// Most jobs waiting for the ledger writer.
    pub queue_max: usize,
    /// How often N signs a checkpoint of the journal's head (`None`: only on request).
    pub checkpoint_interval_ms: Option<u64>,
}

/// A running billing server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub public: BillingPublic,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Waits until the server stops.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task
            .await
            .context("server task")?
            .context("serving HTTP")
    }
    /// Stops serving.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Opens the store, checks conservation, loads the keys and starts serving.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    netbill_http::ensure_loopback(&config.listen).map_err(anyhow::Error::msg)?;
    if config.admin_token.len() < 16 {
        anyhow::bail!("the admin token must be at least 16 characters (set NETBILL_ADMIN_TOKEN)");
    }
    let keys = BillingKeys::load(&config.keys_dir).with_context(|| {
        format!(
            "loading the billing server's keys from {} (create them with `netbill server init`)",
            config.keys_dir.display()
        )
    })?;
    // Opening may block (PostgreSQL's client runs its own runtime): not on this runtime.
    let url = config.db.clone();
    let (store, totals) = tokio::task::spawn_blocking(move || {
        let mut store = netbill_ledger::open_store(&url)
            .with_context(|| format!("opening the ledger {}", netbill_ledger::redact_url(&url)))?;
        let totals = store.totals().context("reading the ledger's totals")?;
        anyhow::Ok((store, totals))
    })
    .await
    .context("opening the ledger")??;
    let conserved = i128::from(totals.balances_minor)
        == i128::from(totals.deposits_minor) - i128::from(totals.payouts_minor);
    if conserved {
        tracing::info!(
            accounts = totals.accounts,
            outcomes = totals.outcomes,
            "ledger open, conservation holds"
        );
    } else {
        tracing::error!(
            balances_minor = totals.balances_minor,
            deposits_minor = totals.deposits_minor,
            payouts_minor = totals.payouts_minor,
            "CONSERVATION VIOLATED: the ledger was changed outside this server. Serving in repair mode: no money moves until `netbill audit --unwind` restores it (docs/audit.md)"
        );
        eprintln!(
            "netbill: the ledger does not conserve money (balances {} != deposits {} - payouts {}); serving in repair mode until `netbill audit --unwind` restores it",
            netbill_proto::money::format_minor(totals.balances_minor),
            netbill_proto::money::format_minor(totals.deposits_minor),
            netbill_proto::money::format_minor(totals.payouts_minor),
        );
    }
    let public = keys.public();
    let writer = writer::Writer::start(
        store,
        keys::BillingKeys {
            signer: netbill_crypto::Ed25519Signer::from_bytes(&keys.signer.secret_bytes()),
            seal: keys.seal.clone(),
        },
        config.queue_max,
        config.batch_max,
    );
    let verifier = verify::Verifier::start(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
        config.queue_max,
        keys.seal.clone(),
        config.policy,
    );
    let state = Arc::new(api::AppState {
        keys,
        public,
        writer,
        verifier,
        policy: config.policy,
        admin_token: config.admin_token,
        repair: std::sync::atomic::AtomicBool::new(!conserved),
        tampered: Default::default(),
        metrics: Default::default(),
        checkpointer: std::sync::Mutex::new(checkpointer::Checkpointer::new(&config.db)),
    });
    // N signs a checkpoint of the journal's head periodically (when it has moved).
    if let Some(every) = config.checkpoint_interval_ms.filter(|ms| *ms > 0) {
        let s = state.clone();
        tokio::spawn(async move {
            // The first tick is immediate: the chain since the last checkpoint is checked
            // at start-up.
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(every));
            loop {
                tick.tick().await;
                if let Err(e) = records::checkpoint_now(&s, false).await {
                    tracing::warn!(error = %e.detail, "signing a journal checkpoint failed");
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let app = api::router(state);
    // Small request/response messages: without TCP_NODELAY, Nagle's algorithm and delayed
    // ACKs add tens of milliseconds to a purchase.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(RunningServer { addr, public, task })
}

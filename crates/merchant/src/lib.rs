//! The NetBill merchant server (M): a thin HTTP shell around the protocol core's merchant
//! logic. Priced resources answer `402 Payment Required` with a signed quote; goods stream
//! encrypted under a fresh key; the merchant endorses the customer's EPO with that key,
//! persisting the endorsement before sending it to the billing server, and forwards the
//! receipt. A background task settles every endorsed purchase whose receipt it lacks.

pub mod api;
pub mod catalog;
pub mod disputes;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use netbill_crypto::{Ed25519Signer, load_secret_key, random_seal_secret, save_secret_key};
use netbill_http::client::Client;
use netbill_proto::AccountId;
use netbill_proto::crypto::{PublicKey, SealSecret, Signer};
use netbill_server::BillingPublic;
use serde::{Deserialize, Serialize};

pub use catalog::Catalog;
pub use store::MerchantStore;

const KEY_FILE: &str = "merchant-sign.key";
/// The merchant's static X25519 sealing secret (v2): seals K to N under their pair key.
const SEAL_FILE: &str = "merchant-seal.key";
const CONFIG_FILE: &str = "merchant.json";
const DB_FILE: &str = "merchant.db";

/// What `netbill merchant init` writes next to the key: who the merchant is and which
/// billing server (with its pinned keys) it works with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantIdentity {
    pub id: AccountId,
    pub billing_url: String,
    pub billing: BillingPublic,
}

/// Creates a merchant's directory: a fresh signing key and the pinned billing keys.
/// Returns the merchant's public key, for the operator to register.
pub fn init(
    dir: &Path,
    id: AccountId,
    billing_url: &str,
    billing: BillingPublic,
) -> anyhow::Result<PublicKey> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if dir.join(CONFIG_FILE).exists() {
        anyhow::bail!(
            "{} is already a merchant directory; use another --dir",
            dir.display()
        );
    }
    let signer = Ed25519Signer::generate();
    save_secret_key(
        dir.join(KEY_FILE),
        "merchant-sign",
        &signer.secret_bytes(),
        false,
    )?;
    seal_secret(dir)?;
    let identity = MerchantIdentity {
        id,
        billing_url: billing_url.to_string(),
        billing,
    };
    std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec_pretty(&identity)?)?;
    Ok(signer.public_key())
}

/// Faults a test can switch on. Never set in production: a build without the `test-support`
/// feature has only `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Settle with N but answer the customer's payment with an error, as if the receipt
    /// were lost on the way (step 8): the customer must recover K from N.
    #[cfg(feature = "test-support")]
    DropReceipt,
    /// Deliver garbage: encrypt bytes that are not the quoted product (a dishonest
    /// merchant, for dispute tests).
    #[cfg(feature = "test-support")]
    GarbageGoods,
}

impl Fault {
    /// The fault of `netbill merchant run --fault-drop-receipt` / `--fault-garbage-goods`;
    /// refused in a build without the `test-support` feature.
    pub fn from_test_flags(drop_receipt: bool, garbage_goods: bool) -> anyhow::Result<Fault> {
        #[cfg(feature = "test-support")]
        {
            Ok(if drop_receipt {
                Fault::DropReceipt
            } else if garbage_goods {
                Fault::GarbageGoods
            } else {
                Fault::None
            })
        }
        #[cfg(not(feature = "test-support"))]
        {
            anyhow::ensure!(
                !drop_receipt && !garbage_goods,
                "--fault-drop-receipt and --fault-garbage-goods are test switches, not in this \
                 build: build netbill with `--features test-support`"
            );
            Ok(Fault::None)
        }
    }

    /// Whether the receipt is to be dropped (`DropReceipt`).
    #[inline(always)]
    fn drops_receipt(self) -> bool {
        #[cfg(feature = "test-support")]
        {
            self == Fault::DropReceipt
        }
        #[cfg(not(feature = "test-support"))]
        {
            false
        }
    }

    /// Whether garbage is delivered (`GarbageGoods`).
    #[inline(always)]
    fn garbage_goods(self) -> bool {
        #[cfg(feature = "test-support")]
        {
            self == Fault::GarbageGoods
        }
        #[cfg(not(feature = "test-support"))]
        {
            false
        }
    }
}

/// How to run a merchant server.
#[derive(Clone, Debug)]
pub struct MerchantConfig {
    pub dir: PathBuf,
    pub catalog: PathBuf,
    pub listen: SocketAddr,
    /// How long after the end of delivery an EPO may still commit.
    pub epo_expiry_ms: u64,
    pub quote_ttl_ms: u64,
    /// How often unsettled purchases are retried.
    pub recovery_interval_ms: u64,
    pub fault: Fault,
}

/// A running merchant server.
pub struct RunningMerchant {
    pub addr: SocketAddr,
    pub public_key: PublicKey,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    recovery: tokio::task::JoinHandle<()>,
}

impl RunningMerchant {
    pub async fn wait(self) -> anyhow::Result<()> {
        let r = self
            .task
            .await
            .context("merchant task")?
            .context("serving HTTP");
        self.recovery.abort();
        r
    }
    pub fn abort(&self) {
        self.task.abort();
        self.recovery.abort();
    }
}

/// The merchant's sealing secret; a directory made before v2 has none, and gets one here
/// (the upgrade: nothing else in the directory changes).
fn seal_secret(dir: &Path) -> anyhow::Result<SealSecret> {
    let path = dir.join(SEAL_FILE);
    if !path.exists() {
        save_secret_key(&path, "merchant-seal", &random_seal_secret().0, false)?;
    }
    Ok(SealSecret(load_secret_key(&path, "merchant-seal")?))
}

/// A merchant directory's identity, signing key and sealing secret.
pub(crate) fn load(dir: &Path) -> anyhow::Result<(MerchantIdentity, Ed25519Signer, SealSecret)> {
    let identity: MerchantIdentity =
        serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).with_context(|| {
            format!(
                "reading {} (is this a merchant directory made by `netbill merchant init`?)",
                dir.join(CONFIG_FILE).display()
            )
        })?)
        .context("parsing merchant.json")?;
    let signer = Ed25519Signer::from_bytes(&load_secret_key(dir.join(KEY_FILE), "merchant-sign")?);
    Ok((identity, signer, seal_secret(dir)?))
}

/// Loads the merchant's directory and catalog and starts serving.
pub async fn start(config: MerchantConfig) -> anyhow::Result<RunningMerchant> {
    netbill_http::ensure_loopback(&config.listen).map_err(anyhow::Error::msg)?;
    let (identity, signer, seal) = load(&config.dir)?;
    let catalog = Catalog::load(&config.catalog)?;
    if catalog.merchant != identity.id {
        anyhow::bail!(
            "the catalog is for merchant {} but this directory is merchant {}",
            catalog.merchant,
            identity.id
        );
    }
    let store = MerchantStore::open(&config.dir.join(DB_FILE))?;
    let billing = Client::new(&identity.billing_url)?;
    let public_key = signer.public_key();
    let state = Arc::new(api::MerchantState {
        id: identity.id,
        signer,
        seal,
        billing_keys: identity.billing,
        billing,
        catalog,
        store,
        epo_expiry_ms: config.epo_expiry_ms,
        quote_ttl_ms: config.quote_ttl_ms,
        quote_ids: api::first_quote_id(),
        fault: config.fault,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let recovery_state = state.clone();
    let interval = Duration::from_millis(config.recovery_interval_ms.max(10));
    let recovery = tokio::spawn(async move {
        loop {
            api::settle_unsettled(&recovery_state).await;
            tokio::time::sleep(interval).await;
        }
    });
    let app = api::router(state);
    // Small request/response messages: without TCP_NODELAY, Nagle's algorithm and delayed
    // ACKs add tens of milliseconds to a purchase.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(RunningMerchant {
        addr,
        public_key,
        task,
        recovery,
    })
}

/// What one recovery pass (`netbill merchant recover`) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Endorsed purchases without a receipt before the pass.
    pub unsettled_before: usize,
    /// …and after it (N unreachable, or still undecided).
    pub unsettled_after: usize,
}

/// One recovery pass without serving: asks N for the outcome of every purchase this
/// merchant endorsed but holds no receipt for, re-sending the endorsement where N has none.
pub async fn recover(dir: &Path) -> anyhow::Result<Recovered> {
    let (identity, signer, seal) = load(dir)?;
    let store = MerchantStore::open(&dir.join(DB_FILE))?;
    let before = store.unsettled()?.len();
    let state = api::MerchantState {
        catalog: Catalog {
            merchant: identity.id.clone(),
            groups: Default::default(),
            products: Default::default(),
        },
        id: identity.id,
        signer,
        seal,
        billing_keys: identity.billing,
        billing: Client::new(&identity.billing_url)?,
        store: store.clone(),
        epo_expiry_ms: 0,
        quote_ttl_ms: 0,
        quote_ids: api::first_quote_id(),
        fault: Fault::None,
    };
    api::settle_unsettled(&state).await;
    Ok(Recovered {
        unsettled_before: before,
        unsettled_after: store.unsettled()?.len(),
    })
}

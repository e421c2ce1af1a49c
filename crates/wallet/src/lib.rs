//! The NetBill customer wallet (C): a thin shell around the protocol core's customer logic.
//!
//! A wallet is a directory, readable by its owner only:
//! - `wallet.json`: the account, the identity shown to merchants, the billing server's URL
//!   and its pinned public keys;
//! - `customer-sign.key`: the signing key;
//! - `customer-seal.key`: the static X25519 sealing secret (v2): N and the wallet derive
//!   their pair key from it, which seals the EPO's secret part and the receipt's private
//!   part (a wallet made before v2 gets one the first time it is opened);
//! - `purchases/<id>.json`: one record per purchase, written (atomically, durably) *before*
//!   each message that depends on it is sent — in particular before the signed EPO leaves,
//!   so that after any crash `recover` can finish every purchase;
//! - `purchases/<id>.settled`: the record once the receipt is in, beside the EPO record and
//!   never waited for (its first line is the SHA-256 of the rest; a lost or torn one leaves
//!   the EPO record, and `recover` fetches the receipt again);
//! - `purchases/<id>.goods`: the ciphertext as received.

use std::fs;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use netbill_crypto::{
    Ed25519Signer, RealCrypto, load_secret_key, random_bytes, random_seal_secret, save_secret_key,
};
use netbill_http::client::{CallError, Client};
use netbill_http::now_ms;
use netbill_proto::crypto::SealSecret;
use netbill_proto::crypto::{Digest, GoodsKey, PublicKey, Signer};
use netbill_proto::customer::{
    self, CustomerEffect, CustomerError, CustomerPurchase, CustomerState, Payer, QuoteExpectation,
    Settlement,
};
use netbill_proto::messages::{
    GoodsOffer, GroupCredential, OFFER_HEADER, Payment, PriceRequest, PurchaseOffer, ResultCode,
    StatusAnswer,
};
use netbill_proto::{AccountId, Amount, EpoId, ProductCode, Signed};
use netbill_server::{AccountInfo, BillingPublic, MerchantKey, Statement};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const CONFIG_FILE: &str = "wallet.json";
const KEY_FILE: &str = "customer-sign.key";
const SEAL_FILE: &str = "customer-seal.key";
const PURCHASES_DIR: &str = "purchases";

/// Largest goods a wallet downloads unless told otherwise: 4 GiB.
pub const GOODS_LEN_MAX: u64 = 4 << 30;

/// Everything that can go wrong in the wallet, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("{0} is not a wallet: create one with `netbill wallet init`")]
    NotAWallet(PathBuf),
    #[error("{0} already holds a wallet")]
    AlreadyAWallet(PathBuf),
    #[error("{0}")]
    Server(#[from] CallError),
    #[error("refused: {0}")]
    Protocol(#[from] CustomerError),
    #[error("the billing server's keys differ from the pinned ones: is {0} the right server?")]
    BillingKeyMismatch(String),
    #[error("the merchant's offer is unusable: {0}")]
    BadOffer(String),
    #[error("the goods are {len} bytes, over the limit of {max}")]
    GoodsTooLarge { len: u64, max: u64 },
    #[error(
        "the decrypted goods are not what the quote promised (digest mismatch): keep the evidence in {0} and dispute the purchase"
    )]
    NotAsPromised(PathBuf),
    #[error(
        "the goods could not be decrypted with the paid key: {0}; keep the evidence and dispute the purchase"
    )]
    Undecryptable(String),
    #[error("no purchase {0} in this wallet")]
    NoSuchPurchase(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WalletError {
    let what = what.into();
    move |source| WalletError::Io { what, source }
}

/// `wallet.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletConfig {
    pub account: AccountId,
    /// The identity (or pseudonym) merchants see.
    pub identity: String,
    pub billing_url: String,
    pub billing: BillingPublic,
}

/// One purchase as the wallet keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PurchaseRecord {
    pub merchant_url: String,
    pub merchant_key: PublicKey,
    /// Where the plaintext goes once paid.
    pub out: PathBuf,
    pub purchase: CustomerPurchase,
    /// Set once the goods are decrypted and checked.
    pub delivered_to: Option<PathBuf>,
    /// v2: the merchant's ticket on the offer, sent back with the EPO (a retry included).
    /// `None` in records of v1 purchases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Digest>,
}

/// What became of a purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Paid; the goods are at `path`.
    Paid {
        path: PathBuf,
        price: Amount,
        balance_minor: i64,
        low_balance: bool,
    },
    /// Not paid: N's signed reason.
    NotPaid {
        result: ResultCode,
        balance_minor: Option<i64>,
    },
    /// The EPO is signed but the outcome is not known yet (merchant or N unreachable).
    Pending { reason: String },
    /// Abandoned before the EPO was signed.
    Aborted,
}

/// Options of a purchase.
#[derive(Clone, Debug, Default)]
pub struct BuyOptions {
    /// Refuse quotes above this price.
    pub max_price: Option<Amount>,
    pub credentials: Vec<Signed<GroupCredential>>,
    /// Where to write the goods (default: `./<product>`).
    pub out: Option<PathBuf>,
    pub memo: String,
}

/// A step of a purchase, reported as it happens (for transcripts and progress bars).
#[derive(Clone, Debug)]
pub enum Step {
    /// A message of the purchase (v2: 1–6) with a one-line description.
    Protocol(u8, String),
    /// Bytes of ciphertext received so far, of the total.
    Download(u64, u64),
}

/// An open wallet.
pub struct Wallet {
    dir: PathBuf,
    pub config: WalletConfig,
    signer: Ed25519Signer,
    /// The static sealing secret: every v2 EPO's reply key is its public half.
    seal: SealSecret,
    /// Requests `buy` has sent to merchants (two per purchase in v2).
    merchant_requests: AtomicU64,
    billing: Client,
    /// Merchants' keys as N answered them recently: a wallet buying again from the same
    /// merchant saves a round trip to N. Kept [`MERCHANT_KEY_TTL`] at most, so a key the
    /// operator changes is picked up soon (and N refuses an endorsement under a revoked
    /// key whatever the wallet believed).
    merchant_keys:
        std::sync::Mutex<std::collections::HashMap<AccountId, (PublicKey, std::time::Instant)>>,
    /// One HTTP client per merchant URL, so that a wallet buying again from a merchant reuses
    /// its open connection instead of a new TCP handshake per purchase.
    merchants: std::sync::Mutex<std::collections::HashMap<String, Client>>,
}

/// Most merchant clients a wallet keeps (each may hold idle connections); past it the cache
/// starts again.
const MERCHANT_CLIENTS_MAX: usize = 64;

/// How long a wallet trusts a merchant key it fetched from N without asking again.
const MERCHANT_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Writes `bytes` to `path` atomically and durably, readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), WalletError> {
    write_private_with(path, bytes, true)
}

/// Writes `bytes` to `path` atomically, readable by the owner only. The file's contents are
/// always synced before the rename, so a crash leaves either the old or the new file, never
/// a torn one; with `durable_rename` the directory is synced too, so the new file is the
/// one that survives.
/// `fsync`s (of files and directories) this process's wallets have made: counted so that
/// the benchmark can print the durable writes a purchase costs the customer.
static FSYNCS: AtomicU64 = AtomicU64::new(0);

/// How many `fsync`s this process's wallets have made so far.
pub fn fsyncs_so_far() -> u64 {
    FSYNCS.load(Ordering::Relaxed)
}

/// Makes a file's data (and the metadata needed to read it back, such as its length)
/// durable: `fdatasync`, which skips the timestamps `fsync` would also write.
fn sync(f: &fs::File) -> std::io::Result<()> {
    FSYNCS.fetch_add(1, Ordering::Relaxed);
    f.sync_data()
}

/// Makes a directory's entries durable (`fsync` of the directory).
fn sync_dir(d: &fs::File) -> std::io::Result<()> {
    FSYNCS.fetch_add(1, Ordering::Relaxed);
    d.sync_all()
}

fn write_private_with(path: &Path, bytes: &[u8], durable_rename: bool) -> Result<(), WalletError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&tmp)
            .map_err(io(format!("writing {}", tmp.display())))?;
        f.write_all(bytes)
            .map_err(io(format!("writing {}", tmp.display())))?;
        sync(&f).map_err(io(format!("syncing {}", tmp.display())))?;
    }
    fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))?;
    if durable_rename
        && let Some(parent) = path.parent()
        && let Ok(d) = fs::File::open(parent)
    {
        let _ = sync_dir(&d);
    }
    Ok(())
}

/// Writes `bytes` to `path` via a temporary file and a rename, readable by the owner only,
/// without waiting for the disk: other processes see the old file or the new one, but after
/// a crash the file may be missing or torn. Only for files that check themselves.
fn write_unsynced(path: &Path, bytes: &[u8]) -> Result<(), WalletError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(io(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))
}

fn settled_path(purchases: &Path, id: &str) -> PathBuf {
    purchases.join(format!("{id}.settled"))
}

/// The settled record saved by [`Wallet::save_settled`] for purchase `id`, if it is there
/// and whole (its checksum matches); `None` otherwise (the EPO record then stands).
fn read_settled(purchases: &Path, id: &str) -> Option<PurchaseRecord> {
    let bytes = fs::read(settled_path(purchases, id)).ok()?;
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    let (sum, json) = (&bytes[..newline], &bytes[newline + 1..]);
    if sum != hex::encode(Sha256::digest(json)).as_bytes() {
        return None;
    }
    let rec: PurchaseRecord = serde_json::from_slice(json).ok()?;
    (rec.purchase.offer.purchase == id).then_some(rec)
}

/// Every purchase record in the wallet directory `wallet`, oldest first, each in its latest
/// state: the settled record if a whole one is there, else the durable record. Reads the
/// files only (no keys, no network), so that tools can inspect a wallet as it is on disk.
pub fn read_purchases(wallet: &Path) -> Result<Vec<PurchaseRecord>, WalletError> {
    let dir = wallet.join(PURCHASES_DIR);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io(format!("listing {}", dir.display())))? {
        let path = entry.map_err(io("listing purchases"))?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            let rec: PurchaseRecord = serde_json::from_slice(&bytes)
                .map_err(|e| WalletError::Other(format!("{} is damaged: {e}", path.display())))?;
            let settled = read_settled(&dir, &rec.purchase.offer.purchase);
            out.push(settled.unwrap_or(rec));
        }
    }
    out.sort_by_key(|r| r.purchase.quote.body_unverified().quote_id);
    Ok(out)
}

/// Fetches N's public keys, checking them against `pinned` if given.
pub async fn fetch_billing_keys(
    url: &str,
    pinned: Option<PublicKey>,
) -> Result<BillingPublic, WalletError> {
    let client = Client::new(url)?;
    let keys: BillingPublic = client
        .call::<(), _>(reqwest::Method::GET, "/v1/keys", None, &[])
        .await?;
    if let Some(p) = pinned
        && p != keys.sign_key
    {
        return Err(WalletError::BillingKeyMismatch(url.to_string()));
    }
    Ok(keys)
}

impl Wallet {
    /// Creates a wallet in `dir`. Returns it; register `public_key()` with the operator.
    pub fn create(
        dir: &Path,
        account: AccountId,
        identity: Option<String>,
        billing_url: &str,
        billing: BillingPublic,
    ) -> Result<Wallet, WalletError> {
        if dir.join(CONFIG_FILE).exists() {
            return Err(WalletError::AlreadyAWallet(dir.to_path_buf()));
        }
        fs::create_dir_all(dir.join(PURCHASES_DIR))
            .map_err(io(format!("creating {}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io("restricting the wallet directory"))?;
        }
        let signer = Ed25519Signer::generate();
        save_secret_key(
            dir.join(KEY_FILE),
            "customer-sign",
            &signer.secret_bytes(),
            false,
        )
        .map_err(|e| WalletError::Other(e.to_string()))?;
        let config = WalletConfig {
            identity: identity.unwrap_or_else(|| account.to_string()),
            account,
            billing_url: billing_url.to_string(),
            billing,
        };
        write_private(
            &dir.join(CONFIG_FILE),
            &serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )?;
        Wallet::open(dir)
    }

    /// Opens the wallet in `dir`.
    pub fn open(dir: &Path) -> Result<Wallet, WalletError> {
        let cfg = dir.join(CONFIG_FILE);
        if !cfg.exists() {
            return Err(WalletError::NotAWallet(dir.to_path_buf()));
        }
        let config: WalletConfig = serde_json::from_slice(
            &fs::read(&cfg).map_err(io(format!("reading {}", cfg.display())))?,
        )
        .map_err(|e| WalletError::Other(format!("{} is damaged: {e}", cfg.display())))?;
        let signer = Ed25519Signer::from_bytes(
            &load_secret_key(dir.join(KEY_FILE), "customer-sign")
                .map_err(|e| WalletError::Other(e.to_string()))?,
        );
        let seal_path = dir.join(SEAL_FILE);
        if !seal_path.exists() {
            save_secret_key(&seal_path, "customer-seal", &random_seal_secret().0, false)
                .map_err(|e| WalletError::Other(e.to_string()))?;
        }
        let seal = SealSecret(
            load_secret_key(&seal_path, "customer-seal")
                .map_err(|e| WalletError::Other(e.to_string()))?,
        );
        let billing = Client::new(&config.billing_url)?;
        Ok(Wallet {
            dir: dir.to_path_buf(),
            config,
            signer,
            seal,
            merchant_requests: AtomicU64::new(0),
            billing,
            merchant_keys: Default::default(),
            merchants: Default::default(),
        })
    }

    /// Requests `buy` has sent to merchants so far (v2: two per purchase).
    pub fn merchant_requests(&self) -> u64 {
        self.merchant_requests.load(Ordering::Relaxed)
    }

    /// The HTTP client for the merchant at `url` (kept, with its connections, for the next
    /// purchase there).
    fn merchant_client(&self, url: &str) -> Result<Client, CallError> {
        let mut clients = self.merchants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(url) {
            return Ok(c.clone());
        }
        let c = Client::new(url)?;
        if clients.len() >= MERCHANT_CLIENTS_MAX {
            clients.clear();
        }
        clients.insert(url.to_string(), c.clone());
        Ok(c)
    }

    pub fn public_key(&self) -> PublicKey {
        self.signer.public_key()
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir.join(PURCHASES_DIR).join(format!("{id}.json"))
    }

    fn goods_path(&self, id: &str) -> PathBuf {
        self.dir.join(PURCHASES_DIR).join(format!("{id}.goods"))
    }

    fn save(&self, r: &PurchaseRecord) -> Result<(), WalletError> {
        let bytes = serde_json::to_vec_pretty(r).map_err(|e| WalletError::Other(e.to_string()))?;
        write_private(&self.record_path(&r.purchase.offer.purchase), &bytes)
    }

    /// Saves a record whose loss in a crash is harmless, without waiting for the directory
    /// to reach the disk (one fsync instead of two): the file is either this record or the
    /// one before it, never torn. Only for records before the signed EPO exists (losing
    /// them loses a purchase nothing was paid for).
    fn save_quick(&self, r: &PurchaseRecord) -> Result<(), WalletError> {
        let bytes = serde_json::to_vec_pretty(r).map_err(|e| WalletError::Other(e.to_string()))?;
        write_private_with(&self.record_path(&r.purchase.offer.purchase), &bytes, false)
    }

    /// Saves a purchase's record once its receipt is in, without any fsync: beside the
    /// durable EPO record (`{id}.json`, which it never replaces), in a file that carries its
    /// own SHA-256. If a crash loses or tears it, [`Wallet::purchases`] finds the EPO record
    /// alone, and `recover` fetches the receipt again (N keeps it) and finishes the purchase
    /// the same way. So nothing after the receipt waits for the disk.
    fn save_settled(&self, r: &PurchaseRecord) -> Result<(), WalletError> {
        let json = serde_json::to_vec_pretty(r).map_err(|e| WalletError::Other(e.to_string()))?;
        let mut bytes = hex::encode(Sha256::digest(&json)).into_bytes();
        bytes.push(b'\n');
        bytes.extend_from_slice(&json);
        write_unsynced(
            &settled_path(&self.dir.join(PURCHASES_DIR), &r.purchase.offer.purchase),
            &bytes,
        )
    }

    /// Every purchase record in the wallet, oldest first.
    pub fn purchases(&self) -> Result<Vec<PurchaseRecord>, WalletError> {
        read_purchases(&self.dir)
    }

    async fn merchant_key(&self, merchant: &AccountId) -> Result<PublicKey, WalletError> {
        let cached = |keys: &mut std::collections::HashMap<_, (PublicKey, std::time::Instant)>| {
            keys.get(merchant)
                .filter(|(_, at)| at.elapsed() < MERCHANT_KEY_TTL)
                .map(|(k, _)| *k)
        };
        if let Some(k) = cached(&mut self.merchant_keys.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(k);
        }
        let k: MerchantKey = self
            .billing
            .call::<(), _>(
                reqwest::Method::GET,
                &format!("/v1/merchants/{merchant}"),
                None,
                &[],
            )
            .await?;
        self.merchant_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(merchant.clone(), (k.public_key, std::time::Instant::now()));
        Ok(k.public_key)
    }

    /// Buys `product` from the merchant at `merchant_url` with protocol v2: two round
    /// trips to the merchant. (1) A purchase request that accepts up to `max_price` is
    /// answered 402 with the signed quote, the EPOID and the goods encrypted under K;
    /// (2) the EPO, signed over the checksum of the ciphertext as received, is answered
    /// with N's receipt, which carries K.
    pub async fn buy(
        &self,
        merchant_url: &str,
        product: &ProductCode,
        opts: &BuyOptions,
        report: &mut dyn FnMut(Step),
    ) -> Result<Outcome, WalletError> {
        let merchant = self.merchant_client(merchant_url)?;
        let bid = opts.max_price.unwrap_or(Amount::MAX);
        let req = PriceRequest {
            identity: self.config.identity.clone(),
            customer_key: self.public_key(),
            product: product.clone(),
            prd_hex: String::new(),
            bid: Some(bid),
            credentials: opts.credentials.clone(),
        };
        report(Step::Protocol(
            1,
            format!(
                "C → M  purchase request for {product} as {:?}, accepting {}",
                self.config.identity,
                opts.max_price
                    .map(|p| format!("up to {p}"))
                    .unwrap_or_else(|| "the quoted price".into())
            ),
        ));
        // Round trip 1: the offer (quote, EPOID, checksum) and the ciphertext.
        self.merchant_requests.fetch_add(1, Ordering::Relaxed);
        let resp = merchant
            .stream(
                reqwest::Method::POST,
                "/v2/purchases",
                Some(&req),
                Some(reqwest::StatusCode::PAYMENT_REQUIRED),
            )
            .await?;
        let offer = read_offer(&resp)?;
        let quote = offer.quote.clone();
        let merchant_key = self.merchant_key(&quote.body_unverified().merchant).await?;
        let q = customer::check_quote(
            &RealCrypto,
            &quote,
            &QuoteExpectation {
                merchant_key: &merchant_key,
                customer_key: &self.public_key(),
                product,
                max_price: opts.max_price,
            },
            now_ms(),
        )?;
        if offer.goods.ciphertext_len > GOODS_LEN_MAX {
            return Err(WalletError::GoodsTooLarge {
                len: offer.goods.ciphertext_len,
                max: GOODS_LEN_MAX,
            });
        }
        let described = format!(
            "M → C  402: signed quote #{}: {:?} for {}{}; EPOID {}",
            q.quote_id,
            q.description,
            q.price,
            q.group
                .as_ref()
                .map(|g| format!(" (group price: {g})"))
                .unwrap_or_default(),
            offer.note.epoid
        );
        let out = opts
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(product.as_str()));
        let mut rec = PurchaseRecord {
            merchant_url: merchant_url.to_string(),
            merchant_key,
            out,
            purchase: CustomerPurchase::new(quote, offer.goods.clone(), self.seal.clone()),
            delivered_to: None,
            ticket: Some(offer.ticket),
        };
        let (checksum, len) = self.download(resp, &merchant, &offer.goods, report).await?;
        netbill_http::crash_point("wallet.after_receive_goods");
        // The core checks the ciphertext and signs the EPO — the point of no return; the
        // wallet carries out its effects: durable before it leaves (the one write of the
        // customer's on the critical path: her record of which ciphertext she holds and what
        // she signed for it), then sent.
        let payer = Payer {
            signer: &self.signer,
            billing_seal_key: &self.config.billing.seal_key,
            account: &self.config.account,
            memo: &opts.memo,
        };
        let effects = match rec.purchase.on_goods(
            &RealCrypto,
            &payer,
            (checksum, len),
            offer.note.clone(),
            now_ms(),
            random_bytes(),
            random_bytes(),
        ) {
            Ok(effects) => effects,
            Err((e, effects)) => {
                // Nothing was signed: kept only as a record of what the merchant sent.
                for effect in effects {
                    if matches!(effect, CustomerEffect::Persist) {
                        self.save_quick(&rec)?;
                    }
                }
                return Err(e.into());
            }
        };
        report(Step::Protocol(
            2,
            format!(
                "{described}, {len} bytes encrypted under K, checksum {} verified",
                &checksum.to_hex()[..16]
            ),
        ));
        let mut to_send = None;
        for effect in effects {
            match effect {
                CustomerEffect::PersistDurably => {
                    netbill_http::crash_point("wallet.before_persist_epo");
                    // Test-only bug switch: send the EPO without persisting it first.
                    if !netbill_http::bug("wallet.send_before_persist") {
                        self.save(&rec)?;
                    }
                }
                CustomerEffect::SendEpo(epo) => to_send = Some(*epo),
                other => {
                    return Err(WalletError::Other(format!(
                        "unexpected step {other:?} before paying"
                    )));
                }
            }
        }
        let epo = to_send.ok_or_else(|| WalletError::Other("no EPO to send".into()))?;
        netbill_http::crash_point("wallet.before_send_epo");
        report(Step::Protocol(
            3,
            format!(
                "C → M  EPO signed for {} over the checksum received (point of no return)",
                rec.purchase.quote.body_unverified().price
            ),
        ));
        // Round trip 2: the EPO for the receipt.
        self.merchant_requests.fetch_add(1, Ordering::Relaxed);
        let answer: Result<StatusAnswer, CallError> = merchant
            .call(
                reqwest::Method::POST,
                "/v2/pay",
                Some(&Payment { offer, epo }),
                &[],
            )
            .await;
        match answer {
            Ok(StatusAnswer {
                receipt: Some(r), ..
            }) => {
                netbill_http::crash_point("wallet.after_receive_receipt");
                report(Step::Protocol(
                    4,
                    "M → N  EPO endorsed with K (sealed to N)".into(),
                ));
                report(Step::Protocol(
                    5,
                    format!(
                        "N → M  signed receipt: {}",
                        r.body_unverified().result.describe()
                    ),
                ));
                report(Step::Protocol(
                    6,
                    "M → C  receipt forwarded; K opened from its sealed part".into(),
                ));
                self.finish(&mut rec, r)
            }
            Ok(StatusAnswer { receipt: None, .. }) => Ok(Outcome::Pending {
                reason: "the merchant has no receipt yet".into(),
            }),
            Err(e) => {
                report(Step::Protocol(6, format!("M → C  no receipt: {e}")));
                Ok(Outcome::Pending {
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Streams the 402 answer's ciphertext to the purchase's goods file, hashing it on the
    /// way; never more than the offer announced.
    async fn download(
        &self,
        mut resp: reqwest::Response,
        merchant: &Client,
        offer: &GoodsOffer,
        report: &mut dyn FnMut(Step),
    ) -> Result<(Digest, u64), WalletError> {
        let path = self.goods_path(&offer.purchase);
        let mut file =
            fs::File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        let mut hash = Sha256::new();
        let mut len = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            WalletError::Server(CallError::Unreachable {
                url: merchant.base().to_string(),
                reason: e.to_string(),
            })
        })? {
            len += chunk.len() as u64;
            if len > offer.ciphertext_len {
                return Err(WalletError::Protocol(CustomerError::ChecksumMismatch));
            }
            hash.update(&chunk);
            file.write_all(&chunk)
                .map_err(io(format!("writing {}", path.display())))?;
            report(Step::Download(len, offer.ciphertext_len));
        }
        sync(&file).map_err(io(format!("syncing {}", path.display())))?;
        Ok((Digest(hash.finalize().into()), len))
    }

    /// Takes a receipt for a committed purchase: recovers K, decrypts, checks, records.
    fn finish(
        &self,
        rec: &mut PurchaseRecord,
        receipt: Signed<netbill_proto::messages::Receipt>,
    ) -> Result<Outcome, WalletError> {
        let (settlement, effects) = rec.purchase.on_receipt(
            &RealCrypto,
            &self.config.billing.sign_key,
            &self.config.billing.seal_key,
            receipt,
        )?;
        // The receipt is N's and can be fetched again: if a crash loses the record saved
        // below, the durable EPO record is back and `recover` settles it again. So one
        // save, not waiting for the disk, once the outcome is complete, is enough.
        let mut undecryptable = None;
        for effect in effects {
            match effect {
                CustomerEffect::Decrypt(goods_key) => match self.decrypt(rec, &goods_key) {
                    Ok(()) => rec.delivered_to = Some(rec.out.clone()),
                    // Kept as evidence for a dispute: the receipt with the K that failed.
                    Err(e) => undecryptable = Some(e),
                },
                CustomerEffect::Persist | CustomerEffect::PersistDurably => {
                    self.save_settled(rec)?;
                    netbill_http::crash_point("wallet.after_persist_receipt");
                }
                other => {
                    return Err(WalletError::Other(format!(
                        "unexpected step {other:?} after the receipt"
                    )));
                }
            }
        }
        if let Some(e) = undecryptable {
            return Err(e);
        }
        Ok(match settlement {
            Settlement::Paid {
                balance_minor,
                low_balance,
                ..
            } => Outcome::Paid {
                path: rec.out.clone(),
                price: rec.purchase.quote.body_unverified().price,
                balance_minor,
                low_balance,
            },
            Settlement::NotPaid {
                result,
                balance_minor,
            } => Outcome::NotPaid {
                result,
                balance_minor,
            },
        })
    }

    /// Decrypts a paid purchase's ciphertext to its `out` path, checked against the quote's
    /// plaintext digest.
    fn decrypt(&self, rec: &PurchaseRecord, goods_key: &GoodsKey) -> Result<(), WalletError> {
        let src = self.goods_path(&rec.purchase.offer.purchase);
        let tmp = rec.out.with_extension("netbill-partial");
        let stats = {
            let input = fs::File::open(&src).map_err(io(format!("reading {}", src.display())))?;
            let output =
                fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
            netbill_crypto::decrypt_stream(
                goods_key,
                std::io::BufReader::new(input),
                std::io::BufWriter::new(output),
            )
            .map_err(|e| WalletError::Undecryptable(e.to_string()))?
        };
        if stats.plaintext_digest != rec.purchase.quote.body_unverified().goods_digest {
            let _ = fs::remove_file(&tmp);
            return Err(WalletError::NotAsPromised(src));
        }
        fs::rename(&tmp, &rec.out).map_err(io(format!("writing {}", rec.out.display())))?;
        Ok(())
    }

    /// Finishes every unfinished purchase: an uncommitted one is aborted (nothing was paid);
    /// a committed one gets its receipt from the merchant, else from N, and its goods.
    pub async fn recover(&self) -> Result<Vec<(String, Outcome)>, WalletError> {
        let mut out = Vec::new();
        for mut rec in self.purchases()? {
            let id = rec.purchase.offer.purchase.clone();
            let outcome = match rec.purchase.state() {
                CustomerState::Receiving | CustomerState::Delivered | CustomerState::Committed => {
                    // The core decides; the wallet carries out.
                    let mut outcome = None;
                    for effect in rec.purchase.recover() {
                        match effect {
                            CustomerEffect::Persist | CustomerEffect::PersistDurably => {
                                self.save(&rec)?;
                                outcome = Some(Outcome::Aborted);
                            }
                            CustomerEffect::AskForReceipt(epoid) => {
                                outcome = Some(self.recover_committed(&mut rec, epoid).await?);
                            }
                            _ => {}
                        }
                    }
                    match outcome {
                        Some(o) => o,
                        None => continue,
                    }
                }
                CustomerState::Settled(ResultCode::Committed) if rec.delivered_to.is_none() => {
                    let r = rec
                        .purchase
                        .receipt
                        .clone()
                        .ok_or_else(|| WalletError::Other("settled without receipt".into()))?;
                    rec.purchase.receipt = None;
                    self.finish(&mut rec, r)?
                }
                _ => continue,
            };
            out.push((id, outcome));
        }
        Ok(out)
    }

    /// Asks for the receipt of a committed purchase: the merchant's status, then N's, then
    /// the very same EPO re-sent.
    async fn recover_committed(
        &self,
        rec: &mut PurchaseRecord,
        epoid: EpoId,
    ) -> Result<Outcome, WalletError> {
        // First the merchant (C→M), then N (C→N).
        let from_merchant = match self.merchant_client(&rec.merchant_url) {
            Ok(m) => m
                .call::<(), StatusAnswer>(
                    reqwest::Method::GET,
                    &format!("/v1/status/{epoid}"),
                    None,
                    &[],
                )
                .await
                .ok()
                .and_then(|a| a.receipt),
            Err(_) => None,
        };
        let receipt = match from_merchant {
            Some(r) => Some(r),
            None => self.status_at_billing(&epoid).await?.receipt,
        };
        // No outcome anywhere: the EPO may never have reached the merchant (lost, or a
        // crash on either side). Re-send the very same EPO; the merchant endorses it once.
        let receipt = match receipt {
            Some(r) => Some(r),
            None => self.resend_epo(rec).await,
        };
        match receipt {
            Some(r) => self.finish(rec, r),
            None => Ok(Outcome::Pending {
                reason: format!(
                    "no outcome yet for {epoid}; it is decided at the latest when the EPO expires"
                ),
            }),
        }
    }

    /// Re-sends a purchase's signed EPO to its merchant; the receipt, if one comes back.
    /// A v2 purchase goes back with its offer (the merchant stored nothing); a v1 one, to
    /// the purchase the merchant stored.
    async fn resend_epo(
        &self,
        rec: &PurchaseRecord,
    ) -> Option<Signed<netbill_proto::messages::Receipt>> {
        let p = &rec.purchase;
        let epo = p.epo.clone()?;
        let merchant = self.merchant_client(&rec.merchant_url).ok()?;
        let answer = match (rec.ticket, &p.delivery) {
            (Some(ticket), Some(note)) => {
                let payment = Payment {
                    offer: PurchaseOffer {
                        quote: p.quote.clone(),
                        goods: p.offer.clone(),
                        note: note.clone(),
                        ticket,
                    },
                    epo,
                };
                merchant
                    .call::<_, StatusAnswer>(reqwest::Method::POST, "/v2/pay", Some(&payment), &[])
                    .await
            }
            _ => {
                merchant
                    .call::<_, StatusAnswer>(
                        reqwest::Method::POST,
                        &format!("/v1/purchases/{}/pay", p.offer.purchase),
                        Some(&epo),
                        &[],
                    )
                    .await
            }
        };
        answer.ok().and_then(|a| a.receipt)
    }

    /// Finds a purchase by its wallet id or its EPOID.
    pub fn find(&self, id_or_epoid: &str) -> Result<PurchaseRecord, WalletError> {
        self.purchases()?
            .into_iter()
            .find(|r| {
                r.purchase.offer.purchase == id_or_epoid
                    || r.purchase
                        .epo
                        .as_ref()
                        .is_some_and(|e| e.body_unverified().epoid.to_string() == id_or_epoid)
            })
            .ok_or_else(|| WalletError::NoSuchPurchase(id_or_epoid.to_string()))
    }

    /// The ciphertext of a purchase as it was received.
    pub fn goods_file(&self, r: &PurchaseRecord) -> PathBuf {
        self.goods_path(&r.purchase.offer.purchase)
    }

    /// A signed permission for the arbitrator holding `arbitrator_key` to fetch N's records
    /// of `epoid` until `expires_at_ms`.
    pub fn grant(
        &self,
        epoid: &netbill_proto::EpoId,
        arbitrator_key: PublicKey,
        expires_at_ms: u64,
    ) -> Signed<netbill_proto::messages::EvidenceGrant> {
        Signed::sign(
            netbill_proto::messages::EvidenceGrant {
                epoid: epoid.clone(),
                grantor: self.config.account.clone(),
                arbitrator_key,
                expires_at_ms,
            },
            &self.signer,
        )
    }

    /// N's signed records of one of this customer's purchases (for a dispute).
    pub async fn billing_evidence(
        &self,
        epoid: &netbill_proto::EpoId,
    ) -> Result<netbill_proto::messages::BillingEvidence, WalletError> {
        self.signed_get(&format!("/v1/evidence/{epoid}")).await
    }

    /// A C→N status query, signed with the wallet's key.
    pub async fn status_at_billing(
        &self,
        epoid: &netbill_proto::EpoId,
    ) -> Result<StatusAnswer, WalletError> {
        let body = serde_json::to_vec(&serde_json::json!({ "epoid": epoid })).unwrap_or_default();
        let auth = netbill_http::sign_request(
            &RealCrypto,
            &self.signer,
            &self.config.account,
            "POST",
            "/v1/status",
            &body,
            now_ms(),
        );
        Ok(self
            .billing
            .call_raw(
                reqwest::Method::POST,
                "/v1/status",
                Some(body),
                &[(netbill_http::AUTH_HEADER, auth)],
            )
            .await?)
    }

    async fn signed_get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, WalletError> {
        let auth = netbill_http::sign_request(
            &RealCrypto,
            &self.signer,
            &self.config.account,
            "GET",
            path,
            b"",
            now_ms(),
        );
        Ok(self
            .billing
            .call::<(), T>(
                reqwest::Method::GET,
                path,
                None,
                &[(netbill_http::AUTH_HEADER, auth)],
            )
            .await?)
    }

    /// The account's balance and status, from N.
    pub async fn balance(&self) -> Result<AccountInfo, WalletError> {
        self.signed_get(&format!("/v1/accounts/{}", self.config.account))
            .await
    }

    /// The account's statement for `[from_ms, to_ms)`, from N.
    pub async fn statement(
        &self,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
    ) -> Result<Statement, WalletError> {
        let mut path = format!("/v1/accounts/{}/statement", self.config.account);
        let mut sep = '?';
        for (k, v) in [("from_ms", from_ms), ("to_ms", to_ms)] {
            if let Some(v) = v {
                path.push_str(&format!("{sep}{k}={v}"));
                sep = '&';
            }
        }
        self.signed_get(&path).await
    }
}

/// The [`PurchaseOffer`] of a v2 402 answer (its `NetBill-Offer` header).
fn read_offer(resp: &reqwest::Response) -> Result<PurchaseOffer, WalletError> {
    let bad = |why: &str| WalletError::BadOffer(why.to_string());
    let raw = resp
        .headers()
        .get(OFFER_HEADER)
        .ok_or_else(|| bad("the 402 answer has no NetBill-Offer header"))?;
    let bytes = B64
        .decode(raw.as_bytes())
        .map_err(|_| bad("the NetBill-Offer header is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(&format!("the offer does not parse: {e}")))
}

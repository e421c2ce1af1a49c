//! `netbill bench`: drives real purchases at a billing server running as its own process, and
//! measures, in the same run, the machine's crypto ceiling for the server's work.

use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use netbill_crypto::{Ed25519Signer, RealCrypto, random_bytes, random_seal_secret};
use netbill_http::client::Client;
use netbill_proto::billing::{self, AccountKind, BillingPolicy};
use netbill_proto::crypto::{Crypto, GoodsKey, SealSecret, Signer};
use netbill_proto::customer::CustomerPurchase;
use netbill_proto::merchant::{MerchantPurchase, Offer, make_quote};
use netbill_proto::messages::{
    Endorsement, Epo, GoodsOffer, PriceRequest, ResultCode, StatusAnswer,
};
use netbill_proto::{AccountId, Amount, ProductCode, Signed};
use netbill_server::{AdminClient, BatchItem, BillingPublic, EndorsementBatch, WriterCounters};
use serde::Serialize;

#[derive(Args)]
pub struct BenchArgs {
    /// Purchases per saturation run (there are two: one endorsement per request, and batched).
    #[arg(long, default_value_t = 10_000)]
    purchases: usize,
    /// Distinct customer accounts.
    #[arg(long, default_value_t = 200)]
    customers: usize,
    /// Distinct merchant accounts (few: hot accounts are the hard case).
    #[arg(long, default_value_t = 2)]
    merchants: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Endorsements per request in the batched run (1–256).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Whole purchases through a merchant (v2: two round trips), one after another; then 50 more, counted under strace.
    #[arg(long, default_value_t = 200)]
    e2e: usize,
    /// The ledger: `sqlite` (a file in a temporary directory), `postgres` (a throwaway
    /// PostgreSQL 15 started from the installed binaries, fsync on), or a store URL.
    #[arg(long, default_value = "sqlite")]
    store: String,
    /// Drive an already running billing server at this URL (loopback only) instead of
    /// starting one; it needs the server's admin token (`--admin-token`). Accounts are
    /// created with a fresh prefix, so the server's ledger may hold anything else.
    #[arg(long, value_name = "URL", conflicts_with = "store")]
    url: Option<String>,
    /// The admin token of the server given with `--url`. Prefer the environment variable,
    /// which keeps it out of the process list.
    #[arg(
        long,
        env = "NETBILL_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    admin_token: Option<String>,
    /// Sustained load instead of the standard runs: rounds of `--purchases` purchases (one
    /// per request and batched, alternately) for this many seconds, printing the server's
    /// resident memory after each round.
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// Before the runs, fill the bench's own ledger with this many filler accounts (loaded
    /// in bulk by the database, not over the API), to see whether a purchase costs more in a
    /// large ledger.
    #[arg(long, default_value_t = 0)]
    preload_accounts: u64,
    /// …and this many filler outcomes (aborts).
    #[arg(long, default_value_t = 0)]
    preload_outcomes: u64,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// One saturation or paced run.
#[derive(Serialize, Clone, Debug)]
struct RunReport {
    name: String,
    purchases: usize,
    committed: usize,
    seconds: f64,
    purchases_per_s: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_p999: f64,
    purchases_per_durable_write: f64,
    /// N's receipt signatures per purchase (one per durable write since batch signing).
    receipt_signatures_per_purchase: f64,
    /// Endorsements N checked per batch equation (its verifier threads' chunks).
    endorsements_per_verify_chunk: f64,
    server_cpu_s: f64,
    generator_cpu_s: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    store: String,
    machine_cores: usize,
    /// Filler rows loaded into the ledger before the runs (`--preload-*`).
    preloaded_accounts: u64,
    preloaded_outcomes: u64,
    /// What no design can avoid: the customers' EPO signatures checked in batches, and a hash.
    irreducible_ceiling_per_s: f64,
    crypto_ceiling_per_s: f64,
    /// The same, with signatures checked by batch verification in chunks of
    /// `batch_verify_chunk` (what the batch endpoint does).
    crypto_ceiling_batch_verify_per_s: f64,
    batch_verify_chunk: usize,
    runs: Vec<RunReport>,
    single_ratio_to_ceiling: f64,
    batched_ratio_to_ceiling: f64,
    single_ratio_to_irreducible: f64,
    batched_ratio_to_irreducible: f64,
    e2e: E2eReport,
    /// `None` when the server's process could not be found (`--url`).
    server_rss_kib_after_setup: Option<u64>,
    server_rss_kib_at_end: Option<u64>,
}

/// One sample of a soak run.
#[derive(Serialize, Debug)]
struct SoakSample {
    seconds: f64,
    purchases_served: usize,
    server_rss_kib: Option<u64>,
    round_purchases_per_s: f64,
}

#[derive(Serialize, Debug)]
struct SoakReport {
    store: String,
    samples: Vec<SoakSample>,
}

#[derive(Serialize, Debug)]
struct E2eReport {
    purchases: usize,
    seconds: f64,
    purchases_per_s: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    /// Where a purchase's time goes, from the wallet's side: mean milliseconds between the
    /// protocol steps it reports.
    phases_ms_mean: Vec<(String, f64)>,
    /// What a purchase costs, counted over a separate pass of [`E2E_COUNTED`] purchases.
    counted: Option<E2eCounts>,
}

/// Round trips and durable writes of a whole purchase, counted (not derived from the code).
#[derive(Serialize, Debug)]
struct E2eCounts {
    purchases: usize,
    /// Requests the wallet sent to the merchant, per purchase.
    customer_merchant_round_trips: f64,
    /// Endorsements N answered, per purchase (N's `netbill_receipts_total`).
    merchant_billing_round_trips: f64,
    /// `fsync`s the wallet made, per purchase (its own counter).
    customer_fsyncs: f64,
    /// `fsync` + `fdatasync` system calls of the merchant's and N's processes, per purchase,
    /// counted by `strace -c` attached to them; `None` without strace.
    merchant_fsyncs: Option<f64>,
    billing_fsyncs: Option<f64>,
}

/// Counts a running process's `fsync` and `fdatasync` calls, all threads, from the kernel's
/// side: `strace -f -c` attached for the duration.
struct SyncCounter {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl SyncCounter {
    /// `None` if strace is not installed or cannot attach.
    fn attach(pid: u32, out: std::path::PathBuf) -> Option<SyncCounter> {
        let child = std::process::Command::new("strace")
            .args(["-f", "-qq", "-c", "-e", "trace=fsync,fdatasync", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(SyncCounter { child, out })
    }

    /// Detaches and returns the calls counted.
    fn finish(mut self) -> Option<u64> {
        // SIGINT makes strace detach and write its summary. SAFETY: kill(2) on the pid of
        // our own child, which has not been waited for, so the pid is still ours.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().ok()?;
        let text = std::fs::read_to_string(&self.out).ok()?;
        Some(
            text.lines()
                .filter(|l| l.ends_with(" fsync") || l.ends_with(" fdatasync"))
                .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
                .sum(),
        )
    }
}

/// The sum of N's `netbill_receipts_total` counters.
async fn receipts_answered(target: &Target) -> anyhow::Result<u64> {
    let c = Client::new(&target.url)?;
    let resp = reqwest::get(c.url("/metrics")).await?.text().await?;
    Ok(resp
        .lines()
        .filter(|l| l.starts_with("netbill_receipts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// The stretches of a whole purchase, between the steps the wallet reports (a stretch ends
/// when the step is reported; "finish" ends when `buy` returns).
const E2E_PHASES: [(u8, &str); 4] = [
    (1, "purchase request"),
    (2, "402: offer + ciphertext, checks"),
    (3, "sign EPO + durable save"),
    (4, "pay: merchant endorses, N commits"),
];

/// Purchases of the counting pass (under strace, so not timed).
const E2E_COUNTED: usize = 50;

const TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// A `netbill` child process (server or merchant), killed on drop.
struct NetbillProcess {
    child: Child,
    url: String,
}

impl NetbillProcess {
    fn start(args: &[&str]) -> anyhow::Result<NetbillProcess> {
        let exe = std::env::current_exe().context("finding the netbill executable")?;
        let mut child = Command::new(exe)
            .args(args)
            .env("NETBILL_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a netbill process")?;
        let Some(addr) =
            netbill_chaos::process::wait_listening(&mut child, std::time::Duration::from_secs(30))
        else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("netbill {args:?} did not start listening within 30 s");
        };
        let url = format!("http://{addr}");
        Ok(NetbillProcess { child, url })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NetbillProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The billing server under load: one this command started, or one given with `--url`.
struct Target {
    url: String,
    token: String,
    /// The server's process, if known (always when started here; with `--url`, found
    /// through the socket listening on its port).
    pid: Option<u32>,
    _process: Option<NetbillProcess>,
}

impl Target {
    fn cpu_s(&self) -> Option<f64> {
        self.pid.map(proc_cpu_s)
    }
    fn rss_kib(&self) -> Option<u64> {
        self.pid.map(proc_rss_kib).filter(|k| *k > 0)
    }
}

/// Checks that `url` is an `http://` URL of a loopback address with a port; returns it
/// without a trailing slash, and the port.
fn loopback_url(url: &str) -> anyhow::Result<(String, u16)> {
    let u = reqwest::Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
    let host = u.host_str().unwrap_or("");
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    match u.port() {
        Some(port) if u.scheme() == "http" && loopback => {
            Ok((url.trim_end_matches('/').to_string(), port))
        }
        _ => bail!(
            "--url must be http://127.x.x.x:PORT, http://[::1]:PORT or http://localhost:PORT: netbill bench only drives a server on this machine (got {url:?})"
        ),
    }
}

/// The process listening on TCP `port` on this machine, if it can be seen: the socket's
/// inode from `/proc/net/tcp{,6}`, then the process holding it open.
fn listening_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; the inode is field 9.
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let p = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if p == Some(port) && *state == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// CPU seconds (user + system) used by process `pid` so far.
fn proc_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// Resident memory of process `pid`, KiB.
fn proc_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// The parties of the load: keys and account names.
struct Population {
    customers: Vec<(AccountId, Ed25519Signer)>,
    merchants: Vec<(AccountId, Ed25519Signer)>,
    /// Each party's static sealing secret (v2), by the same index.
    customer_seals: Vec<SealSecret>,
    merchant_seals: Vec<SealSecret>,
}

/// Pre-signs `n` purchases with the production protocol code and real crypto; serials start
/// at `serial0` so every EPOID is fresh.
fn presign(
    pop: &Population,
    billing: &BillingPublic,
    n: usize,
    serial0: u64,
    bar: &ProgressBar,
) -> Vec<Signed<Endorsement>> {
    let now = netbill_http::now_ms();
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let chunk = n.div_ceil(cores).max(1);
    let seal_key = billing.seal_key;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let end = (start + chunk).min(n);
                scope.spawn(move || {
                    (start..end)
                        .map(|i| {
                            let ci = i % pop.customers.len();
                            let mi = i % pop.merchants.len();
                            let e = one_purchase(
                                (&pop.customers[ci], &pop.customer_seals[ci]),
                                (&pop.merchants[mi], &pop.merchant_seals[mi]),
                                &seal_key,
                                serial0 + i as u64,
                                now,
                            );
                            bar.inc(1);
                            e
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn one_purchase(
    ((cid, ck), cseal): (&(AccountId, Ed25519Signer), &SealSecret),
    ((mid, mk), mseal): (&(AccountId, Ed25519Signer), &SealSecret),
    seal_key: &netbill_proto::crypto::SealKey,
    serial: u64,
    now: u64,
) -> Signed<Endorsement> {
    let c = RealCrypto;
    let offer = Offer {
        product: ProductCode::new("bench-article").unwrap_or_else(|_| unreachable!()),
        description: "Benchmark article".into(),
        price: Amount::from_minor(125).unwrap_or_default(),
        group_prices: vec![],
        goods_digest: c.digest(&[b"goods"]),
        goods_len: 5,
    };
    let req = PriceRequest {
        identity: cid.to_string(),
        customer_key: ck.public_key(),
        product: offer.product.clone(),
        prd_hex: String::new(),
        bid: None,
        credentials: vec![],
    };
    let quote = make_quote(&c, mk, mid, &req, &offer, &|_| None, serial, now, 3_600_000)
        .unwrap_or_else(|e| unreachable!("bench quote: {e}"));
    let goods = GoodsOffer {
        purchase: format!("{serial}"),
        checksum: c.digest(&[b"ciphertext"]),
        ciphertext_len: 42,
    };
    let mut m = MerchantPurchase::new(quote.clone(), GoodsKey(random_bytes()), goods.clone());
    let note = m.deliver(serial, now, 3_000_000);
    let mut cp = CustomerPurchase::new(quote, goods.clone(), cseal.clone());
    cp.delivered(goods.checksum, goods.ciphertext_len, note, now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    let epo = cp
        .sign_epo(
            &c,
            ck,
            seal_key,
            cid,
            random_bytes(),
            "",
            now,
            random_bytes(),
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
    m.endorse(&c, mk, mseal, seal_key, epo, "", now)
        .unwrap_or_else(|e| unreachable!("{e}"))
}

/// Purchases/s this machine could do if it did nothing but N's cryptography for each:
/// verify the endorsement (two signatures, two seals opened — v2: pair keys, cached —
/// digests) and make the receipt (one seal, one signature), on every core.
/// Receipts per signature in the crypto ceilings: N signs the receipts of a durable write
/// together (one Ed25519 signature over their Merkle root); a batch of this size is what the
/// writer commits at moderate load.
const CEILING_SIGN_BATCH: usize = 32;

/// N's work after verifying a group: the receipts' bodies (sealing each customer's part) and
/// one batch signature over them. Returns how many receipts were made.
fn sign_receipts(
    verified: &[billing::VerifiedPurchase],
    billing_secret: &SealSecret,
    signer: &Ed25519Signer,
) -> usize {
    let bodies: Vec<_> = verified
        .iter()
        .map(|v| {
            billing::receipt_body(
                &RealCrypto,
                billing_secret,
                v,
                ResultCode::Committed,
                0,
                false,
                0,
                random_bytes(),
            )
        })
        .collect();
    let n = bodies.len();
    if n > 0 {
        std::hint::black_box(Signed::sign_batch(bodies, &RealCrypto, signer));
    }
    n
}

fn crypto_ceiling(
    sample: &[Signed<Endorsement>],
    billing_secret: &SealSecret,
    signer: &Ed25519Signer,
) -> f64 {
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let policy = BillingPolicy::default();
    let start = Instant::now();
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..cores {
            let done = &done;
            let policy = &policy;
            scope.spawn(move || {
                let mine: Vec<&Signed<Endorsement>> =
                    sample.iter().skip(t).step_by(cores).collect();
                for group in mine.chunks(CEILING_SIGN_BATCH) {
                    let verified: Vec<_> = group
                        .iter()
                        .filter_map(|e| {
                            billing::verify_endorsement(
                                &RealCrypto,
                                billing_secret,
                                policy,
                                (*e).clone(),
                            )
                            .ok()
                        })
                        .collect();
                    done.fetch_add(
                        sign_receipts(&verified, billing_secret, signer),
                        Ordering::Relaxed,
                    );
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The **irreducible** ceiling: purchases/s if N did nothing but what no NetBill design can
/// avoid — check each customer's EPO signature (by batch verification, in chunks of
/// `chunk` per core) and hash what it receives once — on every core.
fn irreducible_ceiling(sample: &[Signed<Endorsement>], chunk: usize) -> f64 {
    use netbill_proto::signed::{SignedBody, to_be_signed};
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let chunks: Vec<&[Signed<Endorsement>]> = sample.chunks(chunk.max(1)).collect();
    let start = Instant::now();
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..cores {
            let (done, chunks) = (&done, &chunks);
            scope.spawn(move || {
                for c in chunks.iter().skip(t).step_by(cores) {
                    let msgs: Vec<Vec<u8>> = c
                        .iter()
                        .map(|e| to_be_signed(Epo::DOMAIN, e.body_unverified().epo.bytes()))
                        .collect();
                    let items: Vec<_> = c
                        .iter()
                        .zip(&msgs)
                        .map(|(e, m)| {
                            let epo = &e.body_unverified().epo;
                            (
                                epo.body_unverified().customer_key,
                                m.as_slice(),
                                *epo.signature(),
                            )
                        })
                        .collect();
                    if netbill_crypto::batch_verify(&items) {
                        for e in c.iter() {
                            std::hint::black_box(RealCrypto.digest(&[e.bytes()]));
                        }
                        done.fetch_add(c.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The same ceiling with the signatures checked by batch verification, in chunks of
/// `chunk` endorsements per core, as the server's `/v1/endorsements/batch` checks them.
fn crypto_ceiling_batch_verify(
    sample: &[Signed<Endorsement>],
    billing_secret: &SealSecret,
    signer: &Ed25519Signer,
    chunk: usize,
) -> f64 {
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let policy = BillingPolicy::default();
    let chunks: Vec<&[Signed<Endorsement>]> = sample.chunks(chunk.max(1)).collect();
    let start = Instant::now();
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..cores {
            let (done, policy, chunks) = (&done, &policy, &chunks);
            scope.spawn(move || {
                for c in chunks.iter().skip(t).step_by(cores) {
                    let verified: Vec<_> =
                        netbill_server::verify::verify_chunk(billing_secret, policy, c.to_vec())
                            .into_iter()
                            .flatten()
                            .collect();
                    done.fetch_add(
                        sign_receipts(&verified, billing_secret, signer),
                        Ordering::Relaxed,
                    );
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Sends the load; `per_request` endorsements per request; if `rate` is set, requests start
/// on a fixed schedule (open loop) at that many purchases per second.
async fn drive(
    n_url: &str,
    load: Vec<Signed<Endorsement>>,
    per_request: usize,
    concurrency: usize,
    rate: Option<f64>,
    bar: ProgressBar,
) -> anyhow::Result<(Histogram<u64>, usize, f64)> {
    let client = Client::new(n_url)?;
    let requests: Arc<Vec<Vec<Signed<Endorsement>>>> =
        Arc::new(load.chunks(per_request).map(|c| c.to_vec()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, requests, next, bar) =
            (client.clone(), requests.clone(), next.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut committed = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else { break };
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64((i * per_request) as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let t = Instant::now();
                let results: Vec<Option<ResultCode>> = if per_request == 1 {
                    let a: StatusAnswer = client
                        .call(
                            reqwest::Method::POST,
                            "/v1/endorsements",
                            Some(&req[0]),
                            &[],
                        )
                        .await?;
                    vec![a.receipt.map(|r| r.body_unverified().result)]
                } else {
                    let body = EndorsementBatch {
                        endorsements: req.clone(),
                    };
                    let a: Vec<BatchItem> = client
                        .call(
                            reqwest::Method::POST,
                            "/v1/endorsements/batch",
                            Some(&body),
                            &[],
                        )
                        .await?;
                    a.into_iter()
                        .map(|it| match it {
                            BatchItem::Answer(a) => a.receipt.map(|r| r.body_unverified().result),
                            BatchItem::Problem(_) => None,
                        })
                        .collect()
                };
                let us = t.elapsed().as_micros().max(1) as u64;
                for r in &results {
                    hist.record(us).map_err(|e| anyhow::anyhow!("{e}"))?;
                    committed += usize::from(*r == Some(ResultCode::Committed));
                }
                bar.inc(results.len() as u64);
            }
            anyhow::Ok((hist, committed))
        }));
    }
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut committed = 0;
    for t in tasks {
        let (h, c) = t.await??;
        hist.add(h).map_err(|e| anyhow::anyhow!("{e}"))?;
        committed += c;
    }
    bar.finish_and_clear();
    Ok((hist, committed, start.elapsed().as_secs_f64()))
}

fn cpu_self_s() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn bar(len: usize, msg: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template("{msg:>24} {bar:30} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_message(msg.to_string());
    b
}

async fn stats(target: &Target) -> anyhow::Result<WriterCounters> {
    let c = Client::new(&target.url)?;
    Ok(c.call::<(), _>(
        reqwest::Method::GET,
        "/v1/admin/stats",
        None,
        &[("authorization", format!("Bearer {}", target.token))],
    )
    .await?)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    name: &str,
    server: &Target,
    load: Vec<Signed<Endorsement>>,
    per_request: usize,
    concurrency: usize,
    rate: Option<f64>,
    quiet: bool,
) -> anyhow::Result<RunReport> {
    let n = load.len();
    let before = stats(server).await?;
    let (cpu_s0, cpu_g0) = (server.cpu_s(), cpu_self_s());
    let (hist, committed, seconds) = drive(
        &server.url,
        load,
        per_request,
        concurrency,
        rate,
        bar(n, name, quiet),
    )
    .await?;
    let after = stats(server).await?;
    let writes = (after.batches - before.batches).max(1);
    Ok(RunReport {
        name: name.to_string(),
        purchases: n,
        committed,
        seconds,
        purchases_per_s: n as f64 / seconds,
        latency_ms_p50: ms(&hist, 0.5),
        latency_ms_p99: ms(&hist, 0.99),
        latency_ms_p999: ms(&hist, 0.999),
        purchases_per_durable_write: (after.purchases - before.purchases) as f64 / writes as f64,
        receipt_signatures_per_purchase: after
            .receipt_signatures
            .saturating_sub(before.receipt_signatures)
            as f64
            / (after.purchases - before.purchases).max(1) as f64,
        endorsements_per_verify_chunk: after
            .verified_endorsements
            .saturating_sub(before.verified_endorsements)
            as f64
            / after
                .verify_chunks
                .saturating_sub(before.verify_chunks)
                .max(1) as f64,
        server_cpu_s: server.cpu_s().zip(cpu_s0).map_or(0.0, |(a, b)| a - b),
        generator_cpu_s: cpu_self_s() - cpu_g0,
    })
}

/// Whole purchases through a real merchant process, one after another.
async fn e2e(
    dir: &Path,
    server: &Target,
    admin: &AdminClient,
    billing: BillingPublic,
    prefix: &str,
    n: usize,
    quiet: bool,
) -> anyhow::Result<E2eReport> {
    let d = |s: &str| dir.join(s).to_string_lossy().into_owned();
    let mdir = dir.join("merchant");
    let shop = AccountId::new(&format!("{prefix}e2e-shop"))?;
    let reader = AccountId::new(&format!("{prefix}e2e-reader"))?;
    let mpk = netbill_merchant::init(&mdir, shop.clone(), &server.url, billing)?;
    admin
        .create_account(&shop, AccountKind::Merchant, mpk, None, None)
        .await?;
    std::fs::create_dir_all(dir.join("shop"))?;
    std::fs::write(
        dir.join("shop/article.txt"),
        "an article of a few hundred bytes. ".repeat(10),
    )?;
    std::fs::write(
        dir.join("shop/catalog.toml"),
        format!(
            "merchant = \"{shop}\"\n[[product]]\ncode = \"article\"\ndescription = \"Bench article\"\nprice = \"USD:0.00125\"\nfile = \"article.txt\"\n"
        ),
    )?;
    let merchant = NetbillProcess::start(&[
        "merchant",
        "run",
        "--dir",
        &d("merchant"),
        "--catalog",
        &d("shop/catalog.toml"),
        "--listen",
        "127.0.0.1:0",
    ])?;
    let wallet = netbill_wallet::Wallet::create(
        &dir.join("wallet"),
        reader.clone(),
        None,
        &server.url,
        billing,
    )?;
    admin
        .create_account(
            &reader,
            AccountKind::Customer,
            wallet.public_key(),
            None,
            None,
        )
        .await?;
    admin
        .transfer(&reader, false, "USD:100".parse()?, None)
        .await?;
    let product = ProductCode::new("article")?;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow::anyhow!("{e}"))?;
    let b = bar(n, "e2e (two round trips)", quiet);
    let mut phase_us = [0u64; E2E_PHASES.len() + 1];
    let start = Instant::now();
    for i in 0..n {
        let opts = netbill_wallet::BuyOptions {
            out: Some(dir.join(format!("goods-{}", i % 4))),
            ..Default::default()
        };
        let t = Instant::now();
        let mut marks: Vec<(u8, Instant)> = Vec::with_capacity(8);
        let o = wallet
            .buy(&merchant.url, &product, &opts, &mut |step| {
                if let netbill_wallet::Step::Protocol(n, _) = step {
                    marks.push((n, Instant::now()));
                }
            })
            .await?;
        let end = Instant::now();
        let mut prev = t;
        for (i, (step, _)) in E2E_PHASES.iter().enumerate() {
            if let Some((_, at)) = marks.iter().find(|(n, _)| n == step) {
                phase_us[i] += at.duration_since(prev).as_micros() as u64;
                prev = *at;
            }
        }
        phase_us[E2E_PHASES.len()] += end.duration_since(prev).as_micros() as u64;
        if !matches!(o, netbill_wallet::Outcome::Paid { .. }) {
            bail!("end-to-end purchase {i} was not paid: {o:?}");
        }
        hist.record(t.elapsed().as_micros().max(1) as u64)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        b.inc(1);
    }
    b.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let counted = if n == 0 {
        None
    } else {
        let m_count = SyncCounter::attach(merchant.pid(), dir.join("strace-merchant.txt"));
        let n_count = server
            .pid
            .and_then(|pid| SyncCounter::attach(pid, dir.join("strace-server.txt")));
        // strace needs a moment to attach to every thread.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let requests = wallet.merchant_requests();
        let fsyncs = netbill_wallet::fsyncs_so_far();
        let receipts = receipts_answered(server).await?;
        for i in 0..E2E_COUNTED {
            let opts = netbill_wallet::BuyOptions {
                out: Some(dir.join(format!("goods-{}", i % 4))),
                ..Default::default()
            };
            let o = wallet
                .buy(&merchant.url, &product, &opts, &mut |_| {})
                .await?;
            if !matches!(o, netbill_wallet::Outcome::Paid { .. }) {
                bail!("counted purchase {i} was not paid: {o:?}");
            }
        }
        let per = |x: u64| x as f64 / E2E_COUNTED as f64;
        Some(E2eCounts {
            purchases: E2E_COUNTED,
            customer_merchant_round_trips: per(wallet.merchant_requests() - requests),
            merchant_billing_round_trips: per(receipts_answered(server).await? - receipts),
            customer_fsyncs: per(netbill_wallet::fsyncs_so_far() - fsyncs),
            merchant_fsyncs: m_count.and_then(SyncCounter::finish).map(per),
            billing_fsyncs: n_count.and_then(SyncCounter::finish).map(per),
        })
    };
    Ok(E2eReport {
        purchases: n,
        seconds,
        purchases_per_s: n as f64 / seconds,
        latency_ms_p50: ms(&hist, 0.5),
        latency_ms_p99: ms(&hist, 0.99),
        phases_ms_mean: E2E_PHASES
            .iter()
            .map(|(_, name)| name.to_string())
            .chain(["finish: receipt, K, decrypt, save".to_string()])
            .zip(phase_us)
            .map(|(name, us)| (name, us as f64 / 1000.0 / n.max(1) as f64))
            .collect(),
        counted,
    })
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if !(1..=256).contains(&args.batch) {
        bail!("--batch must be 1 to 256");
    }
    if args.purchases == 0 || args.customers == 0 || args.merchants == 0 || args.concurrency == 0 {
        bail!("--purchases, --customers, --merchants and --concurrency must be at least 1");
    }
    let quiet = args.json;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let d = |s: &str| dir.join(s).to_string_lossy().into_owned();
    // N's keys: this command's own server's, or (with --url) keys only for measuring the
    // ceiling, since the secrets of a server running elsewhere are not ours to read.
    let keys = netbill_server::BillingKeys::create(&dir.join("billing"))?;
    // A throwaway PostgreSQL lives as long as this function.
    let mut _pg = None;
    let (store_name, server) = if let Some(url) = &args.url {
        let (url, port) = loopback_url(url)?;
        let token = args.admin_token.clone().context(
            "--url needs the server's admin token: set NETBILL_ADMIN_TOKEN (or --admin-token)",
        )?;
        let target = Target {
            url: url.clone(),
            token,
            pid: listening_pid(port),
            _process: None,
        };
        stats(&target).await.with_context(|| {
            format!("the billing server at {url} did not answer its admin API with this token")
        })?;
        (format!("the server at {url}"), target)
    } else {
        let (store_name, store_url) = match args.store.as_str() {
            "sqlite" => (
                "SQLite (WAL, synchronous=FULL)".to_string(),
                format!("sqlite://{}", d("billing/ledger.db")),
            ),
            "postgres" => {
                // The PostgreSQL client blocks: keep it off the async runtime.
                let (pg, url) =
                    tokio::task::spawn_blocking(|| netbill_ledger::throwaway_postgres(true))
                        .await?
                        .map_err(anyhow::Error::msg)?;
                _pg = Some(pg);
                (
                    "PostgreSQL 15 (throwaway server, fsync on)".to_string(),
                    url,
                )
            }
            url => {
                if args.preload_accounts + args.preload_outcomes > 0 {
                    bail!(
                        "--preload-accounts and --preload-outcomes fill only the bench's own \
                         ledger (--store sqlite or postgres), never a store you name"
                    );
                }
                (netbill_ledger::redact_url(url), url.to_string())
            }
        };
        if args.preload_accounts + args.preload_outcomes > 0 {
            let total = args.preload_accounts + args.preload_outcomes;
            let b = bar(total as usize, "preloading filler rows", quiet);
            let t = Instant::now();
            let (url, accounts, outcomes) = (
                store_url.clone(),
                args.preload_accounts,
                args.preload_outcomes,
            );
            let bb = b.clone();
            tokio::task::spawn_blocking(move || {
                netbill_ledger::filler::preload(&url, accounts, outcomes, &mut |n| {
                    bb.set_position(n)
                })
            })
            .await??;
            b.finish_and_clear();
            if !quiet {
                println!(
                    "preloaded {} accounts and {} outcomes in {:.0} s (filler rows, loaded by the database)",
                    args.preload_accounts,
                    args.preload_outcomes,
                    t.elapsed().as_secs_f64()
                );
            }
        }
        let billing_dir = d("billing");
        let process = NetbillProcess::start(&[
            "server",
            "run",
            "--dir",
            &billing_dir,
            "--listen",
            "127.0.0.1:0",
            "--batch-max",
            "512",
            "--store",
            &store_url,
        ])?;
        let target = Target {
            url: process.url.clone(),
            token: TOKEN.to_string(),
            pid: Some(process.pid()),
            _process: Some(process),
        };
        (store_name, target)
    };
    let admin = AdminClient::new(&server.url, &server.token)?;
    let billing = if args.url.is_some() {
        Client::new(&server.url)?
            .call::<(), BillingPublic>(reqwest::Method::GET, "/v1/keys", None, &[])
            .await
            .context("reading the server's public keys")?
    } else {
        keys.public()
    };
    // Account names unique to this run, so a running server's ledger may hold anything.
    let prefix = if args.url.is_some() {
        format!("b{:08x}-", u32::from_le_bytes(random_bytes()))
    } else {
        String::new()
    };

    // Accounts.
    let mk = |kind: &str, n: usize| -> anyhow::Result<Vec<(AccountId, Ed25519Signer)>> {
        (0..n)
            .map(|i| {
                Ok((
                    AccountId::new(&format!("{prefix}{kind}{i}"))?,
                    Ed25519Signer::generate(),
                ))
            })
            .collect()
    };
    let pop = Population {
        customers: mk("reader", args.customers)?,
        merchants: mk("shop", args.merchants)?,
        customer_seals: (0..args.customers).map(|_| random_seal_secret()).collect(),
        merchant_seals: (0..args.merchants).map(|_| random_seal_secret()).collect(),
    };
    for (id, k) in &pop.merchants {
        admin
            .create_account(id, AccountKind::Merchant, k.public_key(), None, None)
            .await?;
    }
    for (id, k) in &pop.customers {
        admin
            .create_account(id, AccountKind::Customer, k.public_key(), None, None)
            .await?;
        admin.transfer(id, false, "USD:1000".parse()?, None).await?;
    }
    let rss_setup = server.rss_kib();

    if let Some(seconds) = args.soak {
        return soak(&args, &server, &pop, &billing, store_name, seconds).await;
    }

    // Pre-sign everything before any clock starts.
    let n = args.purchases;
    let paced_n = (n / 2).max(1);
    let total = 2 * n + paced_n;
    let b = bar(total, "pre-signing", quiet);
    let mut all = presign(&pop, &billing, total, 1, &b);
    b.finish_and_clear();
    let paced = all.split_off(2 * n);
    let batched = all.split_off(n);
    let single = all;

    // The ceiling, measured now, on this machine, on a sample of the same load (with
    // --url, on a sample sealed to this command's own keys).
    let sample_len = single.len().min(4000);
    let own_sample;
    let sample = if args.url.is_some() {
        let b = bar(sample_len, "pre-signing the sample", quiet);
        own_sample = presign(&pop, &keys.public(), sample_len, 1, &b);
        b.finish_and_clear();
        &own_sample[..]
    } else {
        &single[..sample_len]
    };
    let ceiling = crypto_ceiling(sample, &keys.seal, &keys.signer);
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let verify_chunk = args.batch.div_ceil(cores);
    let ceiling_batch_verify =
        crypto_ceiling_batch_verify(sample, &keys.seal, &keys.signer, verify_chunk);
    let irreducible = irreducible_ceiling(sample, verify_chunk);

    let mut runs = Vec::new();
    let r1 = run_one(
        "single (1 per request)",
        &server,
        single,
        1,
        args.concurrency,
        None,
        quiet,
    )
    .await?;
    let r2 = run_one(
        &format!("batched ({} per request)", args.batch),
        &server,
        batched,
        args.batch,
        args.concurrency,
        None,
        quiet,
    )
    .await?;
    let rate = r1.purchases_per_s * 0.5;
    let r3 = run_one(
        "paced at 50% of single peak",
        &server,
        paced,
        1,
        args.concurrency,
        Some(rate),
        quiet,
    )
    .await?;
    runs.extend([r1, r2, r3]);
    let e2e_report = e2e(
        &dir.join("e2e"),
        &server,
        &admin,
        billing,
        &prefix,
        args.e2e,
        quiet,
    )
    .await?;
    let rss_end = server.rss_kib();
    let totals = admin
        .conservation()
        .await
        .context("conservation after the benchmark")?;

    let report = Report {
        store: store_name,
        machine_cores: std::thread::available_parallelism().map_or(0, |c| c.get()),
        preloaded_accounts: args.preload_accounts,
        preloaded_outcomes: args.preload_outcomes,
        irreducible_ceiling_per_s: irreducible,
        crypto_ceiling_per_s: ceiling,
        crypto_ceiling_batch_verify_per_s: ceiling_batch_verify,
        batch_verify_chunk: verify_chunk,
        single_ratio_to_ceiling: runs[0].purchases_per_s / ceiling,
        batched_ratio_to_ceiling: runs[1].purchases_per_s / ceiling,
        single_ratio_to_irreducible: runs[0].purchases_per_s / irreducible,
        batched_ratio_to_irreducible: runs[1].purchases_per_s / irreducible,
        runs,
        e2e: e2e_report,
        server_rss_kib_after_setup: rss_setup,
        server_rss_kib_at_end: rss_end,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "netbill bench — {}, server in its own process, {} cores",
            report.store, report.machine_cores
        );
        println!(
            "irreducible ceiling (only the customers' EPO signatures, batch-verified {} per chunk, and one hash; all cores): {:.0} purchases/s",
            verify_chunk, irreducible
        );
        println!(
            "crypto ceiling (N's signature checks, seal opening, sealing, and one signature per {CEILING_SIGN_BATCH} receipts, all cores): {:.0} purchases/s",
            ceiling
        );
        println!(
            "  the same with batch signature verification ({} endorsements per chunk, as the batch endpoint): {:.0} purchases/s; batched run at {:.0}% of it",
            report.batch_verify_chunk,
            report.crypto_ceiling_batch_verify_per_s,
            100.0 * report.runs[1].purchases_per_s / report.crypto_ceiling_batch_verify_per_s
        );
        println!();
        println!(
            "{:<30} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8}",
            "run",
            "purch/s",
            "of ceil",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "per write",
            "sigs/purch",
            "per verify",
            "srv cpu",
            "gen cpu"
        );
        for r in &report.runs {
            println!(
                "{:<30} {:>10.0} {:>8.0}% {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>10.3} {:>10.1} {:>7.1}s {:>7.1}s",
                r.name,
                r.purchases_per_s,
                100.0 * r.purchases_per_s / ceiling,
                r.latency_ms_p50,
                r.latency_ms_p99,
                r.latency_ms_p999,
                r.purchases_per_durable_write,
                r.receipt_signatures_per_purchase,
                r.endorsements_per_verify_chunk,
                r.server_cpu_s,
                r.generator_cpu_s
            );
        }
        let e = &report.e2e;
        println!();
        if e.purchases == 0 {
            println!("whole purchase through the merchant: not measured (--e2e 0)");
        } else {
            println!(
                "whole purchase through the merchant (v2, sequential): {} purchases, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
                e.purchases, e.purchases_per_s, e.latency_ms_p50, e.latency_ms_p99
            );
            println!(
                "  where it goes (mean ms): {}",
                e.phases_ms_mean
                    .iter()
                    .map(|(name, ms)| format!("{name} {ms:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(c) = &e.counted {
                let opt = |x: Option<f64>| {
                    x.map(|v| format!("{v:.2}"))
                        .unwrap_or_else(|| "not counted (strace missing)".into())
                };
                println!(
                    "  counted over {} more purchases: C↔M round trips {:.2}, M↔N round trips {:.2}; fsyncs by each party's process C {:.2}, M {}, N {} (a PostgreSQL server's are its own)",
                    c.purchases,
                    c.customer_merchant_round_trips,
                    c.merchant_billing_round_trips,
                    c.customer_fsyncs,
                    opt(c.merchant_fsyncs),
                    opt(c.billing_fsyncs)
                );
            }
        }
        match (
            report.server_rss_kib_after_setup,
            report.server_rss_kib_at_end,
        ) {
            (Some(a), Some(b)) => {
                println!("server memory: {a} KiB after setup, {b} KiB at the end")
            }
            _ => println!("server memory: not measured (the server's process was not found)"),
        }
        println!(
            "conservation after the run: balances {} = deposits {} - payouts {} ({} outcomes)",
            netbill_proto::money::format_minor(totals.balances_minor),
            netbill_proto::money::format_minor(totals.deposits_minor),
            netbill_proto::money::format_minor(totals.payouts_minor),
            totals.outcomes
        );
        println!();
        println!(
            "headline: {:.0}% of the irreducible ceiling with batched endorsements, {:.0}% with one per request ({:.0}% and {:.0}% of the crypto N does)",
            100.0 * report.batched_ratio_to_irreducible,
            100.0 * report.single_ratio_to_irreducible,
            100.0 * report.batched_ratio_to_ceiling,
            100.0 * report.single_ratio_to_ceiling
        );
    }
    let committed: usize = report.runs.iter().map(|r| r.committed).sum();
    if committed != report.runs.iter().map(|r| r.purchases).sum::<usize>() {
        bail!("only {committed} purchases committed: the load was not all accepted");
    }
    Ok(ExitCode::SUCCESS)
}

/// Sustained load: rounds of `--purchases` purchases, one per request and batched
/// alternately, until `seconds` have passed; the server's resident memory is sampled after
/// every round. Each round is pre-signed before it is sent (the server idles meanwhile).
async fn soak(
    args: &BenchArgs,
    server: &Target,
    pop: &Population,
    billing: &BillingPublic,
    store: String,
    seconds: u64,
) -> anyhow::Result<ExitCode> {
    let quiet = args.json;
    let kib = |k: Option<u64>| k.map_or("n/a".to_string(), |k| k.to_string());
    if !quiet {
        println!(
            "netbill bench --soak {seconds} — {store}, {} purchases per round, {} in flight",
            args.purchases, args.concurrency
        );
        println!(
            "{:>8} {:>18} {:>16} {:>14}",
            "seconds", "purchases served", "server RSS KiB", "round purch/s"
        );
    }
    let start = Instant::now();
    let mut samples = vec![SoakSample {
        seconds: 0.0,
        purchases_served: 0,
        server_rss_kib: server.rss_kib(),
        round_purchases_per_s: 0.0,
    }];
    if !quiet {
        println!(
            "{:>8.0} {:>18} {:>16} {:>14}",
            0.0,
            0,
            kib(samples[0].server_rss_kib),
            "-"
        );
    }
    let (mut served, mut serial, mut round) = (0usize, 1u64, 0usize);
    while start.elapsed().as_secs() < seconds {
        let n = args.purchases;
        let b = bar(n, "pre-signing", quiet);
        let load = presign(pop, billing, n, serial, &b);
        b.finish_and_clear();
        serial += n as u64;
        let per_request = if round % 2 == 0 { 1 } else { args.batch };
        let name = format!("round {round} ({per_request} per request)");
        let r = run_one(
            &name,
            server,
            load,
            per_request,
            args.concurrency,
            None,
            quiet,
        )
        .await?;
        if r.committed != r.purchases {
            bail!(
                "round {round}: only {} of {} purchases committed",
                r.committed,
                r.purchases
            );
        }
        served += n;
        round += 1;
        let sample = SoakSample {
            seconds: start.elapsed().as_secs_f64(),
            purchases_served: served,
            server_rss_kib: server.rss_kib(),
            round_purchases_per_s: r.purchases_per_s,
        };
        if !quiet {
            println!(
                "{:>8.0} {:>18} {:>16} {:>14.0}",
                sample.seconds,
                sample.purchases_served,
                kib(sample.server_rss_kib),
                sample.round_purchases_per_s
            );
        }
        samples.push(sample);
    }
    AdminClient::new(&server.url, &server.token)?
        .conservation()
        .await
        .context("conservation after the soak")?;
    if quiet {
        println!(
            "{}",
            serde_json::to_string_pretty(&SoakReport { store, samples })?
        );
    } else {
        println!("conservation after the soak: holds");
    }
    Ok(ExitCode::SUCCESS)
}

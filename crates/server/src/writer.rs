//! The one thread that writes the ledger.
//!
//! Purchases waiting in the queue are committed together, many per durable write (group
//! commit); each answer is sent only after the transaction holding it is durable. Other
//! store work (admin operations, queries) runs on the same thread between batches, so a
//! server has exactly one writer. Several servers may share one PostgreSQL ledger: the store
//! then locks the rows a batch touches and runs the batch again on contention.

use crate::keys::BillingKeys;
use netbill_crypto::{Ed25519Signer, RealCrypto, random_bytes};
use netbill_ledger::{Store, commit};
use netbill_proto::billing::VerifiedPurchase;
use netbill_proto::messages::Receipt;
use netbill_proto::{EpoId, Signed};
use tokio::sync::{mpsc, oneshot};

pub use netbill_ledger::commit::PurchaseAnswer;

type StoreJob = Box<dyn FnOnce(&mut dyn Store) + Send>;

/// The answers to one request's purchases, in order, once their transaction is durable; or
/// why nothing was committed.
type Answers = Result<Vec<PurchaseAnswer>, String>;

enum Job {
    /// One request's purchases (one, or a merchant's batch): one job and one wake-up for all.
    Purchases(Vec<VerifiedPurchase>, oneshot::Sender<Answers>),
    Abort(EpoId, oneshot::Sender<Result<Signed<Receipt>, String>>),
    Run(StoreJob),
}

/// A handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    stats: std::sync::Arc<WriterStats>,
}

/// Counters of the writer's work, for `GET /v1/admin/stats` and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Purchase transactions committed (durable writes).
    pub batches: std::sync::atomic::AtomicU64,
    /// Purchases decided in them.
    pub purchases: std::sync::atomic::AtomicU64,
    /// Ed25519 signatures made over purchase and abort receipts: one per batch that made new
    /// receipts (and one more if a batch runs again after contention), one per abort.
    pub receipt_signatures: std::sync::atomic::AtomicU64,
}

/// The writer thread stopped (the server is shutting down or the store failed).
#[derive(Debug, thiserror::Error)]
#[error("the ledger writer is not running")]
pub struct WriterGone;

impl Writer {
    /// Starts the writer thread over `store`. At most `queue_max` jobs (requests) wait; the
    /// writer takes waiting requests into one transaction until it holds `batch_max`
    /// purchases or more (a request's purchases are never split).
    pub fn start(
        mut store: Box<dyn Store>,
        keys: BillingKeys,
        queue_max: usize,
        batch_max: usize,
    ) -> Writer {
        let (tx, mut rx) = mpsc::channel::<Job>(queue_max);
        let stats = std::sync::Arc::new(WriterStats::default());
        let counters = stats.clone();
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                let mut pending: Option<Job> = None;
                loop {
                    let Some(first) = pending.take().or_else(|| rx.blocking_recv()) else {
                        break;
                    };
                    match first {
                        Job::Run(f) => f(store.as_mut()),
                        Job::Abort(epoid, reply) => {
                            let _ =
                                reply.send(abort(store.as_mut(), &keys.signer, &epoid, &counters));
                        }
                        Job::Purchases(v, reply) => {
                            let mut n = v.len();
                            let mut batch = vec![(v, reply)];
                            while n < batch_max {
                                match rx.try_recv() {
                                    Ok(Job::Purchases(v, r)) => {
                                        n += v.len();
                                        batch.push((v, r));
                                    }
                                    Ok(other) => {
                                        pending = Some(other);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            let n = n as u64;
                            if commit_batch(store.as_mut(), &keys, batch, &counters) {
                                use std::sync::atomic::Ordering::Relaxed;
                                counters.batches.fetch_add(1, Relaxed);
                                counters.purchases.fetch_add(n, Relaxed);
                            }
                        }
                    }
                }
                tracing::info!("ledger writer stopped");
            })
            .expect("spawning the ledger writer thread");
        Writer { tx, stats }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Decides and commits one request's verified purchases (in one transaction, with
    /// other requests' waiting purchases); answers, in order, once they are durable.
    pub async fn purchases(&self, v: Vec<VerifiedPurchase>) -> Result<Answers, WriterGone> {
        if v.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Purchases(v, reply))
            .await
            .map_err(|_| WriterGone)?;
        rx.await.map_err(|_| WriterGone)
    }

    /// Records an abort for `epoid` if it still has no outcome; returns its receipt.
    pub async fn abort(&self, epoid: EpoId) -> Result<Result<Signed<Receipt>, String>, WriterGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Abort(epoid, reply))
            .await
            .map_err(|_| WriterGone)?;
        rx.await.map_err(|_| WriterGone)
    }

    /// Runs `f` on the store, between batches.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> T + Send + 'static,
    ) -> Result<T, WriterGone> {
        let (reply, rx) = oneshot::channel();
        let job: StoreJob = Box::new(move |s| {
            let _ = reply.send(f(s));
        });
        self.tx.send(Job::Run(job)).await.map_err(|_| WriterGone)?;
        rx.await.map_err(|_| WriterGone)
    }
}

type Waiting = (Vec<VerifiedPurchase>, oneshot::Sender<Answers>);

/// Decides and commits one batch with [`commit::commit_purchases`]; answers every waiter
/// once the transaction is durable. Returns whether it committed.
fn commit_batch(
    store: &mut dyn Store,
    keys: &BillingKeys,
    batch: Vec<Waiting>,
    stats: &WriterStats,
) -> bool {
    let now = netbill_http::now_ms();
    netbill_http::crash_point("server.before_commit");
    let reveal_early = netbill_http::bug("server.reveal_before_commit");
    let faults = commit::Faults {
        fresh_receipt_on_retry: netbill_http::bug("server.fresh_receipt_on_retry"),
    };
    let (chunks, mut replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|(v, r)| (v, Some(r))).unzip();
    let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
    let purchases: Vec<&VerifiedPurchase> = chunks.iter().flatten().collect();
    let n = commit::Billing {
        crypto: &RealCrypto,
        signer: &keys.signer,
        seal: &keys.seal,
    };
    // Each request's answers, taken in order from all of the batch's.
    let per_request = |answers: &mut dyn Iterator<Item = PurchaseAnswer>| -> Vec<Vec<_>> {
        sizes.iter().map(|k| answers.take(*k).collect()).collect()
    };
    let result = commit::commit_purchases(
        store,
        &n,
        &purchases,
        now,
        &mut random_bytes,
        faults,
        &mut |answers| {
            if reveal_early {
                // Test-only bug: the receipts leave before the transaction is durable.
                let mut all = answers.iter().cloned();
                for (reply, answers) in replies.iter_mut().zip(per_request(&mut all)) {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Ok(answers));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            netbill_http::crash_point("server.mid_batch");
            Ok(())
        },
    );
    match result {
        Ok(done) => {
            stats
                .receipt_signatures
                .fetch_add(done.signatures, std::sync::atomic::Ordering::Relaxed);
            netbill_http::crash_point("server.after_commit_before_reply");
            tracing::debug!(purchases = purchases.len(), "batch committed");
            let mut all = done.answers.into_iter();
            for (reply, answers) in replies.into_iter().zip(per_request(&mut all)) {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(answers));
                }
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, purchases = purchases.len(), "batch failed; nothing committed");
            for reply in replies.into_iter().flatten() {
                let _ = reply.send(Err(e.to_string()));
            }
            false
        }
    }
}

fn abort(
    store: &mut dyn Store,
    signer: &Ed25519Signer,
    epoid: &EpoId,
    stats: &WriterStats,
) -> Result<Signed<Receipt>, String> {
    let (receipt, signed) =
        commit::abort(store, signer, epoid, netbill_http::now_ms()).map_err(|e| e.to_string())?;
    if signed {
        stats
            .receipt_signatures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(receipt)
}

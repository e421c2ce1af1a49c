//! The one thread that writes the ledger.
//!
//! Purchases waiting in the queue are committed together, many per durable write (group
//! commit); each answer is sent only after the transaction holding it is durable. Other
//! store work (admin operations, queries) runs on the same thread between batches, so a
//! server has exactly one writer. Several servers may share one PostgreSQL ledger: the store
//! then locks the rows a batch touches and runs the batch again on contention.

use crate::keys::BillingKeys;
use netbill_crypto::{Ed25519Signer, RealCrypto, random_bytes};
use netbill_ledger::{Store, StoreError};
use netbill_proto::billing::{self, BatchDecision, Decision, VerifiedPurchase};
use netbill_proto::messages::{Receipt, ResultCode};
use netbill_proto::{EpoId, Signed};
use tokio::sync::{mpsc, oneshot};

/// What became of one endorsement.
#[derive(Debug)]
pub enum PurchaseAnswer {
    /// The receipt (new, or stored earlier for this same endorsement).
    Receipt(Box<Signed<Receipt>>),
    /// The EPOID has an outcome for a different endorsement.
    Conflict,
}

type StoreJob = Box<dyn FnOnce(&mut dyn Store) + Send>;

enum Job {
    Purchase(
        Box<VerifiedPurchase>,
        oneshot::Sender<Result<PurchaseAnswer, String>>,
    ),
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
    /// Starts the writer thread over `store`. At most `queue_max` jobs wait; at most
    /// `batch_max` purchases share one transaction.
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
                        Job::Purchase(v, reply) => {
                            let mut batch = vec![(v, reply)];
                            while batch.len() < batch_max {
                                match rx.try_recv() {
                                    Ok(Job::Purchase(v, r)) => batch.push((v, r)),
                                    Ok(other) => {
                                        pending = Some(other);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            let n = batch.len() as u64;
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

    /// Decides and commits one verified purchase; answers once it is durable.
    pub async fn purchase(
        &self,
        v: VerifiedPurchase,
    ) -> Result<Result<PurchaseAnswer, String>, WriterGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Purchase(Box::new(v), reply))
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

/// What the writer does for one purchase of a batch; a `usize` indexes its new receipts.
enum Plan {
    /// Record the outcome with this new receipt, then answer with it.
    Record(usize),
    /// Answer with this new receipt, recorded for an earlier purchase of the batch (or,
    /// with the fresh-receipt test bug, not at all).
    Reveal(usize),
    /// Answer with the receipt stored earlier.
    Stored(Box<Signed<Receipt>>),
    Conflict,
}

type Waiting = (
    Box<VerifiedPurchase>,
    oneshot::Sender<Result<PurchaseAnswer, String>>,
);

/// Decides and commits one batch; answers every waiter. Returns whether it committed.
fn commit_batch(
    store: &mut dyn Store,
    keys: &BillingKeys,
    batch: Vec<Waiting>,
    stats: &WriterStats,
) -> bool {
    let now = netbill_http::now_ms();
    let mut answers: Vec<PurchaseAnswer> = Vec::with_capacity(batch.len());
    netbill_http::crash_point("server.before_commit");
    let reveal_early = netbill_http::bug("server.reveal_before_commit");
    let (batch, mut replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|(v, r)| (v, Some(r))).unzip();
    // Every account the batch may touch, so that a shared store can lock them in one order.
    let accounts: Vec<_> = batch
        .iter()
        .flat_map(|v| [v.secret.account.clone(), v.epo().merchant.clone()])
        .collect();
    let epoids: Vec<_> = batch.iter().map(|v| v.epo().epoid.clone()).collect();
    let result = store.batch(&mut |tx| {
        answers.clear();
        tx.lock_accounts(&accounts)?;
        tx.prefetch_outcomes(&epoids)?;
        let purchases: Vec<&VerifiedPurchase> = batch.iter().map(|v| &**v).collect();
        let decisions = billing::decide_batch(&purchases, &*tx, now);
        // First every new receipt's body, then one signature over them all, then the
        // writes: N signs once per durable write, and what is stored is what is revealed.
        let mut bodies = Vec::new();
        let mut plans: Vec<Plan> = Vec::with_capacity(batch.len());
        for (v, d) in batch.iter().zip(decisions) {
            let mut fresh = |body: Receipt| {
                bodies.push(body);
                bodies.len() - 1
            };
            let plan = match d {
                BatchDecision::Decided(Decision::Settled(r))
                    if netbill_http::bug("server.fresh_receipt_on_retry") =>
                {
                    let code = r.body_unverified().result;
                    Plan::Reveal(fresh(receipt_body(keys, v, code, 0, false, now)))
                }
                BatchDecision::Decided(Decision::Settled(r)) => Plan::Stored(r),
                BatchDecision::Decided(Decision::Conflict) => Plan::Conflict,
                BatchDecision::Decided(Decision::Commit {
                    customer_balance_minor,
                    low_balance,
                    ..
                }) => Plan::Record(fresh(receipt_body(
                    keys,
                    v,
                    ResultCode::Committed,
                    customer_balance_minor,
                    low_balance,
                    now,
                ))),
                BatchDecision::Decided(Decision::Fail {
                    code,
                    customer_balance_minor,
                    low_balance,
                }) => Plan::Record(fresh(receipt_body(
                    keys,
                    v,
                    code,
                    customer_balance_minor,
                    low_balance,
                    now,
                ))),
                // The same endorsement as an earlier purchase of the batch, which records
                // the outcome: the same receipt.
                BatchDecision::SameAs(first) => match plans.get(first) {
                    Some(Plan::Record(k)) => Plan::Reveal(*k),
                    _ => Plan::Conflict,
                },
            };
            plans.push(plan);
        }
        if !bodies.is_empty() {
            stats
                .receipt_signatures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let receipts = Signed::sign_batch(bodies, &RealCrypto, &keys.signer);
        for (v, plan) in batch.iter().zip(plans) {
            answers.push(match plan {
                Plan::Record(k) => {
                    tx.record_purchase(v, &receipts[k], now)?;
                    PurchaseAnswer::Receipt(Box::new(receipts[k].clone()))
                }
                Plan::Reveal(k) => PurchaseAnswer::Receipt(Box::new(receipts[k].clone())),
                Plan::Stored(r) => PurchaseAnswer::Receipt(r),
                Plan::Conflict => PurchaseAnswer::Conflict,
            });
        }
        if reveal_early {
            // Test-only bug: the receipts leave before the transaction is durable.
            for (reply, answer) in replies.iter_mut().zip(answers.drain(..)) {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(Ok(answer));
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        netbill_http::crash_point("server.mid_batch");
        Ok(())
    });
    match result {
        Ok(()) => {
            netbill_http::crash_point("server.after_commit_before_reply");
            tracing::debug!(purchases = batch.len(), "batch committed");
            for (reply, answer) in replies.into_iter().zip(answers) {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(answer));
                }
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, purchases = batch.len(), "batch failed; nothing committed");
            for reply in replies.into_iter().flatten() {
                let _ = reply.send(Err(e.to_string()));
            }
            false
        }
    }
}

fn receipt_body(
    keys: &BillingKeys,
    v: &VerifiedPurchase,
    code: ResultCode,
    balance: i64,
    low: bool,
    now: u64,
) -> Receipt {
    billing::receipt_body(
        &RealCrypto,
        &keys.seal,
        v,
        code,
        balance,
        low,
        now,
        random_bytes(),
    )
}

fn abort(
    store: &mut dyn Store,
    signer: &Ed25519Signer,
    epoid: &EpoId,
    stats: &WriterStats,
) -> Result<Signed<Receipt>, String> {
    let now = netbill_http::now_ms();
    let mut out = None;
    store
        .batch(&mut |tx| {
            out = Some(match tx.outcome(epoid) {
                Some(done) => done.receipt,
                None => {
                    let r = billing::make_abort_receipt(signer, epoid, now);
                    stats
                        .receipt_signatures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tx.record_abort(epoid, &r)?;
                    r
                }
            });
            Ok(())
        })
        .map_err(|e: StoreError| e.to_string())?;
    out.ok_or_else(|| "abort produced no receipt".to_string())
}

//! N's commit of a batch of verified endorsements, and its abort of an EPOID: the one
//! sequence the billing server's writer thread runs, and the model checker's N runs too.
//!
//! Inside one transaction: decide every purchase against the ledger and the batch's earlier
//! purchases ([`billing::decide_batch`]); make every new receipt's body; sign them all with
//! one signature over their Merkle root ([`Signed::sign_batch`]); record the outcomes; and only
//! after the transaction is durable hand back the answers. What is stored is what is
//! revealed, and no answer leaves before it is durable.

use netbill_proto::billing::{self, BatchDecision, Decision, VerifiedPurchase};
use netbill_proto::crypto::{Crypto, SealSecret, Signer};
use netbill_proto::messages::{Receipt, ResultCode};
use netbill_proto::{EpoId, Signed};

use crate::{Store, StoreError};

/// What became of one endorsement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurchaseAnswer {
    /// The receipt (new, or stored earlier for this same endorsement).
    Receipt(Box<Signed<Receipt>>),
    /// The EPOID has an outcome for a different endorsement.
    Conflict,
}

/// N's keys and cryptography, as a commit needs them.
pub struct Billing<'a> {
    pub crypto: &'a dyn Crypto,
    /// Signs receipts.
    pub signer: &'a dyn Signer,
    /// Seals each receipt's customer part (the pair key with the customer).
    pub seal: &'a SealSecret,
}

/// Test-only misbehaviour of N (the `server.*` bug switches of docs/reliability.md); all
/// off in production.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// A retried endorsement gets a freshly made receipt instead of the stored one.
    pub fresh_receipt_on_retry: bool,
}

/// A committed batch: one answer per purchase, in order, and how many signatures N made.
#[derive(Debug)]
pub struct Committed {
    pub answers: Vec<PurchaseAnswer>,
    /// Ed25519 signatures made: one if the batch made new receipts, else none (a batch run
    /// again after contention signs again).
    pub signatures: u64,
}

/// What the commit does for one purchase of a batch; a `usize` indexes its new receipts.
enum Plan {
    /// Record the outcome with this new receipt, then answer with it.
    Record(usize),
    /// Answer with this new receipt, recorded for an earlier purchase of the batch (or, with
    /// the fresh-receipt fault, not at all).
    Reveal(usize),
    /// Answer with the receipt stored earlier.
    Stored(Box<Signed<Receipt>>),
    Conflict,
}

/// Decides and commits `batch` in one durable transaction of `store`. `entropy` seeds each
/// receipt's seal to its customer. `inside` runs inside the transaction once the answers are
/// known, before it commits (where the server's crash points and its reveal-early test bug
/// sit); it may fail the transaction.
pub fn commit_purchases(
    store: &mut dyn Store,
    n: &Billing<'_>,
    batch: &[&VerifiedPurchase],
    now_ms: u64,
    entropy: &mut dyn FnMut() -> [u8; 32],
    faults: Faults,
    inside: &mut dyn FnMut(&[PurchaseAnswer]) -> Result<(), StoreError>,
) -> Result<Committed, StoreError> {
    // Every account the batch may touch, so that a shared store can lock them in one order.
    let accounts: Vec<_> = batch
        .iter()
        .flat_map(|v| [v.secret.account.clone(), v.epo().merchant.clone()])
        .collect();
    let epoids: Vec<_> = batch.iter().map(|v| v.epo().epoid.clone()).collect();
    let mut answers: Vec<PurchaseAnswer> = Vec::with_capacity(batch.len());
    let mut signatures = 0;
    store.batch(&mut |tx| {
        answers.clear();
        tx.lock_accounts(&accounts)?;
        tx.prefetch_outcomes(&epoids)?;
        let decisions = billing::decide_batch(batch, &*tx, now_ms);
        let mut bodies = Vec::new();
        let mut plans: Vec<Plan> = Vec::with_capacity(batch.len());
        for (v, d) in batch.iter().zip(decisions) {
            let mut fresh = |code: ResultCode, balance: i64, low: bool| {
                bodies.push(billing::receipt_body(
                    n.crypto,
                    n.seal,
                    v,
                    code,
                    balance,
                    low,
                    now_ms,
                    entropy(),
                ));
                bodies.len() - 1
            };
            let plan = match d {
                BatchDecision::Decided(Decision::Settled(r)) if faults.fresh_receipt_on_retry => {
                    Plan::Reveal(fresh(r.body_unverified().result, 0, false))
                }
                BatchDecision::Decided(Decision::Settled(r)) => Plan::Stored(r),
                BatchDecision::Decided(Decision::Conflict) => Plan::Conflict,
                BatchDecision::Decided(Decision::Commit {
                    customer_balance_minor,
                    low_balance,
                    ..
                }) => Plan::Record(fresh(
                    ResultCode::Committed,
                    customer_balance_minor,
                    low_balance,
                )),
                BatchDecision::Decided(Decision::Fail {
                    code,
                    customer_balance_minor,
                    low_balance,
                }) => Plan::Record(fresh(code, customer_balance_minor, low_balance)),
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
            signatures += 1;
        }
        // One signature over every new receipt of the batch, then the writes.
        let receipts = Signed::sign_batch(bodies, n.crypto, n.signer);
        for (v, plan) in batch.iter().zip(plans) {
            answers.push(match plan {
                Plan::Record(k) => {
                    tx.record_purchase(v, &receipts[k], now_ms)?;
                    PurchaseAnswer::Receipt(Box::new(receipts[k].clone()))
                }
                Plan::Reveal(k) => PurchaseAnswer::Receipt(Box::new(receipts[k].clone())),
                Plan::Stored(r) => PurchaseAnswer::Receipt(r),
                Plan::Conflict => PurchaseAnswer::Conflict,
            });
        }
        inside(&answers)
    })?;
    Ok(Committed {
        answers,
        signatures,
    })
}

/// Records an abort for `epoid` if it still has no outcome (the caller checked that no EPO
/// for it can still commit, [`billing::may_abort`]); returns its receipt (the stored outcome
/// if it has one) and whether N signed a new one.
pub fn abort(
    store: &mut dyn Store,
    signer: &dyn Signer,
    epoid: &EpoId,
    now_ms: u64,
) -> Result<(Signed<Receipt>, bool), StoreError> {
    let mut out = None;
    store.batch(&mut |tx| {
        out = Some(match tx.outcome(epoid) {
            Some(done) => (done.receipt, false),
            None => {
                let r = billing::make_abort_receipt(signer, epoid, now_ms);
                tx.record_abort(epoid, &r)?;
                (r, true)
            }
        });
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Corrupt("the abort transaction made no receipt".into()))
}

//! Prometheus metrics (`GET /metrics`, text exposition format): counters of the work done
//! and the ledger's health. No account data, keys or amounts per account.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use netbill_proto::messages::ResultCode;

use crate::api::AppState;

const RESULTS: [(ResultCode, &str); 8] = [
    (ResultCode::Committed, "committed"),
    (ResultCode::InsufficientFunds, "insufficient_funds"),
    (ResultCode::Expired, "expired"),
    (ResultCode::Aborted, "aborted"),
    (ResultCode::KeyRevoked, "key_revoked"),
    (ResultCode::AccountFrozen, "account_frozen"),
    (ResultCode::UnknownAccount, "unknown_account"),
    (ResultCode::Refused, "refused"),
];

/// Counters the handlers bump.
#[derive(Debug, Default)]
pub struct Metrics {
    receipts: [AtomicU64; 8],
    pub refunds: AtomicU64,
    pub refunds_refused: AtomicU64,
    pub checkpoints: AtomicU64,
    pub adjustments: AtomicU64,
}

impl Metrics {
    /// Counts a receipt handed out for an endorsement (new or repeated).
    pub fn receipt(&self, result: ResultCode) {
        if let Some(i) = RESULTS.iter().position(|(r, _)| *r == result) {
            self.receipts[i].fetch_add(1, Relaxed);
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// The exposition text.
pub fn render(s: &AppState) -> String {
    let m = &s.metrics;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP netbill_receipts_total Receipts answered to endorsements, by result (a retried endorsement counts again).\n# TYPE netbill_receipts_total counter"
    );
    for (i, (_, name)) in RESULTS.iter().enumerate() {
        let _ = writeln!(
            out,
            "netbill_receipts_total{{result=\"{name}\"}} {}",
            m.receipts[i].load(Relaxed)
        );
    }
    let w = s.writer.stats();
    counter(
        &mut out,
        "netbill_purchase_batches_total",
        "Purchase transactions committed (durable writes).",
        w.batches.load(Relaxed),
    );
    counter(
        &mut out,
        "netbill_purchases_decided_total",
        "Purchases decided in those transactions.",
        w.purchases.load(Relaxed),
    );
    counter(
        &mut out,
        "netbill_refunds_total",
        "Refund requests answered with a receipt (a replayed refund counts again).",
        m.refunds.load(Relaxed),
    );
    counter(
        &mut out,
        "netbill_refunds_refused_total",
        "Refund requests refused.",
        m.refunds_refused.load(Relaxed),
    );
    counter(
        &mut out,
        "netbill_checkpoints_total",
        "Journal checkpoints signed by this server.",
        m.checkpoints.load(Relaxed),
    );
    counter(
        &mut out,
        "netbill_adjustment_requests_total",
        "Adjustment requests applied (audit unwinds).",
        m.adjustments.load(Relaxed),
    );
    gauge(
        &mut out,
        "netbill_ledger_not_conserving",
        "1 while the ledger does not conserve money (repair mode).",
        u64::from(s.repair.load(std::sync::atomic::Ordering::Acquire)),
    );
    gauge(
        &mut out,
        "netbill_journal_tampered",
        "1 while the journal was found changed behind N's back and no audit was acknowledged.",
        u64::from(s.tampered.load(std::sync::atomic::Ordering::Acquire)),
    );
    out
}

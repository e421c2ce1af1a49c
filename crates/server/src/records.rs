//! Routes beside the purchase itself: refunds, dispute evidence, the journal for auditors,
//! signed checkpoints and the adjustments that unwind a corrupted ledger.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::{get, post};
use netbill_crypto::RealCrypto;
use netbill_http::{ApiJson, Problem, now_ms};
use netbill_ledger::{
    AccountRecord, Adjustment, JournalEntry, PurchaseRecord, RefundFilter, RefundRecord,
    StoreError, Totals,
};
use netbill_proto::billing::{self, RefundError};
use netbill_proto::crypto::GoodsKey;
use netbill_proto::messages::{
    BillingEvidence, Checkpoint, Endorsement, EvidenceGrant, RefundReceipt, RefundRequest,
    ResultCode,
};
use netbill_proto::{EpoId, Signed};
use serde::{Deserialize, Serialize};

use crate::api::{AppState, Shared, admin, authenticate, gone, store_problem};

/// Most items one page of the journal (or of any audit listing) returns.
pub const PAGE_MAX: usize = 1000;

/// The routes of this module.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/refunds", post(refund))
        .route("/v1/evidence/{epoid}", get(evidence))
        .route("/v1/journal", get(journal))
        .route("/v1/journal/checkpoints", get(checkpoints))
        .route("/v1/admin/audit/accounts", get(audit_accounts))
        .route("/v1/admin/audit/purchases", get(audit_purchases))
        .route("/v1/admin/audit/refunds", get(audit_refunds))
        .route("/v1/admin/audit/totals", get(audit_totals))
        .route("/v1/admin/checkpoint", post(make_checkpoint))
        .route("/v1/admin/adjustments", post(adjust))
}

/// The problem for a refused refund.
pub(crate) fn refund_problem(e: &RefundError) -> Problem {
    let detail = e.to_string();
    match e {
        RefundError::BadSignature(_) | RefundError::WrongMerchant { .. } => {
            Problem::new(axum::http::StatusCode::FORBIDDEN, e.code(), detail)
        }
        RefundError::NoSuchPurchase(_) => Problem::not_found(e.code(), detail),
        RefundError::BadRefundId | RefundError::ZeroAmount => {
            Problem::unprocessable(e.code(), detail)
        }
        RefundError::NotCommitted(..)
        | RefundError::OverLimit { .. }
        | RefundError::IdConflict(_)
        | RefundError::MerchantFunds { .. } => Problem::conflict(e.code(), detail),
    }
}

/// Refuses money-moving work while the ledger does not conserve, or its journal was found
/// changed behind N's back and no operator has acknowledged an audit yet.
pub(crate) fn refuse_under_repair(s: &AppState) -> Result<(), Problem> {
    let why = if s.repair.load(Ordering::Acquire) {
        "the ledger does not conserve money: no money moves until an operator runs `netbill audit --unwind` (see docs/audit.md)"
    } else if s.tampered.load(Ordering::Acquire) {
        "the journal was changed behind the billing server's back: no money moves until an operator audits it and runs `netbill admin checkpoint --acknowledge-audit` (see docs/audit.md)"
    } else {
        return Ok(());
    };
    Err(Problem::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "ledger-under-repair",
        why,
    ))
}

/// `POST /v1/refunds`: a merchant-signed refund of (part of) a committed purchase. The
/// same request sent again gets the same receipt; money moves once.
async fn refund(
    State(s): State<Shared>,
    ApiJson(request): ApiJson<Signed<RefundRequest>>,
) -> Result<ApiJson<Signed<RefundReceipt>>, Problem> {
    refuse_under_repair(&s)?;
    let req = request.body_unverified().clone();
    billing::check_refund_request(&req).map_err(|e| refund_problem(&e))?;
    // Only the merchant the purchase paid may refund it, with its registered key.
    let merchant = req.merchant.clone();
    let key = s
        .writer
        .run(move |st| st.account(&merchant))
        .await
        .map_err(gone)?
        .map_err(store_problem)?
        .filter(|a| !a.key_revoked)
        .map(|a| a.key);
    let verified = key.is_some_and(|k| request.verify(&RealCrypto, &k).is_ok());
    if !verified {
        s.metrics.refunds_refused.fetch_add(1, Ordering::Relaxed);
        return Err(refund_problem(&RefundError::BadSignature(req.merchant)));
    }
    let digest = request.digest(&RealCrypto);
    let state = s.clone();
    let receipt = s
        .writer
        .run(move |st| {
            st.refund(
                &request,
                digest,
                &mut |total, price| {
                    billing::make_refund_receipt(
                        &state.keys.signer,
                        &req,
                        digest,
                        total,
                        price,
                        now_ms(),
                    )
                },
                now_ms(),
            )
        })
        .await
        .map_err(gone)?
        .map_err(|e| {
            s.metrics.refunds_refused.fetch_add(1, Ordering::Relaxed);
            match e {
                StoreError::Refund(r) => refund_problem(&r),
                other => store_problem(other),
            }
        })?;
    s.metrics.refunds.fetch_add(1, Ordering::Relaxed);
    Ok(ApiJson(receipt))
}

/// `GET /v1/evidence/{epoid}`: the signed records of a purchase and its goods key, to its
/// customer or merchant only (a signed request). They may pass them on to an arbitrator.
async fn evidence(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<ApiJson<BillingEvidence>, Problem> {
    let epoid: EpoId = raw
        .parse()
        .map_err(|e| Problem::bad_request("bad-epoid", format!("bad EPOID {raw:?}: {e}")))?;
    let who = match headers.get(netbill_http::GRANT_HEADER) {
        None => authenticate(&s, &method, &uri, &headers, b"").await?,
        Some(grant) => authenticate_grant(&s, grant, &epoid, &method, &uri, &headers).await?,
    };
    let q = epoid.clone();
    let (outcome, endorsement, refunds) = s
        .writer
        .run(move |st| {
            Ok::<_, StoreError>((
                st.outcome(&q)?,
                st.endorsement(&q)?,
                st.refunds(RefundFilter::Purchase(&q), PAGE_MAX)?,
            ))
        })
        .await
        .map_err(gone)?
        .map_err(store_problem)?;
    let not_found = || {
        Problem::not_found(
            "no-such-purchase",
            format!("no purchase {epoid} that {who} took part in"),
        )
    };
    let outcome = outcome.ok_or_else(not_found)?;
    let party = outcome.customer.as_ref() == Some(&who) || epoid.merchant == who;
    if !party {
        return Err(not_found());
    }
    let committed = outcome.receipt.body_unverified().result == ResultCode::Committed;
    let goods_key = match (&endorsement, committed) {
        (Some(e), true) => Some(open_goods_key(&s, e)?),
        _ => None,
    };
    Ok(ApiJson(BillingEvidence {
        epoid,
        receipt: outcome.receipt,
        endorsement,
        goods_key,
        refunds: refunds.into_iter().map(|r| r.receipt).collect(),
    }))
}

/// An arbitrator's request under a party's grant: the grant must be signed by the grantor's
/// current key, name this EPOID and not have expired, and the request must be signed with
/// the arbitrator key it names. Returns the grantor (whose access the arbitrator borrows).
async fn authenticate_grant(
    s: &AppState,
    grant: &axum::http::HeaderValue,
    epoid: &EpoId,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<netbill_proto::AccountId, Problem> {
    let grant: Signed<EvidenceGrant> = grant
        .to_str()
        .ok()
        .and_then(netbill_http::decode_signed)
        .ok_or_else(|| {
            Problem::unauthorized(format!("malformed {} header", netbill_http::GRANT_HEADER))
        })?;
    let grantor = grant.body_unverified().grantor.clone();
    let key = crate::api::auth_key(s, &grantor).await?.ok_or_else(|| {
        Problem::unauthorized(format!("no account {grantor} with an unrevoked key"))
    })?;
    let g = grant
        .verify(&RealCrypto, &key)
        .map_err(|_| Problem::unauthorized(format!("the grant is not signed by {grantor}")))?;
    if g.epoid != *epoid {
        return Err(Problem::unauthorized("the grant is for another purchase"));
    }
    if g.expires_at_ms < now_ms() {
        return Err(Problem::unauthorized("the grant has expired"));
    }
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    netbill_http::check_auth(
        &RealCrypto,
        headers,
        method.as_str(),
        path,
        b"",
        now_ms(),
        |a| (*a == g.grantor).then_some(g.arbitrator_key),
    )
}

/// K, opened from a stored endorsement with N's seal secret.
fn open_goods_key(s: &AppState, e: &Signed<Endorsement>) -> Result<GoodsKey, Problem> {
    let body = e.body_unverified();
    let epoid = &body.epo.body_unverified().epoid;
    netbill_proto::sealing::open_goods_key(&RealCrypto, &s.keys.seal, body)
        .ok_or_else(|| Problem::internal(format!("the stored goods key of {epoid} does not open")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

impl Page {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(PAGE_MAX).clamp(1, PAGE_MAX)
    }
    fn after_seq(&self) -> Result<u64, Problem> {
        self.after.as_deref().map_or(Ok(0), |a| {
            a.parse().map_err(|_| {
                Problem::bad_request("bad-after", "`after` must be a journal sequence number")
            })
        })
    }
}

/// One page of the journal (`GET /v1/journal`).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct JournalPage {
    pub entries: Vec<JournalEntry>,
    /// Pass as `after` for the next page; `None` at the end.
    pub next: Option<u64>,
}

/// `GET /v1/journal?after=SEQ&limit=N`: journal entries oldest first, for auditors (admin
/// token).
async fn journal(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<Page>,
) -> Result<ApiJson<JournalPage>, Problem> {
    admin(&s, &headers)?;
    let (after, limit) = (p.after_seq()?, p.limit());
    let entries = s
        .writer
        .run(move |st| st.journal(after, limit))
        .await
        .map_err(gone)?
        .map_err(store_problem)?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(ApiJson(JournalPage { entries, next }))
}

/// `GET /v1/journal/checkpoints?after=SEQ`: N's signed checkpoints, oldest first.
async fn checkpoints(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<Page>,
) -> Result<ApiJson<Vec<Signed<Checkpoint>>>, Problem> {
    admin(&s, &headers)?;
    let (after, limit) = (p.after_seq()?, p.limit());
    Ok(ApiJson(
        s.writer
            .run(move |st| st.checkpoints(after, limit))
            .await
            .map_err(gone)?
            .map_err(store_problem)?,
    ))
}

/// An account as the auditor sees it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AuditAccount {
    pub id: netbill_proto::AccountId,
    pub public_key: netbill_proto::crypto::PublicKey,
    pub balance_minor: i64,
}

impl From<AccountRecord> for AuditAccount {
    fn from(a: AccountRecord) -> Self {
        AuditAccount {
            id: a.id,
            public_key: a.key,
            balance_minor: a.balance_minor,
        }
    }
}

async fn audit_accounts(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<Page>,
) -> Result<ApiJson<Vec<AuditAccount>>, Problem> {
    admin(&s, &headers)?;
    let limit = p.limit();
    Ok(ApiJson(
        s.writer
            .run(move |st| st.accounts(p.after.as_deref(), limit))
            .await
            .map_err(gone)?
            .map_err(store_problem)?
            .into_iter()
            .map(AuditAccount::from)
            .collect(),
    ))
}

async fn audit_purchases(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<Page>,
) -> Result<ApiJson<Vec<PurchaseRecord>>, Problem> {
    admin(&s, &headers)?;
    let limit = p.limit();
    Ok(ApiJson(
        s.writer
            .run(move |st| st.purchases(p.after.as_deref(), limit))
            .await
            .map_err(gone)?
            .map_err(store_problem)?,
    ))
}

async fn audit_refunds(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<Page>,
) -> Result<ApiJson<Vec<RefundRecord>>, Problem> {
    admin(&s, &headers)?;
    let limit = p.limit();
    Ok(ApiJson(
        s.writer
            .run(move |st| {
                st.refunds(
                    RefundFilter::All {
                        after: p.after.as_deref(),
                    },
                    limit,
                )
            })
            .await
            .map_err(gone)?
            .map_err(store_problem)?,
    ))
}

/// `GET /v1/admin/audit/totals`: the totals as stored, whether or not they conserve.
async fn audit_totals(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<ApiJson<Totals>, Problem> {
    admin(&s, &headers)?;
    Ok(ApiJson(
        s.writer
            .run(|st| st.totals())
            .await
            .map_err(gone)?
            .map_err(store_problem)?,
    ))
}

/// Answer of `POST /v1/admin/checkpoint`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CheckpointAnswer {
    /// The new checkpoint; `None` if the journal is empty or its head already has one.
    pub checkpoint: Option<Signed<Checkpoint>>,
}

/// Signs a checkpoint of the journal's head now (the server also does so periodically) —
/// but only after checking, off the writer thread, that the journal since the last
/// checkpoint still chains: N never signs over entries changed behind its back. If it does
/// not chain, N stops moving money (repair mode) until an operator who has audited the
/// ledger acknowledges it (`acknowledge`: sign the head as it is).
pub async fn checkpoint_now(
    s: &Shared,
    acknowledge: bool,
) -> Result<Option<Signed<Checkpoint>>, Problem> {
    let state = s.clone();
    let next = tokio::task::spawn_blocking(move || {
        let mut c = state.checkpointer.lock().unwrap_or_else(|p| p.into_inner());
        c.next(&state.public.sign_key, acknowledge)
    })
    .await
    .map_err(Problem::internal)?;
    let head = match next {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(None),
        Err(StoreError::ChainBroken(why)) => {
            if !s.tampered.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    "JOURNAL TAMPERED: {why}. Not signing checkpoints; serving in repair mode: run `netbill audit` (docs/audit.md)"
                );
            }
            return Err(Problem::conflict(
                "journal-tampered",
                format!(
                    "{why}: not signing; audit the ledger (`netbill audit`), unwind, then acknowledge with `netbill admin checkpoint --acknowledge-audit`"
                ),
            ));
        }
        Err(e) => return Err(store_problem(e)),
    };
    let signed = Signed::sign(head.checkpoint(now_ms()), &s.keys.signer);
    let c = signed.clone();
    let new = s
        .writer
        .run(move |st| st.add_checkpoint(&c))
        .await
        .map_err(gone)?
        .map_err(store_problem)?;
    s.checkpointer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .signed(head.seq);
    if new {
        s.metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
    }
    Ok(new.then_some(signed))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointQuery {
    #[serde(default)]
    acknowledge: bool,
}

/// `POST /v1/admin/checkpoint[?acknowledge=true]`.
async fn make_checkpoint(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<CheckpointQuery>,
) -> Result<ApiJson<CheckpointAnswer>, Problem> {
    admin(&s, &headers)?;
    let checkpoint = checkpoint_now(&s, q.acknowledge).await?;
    if q.acknowledge && s.tampered.swap(false, Ordering::AcqRel) {
        tracing::warn!(
            "the operator acknowledged an audit of the tampered journal: checkpoints resume from its head"
        );
    }
    Ok(ApiJson(CheckpointAnswer { checkpoint }))
}

/// Body of `POST /v1/admin/adjustments`.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    pub adjustments: Vec<Adjustment>,
}

/// `POST /v1/admin/adjustments`: applies the compensating entries `netbill audit --unwind`
/// computed, in one transaction that must leave the ledger conserving money. Lifts the
/// repair mode once conservation holds again.
async fn adjust(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<ApiJson<Totals>, Problem> {
    admin(&s, &headers)?;
    let req: AdjustRequest = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request("malformed-json", format!("malformed JSON body: {e}")))?;
    let totals = s
        .writer
        .run(move |st| {
            st.adjust(&req.adjustments, now_ms())?;
            st.check_conservation()
        })
        .await
        .map_err(gone)?
        .map_err(|e| match e {
            StoreError::BadAdjustment(_) | StoreError::NoSuchAccount(_) => {
                Problem::unprocessable("bad-adjustment", e.to_string())
            }
            other => store_problem(other),
        })?;
    s.metrics.adjustments.fetch_add(1, Ordering::Relaxed);
    if s.repair.swap(false, Ordering::AcqRel) {
        tracing::warn!("conservation restored by adjustments: the ledger is open again");
    }
    Ok(ApiJson(totals))
}

//! The billing server's HTTP API. Every error is an RFC 9457 problem document.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use netbill_crypto::RealCrypto;
use netbill_http::{ApiJson, Problem, check_auth, now_ms};
use netbill_ledger::{AccountChange, AccountRecord, NewAccount, StoreError, Transfer};
use netbill_proto::billing::{self, AccountKind, BillingPolicy, EndorsementError};
use netbill_proto::crypto::PublicKey;
use netbill_proto::messages::{Endorsement, StatusAnswer};
use netbill_proto::money::format_minor;
use netbill_proto::{AccountId, Amount, EpoId, Signed};
use serde::{Deserialize, Serialize};

use crate::keys::{BillingKeys, BillingPublic};
use crate::writer::{PurchaseAnswer, Writer};

/// What every handler shares.
pub struct AppState {
    pub keys: BillingKeys,
    pub public: BillingPublic,
    pub writer: Writer,
    /// Checks endorsements' signatures in batches across requests.
    pub verifier: crate::verify::Verifier,
    pub policy: BillingPolicy,
    pub admin_token: String,
    /// The ledger did not conserve money at start-up: no money moves until adjustments
    /// restore it (see `records::adjust`).
    pub repair: std::sync::atomic::AtomicBool,
    /// The journal since the last checkpoint does not chain, and no operator has
    /// acknowledged an audit yet: no money moves.
    pub tampered: std::sync::atomic::AtomicBool,
    /// Counters for `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Checks the journal's chain before N signs a checkpoint (see `records::checkpoint_now`).
    pub checkpointer: std::sync::Mutex<crate::checkpointer::Checkpointer>,
}

pub(crate) type Shared = Arc<AppState>;

/// All routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/keys", get(keys))
        .route("/v1/merchants/{id}", get(merchant_key))
        .route("/v1/endorsements", post(endorse))
        .route("/v1/endorsements/batch", post(endorse_batch))
        .route("/v1/status", post(status))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/accounts/{id}/statement", get(statement))
        .route("/v1/admin/accounts", post(admin_create))
        .route("/v1/admin/accounts/{id}", get(admin_account))
        .route("/v1/admin/accounts/{id}/deposit", post(admin_deposit))
        .route("/v1/admin/accounts/{id}/payout", post(admin_payout))
        .route("/v1/admin/accounts/{id}/freeze", post(admin_freeze))
        .route("/v1/admin/accounts/{id}/unfreeze", post(admin_unfreeze))
        .route("/v1/admin/accounts/{id}/revoke-key", post(admin_revoke))
        .route("/v1/admin/accounts/{id}/key", put(admin_set_key))
        .route("/v1/admin/conservation", get(admin_conservation))
        .route("/v1/admin/stats", get(admin_stats))
        .merge(crate::records::routes())
        .fallback(|| async {
            Problem::not_found("no-such-endpoint", "no such endpoint; see docs/protocol.md")
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            netbill_http::BODY_LEN_MAX,
        ))
        .with_state(state)
}

pub(crate) fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::AccountExists(_) => Problem::conflict("account-exists", e.to_string()),
        StoreError::NoSuchAccount(_) => Problem::not_found("no-such-account", e.to_string()),
        StoreError::WouldOverdraw { .. } => Problem::unprocessable("would-overdraw", e.to_string()),
        StoreError::IdempotencyConflict(_) => {
            Problem::unprocessable("idempotency-key-reused", e.to_string())
        }
        other => Problem::internal(other),
    }
}

pub(crate) fn gone(_: crate::writer::WriterGone) -> Problem {
    Problem::unavailable("the billing server is shutting down; retry shortly")
}

fn id_param(raw: &str) -> Result<AccountId, Problem> {
    AccountId::new(raw).map_err(|e| Problem::bad_request("bad-account-id", e.to_string()))
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&s),
    )
        .into_response()
}

async fn keys(State(s): State<Shared>) -> ApiJson<BillingPublic> {
    ApiJson(s.public)
}

/// A merchant's public signing key, as registered with N (customers check quotes with it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MerchantKey {
    pub id: AccountId,
    pub public_key: PublicKey,
}

/// `GET /v1/merchants/{id}`: the public directory of merchant keys.
async fn merchant_key(
    State(s): State<Shared>,
    Path(raw): Path<String>,
) -> Result<ApiJson<MerchantKey>, Problem> {
    let id = id_param(&raw)?;
    let a = load_account(&s, id.clone()).await?;
    if a.kind != AccountKind::Merchant || a.key_revoked || a.frozen {
        return Err(Problem::not_found(
            "no-such-merchant",
            format!("{id} is not an active merchant"),
        ));
    }
    Ok(ApiJson(MerchantKey {
        id,
        public_key: a.key,
    }))
}

/// Step 6 → 7: an endorsed EPO in, a signed receipt out (once durable).
async fn endorse(
    State(s): State<Shared>,
    ApiJson(endorsement): ApiJson<Signed<Endorsement>>,
) -> Result<ApiJson<StatusAnswer>, Problem> {
    let verified = s
        .verifier
        .verify(vec![endorsement])
        .await
        .and_then(|mut v| v.pop())
        .ok_or_else(|| {
            Problem::unavailable("the billing server is shutting down; retry shortly")
        })?;
    settle(&s, vec![verified])
        .await
        .pop()
        .unwrap_or_else(|| Err(Problem::internal("no answer for the endorsement")))
        .map(ApiJson)
}

/// Most endorsements one batch request may carry.
pub const ENDORSEMENT_BATCH_MAX: usize = 256;

/// Body of `POST /v1/endorsements/batch`.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct EndorsementBatch {
    pub endorsements: Vec<Signed<Endorsement>>,
}

/// One item of a batch answer: a receipt, or the problem with that endorsement.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "snake_case")]
pub enum BatchItem {
    Answer(Box<StatusAnswer>),
    Problem(Problem),
}

/// Steps 6 → 7 for many endorsements at once (a merchant settling in bulk): each is
/// verified and decided on its own; the answers come back in order.
async fn endorse_batch(
    State(s): State<Shared>,
    ApiJson(batch): ApiJson<EndorsementBatch>,
) -> Result<ApiJson<Vec<BatchItem>>, Problem> {
    if batch.endorsements.is_empty() || batch.endorsements.len() > ENDORSEMENT_BATCH_MAX {
        return Err(Problem::unprocessable(
            "bad-batch-size",
            format!("a batch holds 1 to {ENDORSEMENT_BATCH_MAX} endorsements"),
        ));
    }
    // Verify on every core: one chunk per core, each checked with one batch equation
    // (crate::verify).
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = batch.endorsements.len().div_ceil(cores);
    let mut rest = batch.endorsements;
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let tail = rest.split_off(chunk.min(rest.len()));
        chunks.push(s.verifier.verify(std::mem::replace(&mut rest, tail)));
    }
    let mut verified = Vec::new();
    for part in futures_util::future::join_all(chunks).await {
        verified.extend(part.ok_or_else(|| {
            Problem::unavailable("the billing server is shutting down; retry shortly")
        })?);
    }
    let answers = settle(&s, verified).await;
    Ok(ApiJson(
        answers
            .into_iter()
            .map(|a| a.map_or_else(BatchItem::Problem, |a| BatchItem::Answer(Box::new(a))))
            .collect(),
    ))
}

/// Hands one request's verified endorsements to the writer (one job for all of them) and
/// turns each decision into an answer, in order; an endorsement that failed verification
/// gets its problem and is not sent.
async fn settle(
    s: &AppState,
    verified: Vec<Result<billing::VerifiedPurchase, EndorsementError>>,
) -> Vec<Result<StatusAnswer, Problem>> {
    if let Err(p) = crate::records::refuse_under_repair(s) {
        return verified.iter().map(|_| Err(p.clone())).collect();
    }
    let mut out: Vec<Option<Result<StatusAnswer, Problem>>> = Vec::with_capacity(verified.len());
    let mut purchases = Vec::new();
    for v in verified {
        match v {
            Ok(v) => {
                out.push(None);
                purchases.push(v);
            }
            Err(e) => out.push(Some(Err(Problem::unprocessable(e.code(), e.to_string())))),
        }
    }
    let epoids: Vec<EpoId> = purchases.iter().map(|v| v.epo().epoid.clone()).collect();
    let answers: Vec<Result<PurchaseAnswer, Problem>> = match s.writer.purchases(purchases).await {
        Ok(Ok(answers)) => answers.into_iter().map(Ok).collect(),
        Ok(Err(e)) => {
            let p = Problem::internal(e);
            epoids.iter().map(|_| Err(p.clone())).collect()
        }
        Err(g) => {
            let p = gone(g);
            epoids.iter().map(|_| Err(p.clone())).collect()
        }
    };
    let mut answers = epoids.into_iter().zip(answers).map(|(epoid, a)| {
        a.map(|a| match a {
            PurchaseAnswer::Receipt(r) => {
                s.metrics.receipt(r.body_unverified().result);
                Ok(StatusAnswer {
                    epoid,
                    receipt: Some(*r),
                })
            }
            PurchaseAnswer::Conflict => Err(Problem::conflict(
                "epoid-conflict",
                format!("EPOID {epoid} already has an outcome for a different endorsement"),
            )),
        })
        .and_then(|a| a)
    });
    out.into_iter()
        .map(|o| {
            o.or_else(|| answers.next())
                .unwrap_or_else(|| Err(Problem::internal("the writer answered too few purchases")))
        })
        .collect()
}

/// The account's current key, if it may authenticate.
pub(crate) async fn auth_key(s: &AppState, id: &AccountId) -> Result<Option<PublicKey>, Problem> {
    let id = id.clone();
    let acct = s
        .writer
        .run(move |st| st.account(&id))
        .await
        .map_err(gone)?
        .map_err(store_problem)?;
    Ok(acct.filter(|a| !a.key_revoked).map(|a| a.key))
}

/// Authenticates a signed request: returns the account that signed it.
pub(crate) async fn authenticate(
    s: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<AccountId, Problem> {
    let claimed = headers
        .get(netbill_http::AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(netbill_http::decode_auth)
        .transpose()?
        .map(|a| a.body_unverified().account.clone());
    let key = match &claimed {
        Some(id) => auth_key(s, id).await?,
        None => None,
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    check_auth(
        &RealCrypto,
        headers,
        method.as_str(),
        path,
        body,
        now_ms(),
        |_| key,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    epoid: EpoId,
}

/// Status query (C→N or M→N): the receipt for an EPOID if the asker took part in it. An
/// EPOID with no outcome past its longest possible expiry is aborted for good.
async fn status(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<ApiJson<StatusAnswer>, Problem> {
    let who = authenticate(&s, &method, &uri, &headers, &body).await?;
    let q: StatusQuery = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request("malformed-json", format!("malformed JSON body: {e}")))?;
    let epoid = q.epoid.clone();
    let stored = s
        .writer
        .run(move |st| st.outcome(&epoid))
        .await
        .map_err(gone)?
        .map_err(store_problem)?;
    let receipt = match stored {
        Some(o) => {
            // An abort names no customer and carries no one's data: anyone may see it, as
            // anyone could have caused it by asking after the expiry.
            let party = match &o.customer {
                Some(c) => *c == who || q.epoid.merchant == who,
                None => true,
            };
            if !party {
                return Err(Problem::not_found(
                    "no-such-purchase",
                    format!("no purchase {} that {who} took part in", q.epoid),
                ));
            }
            Some(o.receipt)
        }
        None if billing::may_abort(&q.epoid, &s.policy, now_ms()) => Some(
            s.writer
                .abort(q.epoid.clone())
                .await
                .map_err(gone)?
                .map_err(Problem::internal)?,
        ),
        None => None,
    };
    Ok(ApiJson(StatusAnswer {
        epoid: q.epoid,
        receipt,
    }))
}

/// An account as its owner sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub id: AccountId,
    pub kind: AccountKind,
    pub balance: String,
    pub balance_minor: i64,
    pub credit_limit: String,
    pub low_water: String,
    pub low_balance: bool,
    pub frozen: bool,
    pub key_revoked: bool,
}

impl From<AccountRecord> for AccountInfo {
    fn from(a: AccountRecord) -> Self {
        AccountInfo {
            balance: format_minor(a.balance_minor),
            balance_minor: a.balance_minor,
            credit_limit: format_minor(a.credit_limit_minor),
            low_water: format_minor(a.low_water_minor),
            low_balance: a.balance_minor < a.low_water_minor,
            frozen: a.frozen,
            key_revoked: a.key_revoked,
            kind: a.kind,
            id: a.id,
        }
    }
}

async fn own_account(
    s: &AppState,
    raw: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<AccountId, Problem> {
    let id = id_param(raw)?;
    let who = authenticate(s, method, uri, headers, b"").await?;
    if who != id {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{who} may not read account {id}"),
        ));
    }
    Ok(id)
}

async fn load_account(s: &AppState, id: AccountId) -> Result<AccountRecord, Problem> {
    let missing = id.clone();
    s.writer
        .run(move |st| st.account(&id))
        .await
        .map_err(gone)?
        .map_err(store_problem)?
        .ok_or_else(|| store_problem(StoreError::NoSuchAccount(missing)))
}

async fn account(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<ApiJson<AccountInfo>, Problem> {
    let id = own_account(&s, &raw, &method, &uri, &headers).await?;
    Ok(ApiJson(load_account(&s, id).await?.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Period {
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    limit: Option<usize>,
}

/// The most statement lines one request returns.
pub const STATEMENT_LINES_MAX: usize = 10_000;

/// One line of a statement.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    pub epoid: EpoId,
    pub decided_ms: u64,
    pub result: netbill_proto::messages::ResultCode,
    /// The merchant (for a customer's statement) or the customer (for a merchant's).
    pub counterparty: String,
    pub description: String,
    pub amount: String,
}

/// Purchases per counterparty: NetBill's aggregation of micro-purchases.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StatementGroup {
    pub counterparty: String,
    pub purchases: u64,
    pub total: String,
}

/// A refund on a statement.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StatementRefund {
    pub refund_id: String,
    pub epoid: EpoId,
    pub decided_ms: u64,
    /// The merchant (for a customer's statement) or the customer (for a merchant's).
    pub counterparty: String,
    pub amount: String,
}

/// An account's statement for a period.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub account: AccountInfo,
    pub from_ms: u64,
    pub to_ms: u64,
    pub lines: Vec<StatementLine>,
    pub by_counterparty: Vec<StatementGroup>,
    /// Sum of committed purchases in the period (spent by a customer, earned by a merchant).
    pub total: String,
    /// Refunds in the period (received by a customer, given by a merchant), newest first.
    #[serde(default)]
    pub refunds: Vec<StatementRefund>,
    /// Their sum.
    #[serde(default)]
    pub refunded: String,
}

async fn statement(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    Query(p): Query<Period>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<ApiJson<Statement>, Problem> {
    let id = own_account(&s, &raw, &method, &uri, &headers).await?;
    let from = p.from_ms.unwrap_or(0);
    let to = p.to_ms.unwrap_or(u64::MAX);
    let limit = p.limit.unwrap_or(1000).min(STATEMENT_LINES_MAX);
    let acct = load_account(&s, id.clone()).await?;
    let q = id.clone();
    let (history, refunds) = s
        .writer
        .run(move |st| {
            let h = st.history(&q, from, to, limit)?;
            let r = st.refunds(
                netbill_ledger::RefundFilter::Account {
                    id: &q,
                    from_ms: from,
                    to_ms: to,
                },
                limit,
            )?;
            Ok::<_, StoreError>((h, r))
        })
        .await
        .map_err(gone)?
        .map_err(store_problem)?;
    let refunded: i64 = refunds.iter().map(|r| r.amount.signed()).sum();
    let refunds = refunds
        .into_iter()
        .map(|r| StatementRefund {
            counterparty: if r.merchant == id {
                r.customer.to_string()
            } else {
                r.merchant.to_string()
            },
            refund_id: r.refund_id,
            epoid: r.epoid,
            decided_ms: r.decided_ms,
            amount: r.amount.to_string(),
        })
        .collect();
    let mut groups: std::collections::BTreeMap<String, (u64, i64)> = Default::default();
    let mut total = 0i64;
    let lines = history
        .into_iter()
        .map(|h| {
            let counterparty = if h.merchant == id {
                h.customer.as_ref().map_or("-".into(), |c| c.to_string())
            } else {
                h.merchant.to_string()
            };
            if h.result == netbill_proto::messages::ResultCode::Committed {
                let g = groups.entry(counterparty.clone()).or_default();
                g.0 += 1;
                g.1 += h.price.signed();
                total += h.price.signed();
            }
            StatementLine {
                epoid: h.epoid,
                decided_ms: h.decided_ms,
                result: h.result,
                counterparty,
                description: h.description,
                amount: h.price.to_string(),
            }
        })
        .collect();
    Ok(ApiJson(Statement {
        account: acct.into(),
        from_ms: from,
        to_ms: to,
        lines,
        by_counterparty: groups
            .into_iter()
            .map(|(counterparty, (n, t))| StatementGroup {
                counterparty,
                purchases: n,
                total: format_minor(t),
            })
            .collect(),
        total: format_minor(total),
        refunds,
        refunded: format_minor(refunded),
    }))
}

// ---------------------------------------------------------------------------------------
// Operator API, behind the admin token.

pub(crate) fn admin(s: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison: no early exit on the first differing byte.
    let want = s.admin_token.as_bytes();
    let ok = given.len() == want.len()
        && given
            .bytes()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok && !want.is_empty() {
        Ok(())
    } else {
        Err(Problem::unauthorized(
            "admin endpoints need `Authorization: Bearer <admin token>`",
        ))
    }
}

/// Body of `POST /v1/admin/accounts`.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub id: AccountId,
    pub kind: AccountKind,
    pub public_key: PublicKey,
    #[serde(default)]
    pub credit_limit: Option<Amount>,
    #[serde(default)]
    pub low_water: Option<Amount>,
}

async fn admin_create(
    State(s): State<Shared>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateAccount>,
) -> Result<Response, Problem> {
    admin(&s, &headers)?;
    let new = NewAccount {
        id: req.id.clone(),
        kind: req.kind,
        key: req.public_key,
        credit_limit_minor: req.credit_limit.unwrap_or_default().signed(),
        low_water_minor: req.low_water.unwrap_or_default().signed(),
    };
    s.writer
        .run(move |st| st.create_account(&new, now_ms()))
        .await
        .map_err(gone)?
        .map_err(store_problem)?;
    let info: AccountInfo = load_account(&s, req.id).await?.into();
    Ok((StatusCode::CREATED, ApiJson(info)).into_response())
}

async fn admin_account(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<AccountInfo>, Problem> {
    admin(&s, &headers)?;
    Ok(ApiJson(load_account(&s, id_param(&raw)?).await?.into()))
}

/// Body of the deposit and payout endpoints.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub amount: Amount,
}

/// Answer of the deposit and payout endpoints.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TransferAnswer {
    pub account: AccountId,
    pub balance: String,
    pub balance_minor: i64,
}

async fn transfer(
    s: &AppState,
    raw: &str,
    headers: &HeaderMap,
    kind: Transfer,
    amount: Amount,
) -> Result<ApiJson<TransferAnswer>, Problem> {
    admin(s, headers)?;
    crate::records::refuse_under_repair(s)?;
    let id = id_param(raw)?;
    if amount.is_zero() {
        return Err(Problem::unprocessable(
            "zero-amount",
            "the amount must be more than USD:0",
        ));
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 128)
                .ok_or_else(|| {
                    Problem::bad_request(
                        "bad-idempotency-key",
                        "Idempotency-Key must be 1–128 visible ASCII characters",
                    )
                })?;
            Some(k.to_string())
        }
    };
    let acct = id.clone();
    let balance = s
        .writer
        .run(move |st| st.transfer(&acct, kind, amount, key.as_deref(), now_ms()))
        .await
        .map_err(gone)?
        .map_err(store_problem)?;
    Ok(ApiJson(TransferAnswer {
        account: id,
        balance: format_minor(balance),
        balance_minor: balance,
    }))
}

async fn admin_deposit(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TransferRequest>,
) -> Result<ApiJson<TransferAnswer>, Problem> {
    transfer(&s, &raw, &headers, Transfer::Deposit, req.amount).await
}

async fn admin_payout(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TransferRequest>,
) -> Result<ApiJson<TransferAnswer>, Problem> {
    transfer(&s, &raw, &headers, Transfer::Payout, req.amount).await
}

async fn change(
    s: &AppState,
    raw: &str,
    headers: &HeaderMap,
    change: AccountChange,
) -> Result<ApiJson<AccountInfo>, Problem> {
    admin(s, headers)?;
    let id = id_param(raw)?;
    let acct = id.clone();
    s.writer
        .run(move |st| st.change_account(&acct, &change, now_ms()))
        .await
        .map_err(gone)?
        .map_err(store_problem)?;
    Ok(ApiJson(load_account(s, id).await?.into()))
}

async fn admin_freeze(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<AccountInfo>, Problem> {
    change(&s, &raw, &headers, AccountChange::Freeze).await
}

async fn admin_unfreeze(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<AccountInfo>, Problem> {
    change(&s, &raw, &headers, AccountChange::Unfreeze).await
}

async fn admin_revoke(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<ApiJson<AccountInfo>, Problem> {
    change(&s, &raw, &headers, AccountChange::RevokeKey).await
}

/// Body of `PUT /v1/admin/accounts/{id}/key`.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SetKey {
    pub public_key: PublicKey,
}

async fn admin_set_key(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SetKey>,
) -> Result<ApiJson<AccountInfo>, Problem> {
    change(&s, &raw, &headers, AccountChange::SetKey(req.public_key)).await
}

/// Counters of the ledger writer (`GET /v1/admin/stats`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterCounters {
    /// Purchase transactions committed: durable writes.
    pub batches: u64,
    /// Purchases decided in them.
    pub purchases: u64,
    /// Ed25519 signatures N made over purchase and abort receipts (one per batch, one per
    /// abort). Absent from servers older than batch signing.
    #[serde(default)]
    pub receipt_signatures: u64,
    /// Chunks of endorsements the verifier threads checked, each with one batch equation.
    /// Absent from older servers.
    #[serde(default)]
    pub verify_chunks: u64,
    /// Endorsements checked in them.
    #[serde(default)]
    pub verified_endorsements: u64,
}

async fn admin_stats(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<ApiJson<WriterCounters>, Problem> {
    admin(&s, &headers)?;
    use std::sync::atomic::Ordering::Relaxed;
    let st = s.writer.stats();
    Ok(ApiJson(WriterCounters {
        batches: st.batches.load(Relaxed),
        purchases: st.purchases.load(Relaxed),
        receipt_signatures: st.receipt_signatures.load(Relaxed),
        verify_chunks: s.verifier.stats().chunks.load(Relaxed),
        verified_endorsements: s.verifier.stats().endorsements.load(Relaxed),
    }))
}

async fn admin_conservation(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<ApiJson<netbill_ledger::Totals>, Problem> {
    admin(&s, &headers)?;
    let totals = s
        .writer
        .run(|st| st.check_conservation())
        .await
        .map_err(gone)?
        .map_err(store_problem)?;
    Ok(ApiJson(totals))
}

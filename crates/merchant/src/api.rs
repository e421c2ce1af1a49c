//! The merchant's HTTP API: the v2 purchase (two round trips: a purchase request answered
//! 402 with the offer and the ciphertext; the EPO answered with the receipt), price-only
//! quotes, v1 EPOs for purchases an older release stored, and the C→M status query.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use netbill_crypto::{DEFAULT_CHUNK_SIZE, EncryptingReader, RealCrypto, random_bytes};
use netbill_http::client::{CallError, Client};
use netbill_http::{ApiJson, Problem, now_ms};
use netbill_proto::crypto::{Digest, PublicKey};
use netbill_proto::merchant::{self, MerchantEffect, MerchantError, MerchantPurchase};
use netbill_proto::messages::{
    DeliveryNote, Endorsement, Epo, GoodsOffer, OFFER_HEADER, Payment, PriceRequest, Quote,
    Receipt, StatusAnswer,
};
use netbill_proto::{AccountId, Amount, EpoId, GroupName, ProductCode, Signed};
use netbill_server::BillingPublic;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Fault;
use crate::catalog::Catalog;
use crate::store::MerchantStore;

/// What every handler shares.
pub struct MerchantState {
    pub id: AccountId,
    pub signer: netbill_crypto::Ed25519Signer,
    /// The merchant's static sealing secret (v2 seals of K to N).
    pub seal: netbill_proto::crypto::SealSecret,
    pub billing_keys: BillingPublic,
    pub billing: Client,
    pub catalog: Catalog,
    pub store: MerchantStore,
    pub epo_expiry_ms: u64,
    pub quote_ttl_ms: u64,
    /// The next quote id: counted in memory (a quote is not worth a write), starting from
    /// the clock in microseconds so that ids keep increasing across restarts.
    pub quote_ids: AtomicU64,
    pub fault: Fault,
}

/// Where a starting merchant's quote ids begin.
pub fn first_quote_id() -> AtomicU64 {
    AtomicU64::new(now_ms().saturating_mul(1000))
}

type Shared = Arc<MerchantState>;

/// All routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/catalog", get(catalog))
        .route("/goods/{code}", get(priced_resource))
        .route("/v1/quotes", post(quote))
        .route("/v2/purchases", post(purchase_request))
        .route("/v2/pay", post(pay))
        .route("/v1/purchases/{id}/pay", post(pay_v1))
        .route("/v1/status/{epoid}", get(status))
        .fallback(|| async {
            Problem::not_found("no-such-endpoint", "no such endpoint; see docs/protocol.md")
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            netbill_http::BODY_LEN_MAX,
        ))
        .with_state(state)
}

fn merchant_problem(e: MerchantError) -> Problem {
    match e {
        MerchantError::AlreadyEndorsed => Problem::conflict(e.code(), e.to_string()),
        MerchantError::NotDelivered | MerchantError::NotEndorsed => {
            Problem::conflict(e.code(), e.to_string())
        }
        _ => Problem::unprocessable(e.code(), e.to_string()),
    }
}

fn internal(e: impl std::fmt::Display) -> Problem {
    Problem::internal(e)
}

/// A product as listed publicly.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub code: ProductCode,
    pub description: String,
    pub price: Amount,
    pub group_prices: Vec<(GroupName, Amount)>,
    pub size_bytes: u64,
}

fn listing(s: &MerchantState, code: &ProductCode) -> Option<Listing> {
    s.catalog.products.get(code).map(|p| Listing {
        code: p.offer.product.clone(),
        description: p.offer.description.clone(),
        price: p.offer.price,
        group_prices: p.offer.group_prices.clone(),
        size_bytes: p.offer.goods_len,
    })
}

/// `GET /v1/catalog`: every product for sale.
async fn catalog(State(s): State<Shared>) -> ApiJson<Vec<Listing>> {
    ApiJson(
        s.catalog
            .products
            .keys()
            .filter_map(|c| listing(&s, c))
            .collect(),
    )
}

fn product(s: &MerchantState, raw: &str) -> Result<ProductCode, Problem> {
    let code = ProductCode::new(raw)
        .map_err(|e| Problem::bad_request("bad-product-code", e.to_string()))?;
    if !s.catalog.products.contains_key(&code) {
        return Err(Problem::not_found(
            "unknown-product",
            format!("this merchant sells no product {code}"),
        ));
    }
    Ok(code)
}

fn make_quote(s: &MerchantState, req: &PriceRequest) -> Result<Signed<Quote>, Problem> {
    let p = s.catalog.products.get(&req.product).ok_or_else(|| {
        Problem::not_found(
            "unknown-product",
            format!("this merchant sells no product {}", req.product),
        )
    })?;
    let quote_id = s.quote_ids.fetch_add(1, Ordering::Relaxed);
    merchant::make_quote(
        &RealCrypto,
        &s.signer,
        &s.id,
        req,
        &p.offer,
        &|g| s.catalog.groups.get(g).copied(),
        quote_id,
        now_ms(),
        s.quote_ttl_ms,
    )
    .map_err(merchant_problem)
}

/// The 402 answer of a priced resource.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PaymentRequired {
    pub merchant: AccountId,
    pub product: Listing,
    /// A signed quote, when the request named the customer's key.
    pub quote: Option<Signed<Quote>>,
    /// Where to send a purchase request (v2: a price request with a bid).
    pub purchase_url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Who {
    customer_key: Option<PublicKey>,
    identity: Option<String>,
}

/// `GET /goods/{code}`: the priced resource. Answers 402 with the offer, and with a signed
/// quote when the query names `customer_key` (and optionally `identity`).
async fn priced_resource(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    Query(who): Query<Who>,
) -> Result<Response, Problem> {
    let code = product(&s, &raw)?;
    let quote = match who.customer_key {
        Some(customer_key) => Some(make_quote(
            &s,
            &PriceRequest {
                identity: who
                    .identity
                    .unwrap_or_else(|| customer_key.to_hex()[..16].to_string()),
                customer_key,
                product: code.clone(),
                prd_hex: String::new(),
                bid: None,
                credentials: vec![],
            },
        )?),
        None => None,
    };
    let body = PaymentRequired {
        merchant: s.id.clone(),
        product: listing(&s, &code).ok_or_else(|| internal("listed product vanished"))?,
        quote,
        purchase_url: "/v2/purchases".into(),
    };
    Ok((StatusCode::PAYMENT_REQUIRED, ApiJson(body)).into_response())
}

/// Steps 1–2: a price request (with credentials, bid, product request data) → a quote.
async fn quote(
    State(s): State<Shared>,
    ApiJson(req): ApiJson<PriceRequest>,
) -> Result<ApiJson<Signed<Quote>>, Problem> {
    Ok(ApiJson(make_quote(&s, &req)?))
}

/// Reads `inner` and hashes what passes through.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Goods up to this size are encrypted once into memory and sent from there; larger ones
/// are encrypted twice in constant memory (once for the checksum the offer names, once
/// while streaming).
pub const INLINE_GOODS_LEN_MAX: u64 = 1024 * 1024;

/// v2, steps 1 → 2 and 4 in one answer: a purchase request (a price request whose `bid` is
/// the most the customer accepts) is answered `402 Payment Required` with the signed
/// quote, the EPOID and the ciphertext's checksum in the `NetBill-Offer` header and the
/// ciphertext, encrypted under K derived for this purchase, as the body. Nothing is stored.
async fn purchase_request(
    State(s): State<Shared>,
    ApiJson(req): ApiJson<PriceRequest>,
) -> Result<Response, Problem> {
    if req.bid.is_none() {
        return Err(merchant_problem(MerchantError::BidRequired));
    }
    let quote = make_quote(&s, &req)?;
    let q = quote.body_unverified();
    let product = s.catalog.products.get(&q.product).ok_or_else(|| {
        Problem::not_found("unknown-product", format!("no product {}", q.product))
    })?;
    let path = product.path.clone();
    let goods_digest = q.goods_digest;
    let inline = q.goods_len <= INLINE_GOODS_LEN_MAX;
    let now = now_ms();
    let note = DeliveryNote {
        epoid: EpoId {
            merchant: s.id.clone(),
            delivered_at_ms: now,
            // Random: unique without a write, and not guessable from the ones before.
            serial: u64::from_le_bytes(random_bytes()) >> 1,
        },
        expires_at_ms: now.saturating_add(s.epo_expiry_ms),
    };
    let key = merchant::derive_goods_key(&RealCrypto, &s.seal, &quote, &note.epoid);
    let k = key.clone();
    let fault = s.fault;
    let (stats, plain_digest, ciphertext) =
        tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut src = Hashing {
                inner: goods_source(&path, fault)?,
                hash: Sha256::new(),
            };
            let mut buf = Vec::new();
            let stats = if inline {
                netbill_crypto::encrypt_stream(&k, DEFAULT_CHUNK_SIZE, &mut src, &mut buf)?
            } else {
                netbill_crypto::encrypt_stream(&k, DEFAULT_CHUNK_SIZE, &mut src, std::io::sink())?
            };
            Ok((
                stats,
                Digest(src.hash.finalize().into()),
                inline.then_some(buf),
            ))
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
    if plain_digest != goods_digest && !s.fault.garbage_goods() {
        return Err(Problem::conflict(
            "goods-changed",
            "the product changed since the catalog was loaded; ask again later",
        ));
    }
    let goods = GoodsOffer {
        purchase: hex::encode(random_bytes::<16>()),
        checksum: stats.checksum,
        ciphertext_len: stats.ciphertext_len,
    };
    let offer = merchant::make_offer(&RealCrypto, &s.seal, quote, goods, note);
    let header = B64.encode(serde_json::to_vec(&offer).map_err(internal)?);
    let body = match ciphertext {
        Some(bytes) => Body::from(bytes),
        None => stream_ciphertext(&s, &offer.quote, &key)?,
    };
    netbill_http::crash_point("merchant.before_send_offer");
    Ok((
        StatusCode::PAYMENT_REQUIRED,
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.netbill.goods".to_string(),
            ),
            (header::CONTENT_LENGTH, stats.ciphertext_len.to_string()),
            (header::HeaderName::from_static(OFFER_HEADER), header),
        ],
        body,
    )
        .into_response())
}

fn load(s: &MerchantState, id: &str) -> Result<MerchantPurchase, Problem> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Problem::bad_request(
            "bad-purchase-id",
            "a purchase id is 32 hex digits",
        ));
    }
    s.store
        .get(id)
        .map_err(internal)?
        .ok_or_else(|| Problem::not_found("no-such-purchase", format!("no purchase {id}")))
}

/// The plaintext of a product: its file (or, under the test fault, garbage of its length).
fn goods_source(path: &std::path::Path, fault: Fault) -> std::io::Result<Box<dyn Read + Send>> {
    let file = std::fs::File::open(path)?;
    if fault.garbage_goods() {
        let len = file.metadata()?.len();
        return Ok(Box::new(std::io::repeat(b'G').take(len)));
    }
    Ok(Box::new(file))
}

/// The ciphertext of a quote's product under `key`, encrypted on the fly in constant memory.
fn stream_ciphertext(
    s: &MerchantState,
    quote: &Signed<Quote>,
    key: &netbill_proto::crypto::GoodsKey,
) -> Result<Body, Problem> {
    let code = quote.body_unverified().product.clone();
    let path = s
        .catalog
        .products
        .get(&code)
        .ok_or_else(|| Problem::not_found("unknown-product", format!("no product {code}")))?
        .path
        .clone();
    let file = goods_source(&path, s.fault).map_err(internal)?;
    let mut reader = EncryptingReader::new(key, DEFAULT_CHUNK_SIZE, file).map_err(internal)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(bytes::Bytes::from(buf))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Ok(Body::from_stream(stream))
}

/// v2, steps 5–8: the offer back with the customer's EPO; endorse, send to N, answer with
/// the receipt. The ticket stands in for a stored purchase.
async fn pay(
    State(s): State<Shared>,
    ApiJson(payment): ApiJson<Payment>,
) -> Result<ApiJson<StatusAnswer>, Problem> {
    let id = payment.offer.goods.purchase.clone();
    let fresh = MerchantPurchase::from_offer(&RealCrypto, &s.seal, payment.offer)
        .map_err(merchant_problem)?;
    // A retry of a purchase the merchant already settled is answered from its record.
    let p = MerchantPurchase::for_payment(fresh, s.store.get(&id).map_err(internal)?);
    pay_epo(&s, &id, p, payment.epo).await
}

/// v1 purchases stored by an older release: the EPO for a delivered purchase.
async fn pay_v1(
    State(s): State<Shared>,
    Path(id): Path<String>,
    ApiJson(epo): ApiJson<Signed<Epo>>,
) -> Result<ApiJson<StatusAnswer>, Problem> {
    let p = load(&s, &id)?;
    pay_epo(&s, &id, p, epo).await
}

/// The customer's EPO for purchase `p`: the protocol core decides
/// ([`MerchantPurchase::on_payment`]) and this shell carries out its effects. Nothing is
/// written before the endorsement leaves: it is a function of the purchase and the EPO, so a
/// retry after any crash sends N the same bytes and N answers with the same receipt.
async fn pay_epo(
    s: &MerchantState,
    id: &str,
    mut p: MerchantPurchase,
    epo: Signed<Epo>,
) -> Result<ApiJson<StatusAnswer>, Problem> {
    let epoid = epo.body_unverified().epoid.clone();
    let first = p
        .on_payment(
            &RealCrypto,
            &s.signer,
            &s.seal,
            &s.billing_keys.seal_key,
            epo,
            "",
            now_ms(),
        )
        .map_err(merchant_problem)?;
    let receipt = carry_out(s, id, &mut p, first).await?;
    if s.fault.drops_receipt() {
        return Err(Problem::new(
            StatusCode::BAD_GATEWAY,
            "receipt-lost",
            "(test fault) the receipt was dropped on the way to the customer",
        ));
    }
    Ok(ApiJson(StatusAnswer {
        epoid,
        receipt: Some(receipt),
    }))
}

/// Most calls to N while carrying out one purchase's effects (an endorsement, a status query,
/// one re-send); past it the customer is told to ask again later.
const BILLING_CALLS_MAX: usize = 3;

/// Carries out the core's effects for purchase `p`, feeding N's answers back to it, until
/// it has the receipt to answer the customer with.
async fn carry_out(
    s: &MerchantState,
    id: &str,
    p: &mut MerchantPurchase,
    first: MerchantEffect,
) -> Result<Signed<Receipt>, Problem> {
    let mut effects = std::collections::VecDeque::from([first]);
    let mut calls = 0;
    let mut answer = None;
    while let Some(effect) = effects.pop_front() {
        let from_billing = match effect {
            MerchantEffect::SendEndorsement(e) => {
                calls += 1;
                if calls > BILLING_CALLS_MAX {
                    break;
                }
                // The point of no return, with nothing to persist first (see `pay_epo`).
                netbill_http::crash_point("merchant.before_send_endorsement");
                let a = send_endorsement(s, &e).await?;
                netbill_http::crash_point("merchant.after_receive_receipt");
                a
            }
            MerchantEffect::AskBilling(epoid) => {
                calls += 1;
                if calls > BILLING_CALLS_MAX {
                    break;
                }
                ask_billing(s, &epoid).await.map_err(|e| {
                    Problem::unavailable(format!(
                        "the purchase order is endorsed but its outcome is not known yet ({e}); \
                         ask again later (netbill wallet recover)"
                    ))
                })?
            }
            MerchantEffect::Record => {
                // The merchant's own books, not waiting for the disk (see `MerchantEffect`).
                s.store.put_relaxed(id, p, now_ms()).map_err(internal)?;
                netbill_http::crash_point("merchant.before_send_receipt");
                continue;
            }
            MerchantEffect::AnswerCustomer(r) => {
                answer = Some(*r);
                continue;
            }
        };
        let next = p
            .on_billing_answer(&RealCrypto, &s.billing_keys.sign_key, &from_billing)
            .map_err(|e| Problem::new(StatusCode::BAD_GATEWAY, "bad-receipt", e.to_string()))?;
        effects.extend(next);
    }
    answer.ok_or_else(|| {
        Problem::unavailable(
            "the purchase order is endorsed but has no outcome yet; ask again later \
             (netbill wallet recover)",
        )
    })
}

/// `POST N/v1/endorsements`.
async fn send_endorsement(
    s: &MerchantState,
    e: &Signed<Endorsement>,
) -> Result<StatusAnswer, Problem> {
    match s
        .billing
        .call(reqwest::Method::POST, "/v1/endorsements", Some(e), &[])
        .await
    {
        Ok(a) => Ok(a),
        Err(CallError::Unreachable { reason, .. }) => Err(Problem::unavailable(format!(
            "the purchase order is endorsed but the billing server is unreachable ({reason}); \
             send the same purchase order again later (netbill wallet recover)"
        ))),
        Err(e) => Err(Problem::new(
            StatusCode::BAD_GATEWAY,
            "billing-refused",
            format!("the billing server refused the purchase: {e}"),
        )),
    }
}

/// The M→N status query for an EPOID (signed with the merchant's key).
async fn ask_billing(s: &MerchantState, epoid: &EpoId) -> Result<StatusAnswer, String> {
    let body =
        serde_json::to_vec(&serde_json::json!({ "epoid": epoid })).map_err(|e| e.to_string())?;
    let auth = netbill_http::sign_request(
        &RealCrypto,
        &s.signer,
        &s.id,
        "POST",
        "/v1/status",
        &body,
        now_ms(),
    );
    s.billing
        .call_raw(
            reqwest::Method::POST,
            "/v1/status",
            Some(body),
            &[(netbill_http::AUTH_HEADER, auth)],
        )
        .await
        .map_err(|e| e.to_string())
}

/// Recovery: settle every purchase that was endorsed but has no receipt.
pub async fn settle_unsettled(s: &MerchantState) {
    let pending = match s.store.unsettled() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "reading unsettled purchases");
            return;
        }
    };
    for (id, mut p) in pending {
        let Some(epoid) = p.epoid().cloned() else {
            continue;
        };
        if let Err(e) = carry_out(s, &id, &mut p, MerchantEffect::AskBilling(epoid)).await {
            tracing::warn!(purchase = %id, error = %e.detail, "settling an endorsed purchase; will retry");
        }
    }
}

/// C→M status query: the receipt for an EPOID, asking N first if the merchant lacks it.
async fn status(
    State(s): State<Shared>,
    Path(raw): Path<String>,
) -> Result<ApiJson<StatusAnswer>, Problem> {
    let epoid: EpoId = raw.parse().map_err(|e: netbill_proto::ids::EpoIdError| {
        Problem::bad_request("bad-epoid", e.to_string())
    })?;
    let Some((id, mut p)) = s.store.by_epoid(&epoid).map_err(internal)? else {
        return Err(Problem::not_found(
            "no-such-purchase",
            format!("this merchant has no purchase {epoid}"),
        ));
    };
    if p.receipt.is_none()
        && p.endorsement.is_some()
        && let Err(e) = carry_out(&s, &id, &mut p, MerchantEffect::AskBilling(epoid.clone())).await
    {
        tracing::warn!(purchase = %id, error = %e.detail, "status query to the billing server failed");
    }
    Ok(ApiJson(StatusAnswer {
        epoid,
        receipt: p.receipt,
    }))
}

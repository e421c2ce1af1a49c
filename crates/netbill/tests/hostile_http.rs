//! Hostile input over HTTP against real `netbill` processes: tampered, forged, replayed,
//! conflicting, expired and malformed messages each get a typed problem and change nothing.

mod common;

use common::{Deployment, TOKEN, text};
use netbill_crypto::{
    Ed25519Signer, RealCrypto, load_secret_key, random_bytes, random_seal_secret,
};
use netbill_http::Problem;
use netbill_http::client::{CallError, Client};
use netbill_proto::crypto::{GoodsKey, SealSecret, Signer, goods_key_digest};
use netbill_proto::customer::CustomerPurchase;
use netbill_proto::merchant::MerchantPurchase;
use netbill_proto::messages::{
    Endorsement, Epo, OFFER_HEADER, Payment, PriceRequest, PurchaseOffer, StatusAnswer,
};
use netbill_proto::{AccountId, ProductCode, Signed};
use netbill_server::BillingPublic;
use sha2::{Digest as _, Sha256};

fn merchant_purchases(d: &Deployment) -> Vec<MerchantPurchase> {
    let db = rusqlite::Connection::open(d.root().join("merchant/merchant.db")).unwrap();
    let mut stmt = db.prepare("SELECT record FROM purchases").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| serde_json::from_str(&r.unwrap()).unwrap())
        .collect()
}

fn key(path: std::path::PathBuf, kind: &str) -> Ed25519Signer {
    Ed25519Signer::from_bytes(&load_secret_key(path, kind).unwrap())
}

struct Parties {
    n: Client,
    m: Client,
    billing: BillingPublic,
    customer: Ed25519Signer,
    merchant: Ed25519Signer,
}

async fn parties(d: &Deployment) -> Parties {
    let n = Client::new(&d.server.url).unwrap();
    let billing: BillingPublic = n
        .call::<(), _>(reqwest::Method::GET, "/v1/keys", None, &[])
        .await
        .unwrap();
    Parties {
        m: Client::new(&d.merchant.url).unwrap(),
        n,
        billing,
        customer: key(d.wallet.join("customer-sign.key"), "customer-sign"),
        merchant: key(d.root().join("merchant/merchant-sign.key"), "merchant-sign"),
    }
}

fn problem(r: Result<impl std::fmt::Debug, CallError>) -> Problem {
    match r {
        Err(CallError::Problem(p)) => p,
        other => panic!("expected a problem document, got {other:?}"),
    }
}

/// The merchant's K for an offer, derived as the merchant does (from its sealing secret).
fn merchant_k(d: &Deployment, offer: &PurchaseOffer) -> GoodsKey {
    let secret = SealSecret(
        load_secret_key(d.root().join("merchant/merchant-seal.key"), "merchant-seal").unwrap(),
    );
    netbill_proto::merchant::derive_goods_key(&RealCrypto, &secret, &offer.quote, &offer.note.epoid)
}

/// The first v2 round trip by hand, then the EPO: the customer's purchase (with a signed
/// EPO) and the merchant's offer.
async fn through_epo(p: &Parties) -> (CustomerPurchase, Signed<Epo>, PurchaseOffer) {
    let req = PriceRequest {
        identity: "alice".into(),
        customer_key: p.customer.public_key(),
        product: ProductCode::new("article").unwrap(),
        prd_hex: String::new(),
        bid: Some("USD:1".parse().unwrap()),
        credentials: vec![],
    };
    let resp =
        p.m.stream(
            reqwest::Method::POST,
            "/v2/purchases",
            Some(&req),
            Some(reqwest::StatusCode::PAYMENT_REQUIRED),
        )
        .await
        .unwrap();
    let header = resp
        .headers()
        .get(OFFER_HEADER)
        .unwrap()
        .as_bytes()
        .to_vec();
    let offer: PurchaseOffer = serde_json::from_slice(&base64_decode(&header)).unwrap();
    let ciphertext = resp.bytes().await.unwrap();
    let checksum = netbill_proto::crypto::Digest(Sha256::digest(&ciphertext).into());
    let mut c = CustomerPurchase::new(
        offer.quote.clone(),
        offer.goods.clone(),
        random_seal_secret(),
    );
    c.delivered(
        checksum,
        ciphertext.len() as u64,
        offer.note.clone(),
        netbill_http::now_ms(),
    )
    .unwrap();
    let epo = c
        .sign_epo(
            &RealCrypto,
            &p.customer,
            &p.billing.seal_key,
            &AccountId::new("alice").unwrap(),
            random_bytes(),
            "",
            netbill_http::now_ms(),
            random_bytes(),
        )
        .unwrap();
    (c, epo, offer)
}

/// Pays `offer` with `epo` (the second v2 round trip).
async fn pay(
    p: &Parties,
    offer: &PurchaseOffer,
    epo: Signed<Epo>,
) -> Result<StatusAnswer, CallError> {
    p.m.call(
        reqwest::Method::POST,
        "/v2/pay",
        Some(&Payment {
            offer: offer.clone(),
            epo,
        }),
        &[],
    )
    .await
}

/// An endorsement made directly with the merchant's key, skipping the merchant's checks.
fn endorse_raw(p: &Parties, epo: Signed<Epo>, k: &GoodsKey) -> Signed<Endorsement> {
    let epoid = epo.body_unverified().epoid.clone();
    Signed::sign(
        Endorsement {
            epo,
            merchant_key: p.merchant.public_key(),
            memo: String::new(),
            sealed_key: netbill_proto::sealing::seal_goods_key(
                &RealCrypto,
                &netbill_crypto::random_seal_secret(),
                &p.billing.seal_key,
                &epoid,
                k,
                random_bytes(),
            ),
            key_digest: goods_key_digest(&RealCrypto, k),
        },
        &p.merchant,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_endorsement_gets_the_same_receipt_and_one_debit_and_a_different_k_is_refused() {
    let d = Deployment::start();
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "article",
        "--out",
        d.root().join("a").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let p = parties(&d).await;
    let done = merchant_purchases(&d).pop().unwrap();
    let endorsement = done.endorsement.clone().unwrap();
    for _ in 0..3 {
        let again: StatusAnswer =
            p.n.call(
                reqwest::Method::POST,
                "/v1/endorsements",
                Some(&endorsement),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            again.receipt, done.receipt,
            "a retried endorsement must get the identical receipt"
        );
    }
    assert_eq!(d.balance_minor("alice"), 98_000);
    // The same EPO endorsed with another K: refused, nothing moves.
    let other = endorse_raw(
        &p,
        endorsement.body_unverified().epo.clone(),
        &GoodsKey([9; 32]),
    );
    let pb = problem(
        p.n.call::<_, StatusAnswer>(reqwest::Method::POST, "/v1/endorsements", Some(&other), &[])
            .await,
    );
    assert_eq!((pb.status, pb.code()), (409, "epoid-conflict"));
    assert_eq!(d.balance_minor("alice"), 98_000);
    assert!(d.conservation_holds());
}

#[tokio::test(flavor = "multi_thread")]
async fn flipped_bits_and_wrong_keys_are_refused_everywhere() {
    let d = Deployment::start();
    let p = parties(&d).await;
    let (c, epo, offer) = through_epo(&p).await;
    let k = merchant_k(&d, &offer);
    let endorsement = endorse_raw(&p, epo.clone(), &k);

    // Every 5th byte of the endorsement, flipped: never accepted, never a commit.
    let bytes = endorsement.bytes().to_vec();
    for i in (0..bytes.len()).step_by(5) {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        let body = serde_json::json!({
            "body": base64_url(&b),
            "sig": base64_url(&endorsement.signature().0),
        });
        let r = p
            .n
            .call::<_, StatusAnswer>(reqwest::Method::POST, "/v1/endorsements", Some(&body), &[])
            .await;
        let pb = problem(r);
        assert!(pb.status == 400 || pb.status == 422, "byte {i}: {pb}");
    }
    // A signature by the wrong key.
    let forged = Signed::sign(
        endorsement.body_unverified().clone(),
        &Ed25519Signer::generate(),
    );
    let pb = problem(
        p.n.call::<_, StatusAnswer>(
            reqwest::Method::POST,
            "/v1/endorsements",
            Some(&forged),
            &[],
        )
        .await,
    );
    assert_eq!(pb.code(), "bad-merchant-signature");
    // An offer the merchant did not make (another checksum, another EPOID, another quote
    // id, a flipped ticket): its ticket does not verify, nothing is endorsed.
    let mut altered = Vec::new();
    let mut o = offer.clone();
    o.goods.checksum = netbill_proto::crypto::Digest([1; 32]);
    altered.push(o);
    let mut o = offer.clone();
    o.note.epoid.serial ^= 1;
    altered.push(o);
    let mut o = offer.clone();
    o.note.expires_at_ms += 1;
    altered.push(o);
    let mut o = offer.clone();
    o.ticket.0[0] ^= 1;
    altered.push(o);
    for o in altered {
        let pb = problem(pay(&p, &o, epo.clone()).await);
        assert_eq!((pb.status, pb.code()), (422, "bad-ticket"), "{pb}");
    }
    // EPOs the merchant must refuse: another price, another checksum, another signer.
    let mut cheap = epo.body_unverified().clone();
    cheap.price = "USD:0.00001".parse().unwrap();
    let pb = problem(pay(&p, &offer, Signed::sign(cheap, &p.customer)).await);
    assert_eq!(pb.code(), "epo-mismatch");
    // An EPO over a different ciphertext than the one delivered.
    let mut other = epo.body_unverified().clone();
    other.goods_checksum = netbill_proto::crypto::Digest([1; 32]);
    let pb = problem(pay(&p, &offer, Signed::sign(other, &p.customer)).await);
    assert_eq!(pb.code(), "epo-mismatch");
    let stranger = Signed::sign(epo.body_unverified().clone(), &Ed25519Signer::generate());
    let pb = problem(pay(&p, &offer, stranger).await);
    assert_eq!(pb.code(), "bad-customer-signature");
    assert_eq!(d.balance_minor("alice"), 100_000);

    // The genuine EPO still works, and a flipped receipt is refused by the customer.
    let answer = pay(&p, &offer, epo.clone()).await.unwrap();
    let receipt = answer.receipt.unwrap();
    let mut rb = receipt.bytes().to_vec();
    let last = rb.len() - 1;
    rb[last] ^= 1;
    let flipped = Signed::from_parts(rb, *receipt.signature()).unwrap();
    let mut c2 = c.clone();
    c2.epo = Some(epo);
    assert!(
        c2.clone()
            .settle(
                &RealCrypto,
                &p.billing.sign_key,
                &p.billing.seal_key,
                flipped
            )
            .is_err()
    );
    assert!(
        c2.settle(
            &RealCrypto,
            &p.billing.sign_key,
            &p.billing.seal_key,
            receipt
        )
        .is_ok()
    );
    assert_eq!(d.balance_minor("alice"), 98_000);
    assert!(d.conservation_holds());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_epo_is_refused_by_the_merchant_and_gets_a_failure_receipt_from_n() {
    let d = Deployment::start_with(&["--epo-expiry-ms", "1500"]);
    let p = parties(&d).await;
    let (_, epo, offer) = through_epo(&p).await;
    let k = merchant_k(&d, &offer);
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    let pb = problem(pay(&p, &offer, epo.clone()).await);
    assert_eq!(pb.code(), "epo-expired");
    // A merchant that skipped its own check still cannot commit it at N.
    let late = endorse_raw(&p, epo, &k);
    let a: StatusAnswer =
        p.n.call(reqwest::Method::POST, "/v1/endorsements", Some(&late), &[])
            .await
            .unwrap();
    let r = a.receipt.unwrap();
    let r = r.verify(&RealCrypto, &p.billing.sign_key).unwrap();
    assert_eq!(r.result, netbill_proto::messages::ResultCode::Expired);
    assert_eq!(d.balance_minor("alice"), 100_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_oversized_and_out_of_range_json_get_problem_documents() {
    let d = Deployment::start();
    let http = reqwest::Client::new();
    let post = |url: String, body: Vec<u8>| {
        let http = http.clone();
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let ctype = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            let p: Problem = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            (status, ctype, p)
        }
    };
    let n = &d.server.url;
    let m = &d.merchant.url;
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            format!("{n}/v1/endorsements"),
            b"{".to_vec(),
            400,
            "malformed-json",
        ),
        (
            format!("{n}/v1/endorsements"),
            br#"{"body":"x","sig":"y","extra":1}"#.to_vec(),
            400,
            "malformed-json",
        ),
        (
            format!("{n}/v1/endorsements"),
            vec![b' '; 300 * 1024],
            413,
            "body-too-large",
        ),
        (
            format!("{n}/v1/admin/accounts/alice/deposit"),
            br#"{"amount":"USD:-1"}"#.to_vec(),
            400,
            "malformed-json",
        ),
        (
            format!("{n}/v1/admin/accounts/alice/deposit"),
            br#"{"amount":"USD:1000000001"}"#.to_vec(),
            400,
            "malformed-json",
        ),
        (
            format!("{n}/v1/admin/accounts/alice/deposit"),
            br#"{"amount":1}"#.to_vec(),
            400,
            "malformed-json",
        ),
        (
            format!("{n}/v1/admin/accounts/alice/deposit"),
            br#"{"amount":"USD:0"}"#.to_vec(),
            422,
            "zero-amount",
        ),
        (
            format!("{n}/v1/admin/accounts/Alice/deposit"),
            br#"{"amount":"USD:1"}"#.to_vec(),
            400,
            "bad-account-id",
        ),
        (
            format!("{m}/v1/quotes"),
            br#"{"identity":"a"}"#.to_vec(),
            400,
            "malformed-json",
        ),
        (
            format!("{m}/v1/purchases/00/pay"),
            b"[]".to_vec(),
            400,
            "malformed-json",
        ),
        (
            format!("{m}/v2/pay"),
            br#"{"offer":1}"#.to_vec(),
            400,
            "malformed-json",
        ),
        (
            format!("{m}/v2/purchases"),
            br#"{"identity":"a"}"#.to_vec(),
            400,
            "malformed-json",
        ),
        (
            format!("{n}/v1/status"),
            br#"{"epoid":"acme:1:1"}"#.to_vec(),
            401,
            "unauthorized",
        ),
    ];
    for (url, body, status, code) in cases {
        let (s, ctype, p) = post(url.clone(), body).await;
        assert_eq!((s, p.code()), (status, code), "{url}: {p}");
        assert_eq!(ctype.as_deref(), Some("application/problem+json"), "{url}");
        assert_eq!(p.status, status);
    }
    assert_eq!(d.balance_minor("alice"), 100_000);
    assert!(d.conservation_holds());
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn base64_decode(b: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_answers_each_endorsement_on_its_own() {
    let d = Deployment::start();
    let p = parties(&d).await;
    let (_, epo, offer) = through_epo(&p).await;
    let k = merchant_k(&d, &offer);
    let good = endorse_raw(&p, epo.clone(), &k);
    let forged = Signed::sign(good.body_unverified().clone(), &Ed25519Signer::generate());
    let body = netbill_server::EndorsementBatch {
        endorsements: vec![good.clone(), forged, good],
    };
    let items: Vec<netbill_server::BatchItem> =
        p.n.call(
            reqwest::Method::POST,
            "/v1/endorsements/batch",
            Some(&body),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(items.len(), 3);
    let receipt = |i: &netbill_server::BatchItem| match i {
        netbill_server::BatchItem::Answer(a) => a.receipt.clone(),
        netbill_server::BatchItem::Problem(p) => panic!("unexpected problem {p}"),
    };
    // The same endorsement twice in one batch: one commit, the same receipt.
    assert_eq!(receipt(&items[0]), receipt(&items[2]));
    assert!(
        matches!(&items[1], netbill_server::BatchItem::Problem(p) if p.code() == "bad-merchant-signature")
    );
    assert_eq!(d.balance_minor("alice"), 98_000);
    let empty = netbill_server::EndorsementBatch {
        endorsements: vec![],
    };
    let pb = problem(
        p.n.call::<_, Vec<netbill_server::BatchItem>>(
            reqwest::Method::POST,
            "/v1/endorsements/batch",
            Some(&empty),
            &[],
        )
        .await,
    );
    assert_eq!(pb.code(), "bad-batch-size");
}

/// A C→N request signed with the wallet's key.
async fn signed(
    p: &Parties,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<serde_json::Value, CallError> {
    let auth = netbill_http::sign_request(
        &RealCrypto,
        &p.customer,
        &AccountId::new("alice").unwrap(),
        method.as_str(),
        path,
        body.as_deref().unwrap_or(b""),
        netbill_http::now_ms(),
    );
    p.n.call_raw(method, path, body, &[(netbill_http::AUTH_HEADER, auth)])
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_epoid_with_no_outcome_past_its_expiry_is_aborted_for_good() {
    let d = Deployment::start_full(&["--expiry-max-ms", "1500"], &["--epo-expiry-ms", "1000"]);
    let p = parties(&d).await;
    let (_, epo, offer) = through_epo(&p).await;
    let epoid = epo.body_unverified().epoid.clone();
    let k = merchant_k(&d, &offer);
    let query = serde_json::to_vec(&serde_json::json!({ "epoid": epoid })).unwrap();
    // Before its expiry: no outcome yet.
    let a = signed(&p, reqwest::Method::POST, "/v1/status", Some(query.clone()))
        .await
        .unwrap();
    assert_eq!(a["receipt"], serde_json::Value::Null);
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    // Past it: aborted, with N's signed receipt, and the abort stays.
    let a: StatusAnswer = serde_json::from_value(
        signed(&p, reqwest::Method::POST, "/v1/status", Some(query.clone()))
            .await
            .unwrap(),
    )
    .unwrap();
    let abort = a
        .receipt
        .unwrap_or_else(|| panic!("no abort receipt for {epoid} at {}", netbill_http::now_ms()));
    assert_eq!(
        abort
            .verify(&RealCrypto, &p.billing.sign_key)
            .unwrap()
            .result,
        netbill_proto::messages::ResultCode::Aborted
    );
    // A late endorsement cannot commit: it gets the abort receipt.
    let late = endorse_raw(&p, epo, &k);
    let a: StatusAnswer =
        p.n.call(reqwest::Method::POST, "/v1/endorsements", Some(&late), &[])
            .await
            .unwrap();
    assert_eq!(a.receipt.as_ref(), Some(&abort));
    assert_eq!(d.balance_minor("alice"), 100_000);
    let again: StatusAnswer = serde_json::from_value(
        signed(&p, reqwest::Method::POST, "/v1/status", Some(query))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(again.receipt, Some(abort));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_account_never_sees_another_accounts_data() {
    let d = Deployment::start();
    let out = d.wallet(&[
        "buy",
        &d.merchant.url,
        "article",
        "--out",
        d.root().join("a").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let p = parties(&d).await;
    let own = signed(&p, reqwest::Method::GET, "/v1/accounts/alice", None)
        .await
        .unwrap();
    assert_eq!(own["balance"], "USD:0.98000");
    for path in ["/v1/accounts/acme", "/v1/accounts/acme/statement"] {
        let pb = problem(signed(&p, reqwest::Method::GET, path, None).await);
        assert_eq!((pb.status, pb.code()), (403, "forbidden"), "{path}");
    }
    // A request signed for one path cannot be replayed on another.
    let auth = netbill_http::sign_request(
        &RealCrypto,
        &p.customer,
        &AccountId::new("alice").unwrap(),
        "GET",
        "/v1/accounts/alice",
        b"",
        netbill_http::now_ms(),
    );
    let pb = problem(
        p.n.call::<(), serde_json::Value>(
            reqwest::Method::GET,
            "/v1/accounts/alice/statement",
            None,
            &[(netbill_http::AUTH_HEADER, auth)],
        )
        .await,
    );
    assert_eq!(pb.code(), "unauthorized");
    // Another customer cannot see alice's purchase.
    let bob = Ed25519Signer::generate();
    d.admin(&[
        "create-account",
        "bob",
        "--kind",
        "customer",
        "--key",
        &bob.public_key().to_hex(),
    ]);
    let epoid = merchant_purchases(&d)
        .pop()
        .unwrap()
        .delivery
        .unwrap()
        .epoid;
    let body = serde_json::to_vec(&serde_json::json!({ "epoid": epoid })).unwrap();
    let auth = netbill_http::sign_request(
        &RealCrypto,
        &bob,
        &AccountId::new("bob").unwrap(),
        "POST",
        "/v1/status",
        &body,
        netbill_http::now_ms(),
    );
    let pb = problem(
        p.n.call_raw::<serde_json::Value>(
            reqwest::Method::POST,
            "/v1/status",
            Some(body),
            &[(netbill_http::AUTH_HEADER, auth)],
        )
        .await,
    );
    assert_eq!((pb.status, pb.code()), (404, "no-such-purchase"));
    // Nor get its evidence (the goods key), signed or not; alice can.
    let path = format!("/v1/evidence/{epoid}");
    let auth = netbill_http::sign_request(
        &RealCrypto,
        &bob,
        &AccountId::new("bob").unwrap(),
        "GET",
        &path,
        b"",
        netbill_http::now_ms(),
    );
    let pb = problem(
        p.n.call::<(), serde_json::Value>(
            reqwest::Method::GET,
            &path,
            None,
            &[(netbill_http::AUTH_HEADER, auth)],
        )
        .await,
    );
    assert_eq!((pb.status, pb.code()), (404, "no-such-purchase"));
    let pb = problem(
        p.n.call::<(), serde_json::Value>(reqwest::Method::GET, &path, None, &[])
            .await,
    );
    assert_eq!(pb.status, 401);
    let own = signed(&p, reqwest::Method::GET, &path, None).await.unwrap();
    assert!(own["goods_key"].is_string(), "{own}");
    assert!(own["endorsement"].is_object(), "{own}");
    // An arbitrator reads it under alice's grant, signing with the granted key only.
    let (arbitrator, impostor) = (Ed25519Signer::generate(), Ed25519Signer::generate());
    let grant = netbill_http::encode_signed(&Signed::sign(
        netbill_proto::messages::EvidenceGrant {
            epoid: epoid.clone(),
            grantor: AccountId::new("alice").unwrap(),
            arbitrator_key: arbitrator.public_key(),
            expires_at_ms: netbill_http::now_ms() + 60_000,
        },
        &p.customer,
    ));
    for (signer, ok) in [(&impostor, false), (&arbitrator, true)] {
        let auth = netbill_http::sign_request(
            &RealCrypto,
            signer,
            &AccountId::new("alice").unwrap(),
            "GET",
            &path,
            b"",
            netbill_http::now_ms(),
        );
        let r =
            p.n.call::<(), serde_json::Value>(
                reqwest::Method::GET,
                &path,
                None,
                &[
                    (netbill_http::AUTH_HEADER, auth),
                    (netbill_http::GRANT_HEADER, grant.clone()),
                ],
            )
            .await;
        if ok {
            assert!(r.unwrap()["goods_key"].is_string());
        } else {
            assert_eq!(problem(r).status, 401);
        }
    }
    // The journal and the audit listings are for the operator's token only.
    for path in [
        "/v1/journal",
        "/v1/journal/checkpoints",
        "/v1/admin/audit/purchases",
        "/v1/admin/audit/totals",
    ] {
        let pb = problem(
            p.n.call::<(), serde_json::Value>(reqwest::Method::GET, path, None, &[])
                .await,
        );
        assert_eq!(pb.status, 401, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_refunds_journal_queries_and_adjustments_get_problems_and_change_nothing() {
    let d = Deployment::start();
    assert!(
        d.wallet(&["buy", &d.merchant.url, "article"])
            .status
            .success()
    );
    let p = parties(&d).await;
    let bearer = [("authorization", format!("Bearer {TOKEN}"))];
    let call = |method: reqwest::Method, path: &'static str, body: Vec<u8>, auth: bool| {
        let n = p.n.clone();
        let headers: Vec<(&str, String)> = if auth { bearer.to_vec() } else { vec![] };
        async move {
            n.call_raw::<serde_json::Value>(method, path, Some(body), &headers)
                .await
        }
    };
    // Malformed and hostile refund bodies.
    for body in [&b"{"[..], b"[]", b"{\"body\":\"@@@\",\"sig\":\"x\"}"] {
        let pb = problem(call(reqwest::Method::POST, "/v1/refunds", body.to_vec(), false).await);
        assert_eq!(pb.status, 400, "{}", String::from_utf8_lossy(body));
    }
    let epoid = merchant_purchases(&d)
        .pop()
        .unwrap()
        .delivery
        .unwrap()
        .epoid;
    let refund = |amount: &str, id: &str, signer: &Ed25519Signer| {
        Signed::sign(
            netbill_proto::messages::RefundRequest {
                refund_id: id.into(),
                epoid: epoid.clone(),
                merchant: AccountId::new("acme").unwrap(),
                amount: amount.parse().unwrap(),
                reason: String::new(),
                time_ms: netbill_http::now_ms(),
            },
            signer,
        )
    };
    let post = |r: Signed<netbill_proto::messages::RefundRequest>| {
        let n = p.n.clone();
        async move {
            n.call::<_, serde_json::Value>(reqwest::Method::POST, "/v1/refunds", Some(&r), &[])
                .await
        }
    };
    let cases = [
        (
            refund("USD:0.01", "ok-id", &Ed25519Signer::generate()),
            403,
            "bad-refund-signature",
        ),
        (
            refund("USD:0.03", "ok-id", &p.merchant),
            409,
            "refund-over-limit",
        ),
        (refund("USD:0", "ok-id", &p.merchant), 422, "zero-refund"),
        (
            refund("USD:0.01", "bad id!", &p.merchant),
            422,
            "bad-refund-id",
        ),
    ];
    for (r, status, code) in cases {
        let pb = problem(post(r).await);
        assert_eq!((pb.status, pb.code()), (status, code));
    }
    assert_eq!(d.balance_minor("alice"), 98_000);
    // A journal page past its end is empty; a bad cursor is a bad request.
    let n = &p.n;
    let page: serde_json::Value = n
        .call::<(), _>(reqwest::Method::GET, "/v1/journal?after=999", None, &bearer)
        .await
        .unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 0);
    let pb = problem(
        n.call::<(), serde_json::Value>(reqwest::Method::GET, "/v1/journal?after=x", None, &bearer)
            .await,
    );
    assert_eq!((pb.status, pb.code()), (400, "bad-after"));
    // Adjustments that would break conservation, or name no account, change nothing.
    for body in [
        serde_json::json!({"adjustments": [{"account": "alice", "delta_minor": 1, "memo": "gift"}]}),
        serde_json::json!({"adjustments": [{"account": "nobody", "delta_minor": 0, "memo": "x"}]}),
        serde_json::json!({"adjustments": []}),
    ] {
        let pb = problem(
            call(
                reqwest::Method::POST,
                "/v1/admin/adjustments",
                serde_json::to_vec(&body).unwrap(),
                true,
            )
            .await,
        );
        assert_eq!((pb.status, pb.code()), (422, "bad-adjustment"), "{body}");
    }
    let pb = problem(
        call(
            reqwest::Method::POST,
            "/v1/admin/adjustments",
            b"{}".to_vec(),
            false,
        )
        .await,
    );
    assert_eq!(pb.status, 401);
    assert_eq!(d.balance_minor("alice"), 98_000);
    assert!(d.conservation_holds());
}

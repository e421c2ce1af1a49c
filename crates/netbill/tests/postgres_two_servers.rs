//! Two real `netbill server run` processes over one PostgreSQL database, under concurrent
//! load: many customers buying from one hot merchant through both servers at once, every
//! endorsement sent to both servers concurrently. Each EPOID gets exactly one outcome and
//! both servers answer with the identical receipt; no update to the merchant is lost;
//! conservation holds and the journal is one intact chain.

mod common;
use netbill_ledger::throwaway_pg as pg;

use common::{Proc, ok};
use netbill_crypto::{
    Ed25519Signer, RealCrypto, random_bytes, random_goods_key, random_seal_secret,
};
use netbill_http::client::Client;
use netbill_ledger::{PostgresStore, Store, verify_journal};
use netbill_proto::crypto::{Crypto, Signer};
use netbill_proto::customer::CustomerPurchase;
use netbill_proto::merchant::{MerchantPurchase, Offer, make_quote};
use netbill_proto::messages::{Endorsement, GoodsOffer, PriceRequest, ResultCode, StatusAnswer};
use netbill_proto::{AccountId, Amount, ProductCode, Signed};
use netbill_server::BillingPublic;

const CUSTOMERS: usize = 6;
const PURCHASES_EACH: u64 = 8;
/// USD:0.02 in minor units (1/100000 of a dollar).
const PRICE_MINOR: i64 = 2_000;
/// Each customer holds USD:0.11: enough for 5 purchases of USD:0.02, not for 8.
const DEPOSIT: &str = "USD:0.11";
const AFFORDABLE: i64 = 5;

/// An endorsement for one purchase of the article by `customer`, signed by the merchant.
fn endorsement(
    merchant: &Ed25519Signer,
    customer: &Ed25519Signer,
    who: &AccountId,
    billing: &BillingPublic,
    serial: u64,
) -> Signed<Endorsement> {
    let c = RealCrypto;
    let now = netbill_http::now_ms();
    let offer = Offer {
        product: ProductCode::new("article").expect("product code"),
        description: "Tygar: Atomicity in Electronic Commerce".into(),
        price: Amount::from_minor(PRICE_MINOR as u64).expect("price"),
        group_prices: vec![],
        goods_digest: c.digest(&[b"goods"]),
        goods_len: 5,
    };
    let req = PriceRequest {
        identity: who.to_string(),
        customer_key: customer.public_key(),
        product: offer.product.clone(),
        prd_hex: String::new(),
        bid: None,
        credentials: vec![],
    };
    let acme = AccountId::new("acme").expect("account id");
    let quote = make_quote(
        &c,
        merchant,
        &acme,
        &req,
        &offer,
        &|_| None,
        serial,
        now,
        600_000,
    )
    .expect("quote");
    let goods = GoodsOffer {
        purchase: format!("p{serial}"),
        checksum: c.digest(&[b"ciphertext"]),
        ciphertext_len: 10,
    };
    let mut m = MerchantPurchase::new(quote.clone(), random_goods_key(), goods.clone());
    let note = m.deliver(serial, now, 600_000);
    let mut cp = CustomerPurchase::new(quote, goods.clone(), random_seal_secret());
    cp.delivered(goods.checksum, goods.ciphertext_len, note, now)
        .expect("delivered");
    let epo = cp
        .sign_epo(
            &c,
            customer,
            &billing.seal_key,
            who,
            random_bytes(),
            "",
            now,
            random_bytes(),
        )
        .expect("EPO");
    m.endorse(
        &c,
        merchant,
        &netbill_crypto::random_seal_secret(),
        &billing.seal_key,
        epo,
        "",
        now,
    )
    .expect("endorsement")
}

async fn endorse(n: &Client, e: &Signed<Endorsement>) -> StatusAnswer {
    n.call(reqwest::Method::POST, "/v1/endorsements", Some(e), &[])
        .await
        .unwrap_or_else(|err| panic!("endorsement refused: {err:?}"))
}

// A plain test with its own runtime: the synchronous PostgreSQL client used for checking
// must not run on an async worker.
#[test]
fn two_servers_over_one_postgres_commit_each_epoid_once_with_identical_receipts() {
    let url = pg::fresh_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let billing_dir = dir.path().join("billing");
    let billing_dir = billing_dir.to_str().expect("utf-8 path");
    ok(&["server", "init", "--dir", billing_dir]);
    // Both servers share N's keys and the database; each runs its own writer.
    let run = |batch: &str| {
        Proc::start(&[
            "server",
            "run",
            "--dir",
            billing_dir,
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
            "--batch-max",
            batch,
        ])
    };
    let a = run("16");
    let b = run("16");
    let admin = |server: &Proc, args: &[&str]| {
        let mut all = vec!["admin", "--server", &server.url];
        all.extend(args);
        ok(&all)
    };

    let merchant = Ed25519Signer::generate();
    admin(
        &a,
        &[
            "create-account",
            "acme",
            "--kind",
            "merchant",
            "--key",
            &merchant.public_key().to_hex(),
        ],
    );
    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        let name = format!("cust{i}");
        let key = Ed25519Signer::generate();
        // Accounts are set up through either server: they share the ledger.
        let via = if i % 2 == 0 { &a } else { &b };
        admin(
            via,
            &[
                "create-account",
                &name,
                "--kind",
                "customer",
                "--key",
                &key.public_key().to_hex(),
            ],
        );
        admin(via, &["deposit", &name, DEPOSIT]);
        customers.push((AccountId::new(&name).expect("account id"), key));
    }

    let na = Client::new(&a.url).expect("client");
    let nb = Client::new(&b.url).expect("client");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let billing: BillingPublic = rt
        .block_on(na.call::<(), _>(reqwest::Method::GET, "/v1/keys", None, &[]))
        .expect("billing keys");
    let mut endorsements = Vec::new();
    let mut serial = 0;
    for _ in 0..PURCHASES_EACH {
        for (who, key) in &customers {
            serial += 1;
            endorsements.push(endorsement(&merchant, key, who, &billing, serial));
        }
    }

    // Every endorsement to both servers at the same time, all purchases at once.
    let answers = rt.block_on(async {
        let tasks: Vec<_> = endorsements
            .iter()
            .cloned()
            .map(|e| {
                let (na, nb) = (na.clone(), nb.clone());
                tokio::spawn(async move {
                    let (x, y) = tokio::join!(endorse(&na, &e), endorse(&nb, &e));
                    (e, x, y)
                })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.expect("purchase task"));
        }
        answers
    });

    let mut store = PostgresStore::open(&url).expect("opening the shared ledger");
    let mut committed = 0i64;
    let mut per_customer = std::collections::HashMap::<AccountId, i64>::new();
    for (e, x, y) in &answers {
        let epoid = &e.body_unverified().epo.body_unverified().epoid;
        let rx = x.receipt.as_ref().expect("server A answers with a receipt");
        let ry = y.receipt.as_ref().expect("server B answers with a receipt");
        assert_eq!(
            rx.bytes(),
            ry.bytes(),
            "both servers give the identical receipt for {epoid}"
        );
        let stored = store
            .outcome(epoid)
            .expect("reading the outcome")
            .expect("an outcome for every EPOID");
        assert_eq!(stored.receipt.bytes(), rx.bytes(), "the stored receipt");
        let r = rx.body_unverified();
        assert!(
            matches!(
                r.result,
                ResultCode::Committed | ResultCode::InsufficientFunds
            ),
            "{epoid}: {:?}",
            r.result
        );
        if r.result == ResultCode::Committed {
            committed += 1;
            let who = stored.customer.clone().expect("a purchase has a customer");
            *per_customer.entry(who).or_default() += 1;
        }
    }
    assert_eq!(committed, CUSTOMERS as i64 * AFFORDABLE);
    assert!(per_customer.values().all(|n| *n == AFFORDABLE));

    let totals = store.check_conservation().expect("conservation holds");
    assert_eq!(
        totals.outcomes,
        endorsements.len() as u64,
        "exactly one outcome per EPOID"
    );
    let acme = AccountId::new("acme").expect("account id");
    let balance = store
        .account(&acme)
        .expect("reading acme")
        .expect("acme exists")
        .balance_minor;
    assert_eq!(
        balance,
        committed * PRICE_MINOR,
        "the hot merchant's balance is the sum of committed prices"
    );
    for server in [&a, &b] {
        let shown = admin(server, &["show", "acme"]);
        assert!(
            shown.contains(&format!(
                "balance {}",
                netbill_proto::money::format_minor(balance)
            )),
            "{shown}"
        );
        let out = admin(server, &["conservation"]);
        assert!(out.contains("conservation holds"), "{out}");
    }
    let entries = verify_journal(&mut store).expect("the journal chain is intact");
    // A key entry per account (the customers and acme), a deposit per customer, a purchase
    // per commit.
    let keys = CUSTOMERS as u64 + 1;
    assert_eq!(entries, keys + CUSTOMERS as u64 + committed as u64);
}

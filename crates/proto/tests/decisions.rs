//! The decision functions, one boundary per test: N's `decide`, `may_abort`, the refund
//! checks and the in-memory ledger, and the customer's and merchant's checks.
//!
//! These tests were written against the survivors of `cargo mutants` (see
//! `docs/testing.md`): each pins one comparison exactly at its edge, so moving a boundary
//! by one, flipping a sign or weakening an `&&` fails a test here.
//!
//! `decide` is fed a `VerifiedPurchase` built directly (its fields are public) and a
//! `MemoryLedger`: nothing here depends on how seals are made or opened.

use netbill_proto::billing::{
    self, AccountKind, BillingPolicy, Decision, EndorsementError, MemoryLedger, RefundError,
    RefundFacts, VerifiedPurchase,
};
use netbill_proto::crypto::symbolic::{SymbolicCrypto, SymbolicSigner, seal_secret};
use netbill_proto::crypto::{Crypto, Digest, GoodsKey, PublicKey, SealKey, Signer};
use netbill_proto::customer::{
    self, CustomerError, CustomerPurchase, CustomerState, QuoteExpectation,
};
use netbill_proto::merchant::{self, MerchantError, MerchantPurchase, Offer};
use netbill_proto::messages::{
    DeliveryNote, Endorsement, Epo, EpoSecret, GoodsOffer, GroupCredential, PriceRequest, Quote,
    REFUND_ID_LEN_MAX, Receipt, RefundRequest, ResultCode, Sealed, SealedKey,
};
use netbill_proto::signed::Signed;
use netbill_proto::{AccountId, Amount, EpoId, GroupName, ProductCode};

const NOW: u64 = 1_700_000_000_000;
const C: SymbolicCrypto = SymbolicCrypto;

fn id(s: &str) -> AccountId {
    AccountId::new(s).unwrap()
}
fn minor(m: u64) -> Amount {
    Amount::from_minor(m).unwrap()
}
fn alice() -> SymbolicSigner {
    SymbolicSigner::new("alice")
}
fn acme() -> SymbolicSigner {
    SymbolicSigner::new("acme")
}
fn netbill() -> SymbolicSigner {
    SymbolicSigner::new("netbill")
}
fn other_key() -> PublicKey {
    SymbolicSigner::new("mallory").public_key()
}

// ---------------------------------------------------------------------------------------
// N: decide

/// An EPO from alice to acme (delivered at `NOW`), with symbolic filler where `decide`
/// does not look.
fn epo(price: u64, expires_at_ms: u64) -> Epo {
    Epo {
        identity: "alice".into(),
        customer_key: alice().public_key(),
        description: "an article".into(),
        price: minor(price),
        merchant: id("acme"),
        goods_checksum: C.digest(&[b"ciphertext"]),
        prd_digest: C.digest(&[b"prd"]),
        account_commitment: C.digest(&[b"commitment"]),
        epoid: EpoId {
            merchant: id("acme"),
            delivered_at_ms: NOW,
            serial: 1,
        },
        expires_at_ms,
        quote_digest: C.digest(&[b"quote"]),
        reply_key: SealKey([3; 32]),
        sealed_for_billing: Sealed::Pair(Vec::new()),
    }
}

/// What `verify_endorsement` would hand `decide`, built directly: `epo` endorsed under
/// `merchant_key`, paid from alice's account.
fn verified(epo: Epo, merchant_key: PublicKey) -> VerifiedPurchase {
    let epo = Signed::sign(epo, &alice());
    let endorsement = Signed::sign(
        Endorsement {
            epo: epo.clone(),
            merchant_key,
            memo: String::new(),
            sealed_key: SealedKey::Pair {
                merchant_seal_key: SealKey([4; 32]),
                sealed: Vec::new(),
            },
            key_digest: Digest([0; 32]),
        },
        &acme(),
    );
    VerifiedPurchase {
        endorsement_digest: endorsement.digest(&C),
        epo_digest: epo.digest(&C),
        endorsement,
        secret: EpoSecret {
            account: id("alice"),
            account_nonce: [0; 16],
            memo: String::new(),
        },
        goods_key: GoodsKey([7; 32]),
    }
}

/// A purchase at `price` that expires at `NOW + 1000`, endorsed with acme's key.
fn purchase(price: u64) -> VerifiedPurchase {
    verified(epo(price, NOW + 1000), acme().public_key())
}

/// alice (a customer) holding `balance` with the given credit limit and low-water mark,
/// and acme (a merchant) holding nothing.
fn ledger(balance: i64, credit_limit: i64, low_water: i64) -> MemoryLedger {
    let mut l = MemoryLedger::default();
    l.open(id("alice"), AccountKind::Customer, alice().public_key());
    l.open(id("acme"), AccountKind::Merchant, acme().public_key());
    let a = l.accounts.get_mut(&id("alice")).unwrap();
    a.balance_minor = balance;
    a.credit_limit_minor = credit_limit;
    a.low_water_minor = low_water;
    l.deposits_minor = balance;
    l
}

fn commit(balance_after: i64, low_balance: bool) -> Decision {
    Decision::Commit {
        customer: id("alice"),
        merchant: id("acme"),
        price: minor(100),
        customer_balance_minor: balance_after,
        low_balance,
    }
}

fn fail(code: ResultCode, balance: i64, low_balance: bool) -> Decision {
    Decision::Fail {
        code,
        customer_balance_minor: balance,
        low_balance,
    }
}

#[test]
fn an_epo_still_commits_at_its_expiry_instant() {
    let v = verified(epo(100, NOW + 1000), acme().public_key());
    assert_eq!(
        billing::decide(&v, &ledger(1000, 0, 0), NOW + 1000),
        commit(900, false)
    );
}

#[test]
fn an_epo_one_millisecond_past_its_expiry_is_expired() {
    let v = verified(epo(100, NOW + 1000), acme().public_key());
    assert_eq!(
        billing::decide(&v, &ledger(1000, 0, 0), NOW + 1001),
        fail(ResultCode::Expired, 1000, false)
    );
}

#[test]
fn a_debit_to_exactly_the_credit_limit_commits() {
    // 400 - 900 = -500 = -limit.
    let v = verified(epo(900, NOW + 1000), acme().public_key());
    let d = billing::decide(&v, &ledger(400, 500, 0), NOW);
    assert!(
        matches!(
            d,
            Decision::Commit {
                customer_balance_minor: -500,
                ..
            }
        ),
        "{d:?}"
    );
}

#[test]
fn a_debit_one_unit_past_the_credit_limit_is_insufficient_funds() {
    // 400 - 901 = -501 < -500.
    let v = verified(epo(901, NOW + 1000), acme().public_key());
    assert_eq!(
        billing::decide(&v, &ledger(400, 500, 0), NOW),
        fail(ResultCode::InsufficientFunds, 400, false)
    );
}

#[test]
fn a_debit_within_the_credit_limit_commits_into_the_negative() {
    // 0 - 300 = -300, within a limit of 500 (a limit read as +500 would refuse it).
    let v = verified(epo(300, NOW + 1000), acme().public_key());
    let d = billing::decide(&v, &ledger(0, 500, 0), NOW);
    assert!(
        matches!(
            d,
            Decision::Commit {
                customer_balance_minor: -300,
                ..
            }
        ),
        "{d:?}"
    );
}

#[test]
fn without_credit_a_debit_to_exactly_zero_commits_and_one_more_unit_does_not() {
    assert_eq!(
        billing::decide(&purchase(100), &ledger(100, 0, 0), NOW),
        commit(0, false)
    );
    assert_eq!(
        billing::decide(&purchase(100), &ledger(99, 0, 0), NOW),
        fail(ResultCode::InsufficientFunds, 99, false)
    );
}

#[test]
fn a_commit_leaving_one_unit_below_the_low_water_mark_is_low_balance() {
    assert_eq!(
        billing::decide(&purchase(100), &ledger(899, 0, 800), NOW),
        commit(799, true)
    );
}

#[test]
fn a_commit_leaving_exactly_the_low_water_mark_is_not_low_balance() {
    assert_eq!(
        billing::decide(&purchase(100), &ledger(900, 0, 800), NOW),
        commit(800, false)
    );
}

#[test]
fn a_commit_leaving_one_unit_above_the_low_water_mark_is_not_low_balance() {
    assert_eq!(
        billing::decide(&purchase(100), &ledger(901, 0, 800), NOW),
        commit(801, false)
    );
}

#[test]
fn a_failure_reports_low_balance_one_unit_below_the_low_water_mark() {
    assert_eq!(
        billing::decide(&purchase(100), &ledger(799, 0, 800), NOW + 1001),
        fail(ResultCode::Expired, 799, true)
    );
}

#[test]
fn a_failure_exactly_at_the_low_water_mark_is_not_low_balance() {
    assert_eq!(
        billing::decide(&purchase(100), &ledger(800, 0, 800), NOW + 1001),
        fail(ResultCode::Expired, 800, false)
    );
}

#[test]
fn a_failure_one_unit_above_the_low_water_mark_is_not_low_balance() {
    assert_eq!(
        billing::decide(&purchase(100), &ledger(801, 0, 800), NOW + 1001),
        fail(ResultCode::Expired, 801, false)
    );
}

#[test]
fn an_endorsement_under_another_key_than_the_merchant_accounts_is_unknown_account() {
    // acme is a merchant account, but the endorsement's key is not acme's.
    let v = verified(epo(100, NOW + 1000), other_key());
    assert_eq!(
        billing::decide(&v, &ledger(1000, 0, 0), NOW),
        fail(ResultCode::UnknownAccount, 1000, false)
    );
}

#[test]
fn a_customer_account_named_as_the_merchant_is_unknown_account() {
    // The key matches, but acme's account is a customer's.
    let mut l = ledger(1000, 0, 0);
    l.accounts.get_mut(&id("acme")).unwrap().kind = AccountKind::Customer;
    assert_eq!(
        billing::decide(&purchase(100), &l, NOW),
        fail(ResultCode::UnknownAccount, 1000, false)
    );
}

#[test]
fn a_merchant_account_named_as_the_customer_is_unknown_account() {
    // The key matches, but alice's account is a merchant's: it is not hers to pay from,
    // and its balance is not reported.
    let mut l = ledger(1000, 0, 0);
    l.accounts.get_mut(&id("alice")).unwrap().kind = AccountKind::Merchant;
    assert_eq!(
        billing::decide(&purchase(100), &l, NOW),
        fail(ResultCode::UnknownAccount, 0, false)
    );
}

#[test]
fn a_customer_account_under_another_key_is_unknown_account() {
    let mut l = ledger(1000, 0, 0);
    l.accounts.get_mut(&id("alice")).unwrap().key = other_key();
    assert_eq!(
        billing::decide(&purchase(100), &l, NOW),
        fail(ResultCode::UnknownAccount, 0, false)
    );
}

#[test]
fn a_revoked_merchant_key_alone_refuses() {
    let mut l = ledger(1000, 0, 0);
    l.accounts.get_mut(&id("acme")).unwrap().key_revoked = true;
    assert_eq!(
        billing::decide(&purchase(100), &l, NOW),
        fail(ResultCode::KeyRevoked, 1000, false)
    );
}

#[test]
fn a_frozen_customer_account_alone_refuses() {
    let mut l = ledger(1000, 0, 0);
    l.accounts.get_mut(&id("alice")).unwrap().frozen = true;
    assert_eq!(
        billing::decide(&purchase(100), &l, NOW),
        fail(ResultCode::AccountFrozen, 1000, false)
    );
}

// ---------------------------------------------------------------------------------------
// N: verify_endorsement's expiry limit (a stateless check made before any seal is opened)

/// An endorsement whose EPO expires `expires_after_delivery` ms after delivery, with seals
/// N cannot open: the expiry limit is checked before them.
fn endorsement_expiring(expires_after_delivery: u64) -> Signed<Endorsement> {
    let epo = Signed::sign(epo(100, NOW + expires_after_delivery), &alice());
    Signed::sign(
        Endorsement {
            epo,
            merchant_key: acme().public_key(),
            memo: String::new(),
            sealed_key: SealedKey::Pair {
                merchant_seal_key: SealKey([4; 32]),
                sealed: b"not a seal".to_vec(),
            },
            key_digest: Digest([0; 32]),
        },
        &acme(),
    )
}

#[test]
fn an_expiry_exactly_at_the_servers_limit_is_not_too_long() {
    let policy = BillingPolicy {
        expiry_max_ms: 5_000,
    };
    let r = billing::verify_endorsement(
        &C,
        &seal_secret("netbill"),
        &policy,
        endorsement_expiring(5_000),
    );
    assert!(
        !matches!(r, Err(EndorsementError::ExpiryTooLong)),
        "{:?}",
        r.err()
    );
}

#[test]
fn an_expiry_one_millisecond_past_the_servers_limit_is_too_long() {
    let policy = BillingPolicy {
        expiry_max_ms: 5_000,
    };
    let r = billing::verify_endorsement(
        &C,
        &seal_secret("netbill"),
        &policy,
        endorsement_expiring(5_001),
    );
    assert_eq!(r.err(), Some(EndorsementError::ExpiryTooLong));
}

#[test]
fn the_goods_key_seal_is_bound_to_its_epoid() {
    let e1 = epo(1, 0).epoid;
    let mut e2 = e1.clone();
    e2.serial += 1;
    assert_ne!(billing::sealed_key_info(&e1), billing::sealed_key_info(&e2));
    assert!(billing::sealed_key_info(&e1).starts_with(b"netbill/v1/goods-key-seal"));
}

// ---------------------------------------------------------------------------------------
// N: may_abort

#[test]
fn an_epoid_cannot_be_aborted_exactly_at_its_latest_expiry() {
    let epoid = epo(1, 0).epoid;
    let policy = BillingPolicy {
        expiry_max_ms: 5_000,
    };
    assert!(!billing::may_abort(&epoid, &policy, NOW + 5_000));
}

#[test]
fn an_epoid_may_be_aborted_one_millisecond_after_its_latest_expiry() {
    let epoid = epo(1, 0).epoid;
    let policy = BillingPolicy {
        expiry_max_ms: 5_000,
    };
    assert!(billing::may_abort(&epoid, &policy, NOW + 5_001));
}

// ---------------------------------------------------------------------------------------
// N: refunds

fn refund(id_: &str, amount: u64) -> RefundRequest {
    RefundRequest {
        refund_id: id_.into(),
        epoid: epo(1, 0).epoid,
        merchant: id("acme"),
        amount: minor(amount),
        reason: String::new(),
        time_ms: NOW,
    }
}

fn paid(price: u64, refunded: u64) -> RefundFacts {
    RefundFacts {
        result: ResultCode::Committed,
        merchant: id("acme"),
        customer: Some(id("alice")),
        price: minor(price),
        refunded: minor(refunded),
    }
}

#[test]
fn a_refund_id_of_exactly_the_maximum_length_is_accepted() {
    let longest = "a".repeat(REFUND_ID_LEN_MAX);
    assert_eq!(billing::check_refund_request(&refund(&longest, 1)), Ok(()));
    let longer = "a".repeat(REFUND_ID_LEN_MAX + 1);
    assert_eq!(
        billing::check_refund_request(&refund(&longer, 1)),
        Err(RefundError::BadRefundId)
    );
}

#[test]
fn a_refund_id_may_use_dot_underscore_and_dash() {
    assert_eq!(billing::check_refund_request(&refund("A-z_0.9", 1)), Ok(()));
    assert_eq!(
        billing::check_refund_request(&refund("a/b", 1)),
        Err(RefundError::BadRefundId)
    );
}

#[test]
fn a_refund_reaching_exactly_the_price_is_decided() {
    assert_eq!(
        billing::decide_refund(&refund("r", 30), Some(&paid(100, 70))),
        Ok((id("alice"), minor(100)))
    );
}

#[test]
fn a_refund_one_unit_past_the_price_is_over_limit() {
    assert_eq!(
        billing::decide_refund(&refund("r", 31), Some(&paid(100, 70))),
        Err(RefundError::OverLimit {
            epoid: epo(1, 0).epoid,
            price: minor(100),
            refunded: minor(70),
            asked: minor(31),
        })
    );
}

#[test]
fn an_aborted_purchase_cannot_be_refunded() {
    let facts = RefundFacts {
        result: ResultCode::Aborted,
        customer: None,
        ..paid(100, 0)
    };
    assert_eq!(
        billing::decide_refund(&refund("r", 1), Some(&facts)),
        Err(RefundError::NotCommitted(
            epo(1, 0).epoid,
            ResultCode::Aborted
        ))
    );
}

// ---------------------------------------------------------------------------------------
// N: the in-memory ledger

#[test]
fn a_deposit_credits_the_account_and_the_deposits_total() {
    let mut l = ledger(0, 0, 0);
    l.deposit(&id("alice"), minor(250));
    l.deposit(&id("alice"), minor(50));
    assert_eq!(l.accounts[&id("alice")].balance_minor, 300);
    assert_eq!(l.deposits_minor, 300);
    assert!(l.conserved());
    // A deposit to no account changes nothing.
    l.deposit(&id("nobody"), minor(5));
    assert_eq!(l.deposits_minor, 300);
}

#[test]
fn applying_a_commit_moves_exactly_the_price_and_records_the_outcome() {
    let mut l = ledger(1000, 0, 0);
    let v = purchase(100);
    let receipt = billing::make_abort_receipt(&netbill(), &v.epo().epoid, NOW);
    l.apply(&v, &commit(900, false), &receipt);
    assert_eq!(l.accounts[&id("alice")].balance_minor, 900);
    assert_eq!(l.accounts[&id("acme")].balance_minor, 100);
    assert!(l.conserved());
    let stored = &l.outcomes[&v.epo().epoid];
    assert_eq!(stored.endorsement_digest, Some(v.endorsement_digest));
    assert_eq!(stored.customer, Some(id("alice")));
}

#[test]
fn applying_a_failure_records_the_outcome_and_moves_nothing() {
    let mut l = ledger(1000, 0, 0);
    let before = l.accounts.clone();
    let v = purchase(100);
    let receipt = billing::make_abort_receipt(&netbill(), &v.epo().epoid, NOW);
    l.apply(&v, &fail(ResultCode::Expired, 1000, false), &receipt);
    assert_eq!(l.accounts, before);
    assert!(l.outcomes.contains_key(&v.epo().epoid));
}

#[test]
fn applying_a_conflict_or_a_settled_decision_records_nothing() {
    let mut l = ledger(1000, 0, 0);
    let v = purchase(100);
    let receipt = billing::make_abort_receipt(&netbill(), &v.epo().epoid, NOW);
    l.apply(&v, &Decision::Conflict, &receipt);
    l.apply(&v, &Decision::Settled(Box::new(receipt.clone())), &receipt);
    assert!(l.outcomes.is_empty());
    assert_eq!(l.accounts[&id("alice")].balance_minor, 1000);
}

#[test]
fn an_unbalanced_edit_of_a_balance_breaks_conservation() {
    let mut l = ledger(1000, 0, 0);
    assert!(l.conserved());
    l.accounts.get_mut(&id("acme")).unwrap().balance_minor += 1;
    assert!(!l.conserved());
}

#[test]
fn conservation_subtracts_payouts() {
    // Deposits 1000, payouts 300: the accounts hold 700 between them.
    let mut l = ledger(1000, 0, 0);
    l.payouts_minor = 300;
    l.accounts.get_mut(&id("alice")).unwrap().balance_minor = 700;
    assert!(l.conserved());
    l.accounts.get_mut(&id("alice")).unwrap().balance_minor = 1300;
    assert!(!l.conserved());
}

// ---------------------------------------------------------------------------------------
// Stable error codes (the suffix of each problem `type`, listed in docs/protocol.md)

#[test]
fn error_codes_are_the_documented_ones() {
    let epoid = epo(1, 0).epoid;
    assert_eq!(
        EndorsementError::BadMerchantSignature.code(),
        "bad-merchant-signature"
    );
    assert_eq!(EndorsementError::ExpiryTooLong.code(), "expiry-too-long");
    assert_eq!(EndorsementError::ZeroPrice.code(), "zero-price");
    assert_eq!(RefundError::BadRefundId.code(), "bad-refund-id");
    assert_eq!(
        RefundError::OverLimit {
            epoid: epoid.clone(),
            price: minor(1),
            refunded: minor(1),
            asked: minor(1),
        }
        .code(),
        "refund-over-limit"
    );
    assert_eq!(
        RefundError::NotCommitted(epoid, ResultCode::Aborted).code(),
        "not-committed"
    );
    assert_eq!(MerchantError::NotOurQuote.code(), "not-our-quote");
    assert_eq!(MerchantError::EpoExpired.code(), "epo-expired");
    assert_eq!(MerchantError::EpoMismatch("price").code(), "epo-mismatch");
}

// ---------------------------------------------------------------------------------------
// The merchant's and the customer's checks

/// The product: 2000 minor units, or 1000 for acm-student members.
fn offer() -> Offer {
    Offer {
        product: ProductCode::new("article-1").unwrap(),
        description: "an article".into(),
        price: minor(2000),
        group_prices: vec![(GroupName::new("acm-student").unwrap(), minor(1000))],
        goods_digest: C.digest(&[b"the article"]),
        goods_len: 11,
    }
}

fn request() -> PriceRequest {
    PriceRequest {
        identity: "alice".into(),
        customer_key: alice().public_key(),
        product: ProductCode::new("article-1").unwrap(),
        prd_hex: String::new(),
        bid: None,
        credentials: vec![],
    }
}

/// acme's quote at `NOW`, valid for 60 s; the acm authority is trusted for acm-student.
fn quote_for(req: &PriceRequest, offer: &Offer) -> Result<Signed<Quote>, MerchantError> {
    let authority = SymbolicSigner::new("acm").public_key();
    merchant::make_quote(
        &C,
        &acme(),
        &id("acme"),
        req,
        offer,
        &|g: &GroupName| (g.as_str() == "acm-student").then_some(authority),
        1,
        NOW,
        60_000,
    )
}

fn quote() -> Signed<Quote> {
    quote_for(&request(), &offer()).unwrap()
}

fn credential(expires_at_ms: u64) -> Signed<GroupCredential> {
    Signed::sign(
        GroupCredential {
            group: GroupName::new("acm-student").unwrap(),
            detail: String::new(),
            holder_key: alice().public_key(),
            expires_at_ms,
        },
        &SymbolicSigner::new("acm"),
    )
}

#[test]
fn an_identity_of_exactly_the_maximum_length_is_quoted() {
    let mut req = request();
    req.identity = "a".repeat(netbill_proto::messages::IDENTITY_LEN_MAX);
    assert!(quote_for(&req, &offer()).is_ok());
}

#[test]
fn an_identity_one_byte_over_the_maximum_is_refused() {
    let mut req = request();
    req.identity = "a".repeat(netbill_proto::messages::IDENTITY_LEN_MAX + 1);
    assert_eq!(
        quote_for(&req, &offer()).err(),
        Some(MerchantError::BadIdentity)
    );
}

#[test]
fn an_empty_identity_is_refused() {
    let mut req = request();
    req.identity = String::new();
    assert_eq!(
        quote_for(&req, &offer()).err(),
        Some(MerchantError::BadIdentity)
    );
}

#[test]
fn product_request_data_of_exactly_the_maximum_length_is_quoted() {
    let mut req = request();
    req.prd_hex = "ab".repeat(netbill_proto::messages::PRD_LEN_MAX);
    assert!(quote_for(&req, &offer()).is_ok());
}

#[test]
fn product_request_data_one_byte_over_the_maximum_is_refused() {
    let mut req = request();
    req.prd_hex = "ab".repeat(netbill_proto::messages::PRD_LEN_MAX + 1);
    assert_eq!(
        quote_for(&req, &offer()).err(),
        Some(MerchantError::BadProductRequestData)
    );
}

#[test]
fn a_credential_is_honoured_at_its_expiry_instant() {
    let mut req = request();
    req.credentials = vec![credential(NOW)];
    let q = quote_for(&req, &offer()).unwrap();
    assert_eq!(q.body_unverified().price, minor(1000));
}

#[test]
fn a_credential_one_millisecond_past_its_expiry_is_refused() {
    let mut req = request();
    req.credentials = vec![credential(NOW - 1)];
    assert!(matches!(
        quote_for(&req, &offer()),
        Err(MerchantError::CredentialNotForYou(_))
    ));
}

#[test]
fn a_group_price_equal_to_the_price_names_no_group() {
    let mut o = offer();
    o.group_prices = vec![(GroupName::new("acm-student").unwrap(), minor(2000))];
    let mut req = request();
    req.credentials = vec![credential(NOW + 1)];
    let q = quote_for(&req, &o).unwrap();
    assert_eq!(q.body_unverified().price, minor(2000));
    assert_eq!(q.body_unverified().group, None);
}

#[test]
fn a_bid_of_exactly_the_price_is_quoted() {
    let mut req = request();
    req.bid = Some(minor(2000));
    assert_eq!(
        quote_for(&req, &offer()).unwrap().body_unverified().price,
        minor(2000)
    );
}

#[test]
fn a_bid_above_the_price_is_quoted_at_the_price() {
    let mut req = request();
    req.bid = Some(minor(2001));
    assert_eq!(
        quote_for(&req, &offer()).unwrap().body_unverified().price,
        minor(2000)
    );
}

#[test]
fn a_bid_one_unit_below_the_price_is_refused() {
    let mut req = request();
    req.bid = Some(minor(1999));
    assert_eq!(
        quote_for(&req, &offer()).err(),
        Some(MerchantError::BidTooLow {
            bid: minor(1999),
            price: minor(2000)
        })
    );
}

#[test]
fn the_merchant_accepts_a_goods_request_at_the_quotes_expiry_instant() {
    let q = quote();
    assert!(merchant::check_goods_request(&C, &acme().public_key(), &q, NOW + 60_000).is_ok());
}

#[test]
fn the_merchant_refuses_a_goods_request_one_millisecond_past_the_quotes_expiry() {
    let q = quote();
    assert_eq!(
        merchant::check_goods_request(&C, &acme().public_key(), &q, NOW + 60_001).err(),
        Some(MerchantError::QuoteExpired)
    );
}

fn expect<'a>(
    merchant_key: &'a PublicKey,
    customer_key: &'a PublicKey,
    product: &'a ProductCode,
    max_price: Option<Amount>,
) -> QuoteExpectation<'a> {
    QuoteExpectation {
        merchant_key,
        customer_key,
        product,
        max_price,
    }
}

fn check_quote(max_price: Option<Amount>, now_ms: u64) -> Result<Quote, CustomerError> {
    let q = quote();
    let (m, c) = (acme().public_key(), alice().public_key());
    let p = ProductCode::new("article-1").unwrap();
    customer::check_quote(&C, &q, &expect(&m, &c, &p, max_price), now_ms).cloned()
}

#[test]
fn the_customer_accepts_a_price_of_exactly_her_limit() {
    assert!(check_quote(Some(minor(2000)), NOW).is_ok());
}

#[test]
fn the_customer_refuses_a_price_one_unit_over_her_limit() {
    assert_eq!(
        check_quote(Some(minor(1999)), NOW).err(),
        Some(CustomerError::PriceOverLimit {
            price: minor(2000),
            limit: minor(1999)
        })
    );
}

#[test]
fn the_customer_accepts_a_quote_at_its_expiry_instant() {
    assert!(check_quote(None, NOW + 60_000).is_ok());
}

#[test]
fn the_customer_refuses_a_quote_one_millisecond_past_its_expiry() {
    assert_eq!(
        check_quote(None, NOW + 60_001).err(),
        Some(CustomerError::QuoteExpired)
    );
}

/// A delivery stamped at `NOW` whose EPO may commit until `NOW + 1000`.
fn delivery() -> (CustomerPurchase, MerchantPurchase, DeliveryNote) {
    let q = quote();
    let goods = GoodsOffer {
        purchase: "p1".into(),
        checksum: C.digest(&[b"ciphertext"]),
        ciphertext_len: 10,
    };
    let mut m = MerchantPurchase::new(q.clone(), GoodsKey([7; 32]), goods.clone());
    let note = m.deliver(1, NOW, 1000);
    let c = CustomerPurchase::new(q, goods, seal_secret("reply"));
    (c, m, note)
}

fn receive(c: &mut CustomerPurchase, note: DeliveryNote, now_ms: u64) -> Result<(), CustomerError> {
    c.delivered(C.digest(&[b"ciphertext"]), 10, note, now_ms)
}

fn sign_epo(c: &mut CustomerPurchase, now_ms: u64) -> Result<Signed<Epo>, CustomerError> {
    c.sign_epo(
        &C,
        &alice(),
        &C.seal_key(&seal_secret("netbill")),
        &id("alice"),
        [1; 16],
        "",
        now_ms,
        [0; 32],
    )
}

fn endorse(
    m: &mut MerchantPurchase,
    epo: Signed<Epo>,
    now_ms: u64,
) -> Result<Signed<Endorsement>, MerchantError> {
    m.endorse(
        &C,
        &acme(),
        &seal_secret("acme"),
        &C.seal_key(&seal_secret("netbill")),
        epo,
        "",
        now_ms,
    )
}

#[test]
fn the_merchant_knows_the_epoid_once_it_is_stamped() {
    let q = quote();
    let goods = GoodsOffer {
        purchase: "p1".into(),
        checksum: C.digest(&[b"ciphertext"]),
        ciphertext_len: 10,
    };
    let mut m = MerchantPurchase::new(q, GoodsKey([7; 32]), goods);
    assert_eq!(m.epoid(), None);
    let note = m.deliver(1, NOW, 1000);
    assert_eq!(m.epoid(), Some(&note.epoid));
}

#[test]
fn the_customer_takes_a_delivery_at_its_expiry_instant() {
    let (mut c, _, note) = delivery();
    assert_eq!(receive(&mut c, note, NOW + 1000), Ok(()));
}

#[test]
fn the_customer_refuses_a_delivery_one_millisecond_past_its_expiry() {
    let (mut c, _, note) = delivery();
    assert_eq!(
        receive(&mut c, note, NOW + 1001),
        Err(CustomerError::Expired)
    );
}

#[test]
fn the_customer_signs_an_epo_at_its_expiry_instant() {
    let (mut c, _, note) = delivery();
    receive(&mut c, note, NOW).unwrap();
    assert!(sign_epo(&mut c, NOW + 1000).is_ok());
}

#[test]
fn the_customer_refuses_to_sign_an_epo_one_millisecond_past_its_expiry() {
    let (mut c, _, note) = delivery();
    receive(&mut c, note, NOW).unwrap();
    assert_eq!(
        sign_epo(&mut c, NOW + 1001).err(),
        Some(CustomerError::Expired)
    );
    assert_eq!(c.state(), CustomerState::Delivered);
}

#[test]
fn the_customer_may_abort_before_delivery_and_again_after_aborting() {
    let (mut c, _, _) = delivery();
    assert_eq!(c.abort(), Ok(()));
    assert_eq!(c.state(), CustomerState::Aborted);
    assert_eq!(c.abort(), Ok(()));
}

#[test]
fn the_customer_may_abort_after_delivery_before_signing() {
    let (mut c, _, note) = delivery();
    receive(&mut c, note, NOW).unwrap();
    assert_eq!(c.abort(), Ok(()));
    assert_eq!(c.state(), CustomerState::Aborted);
}

#[test]
fn the_merchant_endorses_an_epo_at_its_expiry_instant() {
    let (mut c, mut m, note) = delivery();
    receive(&mut c, note, NOW).unwrap();
    let epo = sign_epo(&mut c, NOW).unwrap();
    assert!(endorse(&mut m, epo, NOW + 1000).is_ok());
}

#[test]
fn the_merchant_refuses_an_epo_one_millisecond_past_its_expiry() {
    let (mut c, mut m, note) = delivery();
    receive(&mut c, note, NOW).unwrap();
    let epo = sign_epo(&mut c, NOW).unwrap();
    assert_eq!(
        endorse(&mut m, epo, NOW + 1001).err(),
        Some(MerchantError::EpoExpired)
    );
}

#[test]
fn the_merchant_refuses_an_epo_with_the_right_epoid_but_another_expiry() {
    let (mut c, mut m, note) = delivery();
    receive(&mut c, note, NOW).unwrap();
    let mut body = sign_epo(&mut c, NOW).unwrap().body_unverified().clone();
    body.expires_at_ms += 1;
    let longer = Signed::sign(body, &alice());
    assert_eq!(
        endorse(&mut m, longer, NOW).err(),
        Some(MerchantError::EpoMismatch("EPOID"))
    );
}

/// A purchase the merchant has endorsed, with its EPO and endorsement.
fn endorsed() -> (MerchantPurchase, Signed<Epo>, Signed<Endorsement>) {
    let (mut c, mut m, note) = delivery();
    receive(&mut c, note, NOW).unwrap();
    let epo = sign_epo(&mut c, NOW).unwrap();
    let e = endorse(&mut m, epo.clone(), NOW).unwrap();
    (m, epo, e)
}

/// N's receipt for `epo` with the given result and digests.
fn receipt(
    result: ResultCode,
    epo: &Signed<Epo>,
    epo_digest: Digest,
    key_digest: Digest,
) -> Signed<Receipt> {
    let b = epo.body_unverified();
    Signed::sign(
        Receipt {
            result,
            epoid: b.epoid.clone(),
            identity: b.identity.clone(),
            merchant: b.merchant.clone(),
            description: b.description.clone(),
            price: b.price,
            epo_digest,
            key_digest,
            customer_part: Vec::new(),
            time_ms: NOW,
        },
        &netbill(),
    )
}

#[test]
fn the_merchant_refuses_a_committed_receipt_for_another_epo_with_the_same_epoid() {
    let (mut m, epo, e) = endorsed();
    let key_digest = e.body_unverified().key_digest;
    let r = receipt(ResultCode::Committed, &epo, Digest([9; 32]), key_digest);
    assert_eq!(
        m.settle(&C, &netbill().public_key(), r),
        Err(MerchantError::ReceiptMismatch("EPO"))
    );
}

#[test]
fn the_merchant_refuses_a_committed_receipt_for_another_goods_key() {
    let (mut m, epo, _) = endorsed();
    let r = receipt(ResultCode::Committed, &epo, epo.digest(&C), Digest([9; 32]));
    assert_eq!(
        m.settle(&C, &netbill().public_key(), r),
        Err(MerchantError::ReceiptMismatch("goods key"))
    );
}

#[test]
fn the_merchant_takes_a_failure_receipt_that_commits_to_no_goods_key() {
    let (mut m, epo, _) = endorsed();
    let r = receipt(
        ResultCode::InsufficientFunds,
        &epo,
        epo.digest(&C),
        Digest([0; 32]),
    );
    assert_eq!(
        m.settle(&C, &netbill().public_key(), r),
        Ok(ResultCode::InsufficientFunds)
    );
}

// ---------------------------------------------------------------------------------------
// N: decide_batch (all of a batch decided before any receipt is signed)

/// A purchase at `price` with EPOID serial `serial`; `memo` tells endorsements apart.
fn purchase_serial(price: u64, serial: u64, memo: &str) -> VerifiedPurchase {
    let mut e = epo(price, NOW + 1000);
    e.epoid.serial = serial;
    let mut v = verified(e, acme().public_key());
    let mut body = v.endorsement.body_unverified().clone();
    body.memo = memo.into();
    v.endorsement = Signed::sign(body, &acme());
    v.endorsement_digest = v.endorsement.digest(&C);
    v
}

#[test]
fn decide_batch_is_deciding_one_by_one_and_applying_each() {
    let settled = purchase_serial(10, 99, "");
    let mut base = ledger(250, 0, 0);
    base.apply(
        &settled,
        &commit(150, false),
        &billing::make_abort_receipt(&netbill(), &settled.epo().epoid, NOW),
    );
    let batch = [
        purchase_serial(100, 1, ""),   // commits: 150 → 50
        purchase_serial(40, 2, ""),    // commits on the balance the first left: 50 → 10
        purchase_serial(20, 3, ""),    // 10 left: insufficient funds
        purchase_serial(100, 1, ""),   // the first again: its receipt
        purchase_serial(40, 2, "new"), // another endorsement of 2's EPOID: conflict
        purchase_serial(20, 3, ""),    // the failure again: its receipt
        settled.clone(),               // decided in an earlier batch: the stored receipt
        purchase_serial(5, 4, ""),     // still fits: 10 → 5
    ];
    let refs: Vec<&VerifiedPurchase> = batch.iter().collect();
    let got = billing::decide_batch(&refs, &base, NOW);

    // The reference: decide, then apply with a receipt naming the purchase, one by one.
    let mut seq = base.clone();
    let mut receipts = Vec::new();
    for v in &batch {
        let d = billing::decide(v, &seq, NOW);
        let r =
            billing::make_abort_receipt(&netbill(), &v.epo().epoid, NOW + receipts.len() as u64);
        seq.apply(v, &d, &r);
        receipts.push(r);
    }
    use billing::BatchDecision::{Decided, SameAs};
    let expected = [
        Decided(Decision::Commit {
            customer: id("alice"),
            merchant: id("acme"),
            price: minor(100),
            customer_balance_minor: 50,
            low_balance: false,
        }),
        Decided(Decision::Commit {
            customer: id("alice"),
            merchant: id("acme"),
            price: minor(40),
            customer_balance_minor: 10,
            low_balance: false,
        }),
        Decided(fail(ResultCode::InsufficientFunds, 10, false)),
        SameAs(0),
        Decided(Decision::Conflict),
        SameAs(2),
        Decided(Decision::Settled(Box::new(
            base.outcomes[&settled.epo().epoid].receipt.clone(),
        ))),
        Decided(Decision::Commit {
            customer: id("alice"),
            merchant: id("acme"),
            price: minor(5),
            customer_balance_minor: 5,
            low_balance: false,
        }),
    ];
    assert_eq!(got, expected);
    // And one by one agrees wherever the batch decided afresh.
    for (i, v) in batch.iter().enumerate() {
        let one_by_one = billing::decide(v, &seq, NOW);
        match &got[i] {
            SameAs(first) => assert_eq!(
                one_by_one,
                Decision::Settled(Box::new(receipts[*first].clone()))
            ),
            Decided(Decision::Conflict) => assert_eq!(one_by_one, Decision::Conflict),
            Decided(_) => {}
        }
    }
    assert_eq!(seq.accounts[&id("alice")].balance_minor, 5);
    // Deciding changed nothing in the ledger it read.
    assert_eq!(base.accounts[&id("alice")].balance_minor, 150);
}

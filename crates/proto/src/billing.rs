//! The billing server's (N's) decision logic.
//!
//! Two phases, so that the expensive, stateless part runs in parallel off the write path:
//! 1. [`verify_endorsement`]: signatures, seals and internal consistency, using only the
//!    message and N's keys.
//! 2. [`decide`]: against a consistent view of the ledger inside the write transaction:
//!    one outcome per EPOID, expiry, keys, account status, funds.
//!
//! The caller applies the [`Decision`] in one atomic transaction, stores the receipt made
//! by [`make_receipt`] with it, and releases the receipt only once that is durable. A
//! server that decides many purchases per transaction uses [`decide_batch`] instead, makes
//! the receipts' bodies with [`receipt_body`] and signs them all at once
//! ([`Signed::sign_batch`]) before the write.

use thiserror::Error;

use crate::codec::Codec;
use crate::crypto::{Crypto, Digest, GoodsKey, PublicKey, SealSecret, Signer, goods_key_digest};
use crate::ids::{AccountId, EpoId};
use crate::messages::{
    CustomerPart, Endorsement, Epo, EpoSecret, Receipt, RefundReceipt, RefundRequest, ResultCode,
};
use crate::money::Amount;
use crate::sealing;
use crate::signed::Signed;

/// Time limits N enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BillingPolicy {
    /// Longest an EPO may stay committable after the end of delivery. An EPOID with no
    /// outcome this long after its timestamp is aborted for good.
    pub expiry_max_ms: u64,
}

impl Default for BillingPolicy {
    fn default() -> Self {
        Self {
            expiry_max_ms: 60 * 60 * 1000,
        }
    }
}

/// Why N refuses to even consider an endorsement (no receipt; nothing recorded).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EndorsementError {
    #[error("the merchant's signature on the endorsement does not verify")]
    BadMerchantSignature,
    #[error("the customer's signature on the EPO does not verify")]
    BadCustomerSignature,
    #[error("the sealed goods key cannot be opened by this billing server")]
    SealedKeyUnreadable,
    #[error("the goods key does not match the endorsement's key digest")]
    KeyDigestMismatch,
    #[error("the EPO's sealed part cannot be opened by this billing server")]
    EpoSecretUnreadable,
    #[error("the EPO's account commitment does not match its sealed account")]
    AccountCommitmentMismatch,
    #[error("the EPOID names merchant {epoid_merchant} but the EPO names {epo_merchant}")]
    MerchantMismatch {
        epoid_merchant: AccountId,
        epo_merchant: AccountId,
    },
    #[error("the EPO's expiry is further than the server's limit after delivery")]
    ExpiryTooLong,
    #[error("the EPO has a zero price; zero-priced goods do not need a billing server")]
    ZeroPrice,
}

impl EndorsementError {
    /// A stable machine-readable code (the suffix of the problem `type`).
    pub fn code(&self) -> &'static str {
        match self {
            EndorsementError::BadMerchantSignature => "bad-merchant-signature",
            EndorsementError::BadCustomerSignature => "bad-customer-signature",
            EndorsementError::SealedKeyUnreadable => "sealed-key-unreadable",
            EndorsementError::KeyDigestMismatch => "key-digest-mismatch",
            EndorsementError::EpoSecretUnreadable => "epo-secret-unreadable",
            EndorsementError::AccountCommitmentMismatch => "account-commitment-mismatch",
            EndorsementError::MerchantMismatch { .. } => "merchant-mismatch",
            EndorsementError::ExpiryTooLong => "expiry-too-long",
            EndorsementError::ZeroPrice => "zero-price",
        }
    }
}

/// An endorsement whose signatures and seals checked out, with what N opened from it.
#[derive(Clone, Debug)]
pub struct VerifiedPurchase {
    pub endorsement: Signed<Endorsement>,
    pub endorsement_digest: Digest,
    pub epo_digest: Digest,
    pub secret: EpoSecret,
    pub goods_key: GoodsKey,
}

impl VerifiedPurchase {
    pub fn epo(&self) -> &Epo {
        self.endorsement.body_unverified().epo.body_unverified()
    }
    pub fn merchant_key(&self) -> &PublicKey {
        &self.endorsement.body_unverified().merchant_key
    }
}

/// The account commitment in an EPO: `SHA-256("netbill/v1/account" || account || nonce)`.
pub fn account_commitment(crypto: &dyn Crypto, account: &AccountId, nonce: &[u8; 16]) -> Digest {
    crypto.digest(&[b"netbill/v1/account", &account.to_bytes(), nonce])
}

/// v1: the HPKE `info` under which the merchant sealed K to N: bound to the EPOID.
pub fn sealed_key_info(epoid: &EpoId) -> Vec<u8> {
    let mut info = b"netbill/v1/goods-key-seal".to_vec();
    info.extend_from_slice(&epoid.to_bytes());
    info
}

/// Phase 1: everything that needs no ledger. Safe to run in parallel.
pub fn verify_endorsement(
    crypto: &dyn Crypto,
    billing_secret: &SealSecret,
    policy: &BillingPolicy,
    endorsement: Signed<Endorsement>,
) -> Result<VerifiedPurchase, EndorsementError> {
    let e = endorsement.body_unverified();
    let merchant_key = e.merchant_key;
    endorsement
        .verify(crypto, &merchant_key)
        .map_err(|_| EndorsementError::BadMerchantSignature)?;
    let epo = e
        .epo
        .verify(crypto, &e.epo.body_unverified().customer_key)
        .map_err(|_| EndorsementError::BadCustomerSignature)?;
    if epo.epoid.merchant != epo.merchant {
        return Err(EndorsementError::MerchantMismatch {
            epoid_merchant: epo.epoid.merchant.clone(),
            epo_merchant: epo.merchant.clone(),
        });
    }
    if epo.price.is_zero() {
        return Err(EndorsementError::ZeroPrice);
    }
    if epo.expires_at_ms
        > epo
            .epoid
            .delivered_at_ms
            .saturating_add(policy.expiry_max_ms)
    {
        return Err(EndorsementError::ExpiryTooLong);
    }
    let goods_key = sealing::open_goods_key(crypto, billing_secret, e)
        .ok_or(EndorsementError::SealedKeyUnreadable)?;
    if goods_key_digest(crypto, &goods_key) != e.key_digest {
        return Err(EndorsementError::KeyDigestMismatch);
    }
    let secret = sealing::open_epo_secret(crypto, billing_secret, epo)
        .ok_or(EndorsementError::EpoSecretUnreadable)?;
    if account_commitment(crypto, &secret.account, &secret.account_nonce) != epo.account_commitment
    {
        return Err(EndorsementError::AccountCommitmentMismatch);
    }
    Ok(VerifiedPurchase {
        endorsement_digest: endorsement.digest(crypto),
        epo_digest: e.epo.digest(crypto),
        endorsement,
        secret,
        goods_key,
    })
}

/// Whether an account belongs to a customer or a merchant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Customer,
    Merchant,
}

/// What N needs to know about an account to decide.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountView {
    pub kind: AccountKind,
    pub key: PublicKey,
    pub key_revoked: bool,
    pub frozen: bool,
    pub balance_minor: i64,
    pub credit_limit_minor: i64,
    pub low_water_minor: i64,
}

/// An EPOID's recorded outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoredOutcome {
    /// The customer's true account, as N opened it from the EPO (`None` for an abort).
    pub customer: Option<AccountId>,
    /// Digest of the endorsement decided on; `None` for an abort with no endorsement.
    pub endorsement_digest: Option<Digest>,
    pub receipt: Signed<Receipt>,
}

/// A consistent view of the ledger, as of inside the write transaction.
pub trait LedgerView {
    fn account(&self, id: &AccountId) -> Option<AccountView>;
    fn outcome(&self, epoid: &EpoId) -> Option<StoredOutcome>;
}

/// What to do with a verified endorsement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The EPOID already has an outcome for this very endorsement (or was aborted): answer
    /// with the stored receipt, change nothing.
    Settled(Box<Signed<Receipt>>),
    /// The EPOID already has an outcome for a *different* endorsement: refuse.
    Conflict,
    /// Move `price` from `customer` to `merchant`.
    Commit {
        customer: AccountId,
        merchant: AccountId,
        price: Amount,
        /// The customer's balance after the debit.
        customer_balance_minor: i64,
        low_balance: bool,
    },
    /// Record a failed outcome; no money moves.
    Fail {
        code: ResultCode,
        /// The customer's unchanged balance, if the account exists and is hers.
        customer_balance_minor: i64,
        low_balance: bool,
    },
}

/// Phase 2: decide against the ledger. Pure: the caller applies the decision.
pub fn decide(v: &VerifiedPurchase, ledger: &dyn LedgerView, now_ms: u64) -> Decision {
    let epo = v.epo();
    if let Some(done) = ledger.outcome(&epo.epoid) {
        return match done.endorsement_digest {
            Some(d) if d != v.endorsement_digest => Decision::Conflict,
            _ => Decision::Settled(Box::new(done.receipt)),
        };
    }
    let customer = ledger
        .account(&v.secret.account)
        .filter(|a| a.kind == AccountKind::Customer && a.key == epo.customer_key);
    let (balance, low_water) = customer
        .as_ref()
        .map_or((0, 0), |c| (c.balance_minor, c.low_water_minor));
    let fail = |code| Decision::Fail {
        code,
        customer_balance_minor: balance,
        low_balance: balance < low_water,
    };
    if now_ms > epo.expires_at_ms {
        return fail(ResultCode::Expired);
    }
    let merchant = ledger
        .account(&epo.merchant)
        .filter(|a| a.kind == AccountKind::Merchant && a.key == *v.merchant_key());
    let (Some(customer), Some(merchant)) = (customer, merchant) else {
        return fail(ResultCode::UnknownAccount);
    };
    if customer.key_revoked || merchant.key_revoked {
        return fail(ResultCode::KeyRevoked);
    }
    if customer.frozen || merchant.frozen {
        return fail(ResultCode::AccountFrozen);
    }
    let after = customer.balance_minor - epo.price.signed();
    if after < -customer.credit_limit_minor {
        return fail(ResultCode::InsufficientFunds);
    }
    Decision::Commit {
        customer: v.secret.account.clone(),
        merchant: epo.merchant.clone(),
        price: epo.price,
        customer_balance_minor: after,
        low_balance: after < customer.low_water_minor,
    }
}

/// Makes N's signed receipt for a decided purchase. `balance_minor` and `low_balance` are
/// the customer's after the outcome; `entropy` seeds the seal to the customer.
#[allow(clippy::too_many_arguments)]
pub fn make_receipt(
    crypto: &dyn Crypto,
    signer: &dyn Signer,
    billing_secret: &SealSecret,
    v: &VerifiedPurchase,
    result: ResultCode,
    balance_minor: i64,
    low_balance: bool,
    now_ms: u64,
    entropy: [u8; 32],
) -> Signed<Receipt> {
    Signed::sign(
        receipt_body(
            crypto,
            billing_secret,
            v,
            result,
            balance_minor,
            low_balance,
            now_ms,
            entropy,
        ),
        signer,
    )
}

/// The body of N's receipt for a decided purchase, to be signed (alone or in a batch).
/// Arguments as for [`make_receipt`].
#[allow(clippy::too_many_arguments)]
pub fn receipt_body(
    crypto: &dyn Crypto,
    billing_secret: &SealSecret,
    v: &VerifiedPurchase,
    result: ResultCode,
    balance_minor: i64,
    low_balance: bool,
    now_ms: u64,
    entropy: [u8; 32],
) -> Receipt {
    let epo = v.epo();
    let committed = result == ResultCode::Committed;
    let part = CustomerPart {
        epoid: epo.epoid.clone(),
        account: v.secret.account.clone(),
        balance_minor,
        low_balance,
        goods_key: committed.then_some(v.goods_key.0),
    };
    let customer_part = sealing::seal_customer_part(crypto, billing_secret, epo, &part, entropy);
    Receipt {
        result,
        epoid: epo.epoid.clone(),
        identity: epo.identity.clone(),
        merchant: epo.merchant.clone(),
        description: epo.description.clone(),
        price: epo.price,
        epo_digest: v.epo_digest,
        key_digest: if committed {
            v.endorsement.body_unverified().key_digest
        } else {
            Digest([0; 32])
        },
        customer_part,
        time_ms: now_ms,
    }
}

/// How one purchase of a batch decided together ([`decide_batch`]) is to be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchDecision {
    /// As [`decide`] says, against the ledger and the batch's earlier purchases.
    Decided(Decision),
    /// The same endorsement as the batch's purchase at this index (which was decided with
    /// a new outcome): the same receipt.
    SameAs(usize),
}

/// [`decide`] for each purchase of `batch`, in order, as if each earlier one's decision had
/// already been applied to `ledger`, before any receipt exists: so that N can sign all the
/// batch's receipts at once, and only then write them.
pub fn decide_batch(
    batch: &[&VerifiedPurchase],
    ledger: &dyn LedgerView,
    now_ms: u64,
) -> Vec<BatchDecision> {
    let mut view = BatchView {
        base: ledger,
        deltas: std::collections::HashMap::new(),
    };
    let mut decided: std::collections::HashMap<&EpoId, (usize, Digest)> =
        std::collections::HashMap::new();
    let mut out = Vec::with_capacity(batch.len());
    for (i, v) in batch.iter().enumerate() {
        let epoid = &v.epo().epoid;
        if let Some(&(first, digest)) = decided.get(epoid) {
            out.push(if digest == v.endorsement_digest {
                BatchDecision::SameAs(first)
            } else {
                BatchDecision::Decided(Decision::Conflict)
            });
            continue;
        }
        let d = decide(v, &view, now_ms);
        match &d {
            Decision::Commit {
                customer,
                merchant,
                price,
                ..
            } => {
                *view.deltas.entry(customer.clone()).or_default() -= price.signed();
                *view.deltas.entry(merchant.clone()).or_default() += price.signed();
                decided.insert(epoid, (i, v.endorsement_digest));
            }
            Decision::Fail { .. } => {
                decided.insert(epoid, (i, v.endorsement_digest));
            }
            Decision::Settled(_) | Decision::Conflict => {}
        }
        out.push(BatchDecision::Decided(d));
    }
    out
}

/// A ledger as seen with a batch's earlier commits applied to its balances.
struct BatchView<'a> {
    base: &'a dyn LedgerView,
    deltas: std::collections::HashMap<AccountId, i64>,
}

impl LedgerView for BatchView<'_> {
    fn account(&self, id: &AccountId) -> Option<AccountView> {
        let mut a = self.base.account(id)?;
        a.balance_minor += self.deltas.get(id).copied().unwrap_or(0);
        Some(a)
    }
    fn outcome(&self, epoid: &EpoId) -> Option<StoredOutcome> {
        self.base.outcome(epoid)
    }
}

/// May N record an abort for `epoid` (which has no outcome) at `now_ms`? Only once no EPO
/// for it can still be valid: its timestamp plus the longest allowed expiry has passed.
pub fn may_abort(epoid: &EpoId, policy: &BillingPolicy, now_ms: u64) -> bool {
    now_ms > epoid.delivered_at_ms.saturating_add(policy.expiry_max_ms)
}

/// N's signed record that `epoid` expired with no endorsement: it can never commit.
pub fn make_abort_receipt(signer: &dyn Signer, epoid: &EpoId, now_ms: u64) -> Signed<Receipt> {
    Signed::sign(
        Receipt {
            result: ResultCode::Aborted,
            epoid: epoid.clone(),
            identity: String::new(),
            merchant: epoid.merchant.clone(),
            description: String::new(),
            price: Amount::ZERO,
            epo_digest: Digest([0; 32]),
            key_digest: Digest([0; 32]),
            customer_part: Vec::new(),
            time_ms: now_ms,
        },
        signer,
    )
}

/// Why N refuses a refund. A refused refund changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RefundError {
    #[error("the refund is not signed by the key of merchant {0}")]
    BadSignature(AccountId),
    #[error("the refund id must be 1 to {max} characters of A-Z a-z 0-9 . _ -", max = crate::messages::REFUND_ID_LEN_MAX)]
    BadRefundId,
    #[error("no purchase {0} is recorded")]
    NoSuchPurchase(EpoId),
    #[error("purchase {0} did not commit ({1:?}): nothing was paid, so nothing can be refunded")]
    NotCommitted(EpoId, ResultCode),
    #[error("purchase {epoid} was paid to {paid_to}, not to {asked_by}")]
    WrongMerchant {
        epoid: EpoId,
        paid_to: AccountId,
        asked_by: AccountId,
    },
    #[error("a refund must be of more than zero")]
    ZeroAmount,
    #[error(
        "refusing to refund {asked}: purchase {epoid} paid {price} and {refunded} is already refunded"
    )]
    OverLimit {
        epoid: EpoId,
        price: Amount,
        refunded: Amount,
        asked: Amount,
    },
    #[error("refund id {0:?} was already used for a different refund")]
    IdConflict(String),
    #[error(
        "merchant {merchant} holds {balance}: a refund of {amount} would take it past its credit limit"
    )]
    MerchantFunds {
        merchant: AccountId,
        balance: String,
        amount: Amount,
    },
}

impl RefundError {
    /// A stable machine-readable code (the suffix of the problem `type`).
    pub fn code(&self) -> &'static str {
        match self {
            RefundError::BadSignature(_) => "bad-refund-signature",
            RefundError::BadRefundId => "bad-refund-id",
            RefundError::NoSuchPurchase(_) => "no-such-purchase",
            RefundError::NotCommitted(..) => "not-committed",
            RefundError::WrongMerchant { .. } => "wrong-merchant",
            RefundError::ZeroAmount => "zero-refund",
            RefundError::OverLimit { .. } => "refund-over-limit",
            RefundError::IdConflict(_) => "refund-id-conflict",
            RefundError::MerchantFunds { .. } => "merchant-funds",
        }
    }
}

/// What the ledger holds about the purchase a refund names, read inside the refund's
/// transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundFacts {
    pub result: ResultCode,
    pub merchant: AccountId,
    /// The customer's account (`None` for an abort).
    pub customer: Option<AccountId>,
    pub price: Amount,
    /// What earlier refunds of this purchase returned.
    pub refunded: Amount,
}

/// Checks a refund request's own fields (before any ledger work).
pub fn check_refund_request(req: &RefundRequest) -> Result<(), RefundError> {
    let id_ok = !req.refund_id.is_empty()
        && req.refund_id.len() <= crate::messages::REFUND_ID_LEN_MAX
        && req
            .refund_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !id_ok {
        return Err(RefundError::BadRefundId);
    }
    if req.amount.is_zero() {
        return Err(RefundError::ZeroAmount);
    }
    Ok(())
}

/// Decides a (new) refund against the purchase it names: returns the customer to credit
/// and the purchase's refunded total after it. Refunds of one purchase never exceed what
/// it paid.
pub fn decide_refund(
    req: &RefundRequest,
    facts: Option<&RefundFacts>,
) -> Result<(AccountId, Amount), RefundError> {
    check_refund_request(req)?;
    let f = facts.ok_or_else(|| RefundError::NoSuchPurchase(req.epoid.clone()))?;
    let customer = match (&f.customer, f.result) {
        (Some(c), ResultCode::Committed) => c.clone(),
        _ => return Err(RefundError::NotCommitted(req.epoid.clone(), f.result)),
    };
    if f.merchant != req.merchant {
        return Err(RefundError::WrongMerchant {
            epoid: req.epoid.clone(),
            paid_to: f.merchant.clone(),
            asked_by: req.merchant.clone(),
        });
    }
    let total = f
        .refunded
        .checked_add(req.amount)
        .filter(|t| *t <= f.price)
        .ok_or_else(|| RefundError::OverLimit {
            epoid: req.epoid.clone(),
            price: f.price,
            refunded: f.refunded,
            asked: req.amount,
        })?;
    Ok((customer, total))
}

/// N's signed receipt for a refund it has decided to make.
pub fn make_refund_receipt(
    signer: &dyn Signer,
    req: &RefundRequest,
    request_digest: Digest,
    refunded_total: Amount,
    price: Amount,
    now_ms: u64,
) -> Signed<RefundReceipt> {
    Signed::sign(
        RefundReceipt {
            refund_id: req.refund_id.clone(),
            epoid: req.epoid.clone(),
            merchant: req.merchant.clone(),
            amount: req.amount,
            refunded_total,
            price,
            request_digest,
            time_ms: now_ms,
        },
        signer,
    )
}

/// A [`LedgerView`] for the decision functions' own tests (`test-support` only). It is not
/// N's ledger: the billing server, the simulator and the model checker all run the one rules
/// layer of `netbill-ledger` (`MemoryStore` in memory), which this crate cannot depend on.
#[cfg(feature = "test-support")]
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MemoryLedger {
    pub accounts: std::collections::BTreeMap<AccountId, AccountView>,
    pub outcomes: std::collections::BTreeMap<EpoId, StoredOutcome>,
    pub deposits_minor: i64,
    pub payouts_minor: i64,
}

#[cfg(feature = "test-support")]
impl LedgerView for MemoryLedger {
    fn account(&self, id: &AccountId) -> Option<AccountView> {
        self.accounts.get(id).cloned()
    }
    fn outcome(&self, epoid: &EpoId) -> Option<StoredOutcome> {
        self.outcomes.get(epoid).cloned()
    }
}

#[cfg(feature = "test-support")]
impl MemoryLedger {
    /// Opens an account with a zero balance.
    pub fn open(&mut self, id: AccountId, kind: AccountKind, key: PublicKey) {
        self.accounts.insert(
            id,
            AccountView {
                kind,
                key,
                key_revoked: false,
                frozen: false,
                balance_minor: 0,
                credit_limit_minor: 0,
                low_water_minor: 0,
            },
        );
    }
    /// Money enters the system.
    pub fn deposit(&mut self, id: &AccountId, amount: Amount) {
        if let Some(a) = self.accounts.get_mut(id) {
            a.balance_minor += amount.signed();
            self.deposits_minor += amount.signed();
        }
    }
    /// Applies a decision with its receipt, as one step.
    pub fn apply(&mut self, v: &VerifiedPurchase, decision: &Decision, receipt: &Signed<Receipt>) {
        match decision {
            Decision::Settled(_) | Decision::Conflict => return,
            Decision::Commit {
                customer,
                merchant,
                price,
                ..
            } => {
                if let Some(c) = self.accounts.get_mut(customer) {
                    c.balance_minor -= price.signed();
                }
                if let Some(m) = self.accounts.get_mut(merchant) {
                    m.balance_minor += price.signed();
                }
            }
            Decision::Fail { .. } => {}
        }
        self.outcomes.insert(
            v.epo().epoid.clone(),
            StoredOutcome {
                customer: Some(v.secret.account.clone()),
                endorsement_digest: Some(v.endorsement_digest),
                receipt: receipt.clone(),
            },
        );
    }
    /// Records an abort for an EPOID with no outcome.
    pub fn abort(&mut self, epoid: &EpoId, receipt: Signed<Receipt>) {
        self.outcomes.entry(epoid.clone()).or_insert(StoredOutcome {
            customer: None,
            endorsement_digest: None,
            receipt,
        });
    }
    /// Conservation: the sum of balances equals deposits minus payouts.
    pub fn conserved(&self) -> bool {
        let sum: i64 = self.accounts.values().map(|a| a.balance_minor).sum();
        sum == self.deposits_minor - self.payouts_minor
    }
}

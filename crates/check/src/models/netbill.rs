//! NetBill (Cox, Tygar and Sirbu 1995), built from the production protocol core.
//!
//! The parties are the state machines of `netbill-proto` — [`CustomerPurchase`] (the wallet's
//! record), [`MerchantPurchase`] (the merchant's record) — and N's production commit: the
//! billing server's own [`commit::commit_purchases`] and [`commit::abort`] over the ledger's one
//! rules layer ([`MemoryStore`]: the rules of SQLite and PostgreSQL over in-memory rows). The
//! customer and merchant are driven through the same calls, in the same order, as the
//! production shells (`crates/wallet`, `crates/merchant` `api.rs`), with the symbolic
//! implementation of the crypto interface:
//!
//! The v2 purchase, two customer–merchant round trips:
//!
//! 1. C → M: the purchase request (accepting the quoted price).
//! 2. M → C: the 402 offer — the quote, the EPOID, the checksum of the goods encrypted under a
//!    K that M derives from its seal secret and the EPOID ([`merchant::derive_goods_key`]), and
//!    M's ticket ([`merchant::make_offer`]). M persists nothing.
//! 3. C → M: the offer back with the signed EPO — C's point of no return (the wallet persists
//!    it, with the offer, before sending). M checks the ticket
//!    ([`MerchantPurchase::from_offer`]) and endorses.
//! 4. M → N: the endorsement with K sealed to N — M's point of no return; M holds it in memory
//!    only (the endorsement is deterministic: a retry makes the same bytes).
//! 5. N → M: the receipt, released only once the outcome is durable. 6. M → C: the receipt
//!    (M records the settled purchase).
//!
//! Recovery, as in production except that C asks N before M (production asks M's status first,
//! then N, then re-sends: one more way to reach the same receipt): C asks N for the receipt
//! (status query) and may re-send her offer and EPO to M (`Repay`); M re-sends an endorsement
//! it still holds in memory when its call to N times out, and after a crash has nothing to
//! recover; N records an abort for an EPOID with no outcome once no EPO for it can still be
//! valid ([`billing::may_abort`]), and an endorsement that arrives after the EPO's expiry gets
//! a signed "expired" receipt.
//!
//! Abstractions: the quote is made once, before the run, by [`merchant::make_quote`] (the
//! merchant's answer to every purchase request carries it; [`customer::check_quote`] checks it
//! on arrival); one purchase at price 1 (one minor unit) from an account holding exactly 1; the
//! ciphertext is its checksum (a function of K) and length; the crypto is symbolic (perfect);
//! C keeps the K of one earlier purchase from M, so that a K shared between purchases would
//! give her goods she did not pay for. Time is a logical clock with two
//! values — before and after the longest allowed expiry — per party: N's clock passes the expiry
//! by its own `Expire` step (once), C's by her `Wait` step (once, while she recovers), and every
//! message carries its sender's clock, which the receiver's clock catches up with (clocks are
//! synchronised: a message sent after the expiry arrives after it). Crashes lose everything a
//! party had not persisted (C's and M's open requests; nothing of N, which answers in the same
//! step that makes the outcome durable — a crash between the two is the answer being lost) but
//! not its clock. Retries are bounded; a party that still owes a retry is not finished, so runs
//! that exhaust a budget are not judged (a real party keeps retrying).

use std::sync::Arc;

use netbill_ledger::commit::{self, PurchaseAnswer};
use netbill_ledger::{MemoryStore, NewAccount, Store, Transfer};
use netbill_proto::billing::{self, AccountKind, BillingPolicy};
use netbill_proto::crypto::symbolic::{SymbolicCrypto, SymbolicSigner, seal_secret};
use netbill_proto::crypto::{
    Crypto, Digest, GoodsKey, PublicKey, SealKey, SealSecret, Signature, Signer, goods_key_digest,
};
use netbill_proto::customer::{
    self, CustomerEffect, CustomerPurchase, CustomerState, Payer, QuoteExpectation,
};
use netbill_proto::merchant::{self, MerchantEffect, MerchantPurchase, Offer};
use netbill_proto::messages::{
    DeliveryNote, Endorsement, GoodsOffer, Payment, PriceRequest, PurchaseOffer, Quote, Receipt,
    StatusAnswer,
};
use netbill_proto::signed::SignatureForm;
use netbill_proto::{AccountId, Amount, EpoId, ProductCode, Signed};

use crate::property::{Binds, Observation, PaperClaim, PropertyKind, Purchase, SignedRecord};
use crate::protocol::{Failures, ModelInfo, MoneyKind, Out, PartyId, PartySpec, Protocol, Role};

const C: PartyId = 0;
const M: PartyId = 1;
const N: PartyId = 2;

/// The time of the run's start (milliseconds since the epoch, as in production).
const T0: u64 = 1_700_000_000_000;
/// How long the merchant lets an EPO commit after delivery.
const EPO_EXPIRY_MS: u64 = 10 * 60 * 1000;
/// N's longest allowed expiry.
const EXPIRY_MAX_MS: u64 = 60 * 60 * 1000;
/// How many more times C asks N, or re-sends her offer and EPO to M, after her first status
/// query (for lost queries and answers).
const CUSTOMER_RETRIES: u8 = 1;
/// How many times M re-sends its endorsement on its own (its call to N timed out).
const MERCHANT_RESENDS: u8 = 1;
/// The merchant's purchase handle in its offer.
const PURCHASE: &str = "00000000000000000000000000000001";

/// A party's clock: before or after the longest allowed expiry of the purchase's EPO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Clock {
    /// Before: the EPO may still commit.
    Early,
    /// After: no EPO for the EPOID can still be valid; N may abort it for good.
    Late,
}

impl Clock {
    /// The clock in milliseconds, as passed to the protocol core.
    pub fn ms(self) -> u64 {
        match self {
            Clock::Early => T0,
            Clock::Late => T0 + EXPIRY_MAX_MS + 1,
        }
    }
}

/// A faulty variant of NetBill, for checking that the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetBillMutant {
    /// M sends K to C as soon as it has endorsed the EPO, before N commits.
    KeyBeforeCommit,
    /// N answers with the receipt before the outcome is durable (its `Persist` step comes
    /// later); a crash in between loses the outcome.
    ReceiptBeforeDurable,
    /// The wallet sends the signed EPO without persisting it first.
    WalletLosesEpo,
    /// EPOs never expire: N never aborts an EPOID and never refuses a late endorsement.
    NoExpiry,
    /// N's receipts carry a Merkle path that leads to another root than the one N signed
    /// (a batch-signing bug: paths of one batch handed out with another's signature).
    ReceiptPathElsewhere,
    /// M derives the same K for every purchase (the EPOID left out of the derivation): the K
    /// of a purchase the customer paid for earlier decrypts the goods of this one.
    KeyReusedAcrossPurchases,
}

impl NetBillMutant {
    /// Every mutant, in the order `netbill check --list` shows them.
    pub const ALL: [NetBillMutant; 6] = [
        NetBillMutant::KeyBeforeCommit,
        NetBillMutant::ReceiptBeforeDurable,
        NetBillMutant::WalletLosesEpo,
        NetBillMutant::NoExpiry,
        NetBillMutant::ReceiptPathElsewhere,
        NetBillMutant::KeyReusedAcrossPurchases,
    ];

    /// The mutant's name on the command line (`netbill check netbill --mutant NAME`).
    pub const fn name(self) -> &'static str {
        match self {
            NetBillMutant::KeyBeforeCommit => "key-before-commit",
            NetBillMutant::ReceiptBeforeDurable => "receipt-before-durable",
            NetBillMutant::WalletLosesEpo => "wallet-loses-epo",
            NetBillMutant::NoExpiry => "no-expiry",
            NetBillMutant::ReceiptPathElsewhere => "receipt-path-elsewhere",
            NetBillMutant::KeyReusedAcrossPurchases => "key-reused-across-purchases",
        }
    }

    /// What the mutant gets wrong, in one line.
    pub const fn about(self) -> &'static str {
        match self {
            NetBillMutant::KeyBeforeCommit => {
                "M sends K to C as soon as it has endorsed, before N commits"
            }
            NetBillMutant::ReceiptBeforeDurable => {
                "N answers with the receipt before its outcome is durable"
            }
            NetBillMutant::WalletLosesEpo => {
                "the wallet sends the signed EPO without persisting it first"
            }
            NetBillMutant::NoExpiry => "EPOs never expire: N never aborts an EPOID",
            NetBillMutant::ReceiptPathElsewhere => {
                "N's receipts carry a Merkle path to another root than the one N signed"
            }
            NetBillMutant::KeyReusedAcrossPurchases => {
                "M derives K without the EPOID, so an earlier purchase's K opens this one"
            }
        }
    }

    /// The mutant called `name`, if any.
    pub fn from_name(name: &str) -> Option<NetBillMutant> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The symbolic crypto of the model; the mutant that reuses K drops the EPOID from the
/// merchant's K derivation, in the production code that derives it
/// ([`merchant::derive_goods_key`], called by the merchant core too).
#[derive(Clone, Copy, Debug)]
struct ModelCrypto {
    reuse_goods_key: bool,
}

impl Crypto for ModelCrypto {
    fn digest(&self, parts: &[&[u8]]) -> Digest {
        SymbolicCrypto.digest(parts)
    }
    fn verify(&self, key: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
        SymbolicCrypto.verify(key, msg, sig)
    }
    fn seal(&self, to: &SealKey, info: &[u8], plaintext: &[u8], entropy: [u8; 32]) -> Vec<u8> {
        SymbolicCrypto.seal(to, info, plaintext, entropy)
    }
    fn seal_key(&self, secret: &SealSecret) -> SealKey {
        SymbolicCrypto.seal_key(secret)
    }
    fn open(&self, secret: &SealSecret, info: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        SymbolicCrypto.open(secret, info, sealed)
    }
    fn pair_seal(
        &self,
        own: &SealSecret,
        peer: &SealKey,
        aad: &[u8],
        plaintext: &[u8],
        nonce: [u8; 24],
    ) -> Vec<u8> {
        SymbolicCrypto.pair_seal(own, peer, aad, plaintext, nonce)
    }
    fn pair_open(
        &self,
        own: &SealSecret,
        peer: &SealKey,
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        SymbolicCrypto.pair_open(own, peer, aad, sealed)
    }
    fn mac(&self, key: &[u8; 32], parts: &[&[u8]]) -> Digest {
        // The goods-key derivation is `mac(secret, [label, quote digest, EPOID])`.
        let goods_key = parts
            .first()
            .is_some_and(|label| label.starts_with(b"netbill/v2/goods-key"));
        if self.reuse_goods_key && goods_key {
            SymbolicCrypto.mac(key, &parts[..parts.len() - 1])
        } else {
            SymbolicCrypto.mac(key, parts)
        }
    }
}

/// Message bodies: the production messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Body {
    /// 1. C → M: the purchase request (its price request is the quote's).
    PurchaseRequest,
    /// 2. M → C: the 402 offer (quote, EPOID, checksum and length of the ciphertext, ticket).
    Offer(Arc<PurchaseOffer>),
    /// 3. C → M: the offer back with the signed EPO.
    Payment(Arc<Payment>),
    /// 4. M → N: the endorsed EPO with K sealed to N.
    Endorsement(Arc<Signed<Endorsement>>),
    /// Status query (C → N).
    Status(EpoId),
    /// 5, 6 and status answers: the receipt, or "no outcome yet".
    Answer(Arc<StatusAnswer>),
    /// M → C: K itself (only the mutant that releases it before N commits).
    Key([u8; 32]),
}

/// A message: its body and the sender's clock when it was sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msg {
    /// The sender's clock.
    pub at: Clock,
    /// The message.
    pub body: Body,
}

/// A party's own steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// C sends the purchase request (step 1).
    Buy,
    /// C stops waiting for the offer (nothing recorded, nothing paid).
    GiveUp,
    /// C stops waiting for the receipt and asks N (status query).
    ReceiptTimeout,
    /// C waits until the EPO must have been decided, then asks N again.
    Wait,
    /// C asks N again (a query or its answer was lost).
    Retry,
    /// C re-sends her offer and EPO to M (wallet recovery).
    Repay,
    /// M's call to N timed out: it re-sends the endorsement it holds in memory.
    Resend,
    /// N's clock passes the longest allowed expiry.
    Expire,
    /// N makes its outcomes durable (only the mutant that answers first).
    Persist,
}

/// Where the customer's shell stands (volatile: rebuilt by recovery after a crash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CPhase {
    /// Has not asked for the goods yet.
    Start,
    /// Purchase request sent.
    AwaitGoods,
    /// EPO sent; waiting for M's answer (the receipt).
    AwaitReceipt,
    /// Recovery: asked N for the receipt.
    AskBilling {
        /// Queries left to re-send.
        retries: u8,
    },
    /// Finished: an outcome, or an abort before the point of no return.
    Finished,
    /// Finished recovery without an outcome: N, past the expiry, knows of none.
    NoOutcome,
}

/// The customer (the wallet).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Customer {
    /// Her clock.
    pub clock: Clock,
    /// The purchase record as last persisted.
    pub saved: Option<Arc<CustomerPurchase>>,
    /// The merchant's offer, persisted with the signed EPO (sent back with it on a retry).
    pub offer: Option<Arc<PurchaseOffer>>,
    /// The record in memory when it is ahead of the persisted one (only in the mutant that
    /// sends the EPO before persisting it).
    pub unsaved: Option<Arc<CustomerPurchase>>,
    /// K, once she has it (persisted with the decrypted goods).
    pub goods_key: Option<GoodsKey>,
    /// Where the shell stands.
    pub phase: CPhase,
}

impl Customer {
    fn record(&self) -> Option<&CustomerPurchase> {
        self.unsaved.as_deref().or(self.saved.as_deref())
    }
}

/// The merchant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Merchant {
    /// Its clock.
    pub clock: Clock,
    /// The settled purchase, recorded once N's receipt is in (the merchant's books).
    pub saved: Option<Arc<MerchantPurchase>>,
    /// The endorsed purchase waiting for N (volatile: nothing is written before endorsing).
    pub pending: Option<Arc<MerchantPurchase>>,
    /// C waits for an answer (to her EPO or her status query): forward N's receipt (volatile).
    pub customer_waiting: bool,
    /// Endorsement re-sends left (volatile).
    pub resends: u8,
}

/// What N keeps durably: the ledger (accounts, one outcome per EPOID with the endorsement it
/// decided on as evidence, the journal), under the production rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Books {
    /// The ledger's rows under the production rules.
    pub ledger: MemoryStore,
}

/// The billing server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Billing {
    /// Its clock.
    pub clock: Clock,
    /// What is durable.
    pub books: Arc<Books>,
    /// Outcomes decided and already answered but not yet durable (only in the mutant that
    /// answers first).
    pub unpersisted: Option<Arc<Books>>,
}

impl Billing {
    fn current(&self) -> &Books {
        self.unpersisted.as_deref().unwrap_or(&self.books)
    }
}

/// One party's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    /// C.
    Customer(Customer),
    /// M.
    Merchant(Merchant),
    /// N.
    Billing(Billing),
}

/// The fixed facts of the run: keys, accounts, the accepted quote, the goods.
struct Setup {
    crypto: ModelCrypto,
    customer: SymbolicSigner,
    merchant: SymbolicSigner,
    billing: SymbolicSigner,
    billing_secret: SealSecret,
    billing_seal_key: SealKey,
    /// The merchant's static sealing secret (v2 seals of K).
    merchant_seal: SealSecret,
    policy: BillingPolicy,
    customer_account: AccountId,
    quote: Arc<Signed<Quote>>,
    ledger: MemoryStore,
    /// The K of an earlier purchase from M that C paid for before the run (she keeps it).
    earlier_key: GoodsKey,
}

impl Setup {
    /// The K of the purchase with this EPOID, as the merchant derives it.
    fn goods_key(&self, epoid: &EpoId) -> GoodsKey {
        merchant::derive_goods_key(&self.crypto, &self.merchant_seal, &self.quote, epoid)
    }

    /// The checksum of the article's ciphertext under `key` (the ciphertext is a function of
    /// K and the plaintext).
    fn checksum(&self, key: &GoodsKey) -> Digest {
        self.crypto
            .digest(&[b"the article, encrypted under ", &key.0])
    }
}

impl Setup {
    fn new(mutant: Option<NetBillMutant>) -> Self {
        let crypto = ModelCrypto {
            reuse_goods_key: mutant == Some(NetBillMutant::KeyReusedAcrossPurchases),
        };
        let customer = SymbolicSigner::new("alice");
        let merchant = SymbolicSigner::new("acme");
        let billing = SymbolicSigner::new("netbill");
        let billing_secret = seal_secret("netbill");
        let billing_seal_key = crypto.seal_key(&billing_secret);
        let customer_account = AccountId::new("alice").expect("valid account name");
        let merchant_account = AccountId::new("acme").expect("valid account name");
        let product = ProductCode::new("article-1").expect("valid product code");
        let price = Amount::from_minor(1).expect("valid amount");
        let offer = Offer {
            product: product.clone(),
            description: "On Atomicity".into(),
            price,
            group_prices: Vec::new(),
            goods_digest: crypto.digest(&[b"the article"]),
            goods_len: 11,
        };
        let request = PriceRequest {
            identity: "alice".into(),
            customer_key: customer.public_key(),
            product: product.clone(),
            prd_hex: String::new(),
            bid: None,
            credentials: Vec::new(),
        };
        // Steps 1–2, before the run.
        let quote = merchant::make_quote(
            &crypto,
            &merchant,
            &merchant_account,
            &request,
            &offer,
            &|_| None,
            1,
            T0,
            EXPIRY_MAX_MS,
        )
        .expect("the merchant quotes its own product");
        let expect = QuoteExpectation {
            merchant_key: &merchant.public_key(),
            customer_key: &customer.public_key(),
            product: &product,
            max_price: Some(price),
        };
        customer::check_quote(&crypto, &quote, &expect, T0).expect("the customer accepts");
        let mut ledger = MemoryStore::in_memory();
        for (id, kind, key) in [
            (
                &customer_account,
                AccountKind::Customer,
                customer.public_key(),
            ),
            (
                &merchant_account,
                AccountKind::Merchant,
                merchant.public_key(),
            ),
        ] {
            let new = NewAccount {
                id: id.clone(),
                kind,
                key,
                credit_limit_minor: 0,
                low_water_minor: 0,
            };
            ledger
                .create_account(&new, T0)
                .expect("opening an account in memory");
        }
        ledger
            .transfer(&customer_account, Transfer::Deposit, price, None, T0)
            .expect("a deposit in memory");
        let merchant_seal = seal_secret("acme");
        let earlier = EpoId {
            merchant: merchant_account,
            delivered_at_ms: T0 - EXPIRY_MAX_MS,
            serial: 1,
        };
        let earlier_key = merchant::derive_goods_key(&crypto, &merchant_seal, &quote, &earlier);
        Self {
            crypto,
            customer,
            merchant,
            billing,
            billing_secret,
            billing_seal_key,
            merchant_seal,
            policy: BillingPolicy {
                expiry_max_ms: EXPIRY_MAX_MS,
            },
            customer_account,
            quote: Arc::new(quote),
            ledger,
            earlier_key,
        }
    }
}

/// NetBill, with the production state machines.
pub struct NetBill {
    setup: Setup,
    mutant: Option<NetBillMutant>,
}

impl NetBill {
    /// A faulty variant of NetBill (see [`NetBillMutant`]).
    pub fn mutant(mutant: NetBillMutant) -> Self {
        Self {
            setup: Setup::new(Some(mutant)),
            mutant: Some(mutant),
        }
    }

    fn is(&self, mutant: NetBillMutant) -> bool {
        self.mutant == Some(mutant)
    }

    fn send(out: &mut Out<Msg>, to: PartyId, at: Clock, body: Body) {
        out.send(to, Msg { at, body });
    }

    fn epoid(purchase: &CustomerPurchase) -> Option<EpoId> {
        purchase.delivery.as_ref().map(|d| d.epoid.clone())
    }

    // ------------------------------------------------------------------------------------
    // C, the wallet.

    fn customer_msg(&self, c: &mut Customer, body: &Body, out: &mut Out<Msg>) {
        let s = &self.setup;
        match body {
            Body::Offer(offer) if c.phase == CPhase::AwaitGoods => {
                let expect = QuoteExpectation {
                    merchant_key: &s.merchant.public_key(),
                    customer_key: &s.customer.public_key(),
                    product: &s.quote.body_unverified().product,
                    max_price: Some(s.quote.body_unverified().price),
                };
                if customer::check_quote(&s.crypto, &offer.quote, &expect, c.clock.ms()).is_err() {
                    c.phase = CPhase::Finished;
                    return;
                }
                let mut p =
                    CustomerPurchase::new(offer.quote.clone(), offer.goods.clone(), reply_secret());
                // The shell computed the checksum and length of the ciphertext while storing
                // it (what M sent: the model's network does not alter bytes); the core checks
                // it and signs the EPO, and the shell carries out the effects, as the wallet.
                let payer = Payer {
                    signer: &s.customer,
                    billing_seal_key: &s.billing_seal_key,
                    account: &s.customer_account,
                    memo: "",
                };
                let effects = match p.on_goods(
                    &s.crypto,
                    &payer,
                    (offer.goods.checksum, offer.goods.ciphertext_len),
                    offer.note.clone(),
                    c.clock.ms(),
                    [1; 16],
                    [0; 32],
                ) {
                    Ok(effects) => effects,
                    Err((_, effects)) => effects,
                };
                c.phase = CPhase::Finished;
                let p = Arc::new(p);
                for effect in effects {
                    match effect {
                        // The mutant wallet sends the EPO without persisting it first.
                        CustomerEffect::PersistDurably
                            if self.is(NetBillMutant::WalletLosesEpo) =>
                        {
                            c.unsaved = Some(p.clone());
                        }
                        CustomerEffect::PersistDurably => {
                            c.saved = Some(p.clone());
                            c.offer = Some(offer.clone());
                        }
                        CustomerEffect::Persist => c.saved = Some(p.clone()),
                        CustomerEffect::SendEpo(epo) => {
                            let payment = Payment {
                                offer: (**offer).clone(),
                                epo: *epo,
                            };
                            Self::send(out, M, c.clock, Body::Payment(Arc::new(payment)));
                            c.phase = CPhase::AwaitReceipt;
                        }
                        CustomerEffect::Decrypt(_) | CustomerEffect::AskForReceipt(_) => {}
                    }
                }
            }
            Body::Answer(answer) => {
                let Some(receipt) = &answer.receipt else {
                    return;
                };
                let committed = c
                    .record()
                    .is_some_and(|p| p.state() == CustomerState::Committed);
                if !committed || c.phase == CPhase::NoOutcome {
                    return;
                }
                let Some(mut p) = c.record().cloned() else {
                    return;
                };
                let Ok((_, effects)) = p.on_receipt(
                    &s.crypto,
                    &s.billing.public_key(),
                    &s.billing_seal_key,
                    receipt.clone(),
                ) else {
                    // A receipt that does not check out (only a faulty N's): the wallet
                    // reports it and stops; asking again brings the same receipt.
                    c.phase = CPhase::Finished;
                    return;
                };
                for effect in effects {
                    match effect {
                        CustomerEffect::Decrypt(goods_key) => c.goods_key = Some(goods_key),
                        CustomerEffect::Persist | CustomerEffect::PersistDurably => {
                            c.saved = Some(Arc::new(p.clone()));
                            c.unsaved = None;
                        }
                        CustomerEffect::SendEpo(_) | CustomerEffect::AskForReceipt(_) => {}
                    }
                }
                c.phase = CPhase::Finished;
            }
            Body::Key(k) if c.record().is_some() => c.goods_key = Some(GoodsKey(*k)),
            _ => {}
        }
    }

    /// C's reaction to "no outcome yet" from `from`, stamped with the sender's clock `at`:
    /// if N is past the expiry and knows of no outcome, there is nothing more to ask.
    fn customer_no_outcome(c: &mut Customer, from: PartyId, at: Clock) {
        if matches!(c.phase, CPhase::AskBilling { .. }) && from == N && at == Clock::Late {
            c.phase = CPhase::NoOutcome;
        }
    }

    fn customer_steps(&self, c: &Customer, steps: &mut Vec<Step>) {
        match c.phase {
            CPhase::Start => steps.push(Step::Buy),
            CPhase::AwaitGoods => steps.push(Step::GiveUp),
            CPhase::AwaitReceipt => steps.push(Step::ReceiptTimeout),
            CPhase::AskBilling { retries } => {
                if c.clock == Clock::Early {
                    steps.push(Step::Wait);
                }
                if retries > 0 {
                    steps.push(Step::Retry);
                    if c.offer.is_some() {
                        steps.push(Step::Repay);
                    }
                }
            }
            CPhase::Finished | CPhase::NoOutcome => {}
        }
    }

    fn customer_step(&self, c: &mut Customer, step: &Step, out: &mut Out<Msg>) {
        let epoid = c.record().and_then(Self::epoid);
        match (step, c.phase) {
            (Step::Buy, CPhase::Start) => {
                Self::send(out, M, c.clock, Body::PurchaseRequest);
                c.phase = CPhase::AwaitGoods;
            }
            (Step::GiveUp, CPhase::AwaitGoods) => c.phase = CPhase::Finished,
            (Step::ReceiptTimeout, CPhase::AwaitReceipt) => {
                if let Some(epoid) = epoid {
                    Self::send(out, N, c.clock, Body::Status(epoid));
                    c.phase = CPhase::AskBilling {
                        retries: CUSTOMER_RETRIES,
                    };
                }
            }
            (Step::Wait, CPhase::AskBilling { .. }) => {
                c.clock = Clock::Late;
                if let Some(epoid) = epoid {
                    Self::send(out, N, c.clock, Body::Status(epoid));
                }
            }
            (Step::Retry, CPhase::AskBilling { retries }) if retries > 0 => {
                if let Some(epoid) = epoid {
                    Self::send(out, N, c.clock, Body::Status(epoid));
                    c.phase = CPhase::AskBilling {
                        retries: retries - 1,
                    };
                }
            }
            (Step::Repay, CPhase::AskBilling { retries }) if retries > 0 => {
                let epo = c.saved.as_ref().and_then(|p| p.epo.clone());
                if let (Some(offer), Some(epo)) = (&c.offer, epo) {
                    let payment = Payment {
                        offer: (**offer).clone(),
                        epo,
                    };
                    Self::send(out, M, c.clock, Body::Payment(Arc::new(payment)));
                    c.phase = CPhase::AskBilling {
                        retries: retries - 1,
                    };
                }
            }
            _ => {}
        }
    }

    /// The wallet restarts from its persisted records and runs `recover`: an uncommitted
    /// purchase is aborted; a committed one asks N for the receipt.
    fn customer_crash(&self, c: &mut Customer, out: &mut Out<Msg>) {
        c.unsaved = None;
        let Some(saved) = &c.saved else {
            if c.phase != CPhase::Start {
                c.phase = CPhase::Finished; // the purchase died before anything was recorded
            }
            return;
        };
        let mut p = (**saved).clone();
        c.phase = CPhase::Finished;
        for effect in p.recover() {
            match effect {
                CustomerEffect::Persist | CustomerEffect::PersistDurably => {
                    c.saved = Some(Arc::new(p.clone()));
                }
                CustomerEffect::AskForReceipt(epoid) => {
                    Self::send(out, N, c.clock, Body::Status(epoid));
                    c.phase = CPhase::AskBilling {
                        retries: CUSTOMER_RETRIES,
                    };
                }
                CustomerEffect::SendEpo(_) | CustomerEffect::Decrypt(_) => {}
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // M, the merchant.

    fn answer(
        out: &mut Out<Msg>,
        to: PartyId,
        at: Clock,
        epoid: &EpoId,
        receipt: Option<&Signed<Receipt>>,
    ) {
        let answer = StatusAnswer {
            epoid: epoid.clone(),
            receipt: receipt.cloned(),
        };
        Self::send(out, to, at, Body::Answer(Arc::new(answer)));
    }

    fn merchant_msg(&self, m: &mut Merchant, from: PartyId, body: &Body, out: &mut Out<Msg>) {
        let s = &self.setup;
        let now = m.clock.ms();
        match body {
            Body::PurchaseRequest => {
                // As `purchase_request` in crates/merchant: the EPOID stamped now, K derived,
                // the goods encrypted under it, the offer made; nothing written.
                let note = DeliveryNote {
                    epoid: EpoId {
                        merchant: s.quote.body_unverified().merchant.clone(),
                        delivered_at_ms: now,
                        serial: 1,
                    },
                    expires_at_ms: now.saturating_add(EPO_EXPIRY_MS),
                };
                let key = s.goods_key(&note.epoid);
                let goods = GoodsOffer {
                    purchase: PURCHASE.into(),
                    checksum: s.checksum(&key),
                    ciphertext_len: 11,
                };
                let offer = merchant::make_offer(
                    &s.crypto,
                    &s.merchant_seal,
                    (*s.quote).clone(),
                    goods,
                    note,
                );
                Self::send(out, C, m.clock, Body::Offer(Arc::new(offer)));
            }
            Body::Payment(payment) => {
                // As `pay` in crates/merchant: the offer's ticket checked and K derived again;
                // a purchase already settled is answered from its record.
                let Ok(fresh) = MerchantPurchase::from_offer(
                    &s.crypto,
                    &s.merchant_seal,
                    payment.offer.clone(),
                ) else {
                    return;
                };
                let saved = m.saved.as_deref().cloned();
                let mut p = MerchantPurchase::for_payment(fresh, saved);
                let Ok(effect) = p.on_payment(
                    &s.crypto,
                    &s.merchant,
                    &s.merchant_seal,
                    &s.billing_seal_key,
                    payment.epo.clone(),
                    "",
                    now,
                ) else {
                    return; // refused: C gets an error (she times out and recovers)
                };
                // C's payment request is open until M answers it.
                m.customer_waiting = true;
                self.merchant_effects(m, p, vec![effect], out);
            }
            Body::Answer(answer) if from == N => {
                let Some(pending) = &m.pending else {
                    return;
                };
                let mut p = (**pending).clone();
                let Ok(effects) = p.on_billing_answer(&s.crypto, &s.billing.public_key(), answer)
                else {
                    return;
                };
                self.merchant_effects(m, p, effects, out);
            }
            _ => {}
        }
    }

    /// Carries out the merchant core's effects for purchase `p`, as `carry_out` in
    /// crates/merchant does (its HTTP calls to N are this model's messages to N).
    fn merchant_effects(
        &self,
        m: &mut Merchant,
        p: MerchantPurchase,
        effects: Vec<MerchantEffect>,
        out: &mut Out<Msg>,
    ) {
        let p = Arc::new(p);
        for effect in effects {
            match effect {
                MerchantEffect::SendEndorsement(e) => {
                    // The point of no return, with nothing persisted: a retry endorses the
                    // same bytes again.
                    if self.is(NetBillMutant::KeyBeforeCommit) {
                        Self::send(out, C, m.clock, Body::Key(p.goods_key.0));
                    }
                    m.pending = Some(p.clone());
                    Self::send(out, N, m.clock, Body::Endorsement(Arc::new(*e)));
                }
                MerchantEffect::AskBilling(epoid) => {
                    m.pending = Some(p.clone());
                    Self::send(out, N, m.clock, Body::Status(epoid));
                }
                MerchantEffect::Record => {
                    m.saved = Some(p.clone());
                    m.pending = None;
                }
                MerchantEffect::AnswerCustomer(r) => {
                    if m.customer_waiting {
                        let epoid = r.body_unverified().epoid.clone();
                        Self::answer(out, C, m.clock, &epoid, Some(&r));
                        m.customer_waiting = false;
                    }
                }
            }
        }
    }

    fn merchant_steps(&self, m: &Merchant, steps: &mut Vec<Step>) {
        if m.pending.is_some() && m.resends > 0 {
            steps.push(Step::Resend);
        }
    }

    fn merchant_step(&self, m: &mut Merchant, step: &Step, out: &mut Out<Msg>) {
        if *step != Step::Resend || m.resends == 0 {
            return;
        }
        if let Some(e) = m.pending.as_ref().and_then(|p| p.endorsement.clone()) {
            Self::send(out, N, m.clock, Body::Endorsement(Arc::new(e)));
            m.resends -= 1;
        }
    }

    /// The merchant restarts from its store: a v2 merchant stored nothing before N's
    /// receipt, so there is nothing to recover (the customer's retry drives the purchase).
    fn merchant_crash(&self, m: &mut Merchant) {
        m.customer_waiting = false;
        m.pending = None;
    }

    // ------------------------------------------------------------------------------------
    // N, the billing server.

    /// N's notion of time when deciding (the mutant without expiry decides as at delivery).
    fn billing_now(&self, n: &Billing) -> u64 {
        if self.is(NetBillMutant::NoExpiry) {
            Clock::Early.ms()
        } else {
            n.clock.ms()
        }
    }

    /// Records new books: durably, in the same step as the answer that reveals them (a crash
    /// between the two is the answer being lost). The mutant keeps them in memory until its
    /// `Persist` step, and has answered by then.
    fn billing_write(&self, n: &mut Billing, books: Books) {
        if self.is(NetBillMutant::ReceiptBeforeDurable) {
            n.unpersisted = Some(Arc::new(books));
        } else {
            n.books = Arc::new(books);
        }
    }

    /// The receipt as N hands it out. The mutant hands out this receipt signed in a batch of
    /// two, with the path its leaf has in another batch of two: a path to another root.
    fn billing_reveal(&self, receipt: &Signed<Receipt>) -> Signed<Receipt> {
        if !self.is(NetBillMutant::ReceiptPathElsewhere) {
            return receipt.clone();
        }
        let s = &self.setup;
        let body = receipt.body_unverified().clone();
        let batch = |later_ms: u64| {
            let mut other = body.clone();
            other.time_ms += later_ms;
            Signed::sign_batch(vec![body.clone(), other], &s.crypto, &s.billing)
        };
        let (signed, elsewhere) = (batch(1), batch(2));
        match (signed[0].form(), elsewhere[0].form()) {
            (SignatureForm::Batch { root_signature, .. }, SignatureForm::Batch { proof, .. }) => {
                let form = SignatureForm::Batch {
                    root_signature: *root_signature,
                    proof: proof.clone(),
                };
                Signed::from_form(signed[0].bytes().to_vec(), form)
                    .expect("a receipt's own bytes decode")
            }
            _ => receipt.clone(),
        }
    }

    fn billing_msg(&self, n: &mut Billing, from: PartyId, body: &Body, out: &mut Out<Msg>) {
        let s = &self.setup;
        let now = self.billing_now(n);
        match body {
            Body::Endorsement(e) if from == M => {
                let verified = billing::verify_endorsement(
                    &s.crypto,
                    &s.billing_secret,
                    &s.policy,
                    (**e).clone(),
                );
                let Ok(v) = verified else {
                    return;
                };
                // As the server's writer thread: a batch (of one) committed by the production
                // commit over the production rules.
                let mut books = n.current().clone();
                let keys = commit::Billing {
                    crypto: &s.crypto,
                    signer: &s.billing,
                    seal: &s.billing_secret,
                };
                let Ok(done) = commit::commit_purchases(
                    &mut books.ledger,
                    &keys,
                    &[&v],
                    now,
                    &mut || [0; 32],
                    commit::Faults::default(),
                    &mut |_| Ok(()),
                ) else {
                    return; // the store refused: M gets an error and re-sends
                };
                let Some(PurchaseAnswer::Receipt(receipt)) = done.answers.first() else {
                    return; // a conflict: refused
                };
                if books != *n.current() {
                    self.billing_write(n, books);
                }
                let receipt = self.billing_reveal(receipt);
                Self::answer(out, M, n.clock, &v.epo().epoid, Some(&receipt));
            }
            Body::Status(epoid) => {
                let stored = n.current().ledger.rows().peek_outcome(epoid);
                let receipt = match stored {
                    Some(o) => Some(o.receipt.clone()),
                    None if !self.is(NetBillMutant::NoExpiry)
                        && billing::may_abort(epoid, &s.policy, now) =>
                    {
                        let mut books = n.current().clone();
                        match commit::abort(&mut books.ledger, &s.billing, epoid, now) {
                            Ok((r, _)) => {
                                self.billing_write(n, books);
                                Some(r)
                            }
                            Err(_) => None,
                        }
                    }
                    None => None,
                };
                let receipt = receipt.map(|r| self.billing_reveal(&r));
                Self::answer(out, from, n.clock, epoid, receipt.as_ref());
            }
            _ => {}
        }
    }

    fn billing_steps(&self, n: &Billing, steps: &mut Vec<Step>) {
        if n.clock == Clock::Early {
            steps.push(Step::Expire);
        }
        if n.unpersisted.is_some() {
            steps.push(Step::Persist);
        }
    }

    fn billing_step(&self, n: &mut Billing, step: &Step) {
        match step {
            Step::Expire => n.clock = Clock::Late,
            Step::Persist => {
                if let Some(books) = n.unpersisted.take() {
                    n.books = books;
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------------------------
    // Observation.

    /// The signed records N holds for the purchase `epoid` if it committed: the customer's EPO
    /// and the merchant's endorsement, each checked as a judge would check it.
    fn records(&self, books: &Books, epoid: &EpoId) -> Vec<SignedRecord> {
        let s = &self.setup;
        let rows = books.ledger.rows();
        let Some(outcome) = rows.peek_outcome(epoid) else {
            return Vec::new();
        };
        let Some(e) = rows.peek_endorsement(epoid) else {
            return Vec::new();
        };
        if outcome.endorsement_digest != Some(e.digest(&s.crypto)) {
            return Vec::new();
        }
        let mut records = Vec::new();
        let receipt = outcome.receipt.body_unverified();
        let quote = s.quote.body_unverified();
        let merchant_key = s.merchant.public_key();
        if let Ok(body) = e.verify(&s.crypto, &merchant_key) {
            let epo = body.epo.body_unverified();
            let key = netbill_proto::sealing::open_goods_key(&s.crypto, &s.billing_secret, body);
            let goods_key = s.goods_key(epoid);
            records.push(SignedRecord {
                signer: Role::Merchant,
                binds: Binds {
                    price: epo.price == quote.price,
                    goods_digest: epo.goods_checksum == s.checksum(&goods_key),
                    goods_key: key.as_ref() == Some(&goods_key)
                        && body.key_digest == goods_key_digest(&s.crypto, &goods_key),
                },
            });
        }
        let epo_signed = &e.body_unverified().epo;
        if let Ok(epo) = epo_signed.verify(&s.crypto, &s.customer.public_key())
            && receipt.epo_digest == epo_signed.digest(&s.crypto)
        {
            records.push(SignedRecord {
                signer: Role::Customer,
                binds: Binds {
                    price: epo.price == quote.price,
                    goods_digest: epo.goods_checksum == s.checksum(&s.goods_key(epoid)),
                    goods_key: false,
                },
            });
        }
        records
    }
}

fn reply_secret() -> SealSecret {
    seal_secret("alice-reply")
}

impl Protocol for NetBill {
    type Party = Party;
    type Msg = Msg;
    type Step = Step;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "netbill",
            title: "NetBill (production state machines)",
            source: "Cox, Tygar, Sirbu 1995; Heintze, Tygar, Wing, Wong 1996; Tygar 1996",
            money: MoneyKind::Notational,
            default_failures: Failures {
                lossy: true,
                duplicating: false,
                reordering: true,
                max_crashes: 1,
                reliable_bank: false,
                failsafe_bank_channel: false,
            },
            paper: vec![
                PaperClaim::holds(
                    PropertyKind::Money,
                    "Heintze et al.: NetBill satisfies money atomicity (SPEC1)",
                ),
                PaperClaim::holds(
                    PropertyKind::Goods,
                    "Heintze et al.: NetBill satisfies goods atomicity (SPEC2); Tygar",
                ),
                PaperClaim::holds(
                    PropertyKind::Certified,
                    "Tygar: NetBill provides certified delivery (signed EPO and endorsement with K)",
                ),
            ],
        }
    }

    fn build(_failures: &Failures) -> Self {
        Self {
            setup: Setup::new(None),
            mutant: None,
        }
    }

    fn parties(&self) -> Vec<PartySpec> {
        vec![
            PartySpec::new("C", Role::Customer),
            PartySpec::new("M", Role::Merchant),
            PartySpec::new("N", Role::Bank),
        ]
    }

    fn init(&self) -> Vec<Party> {
        vec![
            Party::Customer(Customer {
                clock: Clock::Early,
                saved: None,
                offer: None,
                unsaved: None,
                goods_key: None,
                phase: CPhase::Start,
            }),
            Party::Merchant(Merchant {
                clock: Clock::Early,
                saved: None,
                pending: None,
                customer_waiting: false,
                resends: MERCHANT_RESENDS,
            }),
            Party::Billing(Billing {
                clock: Clock::Early,
                books: Arc::new(Books {
                    ledger: self.setup.ledger.clone(),
                }),
                unpersisted: None,
            }),
        ]
    }

    fn on_msg(
        &self,
        _me: PartyId,
        state: &Party,
        from: PartyId,
        msg: &Msg,
        out: &mut Out<Msg>,
    ) -> Party {
        let mut next = state.clone();
        match &mut next {
            Party::Customer(c) => {
                c.clock = c.clock.max(msg.at);
                match &msg.body {
                    Body::Answer(a) if a.receipt.is_none() => {
                        Self::customer_no_outcome(c, from, msg.at)
                    }
                    body => self.customer_msg(c, body, out),
                }
            }
            Party::Merchant(m) => {
                m.clock = m.clock.max(msg.at);
                self.merchant_msg(m, from, &msg.body, out);
            }
            Party::Billing(n) => {
                n.clock = n.clock.max(msg.at);
                self.billing_msg(n, from, &msg.body, out);
            }
        }
        next
    }

    fn steps(&self, _me: PartyId, state: &Party, steps: &mut Vec<Step>) {
        match state {
            Party::Customer(c) => self.customer_steps(c, steps),
            Party::Merchant(m) => self.merchant_steps(m, steps),
            Party::Billing(n) => self.billing_steps(n, steps),
        }
    }

    fn on_step(&self, _me: PartyId, state: &Party, step: &Step, out: &mut Out<Msg>) -> Party {
        let mut next = state.clone();
        match &mut next {
            Party::Customer(c) => self.customer_step(c, step, out),
            Party::Merchant(m) => self.merchant_step(m, step, out),
            Party::Billing(n) => self.billing_step(n, step),
        }
        next
    }

    fn on_crash(&self, _me: PartyId, state: &Party, out: &mut Out<Msg>) -> Party {
        let mut next = state.clone();
        match &mut next {
            Party::Customer(c) => self.customer_crash(c, out),
            Party::Merchant(m) => self.merchant_crash(m),
            Party::Billing(n) => n.unpersisted = None,
        }
        next
    }

    fn is_done(&self, _me: PartyId, state: &Party) -> bool {
        match state {
            Party::Customer(c) => matches!(c.phase, CPhase::Finished | CPhase::NoOutcome),
            // A merchant still holding an endorsement in memory may re-send it.
            Party::Merchant(m) => m.pending.is_none() || m.resends == 0,
            Party::Billing(n) => n.unpersisted.is_none(),
        }
    }

    fn observe(&self, parties: &[Party]) -> Observation {
        let (Party::Customer(c), Party::Billing(n)) = (&parties[C], &parties[N]) else {
            return Observation::default();
        };
        let s = &self.setup;
        let ledger = n.books.ledger.rows();
        // The balances, plus any discrepancy between them and deposits minus payouts (zero
        // when the ledger conserves money), so that either kind of loss shows.
        let (sum, deposits, payouts) = ledger.peek_totals();
        let discrepancy = sum - (deposits - payouts);
        let money_total = sum + discrepancy;
        if c.phase == CPhase::Start {
            return Observation {
                money_total,
                cash: Vec::new(),
                purchases: Vec::new(),
            };
        }
        let deposited = s
            .ledger
            .rows()
            .peek_account(&s.customer_account)
            .map_or(0, |a| a.balance_minor);
        let balance = ledger
            .peek_account(&s.customer_account)
            .map_or(0, |a| a.balance_minor);
        let debited = balance < deposited;
        // The customer has the goods: the ciphertext she checked and a K that decrypts it —
        // this purchase's, or the one she kept from an earlier purchase.
        let epoid = c.record().and_then(Self::epoid);
        let key = epoid.as_ref().map(|e| s.goods_key(e));
        let ciphertext = c
            .record()
            .zip(key.as_ref())
            .is_some_and(|(p, k)| p.received_checksum == Some(s.checksum(k)));
        let goods = ciphertext
            && key.is_some()
            && (c.goods_key == key || key.as_ref() == Some(&s.earlier_key));
        let records = epoid.map_or_else(Vec::new, |id| self.records(&n.books, &id));
        Observation {
            money_total,
            cash: Vec::new(),
            purchases: vec![Purchase {
                customer: C,
                merchant: M,
                paid: debited,
                goods,
                records,
            }],
        }
    }

    fn label(&self, msg: &Msg) -> String {
        let body = match &msg.body {
            Body::PurchaseRequest => "PurchaseRequest".to_string(),
            Body::Offer(_) => "402(Quote+EPOID+Goods)".to_string(),
            Body::Payment(_) => "Offer+EPO".to_string(),
            Body::Endorsement(_) => "Endorsement(K)".to_string(),
            Body::Status(_) => "Status?".to_string(),
            Body::Answer(a) => match &a.receipt {
                Some(r) => format!("Receipt({:?})", r.body_unverified().result),
                None => "NoOutcome".to_string(),
            },
            Body::Key(_) => "K".to_string(),
        };
        match msg.at {
            Clock::Early => body,
            Clock::Late => format!("{body} [late]"),
        }
    }
}

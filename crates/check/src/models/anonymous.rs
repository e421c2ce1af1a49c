//! Anonymous atomic transactions (Camp, Harkavy, Tygar and Yee, 1996).
//!
//! The customer's token is a bank-certified (blind-signed) anonymous public key; spending means
//! signing with it. A public, reliable transaction log gives a cascaded two-phase commit:
//!
//! 1. C → M: request. 2. M → C: the goods encrypted under K, with a contract (description,
//!    price, checksum of the encrypted goods, deadline) signed by M.
//! 3. C → B: "ready to commit", signed with the anonymous key: B locks the token to this
//!    transaction (C's point of no return).
//! 4. B → M: a signed promise of an anonymous deposit if the transaction commits; B → L: watch
//!    this transaction.
//! 5. M → L: the commit message with K, signed by M. The transaction commits iff the log records
//!    it before the deadline; at the deadline the log records an abort instead — exactly one of
//!    the two, forever.
//! 6. L → B the outcome: on commit B pays M, on abort B unlocks the token.
//! 7. C reads the outcome (and K) from the public log.
//!
//! Abstractions: blind signatures, anonymous channels and signatures are perfect; withdrawal
//! happened before the run (C holds one token of value 1); the log and the bank are the trusted,
//! reliable servers (`Role::Bank`) reached over the fail-safe channel; "the deadline passes" is a
//! step the log may take at any time while the transaction is open. Without a fail-safe channel
//! C may query the log once more.

use crate::property::{
    Binds, CashClaim, Observation, PaperClaim, PropertyKind, Purchase, SignedRecord,
};
use crate::protocol::{Failures, ModelInfo, MoneyKind, Out, PartyId, PartySpec, Protocol, Role};

const C: PartyId = 0;
const M: PartyId = 1;
const B: PartyId = 2;
const L: PartyId = 3;

/// Camp–Harkavy–Tygar–Yee anonymous atomic transactions.
pub struct AnonymousAtomic {
    failsafe_bank_channel: bool,
    key_before_commit: bool,
}

impl AnonymousAtomic {
    /// A mutant whose merchant hands K to the customer as soon as the bank promises payment,
    /// before the log has recorded the commit.
    pub fn mutant_key_before_commit(failures: &Failures) -> Self {
        Self {
            key_before_commit: true,
            ..Self::build(failures)
        }
    }
}

/// Messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// 1. C → M.
    Request,
    /// 2. M → C: encrypted goods and M's signed contract.
    Offer,
    /// 3. C → B: ready to commit, signed with the anonymous key.
    Ready,
    /// 4. B → M: promise of payment on commit.
    Promise,
    /// 4. B → L: watch the transaction.
    Watch,
    /// 5. M → L: commit, with K.
    Commit,
    /// C → L: read the outcome.
    Query,
    /// L → C, L → M, L → B: the outcome (`true` = committed; to C it carries K).
    Outcome(bool),
    /// B → M: paid.
    Paid,
    /// M → C: K itself (only in the mutant that releases it early).
    Key,
}

/// A party's own steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// C asks for the goods.
    Request,
    /// C stops waiting for the offer (before her point of no return).
    OfferTimeout,
    /// C reads the log again (only without a fail-safe channel).
    Requery,
    /// M stops waiting for the bank's promise (he never sends K).
    PromiseTimeout,
    /// The deadline passes at the log.
    Deadline,
}

/// C's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CPhase {
    /// Nothing done.
    Start,
    /// Waiting for the offer.
    AwaitOffer,
    /// Sent "ready" and a query; waiting for the log.
    AwaitOutcome {
        /// Extra queries left.
        requeries: u8,
    },
    /// Committed: has K and the encrypted goods.
    Committed,
    /// Aborted: the token is hers again.
    Aborted,
    /// Gave up before committing herself.
    GaveUp,
}

/// M's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MPhase {
    /// No request.
    Idle,
    /// Offer sent, waiting for the bank's promise.
    AwaitPromise,
    /// Sent K to the log.
    AwaitResult,
    /// Finished: paid.
    Paid,
    /// Finished: aborted.
    Aborted,
    /// Finished: gave up before sending K.
    GaveUp,
}

/// The token at the bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Token {
    /// Free to spend.
    Unlocked,
    /// Locked to the transaction.
    Locked,
    /// Spent: M was paid.
    Spent,
}

/// The log's record of the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Record {
    /// Never heard of.
    Unknown,
    /// Open until the deadline.
    Open,
    /// Committed (K is public).
    Committed,
    /// Aborted.
    Aborted,
}

/// One party's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    /// The anonymous customer.
    Customer {
        /// Progress.
        phase: CPhase,
        /// Received K from the merchant directly (only in the mutant).
        key: bool,
    },
    /// The merchant.
    Merchant {
        /// Progress.
        phase: MPhase,
    },
    /// The bank.
    Bank {
        /// The token.
        token: Token,
        /// M's account.
        m_account: i64,
    },
    /// The public log.
    Log {
        /// The transaction.
        record: Record,
        /// C asked and has not been answered.
        c_waiting: bool,
        /// M committed and has not been answered.
        m_waiting: bool,
        /// The bank watches and has not been told.
        b_waiting: bool,
    },
}

fn is_decided(record: Record) -> bool {
    matches!(record, Record::Committed | Record::Aborted)
}

impl AnonymousAtomic {
    /// The log tells everyone waiting about the decision.
    fn announce(record: Record, waiting: [(&mut bool, PartyId); 3], out: &mut Out<Msg>) {
        let committed = record == Record::Committed;
        for (flag, party) in waiting {
            if *flag {
                out.send(party, Msg::Outcome(committed));
                *flag = false;
            }
        }
    }
}

impl Protocol for AnonymousAtomic {
    type Party = Party;
    type Msg = Msg;
    type Step = Step;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "anonymous-atomic",
            title: "Anonymous atomic transactions (Camp et al.)",
            source: "Camp, Harkavy, Tygar, Yee 1996: commit recorded in a public log",
            money: MoneyKind::Token,
            default_failures: Failures::default(),
            paper: vec![
                PaperClaim::holds(
                    PropertyKind::Money,
                    "Camp et al.: atomic (ACID) anonymous transactions",
                ),
                PaperClaim::holds(
                    PropertyKind::Goods,
                    "Camp et al.: C reads K from the log iff the transaction commits",
                ),
            ],
        }
    }

    fn build(failures: &Failures) -> Self {
        Self {
            failsafe_bank_channel: failures.failsafe_bank_channel || !failures.lossy,
            key_before_commit: false,
        }
    }

    fn parties(&self) -> Vec<PartySpec> {
        vec![
            PartySpec::new("C", Role::Customer),
            PartySpec::new("M", Role::Merchant),
            PartySpec::new("B", Role::Bank),
            PartySpec::new("L", Role::Bank),
        ]
    }

    fn init(&self) -> Vec<Party> {
        vec![
            Party::Customer {
                phase: CPhase::Start,
                key: false,
            },
            Party::Merchant {
                phase: MPhase::Idle,
            },
            Party::Bank {
                token: Token::Unlocked,
                m_account: 0,
            },
            Party::Log {
                record: Record::Unknown,
                c_waiting: false,
                m_waiting: false,
                b_waiting: false,
            },
        ]
    }

    fn on_msg(
        &self,
        _me: PartyId,
        state: &Party,
        _from: PartyId,
        msg: &Msg,
        out: &mut Out<Msg>,
    ) -> Party {
        let mut next = state.clone();
        match (&mut next, msg) {
            (Party::Customer { key, .. }, Msg::Key) => *key = true,
            (Party::Customer { phase, .. }, Msg::Offer) if *phase == CPhase::AwaitOffer => {
                out.send(B, Msg::Ready);
                out.send(L, Msg::Query);
                *phase = CPhase::AwaitOutcome {
                    requeries: if self.failsafe_bank_channel { 0 } else { 1 },
                };
            }
            (Party::Customer { phase, .. }, Msg::Outcome(committed))
                if matches!(phase, CPhase::AwaitOutcome { .. }) =>
            {
                *phase = if *committed {
                    CPhase::Committed
                } else {
                    CPhase::Aborted
                };
            }
            (Party::Merchant { phase }, Msg::Request) if *phase == MPhase::Idle => {
                out.send(C, Msg::Offer);
                *phase = MPhase::AwaitPromise;
            }
            (Party::Merchant { phase }, Msg::Promise) if *phase == MPhase::AwaitPromise => {
                if self.key_before_commit {
                    out.send(C, Msg::Key);
                }
                out.send(L, Msg::Commit);
                *phase = MPhase::AwaitResult;
            }
            (Party::Merchant { phase }, Msg::Paid) if *phase == MPhase::AwaitResult => {
                *phase = MPhase::Paid
            }
            (Party::Merchant { phase }, Msg::Outcome(false)) if *phase == MPhase::AwaitResult => {
                *phase = MPhase::Aborted
            }
            (Party::Bank { token, .. }, Msg::Ready) if *token == Token::Unlocked => {
                *token = Token::Locked;
                out.send(M, Msg::Promise);
                out.send(L, Msg::Watch);
            }
            (Party::Bank { token, m_account }, Msg::Outcome(committed))
                if *token == Token::Locked =>
            {
                if *committed {
                    *token = Token::Spent;
                    *m_account += 1;
                    out.send(M, Msg::Paid);
                } else {
                    *token = Token::Unlocked;
                }
            }
            (
                Party::Log {
                    record,
                    c_waiting,
                    m_waiting,
                    b_waiting,
                },
                msg,
            ) => {
                match msg {
                    Msg::Watch => *b_waiting = true,
                    Msg::Query => *c_waiting = true,
                    Msg::Commit => {
                        *m_waiting = true;
                        if !is_decided(*record) {
                            *record = Record::Committed; // before the deadline
                        }
                    }
                    _ => {}
                }
                if *record == Record::Unknown {
                    *record = Record::Open;
                }
                if is_decided(*record) {
                    Self::announce(
                        *record,
                        [(c_waiting, C), (m_waiting, M), (b_waiting, B)],
                        out,
                    );
                }
            }
            _ => {}
        }
        next
    }

    fn steps(&self, _me: PartyId, state: &Party, steps: &mut Vec<Step>) {
        match state {
            Party::Customer { phase, .. } => match phase {
                CPhase::Start => steps.push(Step::Request),
                CPhase::AwaitOffer => steps.push(Step::OfferTimeout),
                CPhase::AwaitOutcome { requeries } if *requeries > 0 => steps.push(Step::Requery),
                _ => {}
            },
            Party::Merchant {
                phase: MPhase::AwaitPromise,
            } => steps.push(Step::PromiseTimeout),
            Party::Log {
                record: Record::Open,
                ..
            } => steps.push(Step::Deadline),
            _ => {}
        }
    }

    fn on_step(&self, _me: PartyId, state: &Party, step: &Step, out: &mut Out<Msg>) -> Party {
        let mut next = state.clone();
        match (&mut next, step) {
            (Party::Customer { phase, .. }, Step::Request) => {
                out.send(M, Msg::Request);
                *phase = CPhase::AwaitOffer;
            }
            (Party::Customer { phase, .. }, Step::OfferTimeout) => *phase = CPhase::GaveUp,
            (
                Party::Customer {
                    phase: CPhase::AwaitOutcome { requeries },
                    ..
                },
                Step::Requery,
            ) => {
                *requeries -= 1;
                out.send(L, Msg::Query);
            }
            (Party::Merchant { phase }, Step::PromiseTimeout) => *phase = MPhase::GaveUp,
            (
                Party::Log {
                    record,
                    c_waiting,
                    m_waiting,
                    b_waiting,
                },
                Step::Deadline,
            ) => {
                *record = Record::Aborted;
                Self::announce(
                    *record,
                    [(c_waiting, C), (m_waiting, M), (b_waiting, B)],
                    out,
                );
            }
            _ => {}
        }
        next
    }

    fn on_crash(&self, _me: PartyId, state: &Party, _out: &mut Out<Msg>) -> Party {
        state.clone() // every party persists its progress before acting on it
    }

    fn is_done(&self, _me: PartyId, state: &Party) -> bool {
        match state {
            Party::Customer { phase, .. } => {
                matches!(phase, CPhase::Committed | CPhase::Aborted | CPhase::GaveUp)
            }
            Party::Merchant { phase } => matches!(
                phase,
                MPhase::Idle | MPhase::Paid | MPhase::Aborted | MPhase::GaveUp
            ),
            Party::Bank { token, .. } => *token != Token::Locked,
            Party::Log { record, .. } => *record != Record::Open,
        }
    }

    fn observe(&self, parties: &[Party]) -> Observation {
        let (
            Party::Customer { phase, key },
            Party::Bank { token, m_account },
            Party::Log { record, .. },
        ) = (&parties[C], &parties[B], &parties[L])
        else {
            return Observation::default();
        };
        // C can use the token if she never committed herself or learnt of the abort.
        let c_can_use = matches!(
            phase,
            CPhase::Start | CPhase::AwaitOffer | CPhase::GaveUp | CPhase::Aborted
        );
        let c_usable = c_can_use && *token == Token::Unlocked;
        let money_total = m_account + i64::from(c_usable);

        let committed = *record == Record::Committed;
        let cash = if committed {
            // M holds the bank's promise, due now that the log recorded the commit.
            vec![CashClaim {
                holder: M,
                token: 1,
                honoured: *m_account == 1,
            }]
        } else {
            vec![CashClaim {
                holder: C,
                token: 1,
                honoured: *token != Token::Spent,
            }]
        };
        let records = if committed {
            vec![
                // C's "ready" names the contract: price and checksum of the encrypted goods.
                SignedRecord {
                    signer: Role::Customer,
                    binds: Binds {
                        price: true,
                        goods_digest: true,
                        goods_key: false,
                    },
                },
                // M's contract and commit message, in the public log: checksum and K.
                SignedRecord {
                    signer: Role::Merchant,
                    binds: Binds {
                        price: true,
                        goods_digest: true,
                        goods_key: true,
                    },
                },
            ]
        } else {
            Vec::new()
        };
        let purchases = if *phase != CPhase::Start {
            vec![Purchase {
                customer: C,
                merchant: M,
                paid: *m_account == 1,
                goods: *phase == CPhase::Committed || *key,
                records,
            }]
        } else {
            Vec::new()
        };
        Observation {
            money_total,
            cash,
            purchases,
        }
    }
}

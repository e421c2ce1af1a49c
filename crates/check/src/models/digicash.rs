//! Digital cash, the seed paper's 7-step protocol (Tygar, "Atomicity in Electronic Commerce").
//!
//! 1. C withdraws a token from B (B debits C's account).
//! 2. C blinds it — abstracted away: the model has one token and no tracing.
//! 3. C spends it with M.
//! 4. M checks that he has not received it before.
//! 5. M sends the goods to C.
//! 6. M deposits the token at B.
//! 7. B checks the token for uniqueness; a token deposited twice reveals the double spender.
//!
//! Tygar's failure: the spend message (step 3) is lost or the goods do not come back. C cannot
//! know whether M received the token, and has the two options of the paper, both explored:
//! *abandon* the token (if M never got it, her money is destroyed) or *return it to the bank*
//! (if M did get it, his deposit is refused and she is accused of fraud).
//!
//! Abstractions: signatures and blinding are perfect and not modelled; one token of value 1;
//! C, M and B persist everything they learn (a crash loses nothing); M's "received before"
//! check is his own state.

use crate::property::{CashClaim, Observation, PaperClaim, PropertyKind, Purchase};
use crate::protocol::{Failures, ModelInfo, MoneyKind, Out, PartyId, PartySpec, Protocol, Role};

const C: PartyId = 0;
const M: PartyId = 1;
const B: PartyId = 2;

/// The 7-step digital cash protocol of the seed paper.
pub struct DigiCash {
    failsafe_bank_channel: bool,
}

/// Messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// C → B: withdraw one token (step 1).
    Withdraw,
    /// B → C: the token.
    Token,
    /// C → M: the token, spent (step 3).
    Spend,
    /// M → C: the goods (step 5).
    Goods,
    /// M → B: deposit the token (step 6).
    Deposit,
    /// B → M: credited.
    DepositOk,
    /// B → M: the token was already redeemed; the customer's identity is revealed (step 7).
    AlreadyDeposited,
    /// C → B: return the unspent token.
    Refund,
    /// B → C: refunded.
    RefundOk,
    /// B → C: the token was deposited by a merchant: she is accused of double spending.
    Accused,
}

/// A party's own steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// C starts: asks for a token.
    Withdraw,
    /// C gives up waiting for the bank (only without a fail-safe channel).
    WithdrawTimeout,
    /// C spends the token with M.
    Spend,
    /// C stops waiting for the goods.
    GoodsTimeout,
    /// C's option 1: keep the token and do nothing.
    Abandon,
    /// C's option 2: return the token to the bank.
    ReturnToBank,
    /// M deposits the token.
    Deposit,
    /// M sends the deposit again (only without a fail-safe channel).
    DepositRetry,
}

/// The customer's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CPhase {
    /// Nothing done yet.
    Start,
    /// Waiting for the token.
    AwaitToken,
    /// Holds an unspent token.
    HasToken,
    /// Spent it, waiting for the goods.
    AwaitGoods,
    /// Timed out: does not know whether M received the token.
    Uncertain,
    /// Returned the token, waiting for the bank.
    AwaitRefund,
    /// Finished: received the goods.
    Done,
    /// Finished: gave up (the token, if any, is never used again).
    GaveUp,
    /// Finished: the bank refunded the token.
    Refunded,
    /// Finished: the bank accused her of double spending.
    Accused,
}

/// The merchant's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MPhase {
    /// No token received.
    Idle,
    /// Accepted the token and sent the goods; not deposited yet.
    Accepted,
    /// Deposit sent; `retries` left.
    AwaitSlip {
        /// Deposit retries left.
        retries: u8,
    },
    /// Finished: credited.
    Paid,
    /// Finished: the bank refused the deposit.
    Rejected,
    /// Finished: gave up on a deposit with no answer.
    Unpaid,
}

/// Where the token is, as the bank sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenState {
    /// Not withdrawn.
    NotIssued,
    /// Withdrawn, not redeemed.
    Outstanding,
    /// Redeemed by this party (a merchant's deposit or the customer's refund).
    RedeemedBy(PartyId),
}

/// One party's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    /// The customer.
    Customer {
        /// Progress.
        phase: CPhase,
        /// Received the token from the bank.
        has_token: bool,
        /// Received the goods.
        goods: bool,
    },
    /// The merchant.
    Merchant {
        /// Progress.
        phase: MPhase,
    },
    /// The bank.
    Bank {
        /// C's balance.
        c_account: i64,
        /// M's balance.
        m_account: i64,
        /// The token.
        token: TokenState,
        /// A double spender's identity was revealed.
        fraud_flagged: bool,
    },
}

impl Protocol for DigiCash {
    type Party = Party;
    type Msg = Msg;
    type Step = Step;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "digicash",
            title: "Digital cash (Tygar's 7 steps)",
            source: "Tygar 1996, seed paper: anonymous digital cash and its failure at the spend step",
            money: MoneyKind::Token,
            default_failures: Failures::default(),
            paper: vec![
                PaperClaim::fails(
                    PropertyKind::Money,
                    "Tygar: a communication failure around step 3 breaks money atomicity",
                ),
                PaperClaim::fails(
                    PropertyKind::Goods,
                    "Tygar: goods atomicity presupposes money atomicity",
                ),
                PaperClaim::fails(
                    PropertyKind::Certified,
                    "Tygar: certified delivery presupposes goods atomicity",
                ),
            ],
        }
    }

    fn build(failures: &Failures) -> Self {
        Self {
            failsafe_bank_channel: failures.failsafe_bank_channel || !failures.lossy,
        }
    }

    fn parties(&self) -> Vec<PartySpec> {
        vec![
            PartySpec::new("C", Role::Customer),
            PartySpec::new("M", Role::Merchant),
            PartySpec::new("B", Role::Bank),
        ]
    }

    fn init(&self) -> Vec<Party> {
        vec![
            Party::Customer {
                phase: CPhase::Start,
                has_token: false,
                goods: false,
            },
            Party::Merchant {
                phase: MPhase::Idle,
            },
            Party::Bank {
                c_account: 1,
                m_account: 0,
                token: TokenState::NotIssued,
                fraud_flagged: false,
            },
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
            Party::Customer {
                phase,
                has_token,
                goods,
            } => match msg {
                // A token that arrives after she gave up waiting is still hers.
                Msg::Token
                    if *phase == CPhase::AwaitToken
                        || (*phase == CPhase::GaveUp && !*has_token) =>
                {
                    *has_token = true;
                    *phase = CPhase::HasToken;
                }
                Msg::Goods => {
                    *goods = true;
                    if matches!(*phase, CPhase::AwaitGoods | CPhase::Uncertain) {
                        *phase = CPhase::Done;
                    }
                }
                Msg::RefundOk if *phase == CPhase::AwaitRefund => *phase = CPhase::Refunded,
                Msg::Accused if *phase == CPhase::AwaitRefund => *phase = CPhase::Accused,
                _ => {}
            },
            Party::Merchant { phase } => match msg {
                // Step 4: a token he has not received before.
                Msg::Spend if *phase == MPhase::Idle => {
                    *phase = MPhase::Accepted;
                    out.send(C, Msg::Goods);
                }
                Msg::DepositOk if matches!(*phase, MPhase::AwaitSlip { .. }) => {
                    *phase = MPhase::Paid
                }
                Msg::AlreadyDeposited if matches!(*phase, MPhase::AwaitSlip { .. }) => {
                    *phase = MPhase::Rejected
                }
                _ => {}
            },
            Party::Bank {
                c_account,
                m_account,
                token,
                fraud_flagged,
            } => match (msg, *token) {
                (Msg::Withdraw, TokenState::NotIssued) => {
                    *c_account -= 1;
                    *token = TokenState::Outstanding;
                    out.send(C, Msg::Token);
                }
                (Msg::Withdraw, _) => out.send(C, Msg::Token), // a repeated request
                (Msg::Deposit, TokenState::Outstanding) => {
                    *m_account += 1;
                    *token = TokenState::RedeemedBy(from);
                    out.send(from, Msg::DepositOk);
                }
                (Msg::Deposit, TokenState::RedeemedBy(p)) if p == from => {
                    out.send(from, Msg::DepositOk)
                }
                (Msg::Deposit, TokenState::RedeemedBy(_)) => {
                    *fraud_flagged = true;
                    out.send(from, Msg::AlreadyDeposited);
                }
                (Msg::Refund, TokenState::Outstanding) => {
                    *c_account += 1;
                    *token = TokenState::RedeemedBy(from);
                    out.send(from, Msg::RefundOk);
                }
                (Msg::Refund, TokenState::RedeemedBy(p)) if p == from => {
                    out.send(from, Msg::RefundOk)
                }
                (Msg::Refund, TokenState::RedeemedBy(_)) => {
                    *fraud_flagged = true;
                    out.send(from, Msg::Accused);
                }
                _ => {}
            },
        }
        next
    }

    fn steps(&self, _me: PartyId, state: &Party, steps: &mut Vec<Step>) {
        match state {
            Party::Customer { phase, .. } => match phase {
                CPhase::Start => steps.push(Step::Withdraw),
                CPhase::AwaitToken if !self.failsafe_bank_channel => {
                    steps.push(Step::WithdrawTimeout)
                }
                CPhase::HasToken => steps.push(Step::Spend),
                CPhase::AwaitGoods => steps.push(Step::GoodsTimeout),
                CPhase::Uncertain => {
                    steps.push(Step::Abandon);
                    steps.push(Step::ReturnToBank);
                }
                _ => {}
            },
            Party::Merchant { phase } => match phase {
                MPhase::Accepted => steps.push(Step::Deposit),
                MPhase::AwaitSlip { .. } if !self.failsafe_bank_channel => {
                    steps.push(Step::DepositRetry)
                }
                _ => {}
            },
            Party::Bank { .. } => {}
        }
    }

    fn on_step(&self, _me: PartyId, state: &Party, step: &Step, out: &mut Out<Msg>) -> Party {
        let mut next = state.clone();
        match (&mut next, step) {
            (Party::Customer { phase, .. }, Step::Withdraw) => {
                out.send(B, Msg::Withdraw);
                *phase = CPhase::AwaitToken;
            }
            (Party::Customer { phase, .. }, Step::WithdrawTimeout) => *phase = CPhase::GaveUp,
            (Party::Customer { phase, .. }, Step::Spend) => {
                out.send(M, Msg::Spend);
                *phase = CPhase::AwaitGoods;
            }
            (Party::Customer { phase, .. }, Step::GoodsTimeout) => *phase = CPhase::Uncertain,
            (Party::Customer { phase, .. }, Step::Abandon) => *phase = CPhase::GaveUp,
            (Party::Customer { phase, .. }, Step::ReturnToBank) => {
                out.send(B, Msg::Refund);
                *phase = CPhase::AwaitRefund;
            }
            (Party::Merchant { phase }, Step::Deposit) => {
                out.send(B, Msg::Deposit);
                *phase = MPhase::AwaitSlip { retries: 1 };
            }
            (Party::Merchant { phase }, Step::DepositRetry) => {
                if let MPhase::AwaitSlip { retries } = *phase {
                    if retries > 0 {
                        out.send(B, Msg::Deposit);
                        *phase = MPhase::AwaitSlip {
                            retries: retries - 1,
                        };
                    } else {
                        *phase = MPhase::Unpaid;
                    }
                }
            }
            _ => {}
        }
        next
    }

    fn on_crash(&self, _me: PartyId, state: &Party, _out: &mut Out<Msg>) -> Party {
        // Wallet, merchant and bank databases are durable; nothing volatile is lost.
        state.clone()
    }

    fn is_done(&self, _me: PartyId, state: &Party) -> bool {
        match state {
            Party::Customer { phase, .. } => matches!(
                phase,
                CPhase::Done | CPhase::GaveUp | CPhase::Refunded | CPhase::Accused
            ),
            Party::Merchant { phase } => matches!(
                phase,
                MPhase::Idle | MPhase::Paid | MPhase::Rejected | MPhase::Unpaid
            ),
            Party::Bank { .. } => true,
        }
    }

    fn observe(&self, parties: &[Party]) -> Observation {
        let (
            Party::Customer {
                phase: c_phase,
                has_token,
                goods,
            },
            Party::Merchant { phase: m_phase },
            Party::Bank {
                c_account,
                m_account,
                token,
                ..
            },
        ) = (&parties[C], &parties[M], &parties[B])
        else {
            return Observation::default();
        };
        let outstanding = *token == TokenState::Outstanding;
        let m_accepted = *m_phase != MPhase::Idle;
        // Usable money: accounts, plus the token if its holder knows she can still use it.
        let c_usable = *c_phase == CPhase::HasToken && outstanding;
        let m_usable =
            matches!(m_phase, MPhase::Accepted | MPhase::AwaitSlip { .. }) && outstanding;
        let money_total = c_account + m_account + i64::from(c_usable) + i64::from(m_usable);

        let mut cash = Vec::new();
        let holder = if m_accepted {
            Some(M)
        } else if *has_token {
            Some(C)
        } else {
            None
        };
        if let Some(holder) = holder {
            let honoured = match token {
                TokenState::RedeemedBy(p) => *p == holder,
                _ => true,
            };
            cash.push(CashClaim {
                holder,
                token: 1,
                honoured,
            });
        }

        let spent = !matches!(
            c_phase,
            CPhase::Start | CPhase::AwaitToken | CPhase::HasToken
        ) && *has_token;
        let purchases = if spent {
            vec![Purchase {
                customer: C,
                merchant: M,
                paid: *token == TokenState::RedeemedBy(M),
                goods: *goods,
                records: Vec::new(),
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

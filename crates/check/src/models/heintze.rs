//! Digital cash with challenge/response, as model-checked by Heintze, Tygar, Wing and Wong
//! ("Model Checking Electronic Commerce Protocols", 1996).
//!
//! Withdrawal (1–2), spending with a challenge (3–6), deposit (7–8):
//!
//! 1. C → B withdraw; 2. B → C coin (B debits C).
//! 3. C → M coin; 4. M → C challenge; 5. C → M response; 6. M → C goods.
//! 7. M → B coin, challenge, response; 8. B → M deposit slip, or "already deposited" (and the
//!    double spender's identity is revealed).
//!
//! As in the paper: one customer, one bank, crypto hidden, the bank never fails and is reached
//! over a fail-safe channel; C–M communication fails arbitrarily. Two merchants so that the
//! paper's counterexample can happen: the customer may (fraudulently) answer a second merchant's
//! challenge for the same coin. If C times out she asks the bank for a refund over the fail-safe
//! channel ("refund at the bank"); a merchant deposit that arrives after such a refund goes to
//! *arbitration*, which — the merchant holding C's response to his own challenge — reverses the
//! refund (the paper's `arbitration` state). A merchant who crashes while waiting for the
//! response loses his challenge (it was only in memory) and aborts.

use crate::property::{CashClaim, Observation, PaperClaim, PropertyKind, Purchase};
use crate::protocol::{Failures, ModelInfo, MoneyKind, Out, PartyId, PartySpec, Protocol, Role};

const C: PartyId = 0;
const M1: PartyId = 1;
const M2: PartyId = 2;
const B: PartyId = 3;

/// Heintze et al.'s digital cash protocol with challenge/response.
pub struct HeintzeCash {
    failsafe_bank_channel: bool,
}

/// Messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// 1. C → B.
    Withdraw,
    /// 2. B → C.
    Coin,
    /// 3. C → M: the coin.
    Spend,
    /// 4. M → C: a fresh challenge.
    Challenge,
    /// 5. C → M: the response (it identifies C only if she answers two challenges).
    Response,
    /// 6. M → C.
    Goods,
    /// 7. M → B: coin, challenge and response.
    Deposit,
    /// 8. B → M: credited.
    DepositSlip,
    /// 8. B → M: refused, the coin was deposited by someone else; C is flagged for fraud.
    AlreadyDeposited,
    /// C → B: refund an unspent coin.
    Refund,
    /// B → C: refunded.
    RefundOk,
    /// B → C: refused, a merchant already deposited the coin.
    RefundRefused,
}

/// A party's own steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// C asks for a coin.
    Withdraw,
    /// C gives up on the withdrawal (only without a fail-safe channel).
    WithdrawTimeout,
    /// C spends the coin with M1.
    Spend,
    /// C spends the same coin again with M2 (fraud).
    DoubleSpend,
    /// C stops waiting in her session with M1.
    Timeout,
    /// C asks the bank for a refund.
    Refund,
    /// A merchant stops waiting for the response.
    ResponseTimeout,
    /// A merchant deposits.
    Deposit,
}

/// C's withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Withdrawal {
    /// Not started.
    Start,
    /// Waiting for the coin.
    Await,
    /// Holds the coin.
    Have,
    /// Gave up.
    GaveUp,
}

/// C's session with one merchant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Session {
    /// Not started.
    NotStarted,
    /// Coin sent, waiting for the challenge.
    AwaitChallenge,
    /// Response sent, waiting for the goods.
    AwaitGoods,
    /// Received the goods.
    GotGoods,
    /// Gave up waiting.
    TimedOut,
}

/// C's refund request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refund {
    /// Not asked.
    None,
    /// Asked, waiting.
    Await,
    /// Refunded.
    Refunded,
    /// Refused.
    Refused,
}

/// A merchant's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MPhase {
    /// No coin.
    Idle,
    /// Challenge sent.
    AwaitResponse,
    /// Accepted the coin with a valid response and sent the goods (`mGetsToken`).
    Accepted,
    /// Deposit sent.
    AwaitSlip,
    /// Finished: credited.
    Paid,
    /// Finished: deposit refused.
    Rejected,
    /// Finished: no valid response.
    Aborted,
}

/// The coin, as the bank sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoinState {
    /// Not withdrawn.
    NotIssued,
    /// Withdrawn, not redeemed.
    Outstanding,
    /// Deposited by this merchant.
    Deposited(PartyId),
    /// Refunded to C.
    Refunded,
}

/// One party's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    /// The customer.
    Customer {
        /// Withdrawal.
        withdrawal: Withdrawal,
        /// Sessions with M1 and M2.
        sessions: [Session; 2],
        /// Refund.
        refund: Refund,
    },
    /// A merchant.
    Merchant {
        /// Progress.
        phase: MPhase,
    },
    /// The bank.
    Bank {
        /// Balances of C, M1, M2.
        accounts: [i64; 3],
        /// The coin.
        coin: CoinState,
        /// A double spender was identified.
        fraud_flagged: bool,
    },
}

fn session_index(merchant: PartyId) -> usize {
    if merchant == M1 { 0 } else { 1 }
}

impl Protocol for HeintzeCash {
    type Party = Party;
    type Msg = Msg;
    type Step = Step;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "digicash-heintze",
            title: "Digital cash with challenge/response (Heintze et al.)",
            source: "Heintze, Tygar, Wing, Wong 1996: FDR model of simplified Digicash-style cash",
            money: MoneyKind::Token,
            default_failures: Failures::default(),
            paper: vec![
                PaperClaim::holds(
                    PropertyKind::Money,
                    "Heintze et al.: money conservation (SPEC3) holds, even with fraud",
                ),
                PaperClaim::holds(
                    PropertyKind::CashCustomer,
                    "Heintze et al.: the customer's cash property holds",
                ),
                PaperClaim::fails(
                    PropertyKind::CashMerchant,
                    "Heintze et al.: coin spent twice, the second merchant cannot deposit",
                ),
                PaperClaim::fails(
                    PropertyKind::Goods,
                    "Heintze et al.: obviously not goods atomic",
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
            PartySpec::new("M1", Role::Merchant),
            PartySpec::new("M2", Role::Merchant),
            PartySpec::new("B", Role::Bank),
        ]
    }

    fn init(&self) -> Vec<Party> {
        let merchant = Party::Merchant {
            phase: MPhase::Idle,
        };
        vec![
            Party::Customer {
                withdrawal: Withdrawal::Start,
                sessions: [Session::NotStarted; 2],
                refund: Refund::None,
            },
            merchant.clone(),
            merchant,
            Party::Bank {
                accounts: [1, 0, 0],
                coin: CoinState::NotIssued,
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
                withdrawal,
                sessions,
                refund,
            } => match msg {
                // A coin that arrives after she gave up waiting is still hers.
                Msg::Coin if matches!(withdrawal, Withdrawal::Await | Withdrawal::GaveUp) => {
                    *withdrawal = Withdrawal::Have
                }
                Msg::Challenge if sessions[session_index(from)] == Session::AwaitChallenge => {
                    out.send(from, Msg::Response);
                    sessions[session_index(from)] = Session::AwaitGoods;
                }
                Msg::Goods if from == M1 || from == M2 => {
                    sessions[session_index(from)] = Session::GotGoods
                }
                Msg::RefundOk if *refund == Refund::Await => *refund = Refund::Refunded,
                Msg::RefundRefused if *refund == Refund::Await => *refund = Refund::Refused,
                _ => {}
            },
            Party::Merchant { phase } => match msg {
                Msg::Spend if *phase == MPhase::Idle => {
                    out.send(C, Msg::Challenge);
                    *phase = MPhase::AwaitResponse;
                }
                Msg::Response if *phase == MPhase::AwaitResponse => {
                    out.send(C, Msg::Goods);
                    *phase = MPhase::Accepted;
                }
                Msg::DepositSlip if *phase == MPhase::AwaitSlip => *phase = MPhase::Paid,
                Msg::AlreadyDeposited if *phase == MPhase::AwaitSlip => *phase = MPhase::Rejected,
                _ => {}
            },
            Party::Bank {
                accounts,
                coin,
                fraud_flagged,
            } => match (msg, *coin) {
                (Msg::Withdraw, CoinState::NotIssued) => {
                    accounts[0] -= 1;
                    *coin = CoinState::Outstanding;
                    out.send(C, Msg::Coin);
                }
                (Msg::Withdraw, _) => out.send(C, Msg::Coin),
                (Msg::Deposit, CoinState::Outstanding) => {
                    accounts[from] += 1;
                    *coin = CoinState::Deposited(from);
                    out.send(from, Msg::DepositSlip);
                }
                (Msg::Deposit, CoinState::Deposited(m)) if m == from => {
                    out.send(from, Msg::DepositSlip)
                }
                (Msg::Deposit, CoinState::Deposited(_)) => {
                    *fraud_flagged = true;
                    out.send(from, Msg::AlreadyDeposited);
                }
                (Msg::Deposit, CoinState::Refunded) => {
                    // Arbitration: the merchant's transcript proves C spent the coin with him.
                    accounts[0] -= 1;
                    accounts[from] += 1;
                    *coin = CoinState::Deposited(from);
                    out.send(from, Msg::DepositSlip);
                }
                (Msg::Refund, CoinState::Outstanding) => {
                    accounts[0] += 1;
                    *coin = CoinState::Refunded;
                    out.send(C, Msg::RefundOk);
                }
                (Msg::Refund, CoinState::Refunded) => out.send(C, Msg::RefundOk),
                (Msg::Refund, CoinState::Deposited(_)) => out.send(C, Msg::RefundRefused),
                _ => {}
            },
        }
        next
    }

    fn steps(&self, _me: PartyId, state: &Party, steps: &mut Vec<Step>) {
        match state {
            Party::Customer {
                withdrawal,
                sessions,
                refund,
            } => {
                match withdrawal {
                    Withdrawal::Start => steps.push(Step::Withdraw),
                    Withdrawal::Await if !self.failsafe_bank_channel => {
                        steps.push(Step::WithdrawTimeout)
                    }
                    Withdrawal::Have if sessions[0] == Session::NotStarted => {
                        steps.push(Step::Spend)
                    }
                    _ => {}
                }
                if matches!(sessions[0], Session::AwaitGoods | Session::GotGoods)
                    && sessions[1] == Session::NotStarted
                {
                    steps.push(Step::DoubleSpend);
                }
                if matches!(sessions[0], Session::AwaitChallenge | Session::AwaitGoods) {
                    steps.push(Step::Timeout);
                }
                if sessions[0] == Session::TimedOut && *refund == Refund::None {
                    steps.push(Step::Refund);
                }
            }
            Party::Merchant { phase } => match phase {
                MPhase::AwaitResponse => steps.push(Step::ResponseTimeout),
                MPhase::Accepted => steps.push(Step::Deposit),
                _ => {}
            },
            Party::Bank { .. } => {}
        }
    }

    fn on_step(&self, _me: PartyId, state: &Party, step: &Step, out: &mut Out<Msg>) -> Party {
        let mut next = state.clone();
        match (&mut next, step) {
            (Party::Customer { withdrawal, .. }, Step::Withdraw) => {
                out.send(B, Msg::Withdraw);
                *withdrawal = Withdrawal::Await;
            }
            (Party::Customer { withdrawal, .. }, Step::WithdrawTimeout) => {
                *withdrawal = Withdrawal::GaveUp
            }
            (Party::Customer { sessions, .. }, Step::Spend) => {
                out.send(M1, Msg::Spend);
                sessions[0] = Session::AwaitChallenge;
            }
            (Party::Customer { sessions, .. }, Step::DoubleSpend) => {
                out.send(M2, Msg::Spend);
                sessions[1] = Session::AwaitChallenge;
            }
            (Party::Customer { sessions, .. }, Step::Timeout) => sessions[0] = Session::TimedOut,
            (Party::Customer { refund, .. }, Step::Refund) => {
                out.send(B, Msg::Refund);
                *refund = Refund::Await;
            }
            (Party::Merchant { phase }, Step::ResponseTimeout) => *phase = MPhase::Aborted,
            (Party::Merchant { phase }, Step::Deposit) => {
                out.send(B, Msg::Deposit);
                *phase = MPhase::AwaitSlip;
            }
            _ => {}
        }
        next
    }

    fn on_crash(&self, _me: PartyId, state: &Party, _out: &mut Out<Msg>) -> Party {
        match state {
            // The challenge lived only in memory: the session is lost.
            Party::Merchant {
                phase: MPhase::AwaitResponse,
            } => Party::Merchant {
                phase: MPhase::Aborted,
            },
            other => other.clone(),
        }
    }

    fn is_done(&self, _me: PartyId, state: &Party) -> bool {
        match state {
            Party::Customer {
                withdrawal,
                sessions,
                refund,
            } => {
                let withdrawn = matches!(withdrawal, Withdrawal::Have | Withdrawal::GaveUp);
                let session_done = |s: Session| {
                    matches!(
                        s,
                        Session::GotGoods | Session::TimedOut | Session::NotStarted
                    )
                };
                let spent_or_gave_up =
                    *withdrawal == Withdrawal::GaveUp || sessions[0] != Session::NotStarted;
                let refund_settled = match refund {
                    Refund::None => sessions[0] != Session::TimedOut,
                    Refund::Await => false,
                    Refund::Refunded | Refund::Refused => true,
                };
                withdrawn
                    && spent_or_gave_up
                    && sessions.iter().all(|s| session_done(*s))
                    && refund_settled
            }
            Party::Merchant { phase } => matches!(
                phase,
                MPhase::Idle | MPhase::Paid | MPhase::Rejected | MPhase::Aborted
            ),
            Party::Bank { .. } => true,
        }
    }

    fn observe(&self, parties: &[Party]) -> Observation {
        let (
            Party::Customer {
                withdrawal,
                sessions,
                ..
            },
            Party::Bank { accounts, coin, .. },
        ) = (&parties[C], &parties[B])
        else {
            return Observation::default();
        };
        let merchant_phase = |m: PartyId| match &parties[m] {
            Party::Merchant { phase } => *phase,
            _ => MPhase::Idle,
        };
        let outstanding = *coin == CoinState::Outstanding;
        let accepted = |m: PartyId| {
            matches!(
                merchant_phase(m),
                MPhase::Accepted | MPhase::AwaitSlip | MPhase::Paid | MPhase::Rejected
            )
        };

        // Usable money: accounts, the unspent coin in C's wallet, a coin a merchant is about
        // to deposit.
        let mut money_total: i64 = accounts.iter().sum();
        let c_usable = *withdrawal == Withdrawal::Have && sessions[0] == Session::NotStarted;
        if outstanding && (c_usable || accepted(M1) || accepted(M2)) {
            money_total += 1;
        }

        let mut cash = Vec::new();
        for m in [M1, M2] {
            if accepted(m) {
                let honoured = !matches!(coin, CoinState::Deposited(d) if *d != m);
                cash.push(CashClaim {
                    holder: m,
                    token: 1,
                    honoured,
                });
            }
        }
        if cash.is_empty() && *withdrawal == Withdrawal::Have {
            cash.push(CashClaim {
                holder: C,
                token: 1,
                honoured: !matches!(coin, CoinState::Deposited(_)),
            });
        }

        let purchases = [M1, M2]
            .into_iter()
            .filter(|m| sessions[session_index(*m)] != Session::NotStarted)
            .map(|m| Purchase {
                customer: C,
                merchant: m,
                paid: *coin == CoinState::Deposited(m),
                goods: sessions[session_index(m)] == Session::GotGoods,
                records: Vec::new(),
            })
            .collect();
        Observation {
            money_total,
            cash,
            purchases,
        }
    }
}

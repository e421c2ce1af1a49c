//! First Virtual: goods first, then an e-mail confirmation of every purchase.
//!
//! After Tygar ("First Virtual allows users to buy goods freely and then uses e-mail to confirm
//! each and every transaction with the customer") and Borenstein's description of the system:
//!
//! 1. C → M: order, with her First Virtual account id (not a secret; no cryptography).
//! 2. M → C: the goods, at once.
//! 3. M → FV: the transaction (account id, amount).
//! 4. FV → C: e-mail "did you make this purchase?".
//! 5. C → FV: yes or no (a customer may refuse to pay for goods she does not want).
//! 6. On yes FV charges C's card and credits M in one step; FV → M: paid or declined.
//!
//! Abstractions: FV's card charge is one atomic transfer between two accounts; the e-mail
//! between FV and C is the channel to the bank (fail-safe under Heintze et al.'s assumption,
//! lossy with `--no-failsafe-channel`, and then FV may give up on an unanswered e-mail); nothing
//! is signed. Parties persist what they learn.

use crate::property::{Observation, PaperClaim, PropertyKind, Purchase};
use crate::protocol::{Failures, ModelInfo, MoneyKind, Out, PartyId, PartySpec, Protocol, Role};

const C: PartyId = 0;
const M: PartyId = 1;
const FV: PartyId = 2;

/// First Virtual's e-mail confirmed purchases.
pub struct FirstVirtual {
    failsafe_bank_channel: bool,
}

/// Messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// 1. C → M.
    Order,
    /// 2. M → C.
    Goods,
    /// 3. M → FV.
    Transaction,
    /// 4. FV → C (e-mail).
    ConfirmRequest,
    /// 5. C → FV (e-mail): `true` for yes.
    Confirm(bool),
    /// 6. FV → M: `true` if charged.
    Outcome(bool),
}

/// A party's own steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// C orders.
    Order,
    /// C stops waiting for the goods.
    Timeout,
    /// C answers the e-mail: `true` for yes.
    Answer(bool),
    /// FV gives up waiting for an answer and declines (it never charges without a yes); only
    /// without a fail-safe channel, where the answer may be lost.
    Expire,
}

/// One party's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    /// The customer.
    Customer {
        /// Ordered.
        ordered: bool,
        /// Received the goods.
        goods: bool,
        /// Stopped waiting for the goods.
        timed_out: bool,
        /// An unanswered confirmation request.
        asked: bool,
        /// Answered it.
        answered: bool,
    },
    /// The merchant.
    Merchant {
        /// Received the order (and shipped, and reported).
        served: bool,
        /// FV's answer, once known.
        outcome: Option<bool>,
    },
    /// First Virtual.
    Server {
        /// C's card balance.
        c_account: i64,
        /// M's balance.
        m_account: i64,
        /// Transaction reported, confirmation pending.
        pending: bool,
        /// Decided: `Some(true)` charged, `Some(false)` declined.
        decided: Option<bool>,
    },
}

impl Protocol for FirstVirtual {
    type Party = Party;
    type Msg = Msg;
    type Step = Step;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "first-virtual",
            title: "First Virtual (e-mail confirmation)",
            source: "Tygar 1996 (seed): First Virtual; Borenstein 1994",
            money: MoneyKind::Notational,
            default_failures: Failures::default(),
            paper: vec![
                PaperClaim::holds(
                    PropertyKind::Money,
                    "Tygar: First Virtual clearly preserves money atomicity",
                ),
                PaperClaim::fails(
                    PropertyKind::Goods,
                    "Tygar: fails goods atomicity (buy an item without paying for it)",
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
            PartySpec::new("FV", Role::Bank),
        ]
    }

    fn init(&self) -> Vec<Party> {
        vec![
            Party::Customer {
                ordered: false,
                goods: false,
                timed_out: false,
                asked: false,
                answered: false,
            },
            Party::Merchant {
                served: false,
                outcome: None,
            },
            Party::Server {
                c_account: 1,
                m_account: 0,
                pending: false,
                decided: None,
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
            (Party::Customer { goods, .. }, Msg::Goods) => *goods = true,
            (
                Party::Customer {
                    asked, answered, ..
                },
                Msg::ConfirmRequest,
            ) if !*answered => *asked = true,
            (Party::Merchant { served, .. }, Msg::Order) if !*served => {
                *served = true;
                out.send(C, Msg::Goods);
                out.send(FV, Msg::Transaction);
            }
            (Party::Merchant { outcome, .. }, Msg::Outcome(paid)) => *outcome = Some(*paid),
            (
                Party::Server {
                    pending, decided, ..
                },
                Msg::Transaction,
            ) if !*pending && decided.is_none() => {
                *pending = true;
                out.send(C, Msg::ConfirmRequest);
            }
            (
                Party::Server {
                    c_account,
                    m_account,
                    pending,
                    decided,
                },
                Msg::Confirm(yes),
            ) if *pending => {
                if *yes {
                    *c_account -= 1;
                    *m_account += 1;
                }
                *pending = false;
                *decided = Some(*yes);
                out.send(M, Msg::Outcome(*yes));
            }
            _ => {}
        }
        next
    }

    fn steps(&self, _me: PartyId, state: &Party, steps: &mut Vec<Step>) {
        if let Party::Server { pending: true, .. } = state
            && !self.failsafe_bank_channel
        {
            steps.push(Step::Expire);
        }
        if let Party::Customer {
            ordered,
            goods,
            timed_out,
            asked,
            answered,
        } = state
        {
            if !*ordered {
                steps.push(Step::Order);
            } else if !*goods && !*timed_out {
                steps.push(Step::Timeout);
            }
            if *asked && !*answered {
                steps.push(Step::Answer(true));
                steps.push(Step::Answer(false));
            }
        }
    }

    fn on_step(&self, _me: PartyId, state: &Party, step: &Step, out: &mut Out<Msg>) -> Party {
        let mut next = state.clone();
        if let (
            Party::Server {
                pending, decided, ..
            },
            Step::Expire,
        ) = (&mut next, step)
        {
            *pending = false;
            *decided = Some(false);
            out.send(M, Msg::Outcome(false));
            return next;
        }
        if let Party::Customer {
            ordered,
            timed_out,
            answered,
            ..
        } = &mut next
        {
            match step {
                Step::Order => {
                    out.send(M, Msg::Order);
                    *ordered = true;
                }
                Step::Timeout => *timed_out = true,
                Step::Answer(yes) => {
                    out.send(FV, Msg::Confirm(*yes));
                    *answered = true;
                }
                Step::Expire => {}
            }
        }
        next
    }

    fn on_crash(&self, _me: PartyId, state: &Party, _out: &mut Out<Msg>) -> Party {
        state.clone() // mailboxes and databases are durable
    }

    fn is_done(&self, _me: PartyId, state: &Party) -> bool {
        match state {
            Party::Customer {
                ordered,
                goods,
                timed_out,
                asked,
                answered,
            } => *ordered && (*goods || *timed_out) && (!*asked || *answered),
            Party::Merchant { served, outcome } => !*served || outcome.is_some(),
            Party::Server { pending, .. } => !*pending,
        }
    }

    fn observe(&self, parties: &[Party]) -> Observation {
        let (
            Party::Customer { ordered, goods, .. },
            Party::Server {
                c_account,
                m_account,
                decided,
                ..
            },
        ) = (&parties[C], &parties[FV])
        else {
            return Observation::default();
        };
        let purchases = if *ordered {
            vec![Purchase {
                customer: C,
                merchant: M,
                paid: *decided == Some(true),
                goods: *goods,
                records: Vec::new(),
            }]
        } else {
            Vec::new()
        };
        Observation {
            money_total: c_account + m_account,
            cash: Vec::new(),
            purchases,
        }
    }
}

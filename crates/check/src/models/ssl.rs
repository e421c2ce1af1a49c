//! A card number sent to the merchant over SSL.
//!
//! After Tygar: "a secure communication channel to transfer a customer's credit card number to
//! the merchant ... equivalent to reading your credit card number over the phone".
//!
//! 1. C → M (over SSL): order and card number.
//! 2. M → Card: charge the card. 3. Card → M: approved (C debited and M credited in one step).
//! 4. M → C: the goods.
//!
//! Abstractions: SSL is a confidential, authentic channel that can still fail (loss); the card
//! network (issuer and acquirer) is one reliable server whose charge is one atomic transfer —
//! "money atomicity to the extent that credit card transactions are money-atomic"; charges are
//! idempotent per order; charge-backs are not modelled; nothing is signed.

use crate::property::{Observation, PaperClaim, PropertyKind, Purchase};
use crate::protocol::{Failures, ModelInfo, MoneyKind, Out, PartyId, PartySpec, Protocol, Role};

const C: PartyId = 0;
const M: PartyId = 1;
const CARD: PartyId = 2;

/// Card number over SSL.
pub struct SslCard;

/// Messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// 1. C → M: order with card number.
    Order,
    /// 2. M → Card.
    Charge,
    /// 3. Card → M.
    Approved,
    /// 4. M → C.
    Goods,
}

/// A party's own steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// C orders.
    Order,
    /// C stops waiting for the goods.
    Timeout,
}

/// One party's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    /// The customer.
    Customer {
        /// Ordered.
        ordered: bool,
        /// Has the goods.
        goods: bool,
        /// Stopped waiting.
        timed_out: bool,
    },
    /// The merchant.
    Merchant {
        /// Got the order and asked for the charge.
        charging: bool,
        /// Charge approved and goods sent.
        shipped: bool,
    },
    /// The card network.
    Card {
        /// C's card account.
        c_account: i64,
        /// M's account.
        m_account: i64,
        /// The order was charged.
        charged: bool,
    },
}

impl Protocol for SslCard {
    type Party = Party;
    type Msg = Msg;
    type Step = Step;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "ssl",
            title: "Card number over SSL",
            source: "Tygar 1996 (seed): SSL",
            money: MoneyKind::Notational,
            default_failures: Failures::default(),
            paper: vec![
                PaperClaim::holds(
                    PropertyKind::Money,
                    "Tygar: money atomicity to the extent card payments are money-atomic",
                ),
                PaperClaim::fails(
                    PropertyKind::Goods,
                    "Tygar: goods atomicity is not addressed",
                ),
                PaperClaim::fails(
                    PropertyKind::Certified,
                    "Tygar: certified delivery presupposes goods atomicity",
                ),
            ],
        }
    }

    fn build(_failures: &Failures) -> Self {
        Self
    }

    fn parties(&self) -> Vec<PartySpec> {
        vec![
            PartySpec::new("C", Role::Customer),
            PartySpec::new("M", Role::Merchant),
            PartySpec::new("Card", Role::Bank),
        ]
    }

    fn init(&self) -> Vec<Party> {
        vec![
            Party::Customer {
                ordered: false,
                goods: false,
                timed_out: false,
            },
            Party::Merchant {
                charging: false,
                shipped: false,
            },
            Party::Card {
                c_account: 1,
                m_account: 0,
                charged: false,
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
            (Party::Merchant { charging, .. }, Msg::Order) if !*charging => {
                *charging = true;
                out.send(CARD, Msg::Charge);
            }
            (Party::Merchant { charging, shipped }, Msg::Approved) if *charging && !*shipped => {
                *shipped = true;
                out.send(C, Msg::Goods);
            }
            (
                Party::Card {
                    c_account,
                    m_account,
                    charged,
                },
                Msg::Charge,
            ) => {
                if !*charged {
                    *c_account -= 1;
                    *m_account += 1;
                    *charged = true;
                }
                out.send(M, Msg::Approved);
            }
            _ => {}
        }
        next
    }

    fn steps(&self, _me: PartyId, state: &Party, steps: &mut Vec<Step>) {
        if let Party::Customer {
            ordered,
            goods,
            timed_out,
        } = state
        {
            if !*ordered {
                steps.push(Step::Order);
            } else if !*goods && !*timed_out {
                steps.push(Step::Timeout);
            }
        }
    }

    fn on_step(&self, _me: PartyId, state: &Party, step: &Step, out: &mut Out<Msg>) -> Party {
        let mut next = state.clone();
        if let Party::Customer {
            ordered, timed_out, ..
        } = &mut next
        {
            match step {
                Step::Order => {
                    out.send(M, Msg::Order);
                    *ordered = true;
                }
                Step::Timeout => *timed_out = true,
            }
        }
        next
    }

    fn on_crash(&self, _me: PartyId, state: &Party, _out: &mut Out<Msg>) -> Party {
        state.clone() // every party persists what it has done
    }

    fn is_done(&self, _me: PartyId, state: &Party) -> bool {
        match state {
            Party::Customer {
                ordered,
                goods,
                timed_out,
            } => *ordered && (*goods || *timed_out),
            Party::Merchant { charging, shipped } => !*charging || *shipped,
            Party::Card { .. } => true,
        }
    }

    fn observe(&self, parties: &[Party]) -> Observation {
        let (
            Party::Customer { ordered, goods, .. },
            Party::Card {
                c_account,
                m_account,
                charged,
            },
        ) = (&parties[C], &parties[CARD])
        else {
            return Observation::default();
        };
        let purchases = if *ordered {
            vec![Purchase {
                customer: C,
                merchant: M,
                paid: *charged,
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

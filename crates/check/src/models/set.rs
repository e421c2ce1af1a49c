//! SET, Secure Electronic Transactions (MasterCard and Visa), purchase and authorization.
//!
//! After Tygar: "the customer digitally signs a purchase request and a price and then encrypts
//! payment information ... with a bank's public key. The merchant acknowledges the purchase, and
//! forwards the request to the bank. The bank processes the request, and if the prices match,
//! the bank charges the customer's account and instructs the merchant to complete the sale."
//!
//! 1. C → M: purchase request: order information and price under C's dual signature, payment
//!    information sealed for the payment gateway PG.
//! 2. M → C: signed acknowledgement. 3. M → PG: authorization request (the sealed payment
//!    information, M's signature). 4. PG checks that the prices match, charges C and credits M
//!    in one step; PG → M: authorized. 5. M → C: the goods ("complete the sale").
//!
//! Abstractions: signatures and sealing are perfect; the payment gateway and card accounts are
//! one reliable server; prices always match (honest parties). The signed records bind the order
//! and the price — not what was delivered.

use crate::property::{Binds, Observation, PaperClaim, PropertyKind, Purchase, SignedRecord};
use crate::protocol::{Failures, ModelInfo, MoneyKind, Out, PartyId, PartySpec, Protocol, Role};

const C: PartyId = 0;
const M: PartyId = 1;
const PG: PartyId = 2;

/// SET purchase with authorization.
pub struct Set;

/// Messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// 1. C → M: order info + price (dual signature), sealed payment info.
    PurchaseRequest,
    /// 2. M → C: signed acknowledgement.
    PurchaseAck,
    /// 3. M → PG.
    AuthRequest,
    /// 4. PG → M: charged.
    Authorized,
    /// 5. M → C.
    Goods,
}

/// A party's own steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// C sends the purchase request.
    Purchase,
    /// C stops waiting for the goods.
    Timeout,
}

/// One party's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    /// The customer.
    Customer {
        /// Sent the purchase request.
        requested: bool,
        /// Received the merchant's acknowledgement.
        acked: bool,
        /// Has the goods.
        goods: bool,
        /// Stopped waiting.
        timed_out: bool,
    },
    /// The merchant.
    Merchant {
        /// Acknowledged and asked for authorization.
        authorizing: bool,
        /// Authorized and goods sent.
        shipped: bool,
    },
    /// The payment gateway and card accounts.
    Gateway {
        /// C's account.
        c_account: i64,
        /// M's account.
        m_account: i64,
        /// Charged.
        charged: bool,
    },
}

impl Protocol for Set {
    type Party = Party;
    type Msg = Msg;
    type Step = Step;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "set",
            title: "SET (signed order, sealed card data)",
            source: "Tygar 1996 (seed): SET; MasterCard and Visa SET draft specification",
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
            PartySpec::new("PG", Role::Bank),
        ]
    }

    fn init(&self) -> Vec<Party> {
        vec![
            Party::Customer {
                requested: false,
                acked: false,
                goods: false,
                timed_out: false,
            },
            Party::Merchant {
                authorizing: false,
                shipped: false,
            },
            Party::Gateway {
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
            (Party::Customer { acked, .. }, Msg::PurchaseAck) => *acked = true,
            (Party::Customer { goods, .. }, Msg::Goods) => *goods = true,
            (Party::Merchant { authorizing, .. }, Msg::PurchaseRequest) if !*authorizing => {
                *authorizing = true;
                out.send(C, Msg::PurchaseAck);
                out.send(PG, Msg::AuthRequest);
            }
            (
                Party::Merchant {
                    authorizing,
                    shipped,
                },
                Msg::Authorized,
            ) if *authorizing && !*shipped => {
                *shipped = true;
                out.send(C, Msg::Goods);
            }
            (
                Party::Gateway {
                    c_account,
                    m_account,
                    charged,
                },
                Msg::AuthRequest,
            ) => {
                // The prices in the order information and the payment information match.
                if !*charged {
                    *c_account -= 1;
                    *m_account += 1;
                    *charged = true;
                }
                out.send(M, Msg::Authorized);
            }
            _ => {}
        }
        next
    }

    fn steps(&self, _me: PartyId, state: &Party, steps: &mut Vec<Step>) {
        if let Party::Customer {
            requested,
            goods,
            timed_out,
            ..
        } = state
        {
            if !*requested {
                steps.push(Step::Purchase);
            } else if !*goods && !*timed_out {
                steps.push(Step::Timeout);
            }
        }
    }

    fn on_step(&self, _me: PartyId, state: &Party, step: &Step, out: &mut Out<Msg>) -> Party {
        let mut next = state.clone();
        if let Party::Customer {
            requested,
            timed_out,
            ..
        } = &mut next
        {
            match step {
                Step::Purchase => {
                    out.send(M, Msg::PurchaseRequest);
                    *requested = true;
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
                requested,
                goods,
                timed_out,
                ..
            } => *requested && (*goods || *timed_out),
            Party::Merchant {
                authorizing,
                shipped,
            } => !*authorizing || *shipped,
            Party::Gateway { .. } => true,
        }
    }

    fn observe(&self, parties: &[Party]) -> Observation {
        let (
            Party::Customer {
                requested, goods, ..
            },
            Party::Gateway {
                c_account,
                m_account,
                charged,
            },
        ) = (&parties[C], &parties[PG])
        else {
            return Observation::default();
        };
        // The gateway keeps C's dual signature over order and price, and M's signed request.
        let price_only = Binds {
            price: true,
            ..Binds::default()
        };
        let records = if *charged {
            vec![
                SignedRecord {
                    signer: Role::Customer,
                    binds: price_only,
                },
                SignedRecord {
                    signer: Role::Merchant,
                    binds: price_only,
                },
            ]
        } else {
            Vec::new()
        };
        let purchases = if *requested {
            vec![Purchase {
                customer: C,
                merchant: M,
                paid: *charged,
                goods: *goods,
                records,
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

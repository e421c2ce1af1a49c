//! The three atomicity properties (plus the cash property), stated once for every model.
//!
//! A model reports facts about a state as an [`Observation`]: how much usable money exists, which
//! tokens are rightfully held and whether the bank honoured them, and for each purchase whether
//! the money moved, whether the customer has the goods and which signed records exist. The
//! properties below are judged on those facts in quiescent states (every party finished,
//! including recovery) — "once every party has finished recovery".

use serde::Serialize;

use crate::protocol::{PartyId, Role};

/// The properties the checker reports, one column each in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PropertyKind {
    /// No money created or destroyed: the usable money at the end equals the money at the start.
    Money,
    /// Token money: a token the customer rightfully holds can still be spent or deposited.
    CashCustomer,
    /// Token money: a token the merchant rightfully holds can be deposited.
    CashMerchant,
    /// The customer has the goods if and only if the money for them moved.
    Goods,
    /// For every paid purchase, a judge can tell from signed records which goods were paid for.
    Certified,
}

impl PropertyKind {
    /// Every property, in table order.
    pub const ALL: [PropertyKind; 5] = [
        PropertyKind::Money,
        PropertyKind::CashCustomer,
        PropertyKind::CashMerchant,
        PropertyKind::Goods,
        PropertyKind::Certified,
    ];

    /// The property's name as registered with the checker and shown in reports.
    pub const fn name(self) -> &'static str {
        match self {
            PropertyKind::Money => "money atomicity",
            PropertyKind::CashCustomer => "cash property (customer)",
            PropertyKind::CashMerchant => "cash property (merchant)",
            PropertyKind::Goods => "goods atomicity",
            PropertyKind::Certified => "certified delivery",
        }
    }

    /// Short column header for the table.
    pub const fn column(self) -> &'static str {
        match self {
            PropertyKind::Money => "money",
            PropertyKind::CashCustomer => "cash(C)",
            PropertyKind::CashMerchant => "cash(M)",
            PropertyKind::Goods => "goods",
            PropertyKind::Certified => "certified",
        }
    }

    /// Parses a column name or property name (as printed) back into a property.
    pub fn parse(s: &str) -> Option<PropertyKind> {
        Self::ALL
            .into_iter()
            .find(|p| p.column() == s || p.name() == s)
    }
}

/// What a paper claims about one property of one protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaperClaim {
    /// The property the claim is about.
    pub property: PropertyKind,
    /// `true` if the paper says the property holds.
    pub holds: bool,
    /// Who says so, and where.
    pub source: &'static str,
}

impl PaperClaim {
    /// The paper says `property` holds.
    pub const fn holds(property: PropertyKind, source: &'static str) -> Self {
        Self {
            property,
            holds: true,
            source,
        }
    }

    /// The paper says `property` fails.
    pub const fn fails(property: PropertyKind, source: &'static str) -> Self {
        Self {
            property,
            holds: false,
            source,
        }
    }
}

/// A token that a party rightfully holds, and whether the bank honoured it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CashClaim {
    /// The rightful holder: the customer who withdrew it and has not paid it to a merchant who
    /// accepted it, or a merchant who accepted it in a correct run of the spending protocol.
    pub holder: PartyId,
    /// Which token.
    pub token: u8,
    /// `false` if the bank redeemed the token for someone else or refused the holder.
    pub honoured: bool,
}

/// What a signed record binds, symbolically.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Binds {
    /// The price.
    pub price: bool,
    /// A checksum of the goods as delivered (encrypted or not).
    pub goods_digest: bool,
    /// The key that decrypts the delivered goods (or the goods themselves).
    pub goods_key: bool,
}

/// A signed record that a judge can consult (held durably by some party or a public log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignedRecord {
    /// Who signed it.
    pub signer: Role,
    /// What it binds.
    pub binds: Binds,
}

/// One purchase attempt between a customer and a merchant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Purchase {
    /// The buyer.
    pub customer: PartyId,
    /// The seller.
    pub merchant: PartyId,
    /// The money for this purchase reached the merchant (or its account).
    pub paid: bool,
    /// The customer has the goods in usable form.
    pub goods: bool,
    /// Signed records about this purchase that exist durably somewhere.
    pub records: Vec<SignedRecord>,
}

/// The facts about one global state that the properties are judged on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Usable money: account balances plus tokens whose holder knows it can still use them.
    pub money_total: i64,
    /// Tokens rightfully held (token money only).
    pub cash: Vec<CashClaim>,
    /// Purchase attempts so far.
    pub purchases: Vec<Purchase>,
}

/// The judge of certified delivery: the customer signed the price and the checksum of what she
/// received, and the merchant signed that checksum together with the key (or the content).
pub fn judge_certified(records: &[SignedRecord]) -> bool {
    let customer_signed = records
        .iter()
        .any(|r| r.signer == Role::Customer && r.binds.price && r.binds.goods_digest);
    let merchant_signed = records
        .iter()
        .any(|r| r.signer == Role::Merchant && r.binds.goods_digest && r.binds.goods_key);
    customer_signed && merchant_signed
}

/// Judges `property` on an observation of a quiescent state, given the initial money and each
/// party's role. Returns `None` if it holds, or a one-line reason why it fails.
pub fn violation(
    property: PropertyKind,
    obs: &Observation,
    initial_money: i64,
    roles: &[Role],
    names: &[&str],
) -> Option<String> {
    match property {
        PropertyKind::Money => (obs.money_total != initial_money).then(|| {
            let change = obs.money_total - initial_money;
            let what = if change > 0 { "created" } else { "destroyed" };
            format!(
                "usable money is {} but was {} at the start: {} unit(s) {what}",
                obs.money_total,
                initial_money,
                change.abs()
            )
        }),
        PropertyKind::CashCustomer | PropertyKind::CashMerchant => {
            let role = if property == PropertyKind::CashCustomer {
                Role::Customer
            } else {
                Role::Merchant
            };
            obs.cash
                .iter()
                .find(|c| roles[c.holder] == role && !c.honoured)
                .map(|c| {
                    format!(
                        "{} rightfully holds token {} but the bank will not honour it",
                        names[c.holder], c.token
                    )
                })
        }
        PropertyKind::Goods => obs.purchases.iter().find(|p| p.paid != p.goods).map(|p| {
            let (c, m) = (names[p.customer], names[p.merchant]);
            if p.paid {
                format!("{c} paid {m} but does not have the goods")
            } else {
                format!("{c} has the goods from {m} but {m} was not paid")
            }
        }),
        PropertyKind::Certified => obs
            .purchases
            .iter()
            .find(|p| p.paid && !judge_certified(&p.records))
            .map(|p| {
                format!(
                    "{} paid {} but no signed records show which goods were paid for",
                    names[p.customer], names[p.merchant]
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Role; 3] = [Role::Customer, Role::Merchant, Role::Bank];
    const NAMES: [&str; 3] = ["C", "M", "B"];

    fn signed(signer: Role, price: bool, goods_digest: bool, goods_key: bool) -> SignedRecord {
        SignedRecord {
            signer,
            binds: Binds {
                price,
                goods_digest,
                goods_key,
            },
        }
    }

    #[test]
    fn the_judge_needs_both_signatures_over_the_same_checksum() {
        let customer = signed(Role::Customer, true, true, false);
        let merchant = signed(Role::Merchant, true, true, true);
        assert!(judge_certified(&[customer, merchant]));
        assert!(!judge_certified(&[customer]));
        assert!(!judge_certified(&[merchant]));
        // SET's records: order and price signed, nothing about what was delivered.
        let price_only = |r| signed(r, true, false, false);
        assert!(!judge_certified(&[
            price_only(Role::Customer),
            price_only(Role::Merchant)
        ]));
    }

    #[test]
    fn violations_explain_themselves() {
        let obs = Observation {
            money_total: 0,
            cash: vec![CashClaim {
                holder: 1,
                token: 1,
                honoured: false,
            }],
            purchases: vec![Purchase {
                customer: 0,
                merchant: 1,
                paid: true,
                goods: false,
                records: Vec::new(),
            }],
        };
        let why = |p| violation(p, &obs, 1, &ROLES, &NAMES);
        assert!(why(PropertyKind::Money).is_some_and(|w| w.contains("1 unit(s) destroyed")));
        assert_eq!(why(PropertyKind::CashCustomer), None);
        assert!(why(PropertyKind::CashMerchant).is_some_and(|w| w.starts_with("M rightfully")));
        assert!(why(PropertyKind::Goods).is_some_and(|w| w.contains("does not have the goods")));
        assert!(why(PropertyKind::Certified).is_some());
        assert_eq!(
            violation(PropertyKind::Money, &obs, 0, &ROLES, &NAMES),
            None
        );
    }

    #[test]
    fn columns_parse_back() {
        for p in PropertyKind::ALL {
            assert_eq!(PropertyKind::parse(p.column()), Some(p));
            assert_eq!(PropertyKind::parse(p.name()), Some(p));
        }
        assert_eq!(PropertyKind::parse("atomicity"), None);
    }
}

//! Money: integers of a fixed minor unit, never floats.
//!
//! One minor unit is 1/100 000 of a dollar (1/1000 of a cent), fine enough for sub-cent
//! prices. People see amounts as `USD:0.00125`; programs see integers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Minor units per major unit (dollar).
pub const MINOR_PER_MAJOR: u64 = 100_000;
/// Decimal places of the minor unit.
pub const MINOR_DIGITS: usize = 5;
/// The one currency this deployment keeps accounts in.
pub const CURRENCY: &str = "USD";
/// The largest amount any single price, deposit or payout may have: 1 000 000 000 USD.
/// Keeping amounts far below `i64::MAX` makes overflow in sums of balances impossible.
pub const AMOUNT_MAX_MINOR: u64 = 1_000_000_000 * MINOR_PER_MAJOR;

/// A non-negative amount of money in minor units, at most [`AMOUNT_MAX_MINOR`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u64);

/// Why a string or number is not an [`Amount`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AmountError {
    #[error("amount must look like USD:0.00125 (currency, colon, at most 5 decimals)")]
    Syntax,
    #[error("unknown currency {0:?}: this server keeps accounts in USD")]
    Currency(String),
    #[error("amount has more than 5 decimals; the smallest unit is USD:0.00001")]
    TooPrecise,
    #[error("amount is over the limit of USD:1000000000")]
    TooLarge,
}

impl Amount {
    pub const ZERO: Amount = Amount(0);
    /// The largest amount there is (a bid that accepts any price).
    pub const MAX: Amount = Amount(AMOUNT_MAX_MINOR);

    /// An amount of `minor` units, refused if over [`AMOUNT_MAX_MINOR`].
    pub fn from_minor(minor: u64) -> Result<Self, AmountError> {
        if minor > AMOUNT_MAX_MINOR {
            Err(AmountError::TooLarge)
        } else {
            Ok(Amount(minor))
        }
    }
    pub fn minor(self) -> u64 {
        self.0
    }
    /// The amount as a signed number of minor units, for balance arithmetic.
    pub fn signed(self) -> i64 {
        self.0 as i64 // cannot wrap: AMOUNT_MAX_MINOR < i64::MAX
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
    /// The sum, or `None` past [`AMOUNT_MAX_MINOR`].
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0
            .checked_add(other.0)
            .and_then(|m| Amount::from_minor(m).ok())
    }
}

/// Formats a signed number of minor units as `USD:-0.00125`.
pub fn format_minor(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!(
        "{CURRENCY}:{sign}{}.{:0width$}",
        abs / MINOR_PER_MAJOR,
        abs % MINOR_PER_MAJOR,
        width = MINOR_DIGITS
    )
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_minor(self.signed()))
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({self})")
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    /// Parses `USD:1`, `USD:0.5`, `USD:0.00125`. The currency is required.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (cur, num) = s.split_once(':').ok_or(AmountError::Syntax)?;
        if cur != CURRENCY {
            return Err(AmountError::Currency(cur.to_string()));
        }
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || (num.contains('.') && !digits(frac)) {
            return Err(AmountError::Syntax);
        }
        if frac.len() > MINOR_DIGITS {
            return Err(AmountError::TooPrecise);
        }
        if int.len() > 10 {
            return Err(AmountError::TooLarge);
        }
        let int: u64 = int.parse().map_err(|_| AmountError::Syntax)?;
        let frac_minor: u64 = if frac.is_empty() {
            0
        } else {
            let padded = format!("{frac:0<width$}", width = MINOR_DIGITS);
            padded.parse().map_err(|_| AmountError::Syntax)?
        };
        let minor = int
            .checked_mul(MINOR_PER_MAJOR)
            .and_then(|m| m.checked_add(frac_minor))
            .ok_or(AmountError::TooLarge)?;
        Amount::from_minor(minor)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        for (s, minor) in [
            ("USD:0.00125", 125),
            ("USD:1", 100_000),
            ("USD:0.5", 50_000),
            ("USD:12.34567", 1_234_567),
            ("USD:0.00001", 1),
        ] {
            let a: Amount = s.parse().unwrap();
            assert_eq!(a.minor(), minor, "{s}");
            assert_eq!(
                Amount::from_minor(minor)
                    .unwrap()
                    .to_string()
                    .parse::<Amount>(),
                Ok(a)
            );
        }
        assert_eq!(Amount::from_minor(125).unwrap().to_string(), "USD:0.00125");
        assert_eq!(format_minor(-125), "USD:-0.00125");
    }

    #[test]
    fn refuses_bad_amounts() {
        assert_eq!("0.5".parse::<Amount>(), Err(AmountError::Syntax));
        assert_eq!(
            "EUR:1".parse::<Amount>(),
            Err(AmountError::Currency("EUR".into()))
        );
        assert_eq!("USD:-1".parse::<Amount>(), Err(AmountError::Syntax));
        assert_eq!("USD:1.".parse::<Amount>(), Err(AmountError::Syntax));
        assert_eq!("USD:.5".parse::<Amount>(), Err(AmountError::Syntax));
        assert_eq!("USD:1e3".parse::<Amount>(), Err(AmountError::Syntax));
        assert_eq!(
            "USD:0.000001".parse::<Amount>(),
            Err(AmountError::TooPrecise)
        );
        assert_eq!(
            "USD:1000000001".parse::<Amount>(),
            Err(AmountError::TooLarge)
        );
        assert_eq!(
            "USD:99999999999999999999".parse::<Amount>(),
            Err(AmountError::TooLarge)
        );
        assert_eq!(Amount::from_minor(u64::MAX), Err(AmountError::TooLarge));
    }
}

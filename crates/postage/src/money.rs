//! Postage amounts: integers of a fixed minor unit (mills, 1/1000 USD), never floats.

use std::fmt;
use std::str::FromStr;

/// Minor units per US dollar: one mill is a tenth of a cent.
pub const MILLS_PER_DOLLAR: u64 = 1000;

/// An amount of postage in mills (1/1000 USD), shown as `USD:0.58` or `USD:0.585`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Postage(pub u64);

/// Why an amount could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseAmountError {
    /// The currency prefix is not `USD:`.
    #[error("unsupported currency in {0:?}: write amounts like USD:0.58")]
    Currency(String),
    /// Not a decimal number with at most three decimals.
    #[error(
        "invalid amount {0:?}: write amounts like USD:0.58 (at most 3 decimals, the unit is 1/10 cent)"
    )]
    Syntax(String),
    /// Too large to represent.
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl Postage {
    /// Zero postage.
    pub const ZERO: Postage = Postage(0);

    /// The amount in mills.
    pub fn mills(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Postage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MILLS_PER_DOLLAR;
        let frac = self.0 % MILLS_PER_DOLLAR;
        if frac.is_multiple_of(10) {
            write!(f, "USD:{}.{:02}", whole, frac / 10)
        } else {
            write!(f, "USD:{whole}.{frac:03}")
        }
    }
}

impl FromStr for Postage {
    type Err = ParseAmountError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let number = match s.split_once(':') {
            Some((cur, rest)) if cur.eq_ignore_ascii_case("USD") => rest,
            Some(_) => return Err(ParseAmountError::Currency(input.to_string())),
            None => s,
        };
        let syntax = || ParseAmountError::Syntax(input.to_string());
        let (whole, frac) = match number.split_once('.') {
            Some((_, "")) => return Err(syntax()),
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 15 || !digits(whole) || frac.len() > 3 || !digits(frac)
        {
            return Err(syntax());
        }
        let whole: u64 = whole.parse().map_err(|_| syntax())?;
        let mut frac_mills: u64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_mills += u64::from(b - b'0') * 10u64.pow(2 - i as u32);
        }
        whole
            .checked_mul(MILLS_PER_DOLLAR)
            .and_then(|m| m.checked_add(frac_mills))
            .map(Postage)
            .ok_or_else(|| ParseAmountError::Overflow(input.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        assert_eq!(Postage(580).to_string(), "USD:0.58");
        assert_eq!(Postage(585).to_string(), "USD:0.585");
        assert_eq!(Postage(50_000).to_string(), "USD:50.00");
        assert_eq!("USD:0.58".parse::<Postage>(), Ok(Postage(580)));
        assert_eq!("0.585".parse::<Postage>(), Ok(Postage(585)));
        assert_eq!("usd:12".parse::<Postage>(), Ok(Postage(12_000)));
        assert_eq!("USD:1.5".parse::<Postage>(), Ok(Postage(1_500)));
        for bad in [
            "", "USD:", "1.2345", "-1", "1e3", "EUR:1", "1.", "abc", "USD:0,58",
        ] {
            assert!(bad.parse::<Postage>().is_err(), "{bad} should not parse");
        }
    }
}

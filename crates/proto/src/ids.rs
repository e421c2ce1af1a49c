//! Names and identifiers: accounts, products, EPOIDs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::codec::{Codec, DecodeError, Reader, Writer};

/// Longest account id or product code.
pub const NAME_LEN_MAX: usize = 64;

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "invalid {what} {value:?}: use 1–64 characters from a–z, 0–9, '.', '_', '-', starting with a letter or digit"
)]
pub struct NameError {
    what: &'static str,
    value: String,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_LEN_MAX
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: &str) -> Result<Self, NameError> {
                if valid_name(s) {
                    Ok(Self(s.to_string()))
                } else {
                    Err(NameError { what: $what, value: s.chars().take(80).collect() })
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
        impl Codec for $name {
            fn encode(&self, w: &mut Writer) {
                w.str(&self.0);
            }
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let s = r.str(NAME_LEN_MAX)?;
                Self::new(s).map_err(|_| DecodeError::InvalidValue { field: $what })
            }
        }
    };
}

name_type!(
    /// An account at the billing server (customer or merchant), e.g. `alice`, `acme-press`.
    AccountId, "account id"
);
name_type!(
    /// A merchant's catalog key for a product, e.g. `article-42`.
    ProductCode, "product code"
);
name_type!(
    /// A group a credential vouches for, e.g. `acm-student`.
    GroupName, "group name"
);

/// The electronic purchase order id: globally unique, so an EPO cannot be replayed, and
/// timestamped at the end of goods delivery, so it expires.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpoId {
    /// The merchant that delivered the goods.
    pub merchant: AccountId,
    /// Milliseconds since the Unix epoch at the end of delivery.
    pub delivered_at_ms: u64,
    /// The merchant's serial number, unique per merchant.
    pub serial: u64,
}

impl fmt::Display for EpoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.merchant, self.delivered_at_ms, self.serial
        )
    }
}

impl fmt::Debug for EpoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EpoId({self})")
    }
}

/// Why a string is not an EPOID.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid EPOID {0:?}: expected merchant:delivered_at_ms:serial, e.g. acme:1732400000000:7")]
pub struct EpoIdError(String);

impl FromStr for EpoId {
    type Err = EpoIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || EpoIdError(s.chars().take(100).collect());
        let mut parts = s.split(':');
        let (Some(m), Some(t), Some(n), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        let num = |x: &str| {
            if x.is_empty() || x.len() > 20 || !x.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                x.parse::<u64>().ok()
            }
        };
        Ok(EpoId {
            merchant: AccountId::new(m).map_err(|_| err())?,
            delivered_at_ms: num(t).ok_or_else(err)?,
            serial: num(n).ok_or_else(err)?,
        })
    }
}

impl Serialize for EpoId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for EpoId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Codec for EpoId {
    fn encode(&self, w: &mut Writer) {
        self.merchant.encode(w);
        w.u64(self.delivered_at_ms);
        w.u64(self.serial);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(EpoId {
            merchant: AccountId::decode(r)?,
            delivered_at_ms: r.u64()?,
            serial: r.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(AccountId::new("alice").is_ok());
        assert!(AccountId::new("acme-press.2").is_ok());
        for bad in ["", "Alice", "-x", "a b", "ä", &"a".repeat(65)] {
            assert!(AccountId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn epoid_text_and_bytes_round_trip() {
        let id: EpoId = "acme:1732400000000:7".parse().unwrap();
        assert_eq!(id.to_string(), "acme:1732400000000:7");
        assert_eq!(EpoId::from_bytes(&id.to_bytes()).unwrap(), id);
        for bad in ["acme:1:2:3", "acme:x:1", "acme::1", "Acme:1:1", "acme:1:+1"] {
            assert!(bad.parse::<EpoId>().is_err(), "{bad}");
        }
    }
}

//! The indicium: the signed postage data printed in the barcode (layout in `docs/postage.md`).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::codec::{DecodeError, Reader, Writer};
use crate::{DeviceId, MailDate, Postage};

/// Domain-separation tag prefixed to the signed bytes of an indicium.
pub const INDICIUM_TAG: &[u8] = b"NETBILL-POSTAGE-INDICIUM\0";
/// Current indicium layout version.
pub const INDICIUM_VERSION: u8 = 1;
/// Algorithm id 1: Ed25519 (RFC 8032, pure).
pub const ALG_ED25519: u8 = 1;
/// Flag bit: this indicium is a re-issue of the device's last indicium.
pub const FLAG_REISSUE: u8 = 0x01;
/// Length of the signed data part.
pub const DATA_LEN: usize = 43;
/// Length of an encoded indicium (data + 64-byte signature).
pub const INDICIUM_LEN: usize = DATA_LEN + 64;
/// Largest register value (5-byte field), in mills: about USD 1.1 billion.
pub const REGISTER_MAX: u64 = (1 << 40) - 1;
/// Largest postage for one piece (3-byte field), in mills: USD 16,777.215.
pub const POSTAGE_MAX: u64 = (1 << 24) - 1;

/// Rate category (mail class) paid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateCategory {
    /// First-Class letter.
    Letter = 1,
    /// Postcard.
    Postcard = 2,
    /// Large envelope (flat).
    Flat = 3,
    /// Parcel.
    Parcel = 4,
    /// Priority mail.
    Priority = 5,
}

impl RateCategory {
    /// Decodes the 1-byte code.
    pub fn from_code(b: u8) -> Option<RateCategory> {
        Some(match b {
            1 => RateCategory::Letter,
            2 => RateCategory::Postcard,
            3 => RateCategory::Flat,
            4 => RateCategory::Parcel,
            5 => RateCategory::Priority,
            _ => return None,
        })
    }
    /// The lowercase name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RateCategory::Letter => "letter",
            RateCategory::Postcard => "postcard",
            RateCategory::Flat => "flat",
            RateCategory::Parcel => "parcel",
            RateCategory::Priority => "priority",
        }
    }
}

impl FromStr for RateCategory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        (1..=5)
            .filter_map(RateCategory::from_code)
            .find(|r| r.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown rate category {s:?}: use letter, postcard, flat, parcel or priority"
                )
            })
    }
}

/// A 5-digit ZIP code (origin or delivery area).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Zip(pub u32);

impl FromStr for Zip {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.len() == 5 && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse()
                .map(Zip)
                .map_err(|_| format!("invalid ZIP code {s:?}"))
        } else {
            Err(format!(
                "invalid ZIP code {s:?}: expected 5 digits, like 15213"
            ))
        }
    }
}

impl fmt::Display for Zip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05}", self.0)
    }
}

/// A destination delivery point: ZIP (5 digits) + ZIP+4 (4) + delivery point (2) = 11 digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryPoint(pub u64);

/// Largest 11-digit delivery point code.
pub const DELIVERY_POINT_MAX: u64 = 99_999_999_999;

impl DeliveryPoint {
    /// Combines a 5-digit ZIP with the 6-digit `plus4 + delivery point` part (`NNNN-NN` or `NNNNNN`).
    pub fn new(zip: Zip, rest: &str) -> Result<DeliveryPoint, String> {
        let digits: String = rest.chars().filter(|c| *c != '-').collect();
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) || rest.len() > 7 {
            return Err(format!(
                "invalid delivery point {rest:?}: expected ZIP+4 and 2-digit delivery point, like 3890-01"
            ));
        }
        let tail: u64 = digits
            .parse()
            .map_err(|_| format!("invalid delivery point {rest:?}"))?;
        Ok(DeliveryPoint(u64::from(zip.0) * 1_000_000 + tail))
    }
    /// The 5-digit ZIP part.
    pub fn zip(self) -> Zip {
        Zip((self.0 / 1_000_000) as u32)
    }
}

impl fmt::Display for DeliveryPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let z = self.0 / 1_000_000;
        let p4 = (self.0 / 100) % 10_000;
        let dp = self.0 % 100;
        write!(f, "{z:05}-{p4:04}-{dp:02}")
    }
}

/// The decoded contents of an indicium.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indicium {
    /// Flags (bit 0: re-issue).
    pub flags: u8,
    /// Printing device.
    pub device_id: DeviceId,
    /// Serial of the device certificate that verifies the signature.
    pub cert_serial: u32,
    /// Piece counter: 1 for the device's first indicium.
    pub sequence: u32,
    /// Ascending register after this piece (total postage printed).
    pub ascending: Postage,
    /// Descending register after this piece (postage left).
    pub descending: Postage,
    /// Postage paid by this piece.
    pub postage: Postage,
    /// Date of mailing.
    pub date: MailDate,
    /// Originating ZIP code.
    pub origin: Zip,
    /// Destination delivery point.
    pub destination: DeliveryPoint,
    /// Rate category.
    pub rate: RateCategory,
    /// Device's Ed25519 signature over `INDICIUM_TAG || data`.
    pub signature: [u8; 64],
}

impl Indicium {
    /// The 43 data bytes (everything but the signature).
    pub fn data(&self) -> [u8; DATA_LEN] {
        let mut w = Writer::default();
        w.u8(INDICIUM_VERSION);
        w.u8(ALG_ED25519);
        w.u8(self.flags);
        w.u64(self.device_id.0);
        w.u32(self.cert_serial);
        w.u32(self.sequence);
        w.uint(self.ascending.0.min(REGISTER_MAX), 5);
        w.uint(self.descending.0.min(REGISTER_MAX), 5);
        w.uint(self.postage.0.min(POSTAGE_MAX), 3);
        w.u16(self.date.0);
        w.uint(u64::from(self.origin.0), 3);
        w.uint(self.destination.0.min(DELIVERY_POINT_MAX), 5);
        w.u8(self.rate as u8);
        let mut out = [0u8; DATA_LEN];
        out.copy_from_slice(&w.0);
        out
    }

    /// The bytes the device signs: domain tag, then the data (which starts with the version).
    pub fn signed_bytes(&self) -> Vec<u8> {
        [INDICIUM_TAG, &self.data()].concat()
    }

    /// The full `INDICIUM_LEN`-byte encoding printed in the barcode.
    pub fn to_bytes(&self) -> [u8; INDICIUM_LEN] {
        let mut out = [0u8; INDICIUM_LEN];
        out[..DATA_LEN].copy_from_slice(&self.data());
        out[DATA_LEN..].copy_from_slice(&self.signature);
        out
    }

    /// Whether this indicium is marked as a re-issue.
    pub fn is_reissue(&self) -> bool {
        self.flags & FLAG_REISSUE != 0
    }

    /// Decodes an indicium; rejects wrong length, version, algorithm, flags or field ranges.
    pub fn from_bytes(bytes: &[u8]) -> Result<Indicium, DecodeError> {
        if bytes.len() != INDICIUM_LEN {
            return Err(DecodeError::Invalid("indicium length"));
        }
        let mut r = Reader::new(bytes);
        if r.u8("version")? != INDICIUM_VERSION {
            return Err(DecodeError::Invalid("version"));
        }
        if r.u8("algorithm")? != ALG_ED25519 {
            return Err(DecodeError::Invalid("algorithm"));
        }
        let flags = r.u8("flags")?;
        if flags & !FLAG_REISSUE != 0 {
            return Err(DecodeError::Invalid("flags"));
        }
        let ind = Indicium {
            flags,
            device_id: DeviceId(r.u64("device id")?),
            cert_serial: r.u32("certificate serial")?,
            sequence: r.u32("sequence")?,
            ascending: Postage(r.uint(5, "ascending register")?),
            descending: Postage(r.uint(5, "descending register")?),
            postage: Postage(r.uint(3, "postage")?),
            date: MailDate(r.u16("date")?),
            origin: Zip(r.uint(3, "origin")? as u32),
            destination: DeliveryPoint(r.uint(5, "destination")?),
            rate: RateCategory::from_code(r.u8("rate category")?)
                .ok_or(DecodeError::Invalid("rate category"))?,
            signature: r.array("signature")?,
        };
        r.finish()?;
        if ind.origin.0 > 99_999 {
            return Err(DecodeError::Invalid("origin"));
        }
        if ind.destination.0 > DELIVERY_POINT_MAX {
            return Err(DecodeError::Invalid("destination"));
        }
        if ind.postage.0 == 0 || ind.sequence == 0 {
            return Err(DecodeError::Invalid("postage"));
        }
        Ok(ind)
    }

    /// Verifies the device signature with the given key.
    pub fn verify_signature(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(
            &self.signed_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Indicium {
        Indicium {
            flags: 0,
            device_id: DeviceId(7),
            cert_serial: 3,
            sequence: 42,
            ascending: Postage(24_360),
            descending: Postage(25_640),
            postage: Postage(580),
            date: "2026-11-23".parse().expect("date"),
            origin: Zip(15213),
            destination: DeliveryPoint::new(Zip(10001), "3890-01").expect("dp"),
            rate: RateCategory::Letter,
            signature: [9; 64],
        }
    }

    #[test]
    fn encode_decode_round_trip_and_layout() {
        let i = sample();
        let b = i.to_bytes();
        assert_eq!(b.len(), 107);
        assert_eq!(&b[0..3], &[1, 1, 0]);
        assert_eq!(&b[3..11], &7u64.to_be_bytes());
        assert_eq!(&b[15..19], &42u32.to_be_bytes());
        assert_eq!(&b[29..32], &[0x00, 0x02, 0x44]);
        assert_eq!(b[42], 1);
        assert_eq!(Indicium::from_bytes(&b), Ok(i.clone()));
        assert_eq!(i.destination.to_string(), "10001-3890-01");
        assert!(Indicium::from_bytes(&b[..106]).is_err());
        let mut bad = b;
        bad[0] = 2;
        assert_eq!(
            Indicium::from_bytes(&bad),
            Err(DecodeError::Invalid("version"))
        );
        let mut bad = b;
        bad[42] = 99;
        assert_eq!(
            Indicium::from_bytes(&bad),
            Err(DecodeError::Invalid("rate category"))
        );
    }
}

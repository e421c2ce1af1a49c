//! Cryptographic postage indicia for NetBill.
//!
//! A postal security device ([`device::Device`]) holds the postage registers and a signing key
//! certified by the postal operator ([`operator::Operator`]). Printing atomically decrements the
//! descending register and signs an [`indicium::Indicium`], which is rendered as a PDF417
//! barcode ([`barcode`]). A sorting station ([`station::Station`]) decodes the barcode, checks
//! signature, certificate, destination and date, and records `(device, sequence)` once.
//! The layout of every signed object is documented byte by byte in `docs/postage.md`.

#![warn(missing_docs)]

pub mod barcode;
pub mod cert;
pub mod cli;
pub mod codec;
pub mod credit;
pub mod date;
pub mod device;
pub mod fsutil;
pub mod indicium;
pub mod money;
pub mod operator;
pub mod pkcs11;
pub mod station;

pub use date::MailDate;
pub use money::Postage;

/// Identifier of a postal security device, assigned by the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u64);

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for DeviceId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<u64>()
            .map(DeviceId)
            .map_err(|_| format!("device id must be a decimal number, got {s:?}"))
    }
}

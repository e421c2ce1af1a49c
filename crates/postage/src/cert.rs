//! Device certificates: the operator's signature binding a device id to its public key.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::codec::{DecodeError, Reader, Writer};
use crate::{DeviceId, MailDate};

/// Domain-separation tag prefixed to the signed bytes of a device certificate.
pub const CERT_TAG: &[u8] = b"NETBILL-POSTAGE-DEVICE-CERT\0";
/// Current certificate format version.
pub const CERT_VERSION: u8 = 1;
/// Length of an encoded certificate in bytes.
pub const CERT_LEN: usize = 1 + 4 + 8 + 32 + 2 + 2 + 64;

/// A device certificate signed by the postal operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCertificate {
    /// Certificate serial number (unique per operator).
    pub serial: u32,
    /// The certified device.
    pub device_id: DeviceId,
    /// The device's Ed25519 public key.
    pub public_key: [u8; 32],
    /// First day the certificate is valid.
    pub valid_from: MailDate,
    /// Last day of mailing the certificate covers.
    pub valid_until: MailDate,
    /// Operator's Ed25519 signature over `CERT_TAG || body`.
    pub signature: [u8; 64],
}

impl DeviceCertificate {
    fn body(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(CERT_VERSION);
        w.u32(self.serial);
        w.u64(self.device_id.0);
        w.raw(&self.public_key);
        w.u16(self.valid_from.0);
        w.u16(self.valid_until.0);
        w.0
    }

    fn signed_bytes(&self) -> Vec<u8> {
        [CERT_TAG, &self.body()].concat()
    }

    /// Creates and signs a certificate with the operator key.
    pub fn issue(
        operator: &SigningKey,
        serial: u32,
        device_id: DeviceId,
        public_key: [u8; 32],
        valid_from: MailDate,
        valid_until: MailDate,
    ) -> DeviceCertificate {
        let mut c = DeviceCertificate {
            serial,
            device_id,
            public_key,
            valid_from,
            valid_until,
            signature: [0; 64],
        };
        c.signature = operator.sign(&c.signed_bytes()).to_bytes();
        c
    }

    /// Checks the operator's signature.
    pub fn verify(&self, operator: &VerifyingKey) -> bool {
        operator
            .verify_strict(
                &self.signed_bytes(),
                &Signature::from_bytes(&self.signature),
            )
            .is_ok()
    }

    /// The device public key, if it is a valid curve point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.public_key).ok()
    }

    /// Encodes to the fixed `CERT_LEN`-byte layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Decodes the fixed layout (does not verify the signature).
    pub fn from_bytes(bytes: &[u8]) -> Result<DeviceCertificate, DecodeError> {
        if bytes.len() != CERT_LEN {
            return Err(DecodeError::Invalid("certificate length"));
        }
        let mut r = Reader::new(bytes);
        if r.u8("cert version")? != CERT_VERSION {
            return Err(DecodeError::Invalid("cert version"));
        }
        let c = DeviceCertificate {
            serial: r.u32("cert serial")?,
            device_id: DeviceId(r.u64("device id")?),
            public_key: r.array("public key")?,
            valid_from: MailDate(r.u16("valid from")?),
            valid_until: MailDate(r.u16("valid until")?),
            signature: r.array("signature")?,
        };
        r.finish()?;
        Ok(c)
    }
}

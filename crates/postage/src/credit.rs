//! Funding credits: operator-signed, device-bound, single-use postage loads.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::codec::{DecodeError, Reader, Writer};
use crate::{DeviceId, MailDate, Postage};

/// Domain-separation tag prefixed to the signed bytes of a funding credit.
pub const CREDIT_TAG: &[u8] = b"NETBILL-POSTAGE-CREDIT\0";
/// Current credit format version.
pub const CREDIT_VERSION: u8 = 1;
/// Length of an encoded credit in bytes.
pub const CREDIT_LEN: usize = 1 + 8 + 4 + 8 + 2 + 64;

/// A single-use credit of postage for one device, signed by the operator.
///
/// Single use: `number` must be exactly one more than the number of credits the device
/// has accepted, so a replayed credit (or one for another device) is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FundingCredit {
    /// The only device that may accept this credit.
    pub device_id: DeviceId,
    /// Position of this credit in the device's funding history (1, 2, …).
    pub number: u32,
    /// Postage added to the descending register.
    pub amount: Postage,
    /// Day the operator issued the credit.
    pub issued: MailDate,
    /// Operator's Ed25519 signature over `CREDIT_TAG || body`.
    pub signature: [u8; 64],
}

impl FundingCredit {
    fn body(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(CREDIT_VERSION);
        w.u64(self.device_id.0);
        w.u32(self.number);
        w.u64(self.amount.0);
        w.u16(self.issued.0);
        w.0
    }

    /// Creates and signs a credit with the operator key.
    pub fn issue(
        operator: &SigningKey,
        device_id: DeviceId,
        number: u32,
        amount: Postage,
        issued: MailDate,
    ) -> FundingCredit {
        let mut c = FundingCredit {
            device_id,
            number,
            amount,
            issued,
            signature: [0; 64],
        };
        c.signature = operator.sign(&[CREDIT_TAG, &c.body()].concat()).to_bytes();
        c
    }

    /// Checks the operator's signature.
    pub fn verify(&self, operator: &VerifyingKey) -> bool {
        operator
            .verify_strict(
                &[CREDIT_TAG, &self.body()].concat(),
                &Signature::from_bytes(&self.signature),
            )
            .is_ok()
    }

    /// Encodes to the fixed `CREDIT_LEN`-byte layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Decodes the fixed layout (does not verify the signature).
    pub fn from_bytes(bytes: &[u8]) -> Result<FundingCredit, DecodeError> {
        if bytes.len() != CREDIT_LEN {
            return Err(DecodeError::Invalid("credit length"));
        }
        let mut r = Reader::new(bytes);
        if r.u8("credit version")? != CREDIT_VERSION {
            return Err(DecodeError::Invalid("credit version"));
        }
        let c = FundingCredit {
            device_id: DeviceId(r.u64("device id")?),
            number: r.u32("credit number")?,
            amount: Postage(r.u64("amount")?),
            issued: MailDate(r.u16("issued")?),
            signature: r.array("signature")?,
        };
        r.finish()?;
        Ok(c)
    }
}

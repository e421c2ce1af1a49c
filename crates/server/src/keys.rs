//! The billing server's own keys: a signing key for receipts, a sealing secret for what
//! customers and merchants seal to N.

use std::path::Path;

use netbill_crypto::{
    Ed25519Signer, RealCrypto, load_secret_key, random_seal_secret, save_secret_key,
};
use netbill_proto::crypto::{Crypto, PublicKey, SealKey, SealSecret, Signer};
use serde::{Deserialize, Serialize};

const SIGN_FILE: &str = "billing-sign.key";
const SEAL_FILE: &str = "billing-seal.key";

/// N's secret keys.
pub struct BillingKeys {
    pub signer: Ed25519Signer,
    pub seal: SealSecret,
}

/// N's public keys, as published at `GET /v1/keys`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingPublic {
    /// Verifies N's receipts.
    pub sign_key: PublicKey,
    /// Seals goods keys and EPO secrets to N.
    pub seal_key: SealKey,
}

impl BillingKeys {
    /// Creates fresh keys in `dir` (files readable only by the owner). Refuses to replace
    /// existing keys.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let keys = BillingKeys {
            signer: Ed25519Signer::generate(),
            seal: random_seal_secret(),
        };
        save_secret_key(
            dir.join(SIGN_FILE),
            "billing-sign",
            &keys.signer.secret_bytes(),
            false,
        )?;
        save_secret_key(dir.join(SEAL_FILE), "billing-seal", &keys.seal.0, false)?;
        Ok(keys)
    }

    /// Loads the keys from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        Ok(BillingKeys {
            signer: Ed25519Signer::from_bytes(&load_secret_key(
                dir.join(SIGN_FILE),
                "billing-sign",
            )?),
            seal: SealSecret(load_secret_key(dir.join(SEAL_FILE), "billing-seal")?),
        })
    }

    /// Whether `dir` already holds keys.
    pub fn exist(dir: &Path) -> bool {
        dir.join(SIGN_FILE).exists()
    }

    pub fn public(&self) -> BillingPublic {
        BillingPublic {
            sign_key: self.signer.public_key(),
            seal_key: RealCrypto.seal_key(&self.seal),
        }
    }
}

//! The merchant's side of disputes: signed refunds and N's evidence for its purchases.

use std::path::Path;

use netbill_crypto::{Ed25519Signer, RealCrypto};
use netbill_http::client::Client;
use netbill_http::now_ms;
use netbill_proto::messages::{BillingEvidence, EvidenceGrant, RefundReceipt, RefundRequest};
use netbill_proto::{Amount, EpoId, Signed};

use crate::MerchantIdentity;

/// A merchant directory's identity, signing key and a client of its billing server.
fn open(dir: &Path) -> anyhow::Result<(MerchantIdentity, Ed25519Signer, Client)> {
    let (identity, signer, _seal) = crate::load(dir)?;
    let billing = Client::new(&identity.billing_url)?;
    Ok((identity, signer, billing))
}

/// The refund id used when none is given: the same for the same purchase, amount and
/// reason, so that running the same command again refunds once.
pub fn default_refund_id(epoid: &EpoId, amount: Amount, reason: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(format!("{epoid}\n{}\n{reason}", amount.minor()));
    format!("r-{}", &hex::encode(h)[..24])
}

/// Signs a refund of `amount` of purchase `epoid` and has N make it. Sending the same
/// refund id again for the same purchase and amount returns the first receipt.
pub async fn refund(
    dir: &Path,
    epoid: &EpoId,
    amount: Amount,
    reason: &str,
    refund_id: &str,
) -> anyhow::Result<Signed<RefundReceipt>> {
    let (identity, signer, billing) = open(dir)?;
    let request = Signed::sign(
        RefundRequest {
            refund_id: refund_id.to_string(),
            epoid: epoid.clone(),
            merchant: identity.id.clone(),
            amount,
            reason: reason.to_string(),
            time_ms: now_ms(),
        },
        &signer,
    );
    let receipt: Signed<RefundReceipt> = billing
        .call(reqwest::Method::POST, "/v1/refunds", Some(&request), &[])
        .await?;
    let r = receipt
        .verify(&RealCrypto, &identity.billing.sign_key)
        .map_err(|_| {
            anyhow::anyhow!("the refund receipt is not signed by the pinned billing key")
        })?;
    anyhow::ensure!(
        r.refund_id == refund_id && r.epoid == *epoid && r.amount == amount,
        "the refund receipt names another refund"
    );
    Ok(receipt)
}

/// A signed permission for the arbitrator holding `arbitrator_key` to fetch N's records of
/// `epoid` until `expires_at_ms`.
pub fn grant(
    dir: &Path,
    epoid: &EpoId,
    arbitrator_key: netbill_proto::crypto::PublicKey,
    expires_at_ms: u64,
) -> anyhow::Result<Signed<EvidenceGrant>> {
    let (identity, signer, _) = open(dir)?;
    Ok(Signed::sign(
        EvidenceGrant {
            epoid: epoid.clone(),
            grantor: identity.id,
            arbitrator_key,
            expires_at_ms,
        },
        &signer,
    ))
}

/// N's signed records of one of this merchant's purchases (a signed request).
pub async fn evidence(dir: &Path, epoid: &EpoId) -> anyhow::Result<BillingEvidence> {
    let (identity, signer, billing) = open(dir)?;
    let path = format!("/v1/evidence/{epoid}");
    let auth = netbill_http::sign_request(
        &RealCrypto,
        &signer,
        &identity.id,
        "GET",
        &path,
        b"",
        now_ms(),
    );
    Ok(billing
        .call::<(), _>(
            reqwest::Method::GET,
            &path,
            None,
            &[(netbill_http::AUTH_HEADER, auth)],
        )
        .await?)
}

//! `netbill dispute`: an arbitrator's tool. It trusts only two public keys (N's and the
//! merchant's) and decides a claim from the signed records and the ciphertext alone.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use netbill_crypto::RealCrypto;
use netbill_proto::crypto::{Digest, PublicKey};
use netbill_proto::dispute::{
    Claim, CustomerEvidence, Evidence, GoodsFacts, Ruling, TrustedKeys, Verdict, decide,
};
use netbill_proto::messages::{BillingEvidence, Receipt};
use netbill_proto::{Amount, EpoId, Signed};
use serde::Serialize;
use sha2::Digest as _;

/// Largest evidence file read (the records are a few kilobytes).
const EVIDENCE_LEN_MAX: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ClaimKind {
    /// The goods are wrong or damaged (needs the ciphertext).
    WrongGoods,
    /// "I paid but never got the key."
    NeverGotKey,
    /// "I was charged more than I agreed" (needs --agreed).
    ChargedWrongAmount,
    /// "I never bought this": N must show an EPO the customer signed.
    NeverBought,
    /// "I was told it failed but was charged" (needs --failure-receipt).
    ToldFailedButCharged,
    /// The merchant: "I was not paid".
    MerchantNotPaid,
}

#[derive(Args)]
#[command(
    after_help = "Exit status by ruling: 0 nothing owed (or the key was produced), \
3 for the customer (refund the amount), 4 for the merchant (claim rejected), 5 N owes the \
merchant; 1 error, 2 bad usage. See docs/disputes.md."
)]
pub struct DisputeArgs {
    /// What is claimed.
    #[arg(value_enum)]
    claim: ClaimKind,
    /// N's receipt signing key (hex), as published by the operator.
    #[arg(long, value_name = "HEX")]
    billing_key: PublicKey,
    /// The merchant's public key (hex), as registered with N.
    #[arg(long, value_name = "HEX")]
    merchant_key: PublicKey,
    /// A directory made by `netbill wallet evidence` (customer-evidence.json, goods.nbg,
    /// billing-evidence.json); the files below override its parts.
    #[arg(long, value_name = "DIR")]
    evidence: Option<PathBuf>,
    /// The customer's records (quote, EPO, receipt).
    #[arg(long, value_name = "FILE")]
    customer_evidence: Option<PathBuf>,
    /// N's records for the EPOID (`GET /v1/evidence/{epoid}`, `netbill merchant evidence`).
    #[arg(long, value_name = "FILE")]
    billing_evidence: Option<PathBuf>,
    /// The ciphertext the customer received.
    #[arg(long, value_name = "FILE")]
    ciphertext: Option<PathBuf>,
    /// For charged-wrong-amount: the price the customer says she agreed.
    #[arg(long)]
    agreed: Option<Amount>,
    /// For told-failed-but-charged: N's signed failure receipt (JSON).
    #[arg(long, value_name = "FILE")]
    failure_receipt: Option<PathBuf>,
    /// Print the verdict as JSON (feed it to `netbill merchant refund --verdict`).
    #[arg(long)]
    json: bool,
}

/// The verdict as printed with `--json`.
#[derive(Serialize)]
struct VerdictOut<'a> {
    claim: String,
    epoid: Option<&'a EpoId>,
    #[serde(flatten)]
    verdict: &'a Verdict,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(EVIDENCE_LEN_MAX + 1).read_to_end(&mut bytes)?;
    anyhow::ensure!(
        bytes.len() as u64 <= EVIDENCE_LEN_MAX,
        "{} is over {EVIDENCE_LEN_MAX} bytes: not {what}",
        path.display()
    );
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not {what}", path.display()))
}

/// A file given explicitly, or the evidence directory's file of that name if it exists.
fn pick(explicit: &Option<PathBuf>, dir: &Option<PathBuf>, name: &str) -> Option<PathBuf> {
    explicit
        .clone()
        .or_else(|| dir.as_ref().map(|d| d.join(name)).filter(|p| p.exists()))
}

/// What the arbitrator measures on the ciphertext: its digest, and the plaintext's digest
/// if K decrypts it completely.
fn goods_facts(
    path: &Path,
    key: Option<&netbill_proto::crypto::GoodsKey>,
) -> anyhow::Result<GoodsFacts> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut HashWriter(&mut h))
        .with_context(|| format!("reading {}", path.display()))?;
    let ciphertext_digest = Digest(h.finalize().into());
    let plaintext_digest = match key {
        Some(k) => {
            let f = std::fs::File::open(path)?;
            netbill_crypto::decrypt_stream(k, std::io::BufReader::new(f), std::io::sink())
                .ok()
                .map(|s| s.plaintext_digest)
        }
        None => None,
    };
    Ok(GoodsFacts {
        ciphertext_digest,
        plaintext_digest,
    })
}

struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn run(a: DisputeArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &a.evidence {
        anyhow::ensure!(
            dir.is_dir(),
            "no evidence directory {} (make one with `netbill wallet evidence`)",
            dir.display()
        );
    }
    anyhow::ensure!(
        a.evidence.is_some() || a.customer_evidence.is_some() || a.billing_evidence.is_some(),
        "no evidence: give --evidence DIR, or --customer-evidence and/or --billing-evidence"
    );
    let mine: Option<CustomerEvidence> =
        pick(&a.customer_evidence, &a.evidence, "customer-evidence.json")
            .map(|p| read_json(&p, "a customer's evidence (customer-evidence.json)"))
            .transpose()?;
    let theirs: Option<BillingEvidence> =
        pick(&a.billing_evidence, &a.evidence, "billing-evidence.json")
            .map(|p| read_json(&p, "N's evidence (billing-evidence.json)"))
            .transpose()?;
    let ciphertext = pick(&a.ciphertext, &a.evidence, "goods.nbg");
    let claim = match a.claim {
        ClaimKind::WrongGoods => Claim::WrongGoods,
        ClaimKind::NeverGotKey => Claim::NeverGotKey,
        ClaimKind::ChargedWrongAmount => Claim::ChargedWrongAmount {
            agreed: a
                .agreed
                .context("charged-wrong-amount needs --agreed (the price she agreed)")?,
        },
        ClaimKind::NeverBought => Claim::NeverBought,
        ClaimKind::ToldFailedButCharged => {
            let path = a.failure_receipt.as_ref().context(
                "told-failed-but-charged needs --failure-receipt (N's signed failure receipt)",
            )?;
            Claim::ToldFailedButCharged {
                failure: Box::new(read_json::<Signed<Receipt>>(path, "a signed receipt")?),
            }
        }
        ClaimKind::MerchantNotPaid => Claim::MerchantNotPaid,
    };
    // N's records prove what N did; the customer's copies stand in where N has none, except
    // the EPO behind a debit, which N itself must produce.
    let n_must_show_epo = matches!(claim, Claim::NeverBought | Claim::ChargedWrongAmount { .. });
    let endorsement = theirs.as_ref().and_then(|t| t.endorsement.clone());
    let epo = endorsement
        .as_ref()
        .map(|e| e.body_unverified().epo.clone())
        .or_else(|| {
            (!n_must_show_epo)
                .then(|| mine.as_ref().and_then(|m| m.epo.clone()))
                .flatten()
        });
    let receipt = theirs
        .as_ref()
        .map(|t| t.receipt.clone())
        .or_else(|| mine.as_ref().and_then(|m| m.receipt.clone()));
    let goods_key = theirs.as_ref().and_then(|t| t.goods_key.clone());
    let goods = ciphertext
        .as_deref()
        .map(|p| goods_facts(p, goods_key.as_ref()))
        .transpose()?;
    let evidence = Evidence {
        quote: mine.as_ref().map(|m| m.quote.clone()),
        epo,
        endorsement,
        receipt,
        goods_key,
        goods,
    };
    let keys = TrustedKeys {
        billing: a.billing_key,
        merchant: a.merchant_key,
    };
    let verdict = decide(&RealCrypto, &keys, &claim, &evidence);
    let epoid = theirs.as_ref().map(|t| &t.epoid).or_else(|| {
        evidence
            .receipt
            .as_ref()
            .map(|r| &r.body_unverified().epoid)
    });
    let claim_name = a
        .claim
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string());
    if a.json {
        let out = VerdictOut {
            claim: claim_name,
            epoid,
            verdict: &verdict,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if let Some(e) = epoid {
            println!("purchase {e}");
        }
        for r in &verdict.reasons {
            println!("  - {r}");
        }
        let ruling = match verdict.ruling {
            Ruling::ForCustomer => format!(
                "FOR THE CUSTOMER: refund {}",
                verdict.amount.map_or("-".into(), |a| a.to_string())
            ),
            Ruling::ForMerchant => "FOR THE MERCHANT: the claim is rejected".into(),
            Ruling::MerchantOwed => format!(
                "N OWES THE MERCHANT {}",
                verdict.amount.map_or("-".into(), |a| a.to_string())
            ),
            Ruling::KeyProduced => {
                "KEY PRODUCED: the customer now has the goods; nothing is owed".into()
            }
            Ruling::NothingOwed => "NOTHING OWED: no money moved for this purchase".into(),
        };
        println!("verdict: {ruling}");
    }
    Ok(ExitCode::from(match verdict.ruling {
        Ruling::NothingOwed | Ruling::KeyProduced => 0,
        Ruling::ForCustomer => 3,
        Ruling::ForMerchant => 4,
        Ruling::MerchantOwed => 5,
    }))
}

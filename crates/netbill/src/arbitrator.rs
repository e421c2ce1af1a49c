//! `netbill arbitrator …`: an arbitrator's key, and fetching N's records of a purchase under
//! a party's grant.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use netbill_crypto::{Ed25519Signer, RealCrypto, load_secret_key, save_secret_key};
use netbill_proto::Signed;
use netbill_proto::crypto::Signer as _;
use netbill_proto::messages::{BillingEvidence, EvidenceGrant};

const KEY_FILE: &str = "arbitrator-sign.key";
const KEY_KIND: &str = "arbitrator-sign";

#[derive(Subcommand)]
pub enum ArbitratorCommand {
    /// Create an arbitrator's signing key in a directory (readable only by you) and print its
    /// public key, for the parties to grant access to.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Fetch N's records of a purchase under a grant from its customer or merchant
    /// (`netbill wallet grant`, `netbill merchant grant`), as billing-evidence.json for
    /// `netbill dispute`.
    Fetch {
        #[arg(long)]
        dir: PathBuf,
        /// The billing server's URL.
        #[arg(long)]
        server: String,
        /// The grant, as the party printed it.
        #[arg(long)]
        grant: String,
        /// Where to write N's records (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(cmd: ArbitratorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ArbitratorCommand::Init { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(KEY_FILE);
            anyhow::ensure!(
                !path.exists(),
                "{} already holds an arbitrator key",
                dir.display()
            );
            let signer = Ed25519Signer::generate();
            save_secret_key(&path, KEY_KIND, &signer.secret_bytes(), false)?;
            println!("arbitrator key created in {}", dir.display());
            println!("public key: {}", signer.public_key());
            Ok(ExitCode::SUCCESS)
        }
        ArbitratorCommand::Fetch {
            dir,
            server,
            grant,
            out,
        } => {
            let signer =
                Ed25519Signer::from_bytes(&load_secret_key(dir.join(KEY_FILE), KEY_KIND).context(
                    "loading the arbitrator key (make one with `netbill arbitrator init`)",
                )?);
            let g: Signed<EvidenceGrant> = netbill_http::decode_signed(grant.trim())
                .context("the grant is malformed: paste it exactly as the party printed it")?;
            let body = g.body_unverified();
            anyhow::ensure!(
                body.arbitrator_key == signer.public_key(),
                "the grant is for arbitrator key {}, not this one ({})",
                body.arbitrator_key,
                signer.public_key()
            );
            let path = format!("/v1/evidence/{}", body.epoid);
            // Signed in the grantor's name with the arbitrator's key, as the grant allows.
            let auth = netbill_http::sign_request(
                &RealCrypto,
                &signer,
                &body.grantor,
                "GET",
                &path,
                b"",
                netbill_http::now_ms(),
            );
            let ev: BillingEvidence = netbill_http::client::Client::new(&server)?
                .call::<(), _>(
                    reqwest::Method::GET,
                    &path,
                    None,
                    &[
                        (netbill_http::AUTH_HEADER, auth),
                        (netbill_http::GRANT_HEADER, grant.trim().to_string()),
                    ],
                )
                .await
                .with_context(|| format!("fetching N's records of {}", body.epoid))?;
            let json = serde_json::to_string_pretty(&ev)?;
            match out {
                Some(p) => {
                    std::fs::write(&p, json + "\n")
                        .with_context(|| format!("writing {}", p.display()))?;
                    println!("N's records of {} written to {}", body.epoid, p.display());
                }
                None => println!("{json}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! `netbill group …`: a group authority (e.g. a professional society) that vouches for
//! its members' keys, so merchants can quote them a group price.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use netbill_crypto::{Ed25519Signer, load_secret_key, save_secret_key};
use netbill_proto::crypto::{PublicKey, Signer};
use netbill_proto::messages::GroupCredential;
use netbill_proto::{GroupName, Signed};

const KEY_FILE: &str = "group-authority.key";

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create a group authority's signing key in a directory.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a credential: the holder's key is a member of the group.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// The group, e.g. acm-student.
        #[arg(long)]
        group: GroupName,
        /// The member's public key (hex), from `netbill wallet key`.
        #[arg(long)]
        holder: PublicKey,
        /// Free-form detail, e.g. a membership number.
        #[arg(long, default_value = "")]
        detail: String,
        /// Days the credential stays valid.
        #[arg(long, default_value_t = 365)]
        valid_days: u64,
        /// Where to write the credential (JSON).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Creates a group authority key in `dir`; returns its public key.
pub fn init(dir: &std::path::Path) -> anyhow::Result<PublicKey> {
    std::fs::create_dir_all(dir)?;
    let signer = Ed25519Signer::generate();
    save_secret_key(
        dir.join(KEY_FILE),
        "group-authority",
        &signer.secret_bytes(),
        false,
    )?;
    Ok(signer.public_key())
}

/// Issues a credential signed by the authority in `dir`.
pub fn issue(
    dir: &std::path::Path,
    group: GroupName,
    holder: PublicKey,
    detail: String,
    valid_days: u64,
) -> anyhow::Result<Signed<GroupCredential>> {
    if detail.len() > netbill_proto::messages::MEMO_LEN_MAX {
        anyhow::bail!(
            "the detail is over {} bytes",
            netbill_proto::messages::MEMO_LEN_MAX
        );
    }
    let signer =
        Ed25519Signer::from_bytes(&load_secret_key(dir.join(KEY_FILE), "group-authority")?);
    let expires_at_ms =
        netbill_http::now_ms().saturating_add(valid_days.saturating_mul(86_400_000));
    Ok(Signed::sign(
        GroupCredential {
            group,
            detail,
            holder_key: holder,
            expires_at_ms,
        },
        &signer,
    ))
}

pub fn run(cmd: GroupCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GroupCommand::Init { dir } => {
            let pk = init(&dir)?;
            println!("group authority key created in {}", dir.display());
            println!("public key: {pk}  (merchants list it under [groups] in their catalog)");
        }
        GroupCommand::Issue {
            dir,
            group,
            holder,
            detail,
            valid_days,
            out,
        } => {
            let c = issue(&dir, group.clone(), holder, detail, valid_days)?;
            std::fs::write(&out, serde_json::to_vec_pretty(&c)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("credential for {group} written to {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

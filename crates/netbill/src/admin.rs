//! `netbill admin …`: the operator's commands, over the billing server's admin API.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use netbill_proto::billing::AccountKind;
use netbill_proto::crypto::PublicKey;
use netbill_proto::{AccountId, Amount};
use netbill_server::{AccountInfo, AdminAction, AdminClient};

#[derive(Args)]
pub struct AdminArgs {
    /// The billing server's URL.
    #[arg(long, env = "NETBILL_SERVER", default_value = "http://127.0.0.1:8400")]
    server: String,
    /// The environment variable holding the admin token (so it never shows in the
    /// process list).
    #[arg(
        long = "token-env",
        default_value = "NETBILL_ADMIN_TOKEN",
        value_name = "VAR"
    )]
    token_env: String,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Customer,
    Merchant,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Open an account with a registered public key.
    CreateAccount {
        id: AccountId,
        #[arg(long, value_enum)]
        kind: Kind,
        /// The account holder's public key (hex), from `wallet init` or `merchant init`.
        #[arg(long)]
        key: PublicKey,
        /// Let the balance go this far below zero.
        #[arg(long)]
        credit_limit: Option<Amount>,
        /// Receipts carry a low-balance flag below this balance.
        #[arg(long)]
        low_water: Option<Amount>,
    },
    /// Add money to an account (e.g. a card top-up), e.g. `deposit alice USD:5`.
    Deposit {
        id: AccountId,
        amount: Amount,
        /// Makes a retried deposit take effect once.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Pay money out of an account (e.g. to a merchant's bank).
    Payout {
        id: AccountId,
        amount: Amount,
        /// Makes a retried payout take effect once.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Stop an account from buying or selling.
    Freeze { id: AccountId },
    /// Undo `freeze`.
    Unfreeze { id: AccountId },
    /// Revoke an account's key: nothing signed with it is accepted any more.
    RevokeKey { id: AccountId },
    /// Register a new key for an account (also ends a revocation).
    SetKey { id: AccountId, key: PublicKey },
    /// Show an account.
    Show { id: AccountId },
    /// Check that the sum of balances equals deposits minus payouts.
    Conservation,
    /// Have N sign a checkpoint of the journal's head now (it also does so periodically).
    /// N refuses if the journal since its last checkpoint no longer chains.
    Checkpoint {
        /// After auditing a tampered journal (`netbill audit`, docs/audit.md): sign its head
        /// as it is, and let money move again.
        #[arg(long)]
        acknowledge_audit: bool,
    },
}

/// One line describing an account.
pub fn describe(a: &AccountInfo) -> String {
    format!(
        "{} ({:?}): balance {}, credit limit {}, low water {}{}{}",
        a.id,
        a.kind,
        a.balance,
        a.credit_limit,
        a.low_water,
        if a.frozen { ", FROZEN" } else { "" },
        if a.key_revoked { ", KEY REVOKED" } else { "" }
    )
}

pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let token = std::env::var(&args.token_env)
        .map_err(|_| anyhow::anyhow!("set the admin token in ${}", args.token_env))?;
    let admin = AdminClient::new(&args.server, &token)?;
    match args.command {
        AdminCommand::CreateAccount {
            id,
            kind,
            key,
            credit_limit,
            low_water,
        } => {
            let kind = match kind {
                Kind::Customer => AccountKind::Customer,
                Kind::Merchant => AccountKind::Merchant,
            };
            println!(
                "{}",
                describe(
                    &admin
                        .create_account(&id, kind, key, credit_limit, low_water)
                        .await?
                )
            );
        }
        AdminCommand::Deposit {
            id,
            amount,
            idempotency_key,
        } => {
            let a = admin
                .transfer(&id, false, amount, idempotency_key.as_deref())
                .await?;
            println!("deposit of {amount}: {} now holds {}", a.account, a.balance);
        }
        AdminCommand::Payout {
            id,
            amount,
            idempotency_key,
        } => {
            let a = admin
                .transfer(&id, true, amount, idempotency_key.as_deref())
                .await?;
            println!("payout of {amount}: {} now holds {}", a.account, a.balance);
        }
        AdminCommand::Freeze { id } => {
            println!("{}", describe(&admin.act(&id, AdminAction::Freeze).await?))
        }
        AdminCommand::Unfreeze { id } => println!(
            "{}",
            describe(&admin.act(&id, AdminAction::Unfreeze).await?)
        ),
        AdminCommand::RevokeKey { id } => println!(
            "{}",
            describe(&admin.act(&id, AdminAction::RevokeKey).await?)
        ),
        AdminCommand::SetKey { id, key } => {
            println!("{}", describe(&admin.set_key(&id, key).await?))
        }
        AdminCommand::Show { id } => println!("{}", describe(&admin.show(&id).await?)),
        AdminCommand::Conservation => {
            let t = admin.conservation().await?;
            println!(
                "conservation holds: balances {} = deposits {} - payouts {} ({} accounts, {} purchase outcomes)",
                netbill_proto::money::format_minor(t.balances_minor),
                netbill_proto::money::format_minor(t.deposits_minor),
                netbill_proto::money::format_minor(t.payouts_minor),
                t.accounts,
                t.outcomes
            );
        }
        AdminCommand::Checkpoint { acknowledge_audit } => {
            match admin.checkpoint(acknowledge_audit).await?.checkpoint {
                Some(c) => {
                    let c = c.body_unverified();
                    println!(
                        "signed checkpoint of journal entry {}: hash {}",
                        c.seq,
                        hex::encode(c.hash.0)
                    );
                }
                None => println!(
                    "nothing to sign: the journal is empty or its head already has a checkpoint"
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

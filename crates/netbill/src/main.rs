//! `netbill`: one binary, one subcommand per job. It parses arguments and calls libraries.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// NetBill: atomic micropayments for information goods, certified delivery,
/// cryptographic postage indicia, and an atomicity checker for payment protocols.
#[derive(Parser)]
#[command(name = "netbill", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cryptographic postage indicia: devices, funding, printing, sorting-station verification.
    Postage(netbill_postage::cli::PostageArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Postage(args) => netbill_postage::cli::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

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
    /// Model-check payment protocols for money atomicity, goods atomicity and certified delivery.
    Check(netbill_check::cli::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Check(args) => netbill_check::cli::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `netbill`: one binary, one subcommand per job. It parses arguments and calls libraries.

mod admin;
mod arbitrator;
mod audit;
mod bench;
mod demo;
mod dispute;
mod group;
mod merchant;
mod server;
mod wallet;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// NetBill: atomic micropayments for information goods, certified delivery,
/// cryptographic postage indicia, and an atomicity checker for payment protocols.
///
/// Quick start: `netbill demo` runs a billing server, a merchant and a customer in one
/// process and buys four articles. See the README for the three-terminal walkthrough.
#[derive(Parser)]
#[command(name = "netbill", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system in one process on loopback and buy four articles, printing a
    /// transcript of the protocol, every receipt, balances and a conservation check.
    Demo(demo::DemoArgs),
    /// The billing server (N): accounts, atomic purchase commits, receipts.
    #[command(subcommand)]
    Server(server::ServerCommand),
    /// The merchant server (M): sells the files of a catalog; refunds and dispute evidence.
    #[command(subcommand)]
    Merchant(merchant::MerchantCommand),
    /// The customer's wallet (C): buy, balance, history, statement, recover, evidence and
    /// grants for disputes.
    Wallet(wallet::WalletArgs),
    /// Benchmark the billing server against this machine's crypto ceiling, and a whole
    /// purchase through a merchant (see docs/performance.md).
    Bench(bench::BenchArgs),
    /// Operator commands against a billing server (admin token required).
    Admin(admin::AdminArgs),
    /// Decide a disputed purchase from the signed records alone, as an arbitrator (see
    /// docs/disputes.md).
    Dispute(dispute::DisputeArgs),
    /// An arbitrator's key, and fetching N's records of a purchase under a party's grant.
    #[command(subcommand)]
    Arbitrator(arbitrator::ArbitratorCommand),
    /// Verify a ledger's journal, checkpoints and signatures; unwind what a corrupted
    /// server did (see docs/audit.md).
    Audit(audit::AuditArgs),
    /// A group authority: issues credentials that merchants honour with group prices.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Cryptographic postage indicia: devices, funding, printing, sorting-station verification.
    Postage(netbill_postage::cli::PostageArgs),
    /// Model-check payment protocols for money atomicity, goods atomicity and certified delivery.
    Check(netbill_check::cli::CheckArgs),
    /// Inject crashes and network faults into a local deployment and check NetBill's guarantees.
    Chaos(netbill_chaos::cli::ChaosArgs),
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The billing server's runtime. Its blocking work is CPU-bound and finite (verifying
/// endorsements), so threads beyond a few per core only queue in the kernel instead of in
/// tokio — and each keeps a stack resident: with tokio's default of up to 512, the server
/// ran 80 threads under 64 requests in flight. (Not for the merchant: its goods streams
/// block on slow readers.)
fn server_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4 * cores)
        .build()?)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NETBILL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Caps glibc's malloc arenas in the long-running servers. By default glibc hands threads
/// that allocate at the same time (tokio's workers, the blocking pool that verifies
/// endorsements) up to 8 arenas per core, and every arena keeps its high-water mark
/// resident: after a soak the billing server held 48 MiB from the system for 6 MiB in use.
/// With two arenas its resident memory levels off about 25 MiB lower at the same throughput
/// (docs/performance.md). `MALLOC_ARENA_MAX` in the environment still decides if set.
///
/// Freed memory inside an arena stays resident too, so a burst (64 requests of 64
/// endorsements in flight) would keep its peak for good: a background thread hands free
/// pages back to the system every few seconds (`malloc_trim`), so resident memory follows
/// the memory in use.
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
        let _ = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    // SAFETY: malloc_trim only returns free memory to the system.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            });
    }
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
        Command::Server(cmd) => {
            cap_malloc_arenas();
            server_runtime().and_then(|rt| rt.block_on(server::run(cmd)))
        }
        Command::Merchant(cmd) => {
            cap_malloc_arenas();
            runtime().and_then(|rt| rt.block_on(merchant::run(cmd)))
        }
        Command::Wallet(args) => runtime().and_then(|rt| rt.block_on(wallet::run(args))),
        Command::Bench(args) => runtime().and_then(|rt| rt.block_on(bench::run(args))),
        Command::Admin(args) => runtime().and_then(|rt| rt.block_on(admin::run(args))),
        Command::Dispute(args) => dispute::run(args),
        Command::Arbitrator(cmd) => runtime().and_then(|rt| rt.block_on(arbitrator::run(cmd))),
        Command::Audit(args) => runtime().and_then(|rt| rt.block_on(audit::run(args))),
        Command::Group(cmd) => group::run(cmd),
        Command::Postage(args) => netbill_postage::cli::run(args),
        Command::Check(args) => netbill_check::cli::run(args),
        Command::Chaos(args) => netbill_chaos::cli::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, without repeating a cause the message already holds.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let m = cause.to_string();
        if out.contains(&m) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&m);
    }
    out.replace('\n', " ")
}

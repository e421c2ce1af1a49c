//! `netbill chaos`: the harness as an operator's command against a fresh local deployment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::check::Checker;
use crate::deploy::Deployment;
use crate::run::{Failure, Runner, Tally};
use crate::{Party, matrix, schedules};

/// Options of `netbill chaos`.
#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// Seed of the schedule order; the same seed replays the same run (default: the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How many schedules (one purchase and one fault each) to run; default: the whole
    /// step × party × fault matrix once.
    #[arg(long)]
    pub schedules: Option<usize>,
    /// Stop after this many seconds even if schedules remain.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Keep the deployment here (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Testing only: switch on a deliberately broken behaviour (`NETBILL_BUG`, see
    /// docs/reliability.md) in every party, to see a checker catch it.
    #[arg(long, hide = true)]
    pub bug: Vec<String>,
}

/// Runs `netbill chaos`.
pub fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    // The crash points and bug switches it arms exist only in a test build of netbill.
    anyhow::ensure!(
        cfg!(feature = "test-support"),
        "netbill chaos needs the crash points of a test build, not in this one: build netbill \
         with `--features test-support` (e.g. `cargo run --release --features test-support -- \
         chaos`)"
    );
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let n = args.schedules.unwrap_or(matrix().len()).clamp(1, 100_000);
    let limit = args.duration.map(Duration::from_secs);
    let exe = std::env::current_exe()?;
    eprintln!(
        "netbill chaos: seed {seed}, {n} schedules; starting a billing server, a merchant and a wallet on loopback…"
    );
    let bugs: Vec<&str> = args.bug.iter().map(String::as_str).collect();
    let deployment = Deployment::start(&exe, args.dir.clone(), &bugs)?;
    eprintln!("deployment in {}", deployment.root().display());
    let mut runner = Runner::new(deployment);
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} schedules  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut failure = None;
    for (i, s) in schedules(seed, n).into_iter().enumerate() {
        if limit.is_some_and(|l| started.elapsed() >= l) {
            break;
        }
        bar.set_message(s.to_string());
        let violations = runner.run(s)?;
        bar.inc(1);
        if !violations.is_empty() {
            failure = Some(Failure {
                index: i,
                schedule: s,
                violations,
            });
            break;
        }
    }
    bar.finish_and_clear();
    print!("{}", report(&runner.tally, started.elapsed()));
    match failure {
        None => {
            println!(
                "all guarantees held: {} schedules, 0 violations (seed {seed})",
                runner.tally.schedules
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(f) => {
            println!("VIOLATION in schedule #{} — {}", f.index + 1, f.schedule);
            for v in &f.violations {
                println!("  {v}");
            }
            let bugs: String = args.bug.iter().map(|b| format!(" --bug {b}")).collect();
            println!(
                "reproduce with: netbill chaos --seed {seed} --schedules {}{bugs} --dir <dir>",
                f.index + 1
            );
            Ok(ExitCode::from(3))
        }
    }
}

/// The run's tables: faults injected per step and party, and checks passed.
pub fn report(t: &Tally, elapsed: Duration) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n{} schedules in {:.1} s: {} purchases paid, {} ended unpaid\n\n",
        t.schedules,
        elapsed.as_secs_f64(),
        t.paid,
        t.unpaid
    ));
    out.push_str("faults injected (hit / armed but not reached) per step and party\n");
    out.push_str(&format!(
        "{:<26} {:<11} {:>5} {:>5} {:>5} {:>9} {:>9} {:>9} {:>9} {:>6}\n",
        "step",
        "party",
        "drop",
        "dup",
        "delay",
        "kill<snd",
        "kill>snd",
        "kill<rcv",
        "kill>rcv",
        "crash"
    ));
    let mut rows: BTreeMap<(u8, Party), [(u64, u64); 8]> = BTreeMap::new();
    for (map, hit) in [(&t.injected, true), (&t.missed, false)] {
        for (s, c) in map {
            let col = match s.fault {
                crate::Fault::Drop => 0,
                crate::Fault::Duplicate => 1,
                crate::Fault::Delay => 2,
                crate::Fault::KillSenderBeforeSend => 3,
                crate::Fault::KillSenderAfterSend => 4,
                crate::Fault::KillReceiverBeforeReceive => 5,
                crate::Fault::KillReceiverAfterReceive => 6,
                crate::Fault::Crash(_) => 7,
            };
            let cell = &mut rows.entry((s.step, s.party)).or_default()[col];
            if hit {
                cell.0 += c;
            } else {
                cell.1 += c;
            }
        }
    }
    let mut totals = [0u64; 8];
    for ((step, party), cells) in &rows {
        out.push_str(&format!(
            "{:<26} {:<11}",
            format!("{step} {}", crate::step_name(*step)),
            party.to_string()
        ));
        for (i, (hit, missed)) in cells.iter().enumerate() {
            totals[i] += hit;
            let cell = if *hit == 0 && *missed == 0 {
                "-".to_string()
            } else if *missed == 0 {
                hit.to_string()
            } else {
                format!("{hit}/{missed}")
            };
            let w = if (3..=6).contains(&i) {
                9
            } else if i == 7 {
                6
            } else {
                5
            };
            out.push_str(&format!(" {cell:>w$}"));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "{:<38} {:>5} {:>5} {:>5} {:>9} {:>9} {:>9} {:>9} {:>6}\n\n",
        "total injected",
        totals[0],
        totals[1],
        totals[2],
        totals[3],
        totals[4],
        totals[5],
        totals[6],
        totals[7]
    ));
    out.push_str("checks passed\n");
    for c in Checker::ALL {
        out.push_str(&format!(
            "  {:<28} {:>6}\n",
            c.name(),
            t.passed.get(&c).copied().unwrap_or(0)
        ));
    }
    out
}

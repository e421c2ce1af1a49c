//! `netbill check`: the command-line front end of the checker.
//!
//! Exit status: 0 when the run completed — failing properties are findings, printed in the
//! table, not errors; 1 on an error, or with `--expect-paper` when a verdict contradicts the
//! paper (for models run with their default failure model); 2 for bad usage (from clap).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::protocol::Failures;
use crate::registry::{self, Registered};
use crate::report::{self, CheckReport};
use crate::run::{RunOptions, Search};

/// Arguments of `netbill check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Model to check (default: all). `--list` shows the names.
    pub model: Option<String>,

    /// List the models (and NetBill's mutants) and exit.
    #[arg(long)]
    pub list: bool,

    /// Check a faulty variant of NetBill instead (with the `netbill` model only): a mutant
    /// with one deliberate bug, which the checker must catch with a counterexample. `--list`
    /// shows the names.
    #[arg(long, value_name = "NAME")]
    pub mutant: Option<String>,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Serve stateright's web explorer for one model on a loopback address.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:3000")]
    pub explore: Option<String>,

    /// Messages may be lost (the default for every model).
    #[arg(long, conflicts_with = "no_lossy")]
    pub lossy: bool,

    /// No message is ever lost.
    #[arg(long)]
    pub no_lossy: bool,

    /// Messages may be delivered more than once.
    #[arg(long)]
    pub duplicating: bool,

    /// Each link delivers in order (no reordering).
    #[arg(long, conflicts_with = "duplicating")]
    pub fifo: bool,

    /// How many crashes may happen in one run (default: the model's, usually 1).
    #[arg(long, value_name = "N")]
    pub crashes: Option<u8>,

    /// The bank or billing server may crash too.
    #[arg(long)]
    pub unreliable_bank: bool,

    /// Messages to and from the bank may be lost too (no fail-safe channel).
    #[arg(long)]
    pub no_failsafe_channel: bool,

    /// Exploration order: bfs finds shortest counterexamples; dfs usually keeps a smaller frontier.
    #[arg(long, value_enum, default_value_t = Search::Bfs)]
    pub search: Search,

    /// Instead of exploring every state, run this many seeded random walks (long schedules of
    /// losses, duplicates, reorderings, crashes) and check the properties at the end of each.
    #[arg(long, value_name = "WALKS")]
    pub simulate: Option<usize>,

    /// The first seed of `--simulate` (walk i uses seed + i); replay a failing walk with its
    /// seed and `--simulate 1`.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// The longest walk of `--simulate`, in steps.
    #[arg(long, default_value_t = 400)]
    pub max_steps: usize,

    /// Exit with status 1 if a verdict contradicts the paper's claim (models run in the
    /// paper's setting, i.e. with their default failure model, only).
    #[arg(long)]
    pub expect_paper: bool,
}

impl CheckArgs {
    /// The failure model for a model whose defaults are `defaults`, after the flags.
    pub fn failures(&self, defaults: Failures) -> Failures {
        let mut f = defaults;
        if self.lossy {
            f.lossy = true;
        }
        if self.no_lossy {
            f.lossy = false;
        }
        if self.duplicating {
            f.duplicating = true;
        }
        if self.fifo {
            f.reordering = false;
        }
        if let Some(n) = self.crashes {
            f.max_crashes = n;
        }
        if self.unreliable_bank {
            f.reliable_bank = false;
        }
        if self.no_failsafe_channel {
            f.failsafe_bank_channel = false;
        }
        f
    }
}

/// Parses an explorer address and refuses anything but loopback.
pub fn loopback_addr(s: &str) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = s
        .parse()
        .with_context(|| format!("--explore: {s:?} is not an address like 127.0.0.1:3000"))?;
    if !addr.ip().is_loopback() {
        bail!("--explore: {addr} is not a loopback address; the explorer serves on loopback only");
    }
    Ok(addr)
}

fn selected(model: Option<&str>, mutant: Option<&str>) -> anyhow::Result<Vec<Box<dyn Registered>>> {
    let mutants = || {
        crate::models::netbill::NetBillMutant::ALL
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = mutant {
        if model != Some("netbill") {
            bail!("--mutant needs the netbill model: netbill check netbill --mutant {name}");
        }
        return match registry::netbill_mutant(name) {
            Some(m) => Ok(vec![m]),
            None => bail!(
                "unknown NetBill mutant {name:?}; known mutants: {}",
                mutants()
            ),
        };
    }
    match model {
        None | Some("all") => Ok(registry::models()),
        Some(name) => match registry::find(name) {
            Some(m) => Ok(vec![m]),
            None => {
                let names: Vec<&str> = registry::models().iter().map(|m| m.info().name).collect();
                bail!("unknown model {name:?}; known models: {}", names.join(", "))
            }
        },
    }
}

/// Writes `text` to stdout; a reader that went away (`netbill check | head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the report to stdout"),
    }
}

/// Runs `netbill check` with `args`.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    if args.list {
        let mut text = String::new();
        for m in registry::models() {
            let info = m.info();
            text.push_str(&format!("{:<18} {}\n", info.name, info.title));
        }
        text.push_str("\nNetBill's mutants (netbill check netbill --mutant NAME):\n");
        for m in crate::models::netbill::NetBillMutant::ALL {
            text.push_str(&format!("  {:<28} {}\n", m.name(), m.about()));
        }
        emit(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    let models = selected(args.model.as_deref(), args.mutant.as_deref())?;

    if let Some(addr) = &args.explore {
        let addr = loopback_addr(addr)?;
        let [model] = models.as_slice() else {
            bail!("--explore needs exactly one model name");
        };
        let failures = args.failures(model.info().default_failures);
        eprintln!(
            "explorer for {} on http://{addr}/ (Ctrl-C to stop)",
            model.info().name
        );
        model.explore(failures, addr)?;
        return Ok(ExitCode::SUCCESS);
    }

    if let Some(count) = args.simulate {
        if count == 0 || args.max_steps == 0 {
            bail!("--simulate and --max-steps must be at least 1");
        }
        let mut failed = false;
        let mut out = String::new();
        for model in &models {
            let failures = args.failures(model.info().default_failures);
            let sim = model.simulate(failures, args.seed, count, args.max_steps, &mut |_| {});
            // The name to run it again by (a mutant's includes its flag).
            let name = match &args.mutant {
                Some(m) => format!("{} --mutant {m}", model.info().name),
                None => model.info().name.to_string(),
            };
            out.push_str(&format!(
                "{:<18} {} walks from seed {}: {} finished, {} steps in all, {}\n",
                name,
                sim.walks,
                args.seed,
                sim.quiescent,
                sim.steps,
                if sim.failure.is_some() {
                    "VIOLATION"
                } else {
                    "no violation"
                }
            ));
            if let Some(w) = &sim.failure {
                failed = true;
                out.push_str(&format!(
                    "  seed {} violates {}; replay: netbill check {} --simulate 1 --seed {}\n",
                    w.seed,
                    w.violations
                        .iter()
                        .map(|(p, why)| format!("{p:?} ({why})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    name,
                    w.seed
                ));
                for (i, step) in w.steps.iter().enumerate() {
                    out.push_str(&format!("  {:>4}. {step}\n", i + 1));
                }
            }
        }
        emit(&out)?;
        return Ok(if failed {
            ExitCode::from(3)
        } else {
            ExitCode::SUCCESS
        });
    }

    let options = RunOptions {
        search: args.search,
        progress: !args.json,
    };
    let mut reports = Vec::new();
    for model in &models {
        let failures = args.failures(model.info().default_failures);
        reports.push(model.check(failures, &options));
    }
    let report = CheckReport { models: reports };
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        emit(&report::text(&report))?;
    }
    let disagreements = report.disagreements();
    if args.expect_paper && !disagreements.is_empty() {
        let cells: Vec<String> = disagreements
            .iter()
            .map(|(m, p)| format!("{m}/{}", p.column()))
            .collect();
        eprintln!("error: verdicts contradict the paper: {}", cells.join(", "));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explorer_serves_on_loopback_only() {
        assert!(loopback_addr("127.0.0.1:3000").is_ok());
        assert!(loopback_addr("[::1]:3000").is_ok());
        let refused = loopback_addr("0.0.0.0:3000").unwrap_err().to_string();
        assert!(refused.contains("not a loopback address"), "{refused}");
        assert!(loopback_addr("192.168.1.2:80").is_err());
        let garbage = loopback_addr("localhost").unwrap_err().to_string();
        assert!(garbage.contains("not an address"), "{garbage}");
    }

    #[test]
    fn flags_only_add_to_or_remove_from_the_model_defaults() {
        let args = CheckArgs {
            model: None,
            list: false,
            mutant: None,
            json: false,
            explore: None,
            lossy: false,
            no_lossy: true,
            duplicating: true,
            fifo: false,
            crashes: Some(3),
            unreliable_bank: true,
            no_failsafe_channel: true,
            search: Search::Bfs,
            simulate: None,
            seed: 1,
            max_steps: 400,
            expect_paper: false,
        };
        let f = args.failures(Failures::default());
        assert!(!f.lossy && f.duplicating && f.reordering);
        assert_eq!(f.max_crashes, 3);
        assert!(!f.reliable_bank && !f.failsafe_bank_channel);
    }

    #[test]
    fn unknown_model_names_the_known_ones() {
        let err = selected(Some("netcash"), None)
            .err()
            .expect("unknown model")
            .to_string();
        assert!(err.contains("unknown model \"netcash\""), "{err}");
        assert!(err.contains("digicash"), "{err}");
        assert_eq!(
            selected(None, None).map(|m| m.len()).ok(),
            Some(registry::models().len())
        );
    }

    #[test]
    fn a_mutant_needs_the_netbill_model_and_a_known_name() {
        let err = |model, mutant| {
            selected(model, Some(mutant))
                .err()
                .expect("refused")
                .to_string()
        };
        let unknown = err(Some("netbill"), "key-after-commit");
        assert!(unknown.contains("unknown NetBill mutant"), "{unknown}");
        assert!(unknown.contains("key-before-commit"), "{unknown}");
        assert!(err(None, "no-expiry").contains("needs the netbill model"));
        assert!(err(Some("digicash"), "no-expiry").contains("needs the netbill model"));
        for m in crate::models::netbill::NetBillMutant::ALL {
            assert_eq!(
                selected(Some("netbill"), Some(m.name()))
                    .map(|v| v.len())
                    .ok(),
                Some(1),
                "{}",
                m.name()
            );
        }
    }
}

//! Printing reports: the table protocol × property, the counterexamples, and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::property::PropertyKind;
use crate::protocol::Failures;
use crate::run::{ModelReport, Search, Verdict};

/// Everything one `netbill check` run found, as printed by `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// One report per model, in table order.
    pub models: Vec<ModelReport>,
}

impl CheckReport {
    /// Cells whose verdict contradicts a claim of the paper, `(model, property)`, among the
    /// models checked in the paper's setting (their default failure model).
    pub fn disagreements(&self) -> Vec<(String, PropertyKind)> {
        let mut out = Vec::new();
        for m in self
            .models
            .iter()
            .filter(|m| m.paper_setting && m.mutant.is_none())
        {
            for r in &m.results {
                if r.agrees_with_paper == Some(false) {
                    out.push((m.name.clone(), r.property));
                }
            }
        }
        out
    }
}

/// A one-line description of a failure model.
pub fn describe_failures(f: &Failures) -> String {
    let on = |b: bool| if b { "yes" } else { "no" };
    format!(
        "lossy={} duplicating={} reordering={} crashes≤{} reliable-bank={} failsafe-bank-channel={}",
        on(f.lossy),
        on(f.duplicating),
        on(f.reordering),
        f.max_crashes,
        on(f.reliable_bank),
        on(f.failsafe_bank_channel)
    )
}

fn cell(m: &ModelReport, p: PropertyKind) -> String {
    let r = m.result(p);
    let mark = match r.agrees_with_paper {
        Some(true) => " =",
        Some(false) => " ≠",
        None => "",
    };
    format!("{}{mark}", r.verdict.word())
}

/// The table: one row per model, one column per property, then states and time.
pub fn table(report: &CheckReport) -> String {
    let mut out = String::new();
    let name_width = report
        .models
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = write!(out, "{:<name_width$}", "protocol");
    for p in PropertyKind::ALL {
        let _ = write!(out, "  {:<10}", p.column());
    }
    let _ = writeln!(out, "  {:>9}  {:>8}", "states", "seconds");
    for m in &report.models {
        let _ = write!(out, "{:<name_width$}", m.name);
        for p in PropertyKind::ALL {
            let _ = write!(out, "  {:<10}", cell(m, p));
        }
        let _ = writeln!(out, "  {:>9}  {:>8.2}", m.states, m.seconds);
    }
    out.push_str(
        "\n\"=\": agrees with the paper's claim; \"≠\": contradicts it; no mark: the paper makes no claim.\n",
    );
    if report.models.iter().any(|m| !m.paper_setting) {
        out.push_str(
            "Note: the failure model differs from the paper's setting; the paper's claims are about that setting.\n",
        );
    }
    if report.models.iter().any(|m| m.mutant.is_some()) {
        out.push_str(
            "Note: a mutant is NetBill with one deliberate bug; a \"≠\" against the paper's claims is the checker catching it.\n",
        );
    }
    out
}

/// The full text report: the table, then each model's setting and counterexamples.
pub fn text(report: &CheckReport) -> String {
    let mut out = table(report);
    for m in &report.models {
        let _ = writeln!(out, "\n== {} — {}", m.name, m.title);
        let _ = writeln!(out, "   source: {}", m.source);
        let _ = writeln!(out, "   failure model: {}", describe_failures(&m.failures));
        let _ = writeln!(
            out,
            "   explored {} states (depth {}) in {:.2}s, {} search",
            m.states,
            m.max_depth,
            m.seconds,
            match m.search {
                Search::Bfs => "breadth-first",
                Search::Dfs => "depth-first",
            }
        );
        for w in &m.warnings {
            let _ = writeln!(out, "   WARNING: {w}");
        }
        for r in &m.results {
            if r.verdict != Verdict::Fail {
                continue;
            }
            let paper = match &r.paper {
                Some(c) if c.holds => format!(" (paper: holds — {})", c.source),
                Some(c) => format!(" (paper: fails — {})", c.source),
                None => String::new(),
            };
            let _ = writeln!(out, "\n   {} FAILS{paper}", r.name);
            if let Some(cx) = &r.counterexample {
                let kind = match m.search {
                    Search::Bfs => "shortest counterexample",
                    Search::Dfs => "counterexample",
                };
                let _ = writeln!(
                    out,
                    "   {kind} ({} steps): {}",
                    cx.events.len(),
                    cx.violation
                );
                for line in cx.chart.lines() {
                    let _ = writeln!(out, "   {line}");
                }
            }
        }
    }
    out
}

//! Running a check: explore a system's whole state space and collect, for every property, its
//! verdict and a shortest counterexample.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::explore::{Exploration, explore};
use crate::msc::{self, TraceEvent};
use crate::property::PropertyKind;
use crate::protocol::{Failures, Protocol};
use crate::system::{Action, ActionOf, GUARD_PURCHASE, GUARD_QUIESCENT, StateOf, System};

/// How the state space is explored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Search {
    /// Breadth-first: counterexamples are shortest (single-threaded runs only).
    Bfs,
    /// Depth-first: usually a smaller frontier; counterexamples not necessarily shortest.
    Dfs,
}

/// Options of one run that are not part of the failure model.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Exploration order.
    pub search: Search,
    /// Show a spinner on stderr (only if stderr is a terminal).
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            search: Search::Bfs,
            progress: false,
        }
    }
}

/// Whether a property holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Holds in every reachable quiescent state.
    Hold,
    /// Fails in some reachable quiescent state (see the counterexample).
    Fail,
    /// Not checked for this protocol (the cash property for notational money).
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl Verdict {
    /// The word printed in the table.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Hold => "hold",
            Verdict::Fail => "FAIL",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// A shortest (under BFS) run from the initial state to a state that violates a property.
#[derive(Clone, Debug, Serialize)]
pub struct Counterexample {
    /// Why the final state violates the property.
    pub violation: String,
    /// The events, in order.
    pub events: Vec<TraceEvent>,
    /// The events drawn as a message sequence chart.
    pub chart: String,
}

/// What the paper says about one property, as shown next to the verdict.
#[derive(Clone, Debug, Serialize)]
pub struct PaperView {
    /// `true` if the paper says it holds.
    pub holds: bool,
    /// Who says so.
    pub source: String,
}

/// One property's result.
#[derive(Clone, Debug, Serialize)]
pub struct PropertyResult {
    /// The property.
    pub property: PropertyKind,
    /// Its full name.
    pub name: String,
    /// The checker's verdict.
    pub verdict: Verdict,
    /// What the paper says, if it says anything.
    pub paper: Option<PaperView>,
    /// Whether the verdict agrees with the paper (`None` without a claim or when n/a).
    pub agrees_with_paper: Option<bool>,
    /// For a failing property, a counterexample.
    pub counterexample: Option<Counterexample>,
}

/// The result of checking one model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelReport {
    /// Registry name.
    pub name: String,
    /// Title.
    pub title: String,
    /// Sources.
    pub source: String,
    /// The parties' names, in lane order.
    pub parties: Vec<String>,
    /// The failure model used.
    pub failures: Failures,
    /// Whether that is the model's default, the setting the paper's claims are about.
    pub paper_setting: bool,
    /// What a NetBill mutant (`--mutant`) gets wrong; the paper's claims are about the
    /// protocol itself, so `--expect-paper` does not hold them against a mutant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutant: Option<String>,
    /// Exploration order.
    pub search: Search,
    /// Distinct states explored.
    pub states: usize,
    /// Longest path explored.
    pub max_depth: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// One result per property, in table order.
    pub results: Vec<PropertyResult>,
    /// Problems with the model itself (a guard that was never met makes verdicts vacuous).
    pub warnings: Vec<String>,
}

impl ModelReport {
    /// The result for `property`.
    pub fn result(&self, property: PropertyKind) -> &PropertyResult {
        self.results
            .iter()
            .find(|r| r.property == property)
            .unwrap_or_else(|| panic!("every report has a result for {property:?}"))
    }

    /// The verdict for `property`.
    pub fn verdict(&self, property: PropertyKind) -> Verdict {
        self.result(property).verdict
    }
}

/// Turns a path found by the explorer into trace events.
pub fn trace<P: Protocol>(
    system: &System<P>,
    path: &[(StateOf<P>, Option<ActionOf<P>>)],
) -> Vec<TraceEvent> {
    let names = system.names();
    path.iter()
        .filter_map(|(_, action)| action.as_ref())
        .map(|action| match action {
            Action::Deliver(e) => TraceEvent::Deliver {
                from: names[e.src].to_string(),
                to: names[e.dst].to_string(),
                message: system.protocol.label(&e.msg),
            },
            Action::Lose(e) => TraceEvent::Lose {
                from: names[e.src].to_string(),
                to: names[e.dst].to_string(),
                message: system.protocol.label(&e.msg),
            },
            Action::Step(p, s) => TraceEvent::Step {
                party: names[*p].to_string(),
                step: system.protocol.step_label(s),
            },
            Action::Crash(p) => TraceEvent::Crash {
                party: names[*p].to_string(),
            },
        })
        .collect()
}

/// Checks protocol `P` under `failures` and reports every property.
pub fn check<P: Protocol>(failures: Failures, options: &RunOptions) -> ModelReport {
    check_system(&System::<P>::new(failures), options)
}

/// Checks an already built system (for example one wrapping a mutant of a protocol).
pub fn check_system<P: Protocol>(system: &System<P>, options: &RunOptions) -> ModelReport {
    let info = P::info();
    let started = Instant::now();
    let spinner = (options.progress && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let exploration = explore(system, options.search, |states| {
        if let Some(bar) = &spinner {
            bar.set_message(format!("checking {}: {states} states", info.name));
        }
    });
    if let Some(bar) = &spinner {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    collect(system, &exploration, options, seconds)
}

fn collect<P: Protocol>(
    system: &System<P>,
    exploration: &Exploration<System<P>>,
    options: &RunOptions,
    seconds: f64,
) -> ModelReport {
    let info = P::info();
    let checked = System::<P>::checked_properties();

    let mut results = Vec::new();
    for property in PropertyKind::ALL {
        let claim = info.paper.iter().find(|c| c.property == property);
        let paper = claim.map(|c| PaperView {
            holds: c.holds,
            source: c.source.to_string(),
        });
        if !checked.contains(&property) {
            results.push(PropertyResult {
                property,
                name: property.name().to_string(),
                verdict: Verdict::NotApplicable,
                paper,
                agrees_with_paper: None,
                counterexample: None,
            });
            continue;
        }
        let counterexample = exploration.discoveries.get(property.name()).map(|path| {
            let last = &path[path.len() - 1].0;
            let violation = system
                .violation(property, last)
                .unwrap_or_else(|| "property violated".to_string());
            let events = trace(system, path);
            let chart = msc::render(&system.names(), &events);
            Counterexample {
                violation,
                events,
                chart,
            }
        });
        let verdict = if counterexample.is_some() {
            Verdict::Fail
        } else {
            Verdict::Hold
        };
        results.push(PropertyResult {
            property,
            name: property.name().to_string(),
            verdict,
            agrees_with_paper: claim.map(|c| c.holds == (verdict == Verdict::Hold)),
            paper,
            counterexample,
        });
    }

    let mut warnings = Vec::new();
    for guard in [GUARD_QUIESCENT, GUARD_PURCHASE] {
        if !exploration.discoveries.contains_key(guard) {
            warnings.push(format!(
                "no run satisfies \"{guard}\": the model is broken and its verdicts are vacuous"
            ));
        }
    }

    ModelReport {
        name: info.name.to_string(),
        title: info.title.to_string(),
        source: info.source.to_string(),
        parties: system.names().iter().map(|n| n.to_string()).collect(),
        failures: system.failures,
        paper_setting: system.failures == info.default_failures,
        mutant: None,
        search: options.search,
        states: exploration.states,
        max_depth: exploration.max_depth,
        seconds,
        results,
        warnings,
    }
}

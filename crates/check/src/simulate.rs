//! Seeded simulation: random walks through a model, each reproducible from its seed.
//!
//! Exhaustive exploration ([`crate::explore`]) proves a property for every interleaving of a
//! bounded model; simulation runs many long random schedules — losses, duplicates,
//! reorderings, crashes, timeouts — through the same parties (for NetBill, the production
//! state machines) and checks the properties at the end of each. A seed names a schedule:
//! replaying it gives the same steps, so any failure can be reproduced exactly.

use serde::Serialize;
use stateright::Model;

use crate::property::PropertyKind;
use crate::protocol::Protocol;
use crate::system::{Action, System};

/// How much likelier a delivery is than a loss, a crash or a party's own step (a timeout, a
/// decision): in a real network most messages arrive before anything times out.
pub const DELIVERY_WEIGHT: u64 = 10;

/// One random walk.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Walk {
    /// The seed that names this schedule.
    pub seed: u64,
    /// The steps taken, as readable actions.
    pub steps: Vec<String>,
    /// Whether the walk ended with every party finished (else it hit the step limit or had
    /// nothing left to do).
    pub quiescent: bool,
    /// Properties that fail at the end, with the reason.
    pub violations: Vec<(PropertyKind, String)>,
}

/// SplitMix64: a tiny deterministic generator; the seed is the whole state.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn weight<M, T>(a: &Action<M, T>) -> u64 {
    match a {
        Action::Deliver(_) => DELIVERY_WEIGHT,
        Action::Lose(_) | Action::Step(..) | Action::Crash(_) => 1,
    }
}

/// Walks `system` from its initial state, choosing each enabled action at random (from
/// `seed`; deliveries [`DELIVERY_WEIGHT`] times likelier than anything else), for at most
/// `max_steps` steps or until every party has finished.
pub fn walk<P: Protocol>(system: &System<P>, seed: u64, max_steps: usize) -> Walk {
    let mut rng = SplitMix(seed);
    let mut state = system.init_states().remove(0);
    let mut steps = Vec::new();
    let mut actions = Vec::new();
    while steps.len() < max_steps && !system.quiescent(&state) {
        actions.clear();
        system.actions(&state, &mut actions);
        let mut next = None;
        while !actions.is_empty() {
            let total: u64 = actions.iter().map(weight).sum();
            let mut pick = rng.below(total);
            let mut i = 0;
            while pick >= weight(&actions[i]) {
                pick -= weight(&actions[i]);
                i += 1;
            }
            let action = actions.swap_remove(i);
            let label = system.format_action(&action);
            if let Some(s) = system.next_state(&state, action) {
                next = Some((s, label));
                break;
            }
        }
        let Some((s, label)) = next else { break };
        state = s;
        steps.push(label);
    }
    let violations = System::<P>::checked_properties()
        .into_iter()
        .filter_map(|p| system.violation(p, &state).map(|why| (p, why)))
        .collect();
    Walk {
        seed,
        steps,
        quiescent: system.quiescent(&state),
        violations,
    }
}

/// What many walks found.
#[derive(Clone, Debug, Serialize)]
pub struct Simulation {
    /// Walks run.
    pub walks: usize,
    /// Walks that ended with every party finished.
    pub quiescent: usize,
    /// Steps taken in all walks.
    pub steps: usize,
    /// The first failing walk, if any.
    pub failure: Option<Walk>,
}

/// Runs `count` walks with seeds `first_seed, first_seed + 1, …`; stops at the first walk
/// that violates a property.
pub fn simulate<P: Protocol>(
    system: &System<P>,
    first_seed: u64,
    count: usize,
    max_steps: usize,
    mut progress: impl FnMut(usize),
) -> Simulation {
    let mut sim = Simulation {
        walks: 0,
        quiescent: 0,
        steps: 0,
        failure: None,
    };
    for i in 0..count {
        let w = walk(system, first_seed.wrapping_add(i as u64), max_steps);
        sim.walks += 1;
        sim.steps += w.steps.len();
        sim.quiescent += usize::from(w.quiescent);
        progress(sim.walks);
        if !w.violations.is_empty() {
            sim.failure = Some(w);
            break;
        }
    }
    sim
}

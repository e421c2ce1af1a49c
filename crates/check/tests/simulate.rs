//! Seeded simulation of NetBill through the production state machines: thousands of random
//! schedules with losses, duplicates, reorderings and crashes, each replayable from its seed.

use netbill_check::models::netbill::{NetBill, NetBillMutant};
use netbill_check::protocol::Protocol;
use netbill_check::simulate::{simulate, walk};
use netbill_check::system::System;

#[test]
fn thousands_of_seeded_schedules_keep_every_property() {
    let mut failures = NetBill::info().default_failures;
    failures.duplicating = true;
    failures.max_crashes = 3;
    let system = System::with_protocol(NetBill::build(&failures), failures);
    let sim = simulate(&system, 1, 3000, 400, |_| {});
    assert!(sim.failure.is_none(), "violation: {:?}", sim.failure);
    assert_eq!(sim.walks, 3000);
    // The walks are real purchases, not trivial runs: most finish, and they are long.
    assert!(
        sim.quiescent > 2500,
        "{} of 3000 walks finished",
        sim.quiescent
    );
    let long = (1..200)
        .map(|s| walk(&system, s, 400))
        .filter(|w| w.steps.iter().any(|s| s.contains("Receipt")))
        .count();
    assert!(long > 100, "only {long} of 199 walks reached a receipt");
}

#[test]
fn a_seed_replays_exactly_and_a_mutant_is_found_by_some_seed() {
    let failures = NetBill::info().default_failures;
    let system = System::with_protocol(NetBill::mutant(NetBillMutant::WalletLosesEpo), failures);
    let sim = simulate(&system, 1, 20_000, 400, |_| {});
    let failing = sim
        .failure
        .expect("random schedules find the wallet that loses its EPO");
    assert!(!failing.violations.is_empty());
    assert_eq!(
        walk(&system, failing.seed, 400),
        failing,
        "the same seed, the same schedule"
    );
}

//! The NetBill model, built from the production state machines: its row of the table and its
//! mutants, each caught with a counterexample.

use netbill_check::models::netbill::{NetBill, NetBillMutant};
use netbill_check::property::PropertyKind::{self, *};
use netbill_check::protocol::{Failures, Protocol};
use netbill_check::run::{self, ModelReport, RunOptions, Verdict};
use netbill_check::system::System;

fn check(protocol: NetBill, failures: Failures) -> ModelReport {
    let report = run::check_system(
        &System::with_protocol(protocol, failures),
        &RunOptions::default(),
    );
    eprintln!(
        "{}: {} states, {:.2} s",
        report.name, report.states, report.seconds
    );
    report
}

fn defaults() -> Failures {
    NetBill::info().default_failures
}

fn chart(report: &ModelReport, property: PropertyKind) -> String {
    let cx = report
        .result(property)
        .counterexample
        .as_ref()
        .unwrap_or_else(|| panic!("{property:?}: a counterexample"));
    eprintln!("{property:?}: {}\n{}", cx.violation, cx.chart);
    cx.chart.clone()
}

#[test]
fn netbill_keeps_all_three_in_its_default_failure_model() {
    let report = check(NetBill::build(&defaults()), defaults());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    for p in [Money, Goods, Certified] {
        assert_eq!(report.verdict(p), Verdict::Hold, "{p:?}");
    }
}

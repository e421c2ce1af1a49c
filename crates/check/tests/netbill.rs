//! The NetBill model, built from the production state machines: its mutants, each caught with
//! a counterexample. (Its row of the table, in the default failure model, is asserted in
//! `table.rs`.) The mutants are checked in the smallest failure model that exhibits them, to
//! keep the debug-mode suite fast.

use netbill_check::models::netbill::{NetBill, NetBillMutant};
use netbill_check::property::PropertyKind::{self, *};
use netbill_check::protocol::{Failures, Protocol};
use netbill_check::run::{self, ModelReport, RunOptions, Verdict};
use netbill_check::system::System;

/// The default failure model with `crashes` crashes and a fail-safe channel to N if `failsafe`.
fn failures(crashes: u8, failsafe: bool) -> Failures {
    Failures {
        max_crashes: crashes,
        failsafe_bank_channel: failsafe,
        ..NetBill::info().default_failures
    }
}

fn check(protocol: NetBill, failures: Failures) -> ModelReport {
    let report = run::check_system(
        &System::with_protocol(protocol, failures),
        &RunOptions::default(),
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    report
}

/// The counterexample for `property`, which must fail: (violation, chart).
fn counterexample(report: &ModelReport, property: PropertyKind) -> (String, String) {
    assert_eq!(report.verdict(property), Verdict::Fail, "{property:?}");
    let cx = report
        .result(property)
        .counterexample
        .as_ref()
        .unwrap_or_else(|| panic!("{property:?}: a counterexample"));
    // Shown with `--nocapture`: the charts docs/atomicity.md describes.
    println!("{property:?}: {}\n{}", cx.violation, cx.chart);
    (cx.violation.clone(), cx.chart.clone())
}

#[test]
fn a_merchant_that_releases_k_before_n_commits_breaks_goods_atomicity() {
    let report = check(
        NetBill::mutant(NetBillMutant::KeyBeforeCommit),
        failures(0, false),
    );
    assert_eq!(report.verdict(Money), Verdict::Hold);
    let (why, chart) = counterexample(&report, Goods);
    assert!(why.contains("was not paid"), "{why}\n{chart}");
    assert!(
        chart.lines().any(|l| l.trim_end().ends_with(" K")),
        "{chart}"
    );
}

#[test]
fn a_receipt_revealed_before_the_commit_is_durable_breaks_goods_atomicity() {
    let report = check(
        NetBill::mutant(NetBillMutant::ReceiptBeforeDurable),
        failures(1, true),
    );
    assert_eq!(report.verdict(Money), Verdict::Hold);
    let (why, chart) = counterexample(&report, Goods);
    assert!(why.contains("was not paid"), "{why}\n{chart}");
    assert!(chart.contains("Receipt(Committed)"), "{chart}");
    assert!(chart.contains('#'), "N crashes: {chart}");
}

#[test]
fn a_wallet_that_loses_the_epo_in_a_crash_breaks_goods_atomicity() {
    let report = check(
        NetBill::mutant(NetBillMutant::WalletLosesEpo),
        failures(1, true),
    );
    assert_eq!(report.verdict(Money), Verdict::Hold);
    let (why, chart) = counterexample(&report, Goods);
    assert!(why.contains("does not have the goods"), "{why}\n{chart}");
    assert!(chart.contains('#'), "C crashes: {chart}");
}

#[test]
fn epos_that_never_expire_leave_a_customer_without_an_outcome_and_break_goods_atomicity() {
    let report = check(NetBill::mutant(NetBillMutant::NoExpiry), failures(0, false));
    assert_eq!(report.verdict(Money), Verdict::Hold);
    let (why, chart) = counterexample(&report, Goods);
    // The customer finished recovery without an outcome (N, past the expiry, knew of none),
    // and the merchant's delayed endorsement then committed: she paid and has no K.
    assert!(why.contains("does not have the goods"), "{why}\n{chart}");
    assert!(chart.contains("NoOutcome [late]"), "{chart}");
    assert!(chart.contains("Receipt(Committed)"), "{chart}");
}

#[test]
fn the_correct_model_holds_without_a_failsafe_channel_and_with_an_unreliable_server() {
    let report = check(NetBill::build(&failures(1, false)), failures(1, false));
    for p in [Money, Goods, Certified] {
        assert_eq!(report.verdict(p), Verdict::Hold, "{p:?}");
    }
}

#[test]
fn a_receipt_whose_merkle_path_leads_to_another_root_breaks_goods_atomicity() {
    let report = run::check_system(
        &System::with_protocol(
            NetBill::mutant(NetBillMutant::ReceiptPathElsewhere),
            failures(0, false),
        ),
        &RunOptions::default(),
    );
    // No purchase can complete, and the checker says so.
    assert!(
        report.warnings.len() == 1 && report.warnings[0].contains("some purchase completes"),
        "{:?}",
        report.warnings
    );
    assert_eq!(report.verdict(Money), Verdict::Hold);
    // N committed and debited her, but no party accepts its receipt: she never gets K.
    let (why, chart) = counterexample(&report, Goods);
    assert!(why.contains("does not have the goods"), "{why}\n{chart}");
    assert!(chart.contains("Receipt(Committed)"), "{chart}");
}

#[test]
fn a_k_derived_without_the_epoid_breaks_goods_atomicity() {
    let report = check(
        NetBill::mutant(NetBillMutant::KeyReusedAcrossPurchases),
        failures(0, false),
    );
    assert_eq!(report.verdict(Money), Verdict::Hold);
    // The K she kept from an earlier purchase decrypts this purchase's goods, which she
    // never paid for (her EPO was lost and N aborted it).
    let (why, chart) = counterexample(&report, Goods);
    assert!(why.contains("was not paid"), "{why}\n{chart}");
    assert!(!chart.contains("Receipt(Committed)"), "{chart}");
}

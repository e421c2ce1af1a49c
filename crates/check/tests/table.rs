//! The table of the paper, reproduced by actually running the checker on every model.

use netbill_check::models::anonymous::AnonymousAtomic;
use netbill_check::models::postage::Postage;
use netbill_check::property::PropertyKind::{self, *};
use netbill_check::protocol::{Failures, Protocol};
use netbill_check::registry;
use netbill_check::run::{self, ModelReport, RunOptions, Search, Verdict};
use netbill_check::system::System;

use Verdict::{Fail, Hold, NotApplicable as NA};

fn check(name: &str, failures: impl FnOnce(Failures) -> Failures, search: Search) -> ModelReport {
    let model = registry::find(name).unwrap_or_else(|| panic!("model {name} is registered"));
    let options = RunOptions {
        search,
        progress: false,
    };
    model.check(failures(model.info().default_failures), &options)
}

fn defaults(name: &str) -> ModelReport {
    check(name, |f| f, Search::Bfs)
}

/// Asserts the verdict of every column, and that every failure comes with a counterexample.
fn assert_row(report: &ModelReport, expected: [Verdict; 5]) {
    assert!(
        report.warnings.is_empty(),
        "{}: {:?}",
        report.name,
        report.warnings
    );
    for (property, want) in PropertyKind::ALL.into_iter().zip(expected) {
        let result = report.result(property);
        assert_eq!(
            result.verdict, want,
            "{} / {}: expected {want:?}",
            report.name, result.name
        );
        match (&result.counterexample, want) {
            (Some(cx), Fail) => {
                assert!(
                    !cx.events.is_empty(),
                    "{}: empty counterexample",
                    result.name
                );
                // The violation is recomputed on the path's last state: the path really ends
                // in a violating state.
                assert_ne!(cx.violation, "property violated");
                assert_eq!(cx.chart.lines().count(), cx.events.len() + 1);
            }
            (None, Hold | NA) => {}
            (cx, _) => panic!("{} / {}: counterexample {cx:?}", report.name, result.name),
        }
    }
}

/// Every claim the paper makes must agree with the checker's verdict.
fn assert_agrees_with_paper(report: &ModelReport) {
    for r in &report.results {
        assert_ne!(
            r.agrees_with_paper,
            Some(false),
            "{} / {} contradicts the paper",
            report.name,
            r.name
        );
    }
}

//                                  money cash(C) cash(M) goods certified
#[test]
fn digital_cash_fails_money_atomicity_at_the_spend_step() {
    let report = defaults("digicash");
    assert_row(&report, [Fail, Hold, Fail, Fail, Fail]);
    assert_agrees_with_paper(&report);
    // Tygar's scenario: the spend message is lost and the customer abandons her token.
    let cx = report
        .result(Money)
        .counterexample
        .as_ref()
        .expect("counterexample");
    let chart = &cx.chart;
    assert!(chart.contains("Spend (lost)"), "{chart}");
    assert!(chart.contains("Abandon"), "{chart}");
    assert!(cx.violation.contains("destroyed"));
    // Withdraw, its delivery, the token's delivery, spend, loss, timeout, abandon: nothing
    // shorter reaches a state that loses money.
    assert_eq!(cx.events.len(), 7, "{chart}");
}

#[test]
fn heintze_digital_cash_conserves_money_but_not_the_merchants_cash() {
    let report = defaults("digicash-heintze");
    assert_row(&report, [Hold, Hold, Fail, Fail, Fail]);
    assert_agrees_with_paper(&report);
    // Heintze et al.'s counterexample: the coin is spent twice, the second deposit is refused.
    let chart = &report
        .result(CashMerchant)
        .counterexample
        .as_ref()
        .expect("cx")
        .chart;
    assert!(chart.contains("DoubleSpend"), "{chart}");
    assert!(chart.contains("AlreadyDeposited"), "{chart}");
}

#[test]
fn first_virtual_keeps_money_atomicity_but_not_goods_atomicity() {
    let report = defaults("first-virtual");
    assert_row(&report, [Hold, NA, NA, Fail, Fail]);
    assert_agrees_with_paper(&report);
}

#[test]
fn ssl_card_payment_keeps_money_atomicity_but_not_goods_atomicity() {
    let report = defaults("ssl");
    assert_row(&report, [Hold, NA, NA, Fail, Fail]);
    assert_agrees_with_paper(&report);
}

#[test]
fn set_keeps_money_atomicity_but_not_goods_atomicity() {
    let report = defaults("set");
    assert_row(&report, [Hold, NA, NA, Fail, Fail]);
    assert_agrees_with_paper(&report);
}

#[test]
fn postage_indicia_keep_money_atomicity() {
    let report = defaults("postage");
    assert_row(&report, [Hold, NA, NA, Fail, Fail]);
    assert_agrees_with_paper(&report);
}

#[test]
fn anonymous_atomic_transactions_keep_all_three() {
    let report = defaults("anonymous-atomic");
    assert_row(&report, [Hold, Hold, Hold, Hold, Hold]);
    assert_agrees_with_paper(&report);
}

#[test]
fn netbill_keeps_all_three() {
    // Built from the production state machines; its default failure model is harsher than the
    // others': the links to N lose messages too, and N may crash.
    let report = defaults("netbill");
    assert_row(&report, [Hold, NA, NA, Hold, Hold]);
    assert_agrees_with_paper(&report);
    assert!(!report.failures.failsafe_bank_channel && !report.failures.reliable_bank);
}

#[test]
fn depth_first_search_finds_the_same_verdicts_and_no_shorter_counterexamples() {
    for model in registry::models() {
        let name = model.info().name;
        let bfs = defaults(name);
        let dfs = check(name, |f| f, Search::Dfs);
        assert_agrees_with_paper(&dfs);
        assert_eq!(
            bfs.states, dfs.states,
            "{name}: both searches see every state"
        );
        for p in PropertyKind::ALL {
            assert_eq!(bfs.verdict(p), dfs.verdict(p), "{name} / {p:?}");
            if let (Some(short), Some(other)) =
                (&bfs.result(p).counterexample, &dfs.result(p).counterexample)
            {
                assert!(
                    short.events.len() <= other.events.len(),
                    "{name} / {p:?}: BFS is shortest"
                );
            }
        }
    }
}

#[test]
fn digital_cash_keeps_money_atomicity_when_no_message_is_lost() {
    let report = check("digicash", |f| Failures { lossy: false, ..f }, Search::Bfs);
    assert_eq!(report.verdict(Money), Hold);
}

#[test]
fn without_a_failsafe_channel_the_withdrawal_can_destroy_money() {
    let report = check(
        "digicash-heintze",
        |f| Failures {
            failsafe_bank_channel: false,
            ..f
        },
        Search::Bfs,
    );
    assert_eq!(report.verdict(Money), Fail);
    let chart = &report
        .result(Money)
        .counterexample
        .as_ref()
        .expect("cx")
        .chart;
    assert!(chart.contains("(lost)"), "{chart}");
}

#[test]
fn card_payments_are_goods_atomic_only_on_a_network_that_loses_nothing() {
    for name in ["ssl", "set"] {
        let report = check(name, |f| Failures { lossy: false, ..f }, Search::Bfs);
        assert_eq!(report.verdict(Goods), Hold, "{name}");
    }
}

#[test]
fn duplication_and_fifo_links_are_explored_without_changing_the_classification() {
    let dup = check(
        "anonymous-atomic",
        |f| Failures {
            duplicating: true,
            ..f
        },
        Search::Bfs,
    );
    assert_row(&dup, [Hold, Hold, Hold, Hold, Hold]);
    let fifo = check(
        "anonymous-atomic",
        |f| Failures {
            reordering: false,
            ..f
        },
        Search::Bfs,
    );
    assert_row(&fifo, [Hold, Hold, Hold, Hold, Hold]);
    let harsher = check(
        "anonymous-atomic",
        |f| Failures {
            failsafe_bank_channel: false,
            max_crashes: 2,
            reliable_bank: false,
            ..f
        },
        Search::Bfs,
    );
    assert_eq!(harsher.verdict(Goods), Hold);
}

fn check_mutant<P: Protocol>(protocol: P) -> ModelReport {
    let system = System::with_protocol(protocol, P::info().default_failures);
    run::check_system(&system, &RunOptions::default())
}

#[test]
fn a_sorting_station_that_accepts_copies_creates_money() {
    let report = check_mutant(Postage::mutant_no_duplicate_check());
    assert_eq!(report.verdict(Money), Fail);
    let cx = report.result(Money).counterexample.as_ref().expect("cx");
    assert!(cx.violation.contains("created"), "{}", cx.violation);
    assert!(cx.chart.contains("CopySameAddress"), "{}", cx.chart);
}

#[test]
fn a_merchant_that_releases_the_key_before_the_log_commits_breaks_goods_atomicity() {
    let mutant =
        AnonymousAtomic::mutant_key_before_commit(&AnonymousAtomic::info().default_failures);
    let report = check_mutant(mutant);
    assert_eq!(report.verdict(Goods), Fail);
    assert_eq!(report.verdict(Money), Hold);
    let cx = report.result(Goods).counterexample.as_ref().expect("cx");
    assert!(cx.chart.contains("Key"), "{}", cx.chart);
}

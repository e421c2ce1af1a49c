//! Atomicity under failure, against real processes: the whole step × party × fault matrix
//! (lost, duplicated and delayed messages, SIGKILLs around every message, crashes at every
//! crash point, SQLite killed mid-batch), each followed by restart, recovery and every
//! checker; and each checker shown to catch the bug it exists for.

use std::path::Path;

use netbill_chaos::check::Checker;
use netbill_chaos::deploy::Deployment;
use netbill_chaos::run::Runner;
use netbill_chaos::{Fault, Party, Schedule, matrix};

const BIN: &str = env!("CARGO_BIN_EXE_netbill");

fn runner(bugs: &[&str]) -> Runner {
    Runner::new(Deployment::start(Path::new(BIN), None, bugs).expect("starting a deployment"))
}

/// Runs every schedule of the matrix that `pick` selects on one deployment; all must hit
/// their fault and keep every guarantee.
fn run_matrix(pick: impl Fn(&Schedule) -> bool) {
    let mut r = runner(&[]);
    let chosen: Vec<Schedule> = matrix().into_iter().filter(|s| pick(s)).collect();
    assert!(!chosen.is_empty());
    for s in &chosen {
        let v = r.run(*s).expect("running a schedule");
        assert!(
            v.is_empty(),
            "schedule {s} broke a guarantee: {v:?} (logs in {})",
            r.deployment.root().display()
        );
    }
    assert!(
        r.tally.missed.is_empty(),
        "faults armed but never reached: {:?}",
        r.tally.missed
    );
    assert_eq!(r.tally.schedules, chosen.len());
    for c in Checker::ALL {
        assert_eq!(r.tally.passed.get(&c).copied(), Some(chosen.len() as u64));
    }
    assert!(r.tally.paid > 0, "no schedule ended in a paid purchase");
}

#[test]
fn lost_duplicated_and_delayed_messages_at_every_step_break_no_guarantee() {
    run_matrix(|s| matches!(s.fault, Fault::Drop | Fault::Duplicate | Fault::Delay));
}

#[test]
fn sigkills_around_every_message_break_no_guarantee() {
    run_matrix(|s| {
        matches!(
            s.fault,
            Fault::KillSenderBeforeSend
                | Fault::KillSenderAfterSend
                | Fault::KillReceiverBeforeReceive
                | Fault::KillReceiverAfterReceive
        )
    });
}

#[test]
fn crashes_at_every_crash_point_break_no_guarantee() {
    run_matrix(|s| matches!(s.fault, Fault::Crash(_)));
}

/// Runs `s` with the test-only bug switches `bugs`; `checker` must report a violation.
fn caught(bugs: &[&str], s: Schedule, checker: Checker) {
    let mut r = runner(bugs);
    let v = r.run(s).expect("running a schedule");
    assert!(
        v.iter().any(|v| v.checker == checker),
        "with {bugs:?} and {s}, {} found nothing: {v:?}",
        checker.name()
    );
}

#[test]
fn goods_atomicity_catches_a_server_that_reveals_the_receipt_before_the_commit() {
    let s = Schedule {
        step: 5,
        party: Party::Billing,
        fault: Fault::Crash("server.mid_batch"),
    };
    caught(&["server.reveal_before_commit"], s, Checker::GoodsAtomicity);
    caught(&["server.reveal_before_commit"], s, Checker::OneOutcome);
}

#[test]
fn goods_atomicity_catches_a_wallet_that_sends_the_epo_before_persisting_it() {
    caught(
        &["wallet.send_before_persist"],
        Schedule {
            step: 6,
            party: Party::Customer,
            fault: Fault::Crash("wallet.after_receive_receipt"),
        },
        Checker::GoodsAtomicity,
    );
}

#[test]
fn idempotence_catches_a_server_that_signs_a_fresh_receipt_on_a_retry() {
    caught(
        &["server.fresh_receipt_on_retry"],
        Schedule {
            step: 4,
            party: Party::Merchant,
            fault: Fault::Delay,
        },
        Checker::Idempotence,
    );
}

#[test]
fn journal_replay_catches_money_that_moves_unjournaled() {
    caught(
        &["ledger.skip_journal"],
        Schedule {
            step: 1,
            party: Party::Customer,
            fault: Fault::Delay,
        },
        Checker::JournalReplay,
    );
}

#[test]
fn conservation_catches_a_balance_changed_behind_the_ledger() {
    let mut r = runner(&[]);
    let s = Schedule {
        step: 2,
        party: Party::Merchant,
        fault: Fault::Delay,
    };
    assert!(r.run(s).expect("running a schedule").is_empty());
    let db = rusqlite::Connection::open(r.deployment.ledger_db()).expect("opening the ledger");
    db.execute(
        "UPDATE accounts SET balance_minor = balance_minor + 1 WHERE id = 'acme'",
        [],
    )
    .expect("tampering");
    let v = r.run(s).expect("running a schedule");
    assert!(
        v.iter().any(|v| v.checker == Checker::Conservation),
        "conservation found nothing: {v:?}"
    );
}

#[test]
fn netbill_chaos_runs_and_reports() {
    let out = std::process::Command::new(BIN)
        .args(["chaos", "--seed", "7", "--schedules", "3"])
        .output()
        .expect("running netbill chaos");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("3 schedules, 0 violations (seed 7)"),
        "{text}"
    );
    assert!(text.contains("faults injected"), "{text}");
    assert!(text.contains("goods atomicity"), "{text}");
}

#[test]
fn netbill_chaos_exits_non_zero_with_the_seed_on_a_violation() {
    let out = std::process::Command::new(BIN)
        .args([
            "chaos",
            "--seed",
            "5",
            "--schedules",
            "54",
            "--bug",
            "ledger.skip_journal",
        ])
        .output()
        .expect("running netbill chaos");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("VIOLATION in schedule #"), "{text}");
    assert!(
        text.contains("journal replay = accounts: account"),
        "{text}"
    );
    assert!(
        text.contains("reproduce with: netbill chaos --seed 5 --schedules"),
        "{text}"
    );
}

#[test]
fn a_merchant_that_dies_before_its_endorsement_leaves_loses_nothing() {
    let mut r = runner(&[]);
    // v2: the merchant has written nothing when it dies, just before sending N its
    // endorsement. The customer's retry brings the offer back; the restarted merchant
    // derives the same K and endorses the same bytes, and N commits once.
    let s = Schedule {
        step: 4,
        party: Party::Merchant,
        fault: Fault::Crash("merchant.before_send_endorsement"),
    };
    let d = &mut r.deployment;
    d.start_merchant(Some("merchant.before_send_endorsement"))
        .expect("arming the merchant");
    let wallet = d.wallet_dir().to_string_lossy().into_owned();
    let out = d.path("out/recover.txt");
    let cm = d.cm.url();
    let (status, _) = d
        .run(
            &[
                "wallet", "--dir", &wallet, "buy", &cm, "article", "--out", &out,
            ],
            None,
            std::time::Duration::from_secs(30),
        )
        .expect("buying");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(4),
        "{s}: the purchase is pending"
    );
    assert!(!d.alive(Party::Merchant), "the merchant crashed");
    let db = netbill_chaos::check::open_db(&d.ledger_db()).expect("ledger");
    assert!(
        netbill_chaos::check::outcomes(&db)
            .expect("outcomes")
            .is_empty()
    );
    d.start_merchant(None).expect("restarting the merchant");
    let merchant = d.path("merchant");
    let text = d
        .run_ok(&["merchant", "recover", "--dir", &merchant])
        .expect("merchant recover");
    assert!(
        text.contains("0 endorsed purchases had no receipt"),
        "the merchant stored nothing to recover: {text}"
    );
    let text = d
        .run_ok(&["wallet", "--dir", &wallet, "recover"])
        .expect("wallet recover");
    assert!(text.contains("paid USD:0.02000"), "{text}");
    let outcomes = netbill_chaos::check::outcomes(&db).expect("outcomes");
    assert_eq!(
        outcomes.values().filter(|r| *r == "committed").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).expect("the goods"),
        std::fs::read_to_string(d.path("catalog/article.txt")).expect("the article")
    );
}

//! `netbill check` run as a user runs it.

use std::process::Command;

fn netbill(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netbill"))
        .args(args)
        .output()
        .expect("the netbill binary runs")
}

/// A model's result for `property` in a `--json` report.
fn result(model: &serde_json::Value, property: &str) -> serde_json::Value {
    model["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["property"] == property)
        .unwrap_or_else(|| panic!("a result for {property}"))
        .clone()
}

#[test]
fn check_ssl_as_json_reports_the_papers_row_with_a_counterexample() {
    let out = netbill(&["check", "ssl", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let models = report["models"].as_array().expect("models");
    assert_eq!(models.len(), 1);
    let ssl = &models[0];
    assert_eq!(ssl["name"], "ssl");
    assert!(ssl["states"].as_u64().expect("states") > 0);
    let verdict = |property: &str| result(ssl, property);
    assert_eq!(verdict("money")["verdict"], "hold");
    assert_eq!(verdict("money")["agrees_with_paper"], true);
    assert_eq!(verdict("cash-customer")["verdict"], "n/a");
    let goods = verdict("goods");
    assert_eq!(goods["verdict"], "fail");
    assert_eq!(goods["agrees_with_paper"], true);
    let events = goods["counterexample"]["events"]
        .as_array()
        .expect("events");
    assert!(!events.is_empty());
    assert!(
        events.iter().any(|e| e["event"] == "lose"),
        "the goods are lost: {events:?}"
    );
}

#[test]
fn check_all_prints_the_table_and_agrees_with_the_paper() {
    let out = netbill(&["check", "--expect-paper"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let header = text.lines().next().expect("a table");
    for column in [
        "money",
        "cash(C)",
        "cash(M)",
        "goods",
        "certified",
        "states",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(text.contains("shortest counterexample"), "{text}");
}

#[test]
fn bad_input_gets_one_line_and_a_failure_status() {
    let out = netbill(&["check", "no-such-model"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("unknown model"), "{err}");

    let out = netbill(&["check", "ssl", "--explore", "0.0.0.0:3000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn explore_serves_the_web_explorer_on_loopback() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_netbill"))
        .args(["check", "ssl", "--explore", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the netbill binary starts");

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut response = String::new();
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(&addr) {
            let request = format!("GET /.states HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_string(&mut response);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(response.starts_with("HTTP/1."), "no answer: {response:?}");
    assert!(response.contains("goods atomicity"), "{response}");
}

#[test]
fn simulation_is_seeded_and_replayable() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_netbill"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = run(&[
        "check",
        "netbill",
        "--simulate",
        "2000",
        "--duplicating",
        "--crashes",
        "2",
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("2000 walks from seed 1") && text.contains("no violation"),
        "{text}"
    );
    // Digital cash fails; the printed seed replays the same schedule.
    let (code, text) = run(&["check", "digicash", "--simulate", "100", "--seed", "5"]);
    assert_eq!(code, Some(3), "{text}");
    let seed = text
        .split("replay: ")
        .nth(1)
        .and_then(|r| r.split("--seed ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let (code2, replay) = run(&["check", "digicash", "--simulate", "1", "--seed", &seed]);
    assert_eq!(code2, Some(3));
    let steps = |t: &str| {
        t.lines()
            .filter(|l| {
                l.trim_start()
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        steps(&text),
        steps(&replay),
        "the same seed gives the same schedule"
    );
}

#[test]
fn a_netbill_mutant_runs_from_the_command_line_and_is_caught() {
    let list = netbill(&["check", "--list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{listed}");
    for name in [
        "key-before-commit",
        "no-expiry",
        "key-reused-across-purchases",
    ] {
        assert!(listed.contains(name), "{name} listed:\n{listed}");
    }
    // The merchant that releases K before N commits: caught with a counterexample, in the
    // smallest failure model that shows it (no crash, no fail-safe channel to N).
    let out = netbill(&[
        "check",
        "netbill",
        "--mutant",
        "key-before-commit",
        "--crashes",
        "0",
        "--no-failsafe-channel",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let model = &report["models"][0];
    assert_eq!(model["name"], "netbill --mutant key-before-commit");
    assert!(
        model["mutant"]
            .as_str()
            .expect("what the mutant gets wrong")
            .contains("before N commits"),
        "{model}"
    );
    let verdict = |property: &str| result(model, property);
    assert_eq!(verdict("money")["verdict"], "hold");
    let goods = verdict("goods");
    assert_eq!(goods["verdict"], "fail");
    assert!(
        goods["counterexample"]["violation"]
            .as_str()
            .expect("a counterexample")
            .contains("was not paid"),
        "{goods}"
    );
    // An unknown mutant, or one without the netbill model: one line, a failure status.
    for args in [
        &["check", "netbill", "--mutant", "no-such-bug"][..],
        &["check", "ssl", "--mutant", "no-expiry"][..],
    ] {
        let out = netbill(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

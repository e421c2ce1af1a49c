//! `netbill bench` runs end to end and reports consistent figures (its speed is not judged
//! here: benchmarks measure, tests check).

mod common;

use std::process::Command;

#[test]
fn bench_runs_and_reports_every_figure() {
    let out = common::netbill(&[
        "bench",
        "--purchases",
        "60",
        "--customers",
        "5",
        "--batch",
        "16",
        "--e2e",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", common::text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert!(r["crypto_ceiling_per_s"].as_f64().unwrap() > 0.0);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for run in runs {
        assert_eq!(
            run["committed"], run["purchases"],
            "every purchase commits: {run}"
        );
        assert!(run["purchases_per_durable_write"].as_f64().unwrap() >= 1.0);
        assert!(run["latency_ms_p99"].as_f64().unwrap() >= run["latency_ms_p50"].as_f64().unwrap());
        // N's verifier threads counted what they checked together.
        assert!(
            run["endorsements_per_verify_chunk"].as_f64().unwrap() >= 1.0,
            "{run}"
        );
    }
    // A batch of 16 is verified in one chunk per core, never one endorsement at a time.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert!(
        runs[1]["endorsements_per_verify_chunk"].as_f64().unwrap()
            >= 16usize.div_ceil(cores) as f64,
        "{}",
        runs[1]
    );
    assert_eq!(runs[0]["purchases"], 60);
    assert_eq!(r["e2e"]["purchases"], 3);
}

#[test]
fn bench_refuses_bad_arguments() {
    let out = common::netbill(&["bench", "--batch", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out).contains("--batch must be 1 to 256"));
}

#[test]
fn bench_runs_against_a_throwaway_postgres() {
    let out = common::netbill(&[
        "bench",
        "--store",
        "postgres",
        "--purchases",
        "40",
        "--customers",
        "4",
        "--batch",
        "8",
        "--e2e",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", common::text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert!(
        r["store"].as_str().unwrap().starts_with("PostgreSQL"),
        "{}",
        r["store"]
    );
    for run in r["runs"].as_array().unwrap() {
        assert_eq!(
            run["committed"], run["purchases"],
            "every purchase commits: {run}"
        );
    }
}

#[test]
fn bench_refuses_a_url_off_this_machine() {
    for url in [
        "http://192.0.2.1:8400",
        "https://127.0.0.1:8400",
        "http://127.0.0.1",
    ] {
        let out = common::netbill(&["bench", "--url", url]);
        assert_eq!(out.status.code(), Some(1), "{url}");
        assert!(
            common::text(&out).contains("--url must be http://127.x.x.x:PORT"),
            "{url}: {}",
            common::text(&out)
        );
    }
}

#[test]
fn bench_drives_a_running_server_and_soaks() {
    let dir = tempfile::tempdir().unwrap();
    let billing = dir.path().join("billing").to_string_lossy().into_owned();
    common::ok(&["server", "init", "--dir", &billing]);
    let server = common::Proc::start(&[
        "server",
        "run",
        "--dir",
        &billing,
        "--listen",
        "127.0.0.1:0",
    ]);
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "bench",
            "--url",
            server.url.as_str(),
            "--purchases",
            "30",
            "--customers",
            "3",
            "--batch",
            "8",
            "--e2e",
            "2",
            "--json",
        ];
        a.extend(extra);
        a
    };
    // Twice against the same ledger: each run names its accounts afresh.
    for _ in 0..2 {
        let out = common::netbill(&args(&[]));
        assert!(out.status.success(), "{}", common::text(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        assert!(r["store"].as_str().unwrap().contains(&server.url));
        for run in r["runs"].as_array().unwrap() {
            assert_eq!(run["committed"], run["purchases"], "{run}");
        }
        assert!(r["server_rss_kib_at_end"].as_u64().unwrap() > 0, "{r}");
    }
    let out = common::netbill(&args(&["--soak", "1"]));
    assert!(out.status.success(), "{}", common::text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let samples = r["samples"].as_array().unwrap();
    assert!(samples.len() >= 2, "{r}");
    assert_eq!(samples[1]["purchases_served"], 30);
    // A wrong token is refused before anything is sent.
    let out = Command::new(common::BIN)
        .args(args(&[]))
        .env("NETBILL_ADMIN_TOKEN", "not-the-token-0123456789")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out).contains("did not answer its admin API"));
}

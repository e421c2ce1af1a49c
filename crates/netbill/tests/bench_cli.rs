//! `netbill bench` runs end to end and reports consistent figures (its speed is not judged
//! here: benchmarks measure, tests check).

mod common;

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
    }
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

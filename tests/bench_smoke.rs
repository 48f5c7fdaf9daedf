//! `broker bench` runs end to end on a tiny budget and writes its report.
//! Figures are not asserted: they belong to the printed table.

mod common;

#[tokio::test]
async fn the_benchmark_prints_a_table_and_writes_json() {
    let admin = common::postgres_server().await.admin_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "bench",
            "--duration",
            "100ms",
            "--concurrency",
            // Largest first: the paced rate comes from the largest level's cell.
            "2,1",
            "--workloads",
            "select1,head,put4k",
        ])
        .args([
            "--stream-mib",
            "2",
            "--no-pgbouncer",
            "--broker-connections",
            "2",
        ])
        .arg("--json")
        .arg(&json)
        .env("BENCH_DATABASE_URL", admin)
        .output()
        .await
        .unwrap();
    let stdout = common::succeeded(&output);
    assert!(
        stdout.contains("b/dir")
            && stdout.contains("mach s/1k d/b/p")
            && stdout.contains("streaming 2 MiB"),
        "{stdout}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["broker_connections"], 2);
    assert_eq!(
        report["rows"].as_array().unwrap().len(),
        6,
        "3 workloads x 2 concurrency levels"
    );
    for row in report["rows"].as_array().unwrap() {
        assert!(row["broker"]["calls"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["broker"]["errors"], 0, "{row}");
        assert!(row["broker_vs_direct"].as_f64().unwrap() > 0.0, "{row}");
        // Every path's cell ran on this machine's cores: some busy time.
        for path in ["direct", "broker"] {
            assert!(
                row[path]["machine_cpu_s_per_1000"].as_f64().unwrap() > 0.0,
                "{row}"
            );
        }
    }
    // One paced row per workload, at the largest concurrency, each path
    // offered the same load: a quarter of what the broker reached there.
    let paced = report["paced"].as_array().unwrap();
    assert_eq!(paced.len(), 3, "{paced:?}");
    for (row, closed) in paced.iter().zip(
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["concurrency"] == 2),
    ) {
        assert_eq!(row["workload"], closed["workload"]);
        assert_eq!(row["concurrency"], 2);
        let offered = row["offered_calls_per_s"].as_f64().unwrap();
        let saturated = closed["broker"]["ops_per_s"].as_f64().unwrap();
        assert!(
            (offered - saturated / 4.0).abs() < 1e-6 * saturated,
            "{row}"
        );
        for path in ["direct", "broker"] {
            assert_eq!(row[path]["errors"], 0, "{row}");
            assert!(row[path]["calls"].as_u64().unwrap() > 0, "{row}");
        }
        assert!(row["seed_targets_met_100x"].is_boolean(), "{row}");
    }
    assert!(
        stdout.contains("paced: each workload again at 2 clients"),
        "{stdout}"
    );
    assert!(report["startup_ms"].as_f64().unwrap() > 0.0);
    let streaming = &report["streaming"];
    let peak = |field: &str| streaming[field].as_f64().unwrap();
    assert!(peak("broker_put_peak_rss_mib") > 0.0);
    assert!(peak("broker_get_peak_rss_mib") > 0.0);
    assert_eq!(
        peak("broker_peak_rss_mib"),
        peak("broker_put_peak_rss_mib").max(peak("broker_get_peak_rss_mib")),
        "the peak is the larger phase's"
    );
    // The targets close the report, each judged or said to be
    // unmeasured: without PgBouncer, the comparison with it.
    assert!(
        stdout.contains("targets of the performance issue, judged on this run"),
        "{stdout}"
    );
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 8, "{targets:?}");
    assert_eq!(targets[0]["verdict"], "not_measured", "{targets:?}");
    assert_eq!(targets[0]["figures"], "no PgBouncer in this run");
    for target in &targets[1..] {
        assert!(
            target["verdict"] == "met" || target["verdict"] == "not_met",
            "{target}"
        );
    }
    assert!(
        targets[3]["figures"]
            .as_str()
            .unwrap()
            .contains("moving 2 MiB"),
        "{targets:?}"
    );
}

/// A broker that busy-polls (`--broker-busy-poll`, its BROKER_BUSY_POLL)
/// answers every call, SQL and S3, from one client and from several.
#[tokio::test]
async fn the_benchmark_runs_a_busy_polling_broker() {
    let admin = common::postgres_server().await.admin_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let bench = |extra: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["bench", "--duration", "100ms", "--concurrency", "4,1"])
            .args(["--workloads", "select1,rows100,get4k", "--stream-mib", "0"])
            .args(["--paced-load", "0", "--no-pgbouncer", "--json"])
            .arg(&json)
            .args(extra)
            .env("BENCH_DATABASE_URL", &admin)
            .output()
    };
    let output = bench(&["--broker-busy-poll", "200us"]).await.unwrap();
    let stdout = common::succeeded(&output);
    assert!(stdout.contains("busy polling 200 µs"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["broker_busy_poll_us"], 200);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{rows:?}");
    for row in rows {
        assert!(row["broker"]["calls"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["broker"]["errors"], 0, "{row}");
    }

    let refused = bench(&["--broker-busy-poll", "200us", "--broker-threads", "2"])
        .await
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--broker-threads 1"), "{stderr}");
}

/// `scripts/count-instructions.sh` runs the broker under callgrind and
/// prints its instructions per Query call (a tiny run: the count itself is
/// not asserted, only that there is one).
#[tokio::test]
async fn the_instruction_counter_prints_a_count() {
    let db = common::TestDatabase::create().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/count-instructions.sh");
    let output = tokio::process::Command::new("bash")
        .arg(script)
        .args([env!("CARGO_BIN_EXE_broker"), "10", "2"])
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    let stdout = common::succeeded(&output);
    let count: u64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {stdout:?}"));
    assert!(count > 1000, "{stdout}");
}

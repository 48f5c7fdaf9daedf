//! `broker loadtest` runs end to end: load, a PostgreSQL outage through the
//! fault proxy, recovery, and a report. Figures are not asserted (they
//! belong to the printed report); what the outage must and must not touch is.

mod common;

use common::TestDatabase;

#[tokio::test]
async fn the_load_test_reports_an_outage_that_spares_the_other_backend() {
    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "loadtest",
            "--duration",
            "4s",
            "--outage-at",
            "1s",
            "--outage-for",
            "1s",
        ])
        .args([
            "--concurrency",
            "4",
            "--breaker-recovery",
            "200ms",
            "--json",
        ])
        .arg(&json)
        .env("LOADTEST_DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = common::succeeded(&output);
    assert!(
        stdout.contains("availability") && stdout.contains("p99 ms"),
        "{stdout}"
    );

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let postgres = &report["by_backend"]["postgres"];
    let s3 = &report["by_backend"]["s3"];
    assert!(
        postgres["before"]["calls"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        postgres["during"]["errors"].as_u64().unwrap() > 0,
        "PostgreSQL was down: {report}"
    );
    // A loaded 2-core box may time out the odd S3 call; a PostgreSQL outage
    // that reached S3 (a shared breaker, pool or thread) would fail most.
    let (s3_calls, s3_errors) = (
        s3["during"]["calls"].as_u64().unwrap(),
        s3["during"]["errors"].as_u64().unwrap(),
    );
    assert!(s3_calls > 0, "S3 kept being served: {report}");
    assert!(
        s3_errors <= (s3_calls / 20).max(1),
        "S3 calls are untouched by a PostgreSQL outage (at most 5% errors): {report}"
    );
    assert!(
        report["recovery_s"].is_number(),
        "PostgreSQL served again: {report}"
    );
}

//! `broker dev`, the README's first command, through the real binary: it
//! serves a data directory over S3 and a PostgreSQL database, answers the
//! client library, prints how to call it with grpcurl, and exits cleanly on
//! SIGTERM.

mod common;

use std::{process::Stdio, time::Duration};

use common::{TestDatabase, binary_body};
use resource_broker::{
    client::{BrokerClient, ClientOptions, PutOptions},
    config::{ServeConfig, StaticCredentials},
    object_store::S3Store,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const BUCKET: &str = "dev-bucket";
/// The local S3 server's secret key, given so that the test can call it too.
const S3_SECRET: &str = "dev-test-secret-3f9a";

/// Starts `broker dev` on a free loopback port against `db` (its own
/// database, so that other tests' databases are untouched); returns the
/// child, its address and its banner once it has printed it.
async fn start_dev(data_dir: &std::path::Path, db: &TestDatabase) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "dev",
            "--addr",
            "127.0.0.1:0",
            "--bucket",
            BUCKET,
            "--data-dir",
        ])
        .arg(data_dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("BROKER_DEV_S3_SECRET", S3_SECRET)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start broker dev");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (banner_tx, banner_rx) = oneshot::channel();
    // Read the banner, then keep draining stdout so the broker never blocks on it.
    tokio::spawn(async move {
        let mut banner = String::new();
        let mut banner_tx = Some(banner_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("curl http://")
                && let Some(tx) = banner_tx.take()
            {
                let _ = tx.send(std::mem::take(&mut banner));
            }
        }
    });
    let banner = tokio::time::timeout(Duration::from_secs(60), banner_rx)
        .await
        .expect("broker dev printed its banner within 60 s")
        .expect("broker dev exited before printing its banner");
    let addr = banner
        .split_whitespace()
        .skip_while(|word| *word != "on")
        .nth(1)
        .expect("the banner names the address")
        .to_owned();
    (child, addr, banner)
}

async fn wait_until_serving(addr: &str) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to broker dev");
    let mut health = HealthClient::new(channel);
    for _ in 0..400 {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status());
        if matches!(status, Ok(ServingStatus::Serving)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("broker dev never reported SERVING");
}

#[tokio::test]
async fn broker_dev_serves_objects_and_sql_and_stops_on_sigterm() {
    let data_dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await;
    let (mut child, addr, banner) = start_dev(data_dir.path(), &db).await;
    assert!(
        banner.contains(&format!("grpcurl -plaintext {addr} list")),
        "the banner shows how to call it with grpcurl: {banner}"
    );
    wait_until_serving(&addr).await;

    let client = BrokerClient::connect(&format!("http://{addr}"), ClientOptions::default())
        .await
        .unwrap();
    let body = binary_body(3 * 1024 * 1024 + 17);
    let put = client
        .put_bytes(
            "incoming/blob.bin",
            PutOptions::content_type("application/octet-stream"),
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(put.size, body.len() as i64);
    let back = client
        .get_bytes("incoming/blob.bin", body.len())
        .await
        .unwrap();
    assert!(back == body, "the body comes back byte-exact");
    let on_disk = std::fs::read(
        data_dir
            .path()
            .join("s3")
            .join(BUCKET)
            .join("incoming/blob.bin"),
    )
    .expect("the object is a file in the data directory");
    assert!(on_disk == body);

    // The banner names the local S3 endpoint; S3 tools reach it with the
    // access key `broker-dev` and the secret given in the environment.
    assert!(!banner.contains(S3_SECRET), "the banner shows no secret");
    let endpoint = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://127.0.0.1:") && !word.contains(&addr))
        .map(|word| word.trim_end_matches(','))
        .expect("the banner names the S3 endpoint")
        .to_string();
    let mut config = ServeConfig::from_env().unwrap();
    config.s3.s3_bucket = Some(BUCKET.into());
    config.s3.s3_endpoint_url = Some(endpoint);
    config.s3.static_credentials = Some(StaticCredentials {
        access_key_id: "broker-dev".into(),
        secret_access_key: S3_SECRET.into(),
    });
    let s3 = S3Store::from_config(&config.s3, &config.resilience).await;
    let head = s3.head(BUCKET, "incoming/blob.bin").await.unwrap();
    assert_eq!(head.size, body.len() as i64);
    config.s3.static_credentials = Some(StaticCredentials {
        access_key_id: "broker-dev".into(),
        secret_access_key: "a-wrong-secret".into(),
    });
    let wrong = S3Store::from_config(&config.s3, &config.resilience).await;
    assert!(
        wrong.head(BUCKET, "incoming/blob.bin").await.is_err(),
        "the local S3 refuses another secret"
    );

    // broker dev created the schema in its database.
    let rows = client
        .query("SELECT count(*) AS n FROM documents", &[])
        .await
        .unwrap();
    let n: i64 = rows.into_iter().next().unwrap().get("n").unwrap();
    assert_eq!(n, 0);

    let pid = child.id().expect("broker dev is running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("broker dev exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "broker dev exited with {status}");
}

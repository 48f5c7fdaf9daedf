//! Clients that are not ours: grpcurl (reflection only, no proto files) and
//! Python grpcio stubs generated from `proto/`. Both come from `.venv`,
//! which `scripts/setup.sh` (run by `scripts/test.sh`) installs.

mod common;

use std::{path::PathBuf, process::Command};

use common::TestBroker;

fn venv_tool(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/setup.sh` (or scripts/test.sh) once",
        path.display()
    );
    path
}

async fn run(program: PathBuf, args: Vec<String>) -> String {
    let output =
        tokio::task::spawn_blocking(move || Command::new(&program).args(&args).output().unwrap())
            .await
            .unwrap();
    common::succeeded(&output)
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_without_proto_files() {
    let broker = TestBroker::start().await;
    let addr = broker.addr.to_string();
    let grpcurl = |args: &[&str]| {
        let mut all = vec!["-plaintext".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        run(venv_tool("grpcurl"), all)
    };

    let list = grpcurl(&[&addr, "list"]).await;
    for service in [
        "broker.v1.Database",
        "broker.v1.ObjectStore",
        "grpc.health.v1.Health",
    ] {
        assert!(
            list.lines().any(|l| l == service),
            "{service} missing from:\n{list}"
        );
    }
    let describe = grpcurl(&[&addr, "describe", "broker.v1.ObjectStore"]).await;
    assert!(describe.contains("rpc GetObject ( .broker.v1.GetObjectRequest ) returns ( stream .broker.v1.GetObjectResponse )"), "{describe}");

    let query = grpcurl(&[
        "-d",
        r#"{"sql": "SELECT $1::int8 AS n, $2::text AS t", "params": [{"int_value": "7"}, {"null_value": "NULL_VALUE"}]}"#,
        &addr,
        "broker.v1.Database/Query",
    ])
    .await;
    assert!(
        query.contains(r#""intValue": "7""#) && query.contains(r#""nullValue": "NULL_VALUE""#),
        "{query}"
    );

    let health = grpcurl(&[
        "-d",
        r#"{"service": "broker.v1.Database"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    assert!(health.contains("SERVING"), "{health}");
}

#[tokio::test]
async fn python_grpcio_stubs_work_end_to_end() {
    let broker = TestBroker::start().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/python_client.py");
    let out = run(
        venv_tool("python"),
        vec![script.display().to_string(), broker.addr.to_string()],
    )
    .await;
    assert!(out.contains("python interop: ok"), "{out}");
}

//! Health (grpc.health.v1 fed by backend probes), reflection, and the
//! `broker healthcheck` binary with grpc_health_probe's exit codes.

mod common;

use std::{process::Command, time::Duration};

use common::TestBroker;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[tokio::test]
async fn every_service_reports_serving() {
    let broker = TestBroker::start().await;
    for service in ["", "broker.v1.ObjectStore", "broker.v1.Database"] {
        broker.wait_for_health(service, true).await;
    }
}

#[tokio::test]
async fn a_backend_that_goes_down_is_not_serving_and_comes_back_by_itself() {
    let (broker, proxies) = TestBroker::start_behind_proxies(|config| {
        config.resilience.breaker_recovery = Duration::from_secs(1)
    })
    .await;
    let proxy = &proxies.postgres;

    proxy.down();
    broker.wait_for_health("broker.v1.Database", false).await;
    broker.wait_for_health("", false).await;
    // The other backend keeps serving.
    broker.wait_for_health("broker.v1.ObjectStore", true).await;
    let mut db = broker.database().await;
    let err = db
        .query(resource_broker::proto::QueryRequest {
            sql: "SELECT 1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    proxy.up();
    broker.wait_for_health("broker.v1.Database", true).await;
    broker.wait_for_health("", true).await;
    db.query(resource_broker::proto::QueryRequest {
        sql: "SELECT 1".into(),
        ..Default::default()
    })
    .await
    .expect("queries work again once PostgreSQL is back");
}

#[tokio::test]
async fn shutdown_reports_not_serving_and_returns() {
    let broker = TestBroker::start().await;
    broker
        .stop()
        .await
        .expect("serve returns Ok after the shutdown signal");
}

async fn reflected_services(broker: &TestBroker, v1alpha: bool) -> Vec<String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    if v1alpha {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest as Request,
            server_reflection_client::ServerReflectionClient as Client,
            server_reflection_request::MessageRequest as M,
            server_reflection_response::MessageResponse as R,
        };
        let mut client = Client::new(broker.channel().await);
        let request = Request {
            host: String::new(),
            message_request: Some(M::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match responses.message().await.unwrap().unwrap().message_response {
            Some(R::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection response {other:?}"),
        }
    } else {
        let mut client = ServerReflectionClient::new(broker.channel().await);
        let mut responses = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match responses.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection response {other:?}"),
        }
    }
}

#[tokio::test]
async fn reflection_lists_every_service_in_v1_and_v1alpha() {
    let broker = TestBroker::start().await;
    for v1alpha in [false, true] {
        let services = reflected_services(&broker, v1alpha).await;
        for expected in [
            "broker.v1.ObjectStore",
            "broker.v1.Database",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?} (v1alpha: {v1alpha})"
            );
        }
    }
}

fn healthcheck(args: &[&str]) -> i32 {
    Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("healthcheck")
        .args(args)
        .output()
        .expect("run broker healthcheck")
        .status
        .code()
        .expect("exit code")
}

#[tokio::test]
async fn healthcheck_exit_codes_match_grpc_health_probe() {
    let (broker, proxies) = TestBroker::start_behind_proxies(|_| {}).await;
    let proxy = &proxies.postgres;
    let addr = broker.addr.to_string();
    let check = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            healthcheck(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };

    assert_eq!(check(vec!["--addr".into(), addr.clone()]).await.unwrap(), 0);
    // grpc_health_probe's single-dash spellings, as in existing task definitions.
    assert_eq!(
        check(vec![
            format!("-addr={addr}"),
            "-service".into(),
            "broker.v1.Database".into()
        ])
        .await
        .unwrap(),
        0
    );
    assert_eq!(
        check(vec![
            "--addr".into(),
            addr.clone(),
            "--service".into(),
            "no.such.Service".into()
        ])
        .await
        .unwrap(),
        3
    );
    assert_eq!(
        check(vec!["--addr".into(), "127.0.0.1:1".into()])
            .await
            .unwrap(),
        2
    );
    assert_eq!(check(vec!["--bogus".into()]).await.unwrap(), 1);

    // Plain HTTP, for agents and the seed's /health.
    let http = |path: &str| {
        check(vec![
            "--addr".into(),
            addr.clone(),
            "--http-path".into(),
            path.into(),
        ])
    };
    assert_eq!(http("/health").await.unwrap(), 0);
    assert_eq!(http("/nothing-here").await.unwrap(), 4);

    proxy.down();
    broker.wait_for_health("broker.v1.Database", false).await;
    assert_eq!(
        http("/health").await.unwrap(),
        4,
        "/health is 503 with a backend down"
    );
    assert_eq!(
        check(vec![
            "--addr".into(),
            addr.clone(),
            "--service".into(),
            "broker.v1.Database".into()
        ])
        .await
        .unwrap(),
        4
    );
    assert_eq!(
        check(vec![
            "--addr".into(),
            addr.clone(),
            "--service".into(),
            "broker.v1.ObjectStore".into()
        ])
        .await
        .unwrap(),
        0
    );
}

#[tokio::test]
async fn draining_ends_health_watches_and_refuses_new_connections() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    // A drain that would outlast the test if a watcher could hold it open.
    let broker =
        TestBroker::start_with(|config| config.drain_timeout = Duration::from_secs(600)).await;
    let url = broker.url();
    let mut health = HealthClient::new(broker.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let stopped = tokio::spawn(broker.stop());
    let guard = Duration::from_secs(60);
    let mut statuses = Vec::new();
    while let Some(message) = tokio::time::timeout(guard, watch.message())
        .await
        .expect("the watch ends when draining starts")
        .unwrap()
    {
        statuses.push(message.status());
    }
    assert_eq!(statuses, [ServingStatus::NotServing]);
    let refused = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await;
    assert!(
        refused.is_err(),
        "new connections are refused while draining"
    );
    tokio::time::timeout(guard, stopped)
        .await
        .expect("nothing holds the drain open")
        .unwrap()
        .unwrap();
}

//! `broker healthcheck` with the grpc_health_probe flags existing task
//! definitions use: `-addr=:PORT`, `-tls-no-verify`, `-user-agent`,
//! `-rpc-header`, `-gzip` and `-v`, through the real binary.

mod common;

use std::{process::Output, time::Duration};

use common::TestBroker;
use rcgen::{CertificateParams, KeyPair};
use tokio::{net::TcpListener, process::Command};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Status};

/// Runs `broker healthcheck ARGS` without blocking the test's runtime, so
/// that servers on it keep answering.
async fn healthcheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("healthcheck")
        .args(args)
        .output()
        .await
        .expect("run broker healthcheck")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exit code")
}

#[tokio::test]
async fn a_bare_port_means_this_machine() {
    let broker = TestBroker::start().await;
    let port = broker.addr.port();
    let output = healthcheck(&[&format!("-addr=:{port}")]).await;
    assert_eq!(code(&output), 0, "{output:?}");
    let output = healthcheck(&[
        "-addr",
        &format!(":{port}"),
        "-service",
        "broker.v1.Database",
    ])
    .await;
    assert_eq!(code(&output), 0, "{output:?}");
}

#[tokio::test]
async fn verbose_and_gzip_are_accepted_and_verbose_reports_the_steps() {
    let broker = TestBroker::start().await;
    let addr = broker.addr.to_string();
    let output = healthcheck(&["-v", "-gzip", "-addr", &addr]).await;
    assert_eq!(code(&output), 0, "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for step in [
        "establishing connection",
        "connection established",
        "time elapsed",
    ] {
        assert!(stderr.contains(step), "{step:?} missing from {stderr}");
    }
    let quiet = healthcheck(&["-addr", &addr]).await;
    assert!(quiet.stderr.is_empty(), "{quiet:?}");
}

#[tokio::test]
async fn tls_no_verify_accepts_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["broker.internal".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let broker = TestBroker::serve_tls(|config| {
        config.tls_cert = Some(cert_path);
        config.tls_key = Some(key_path);
    })
    .await;
    let addr = broker.addr.to_string();

    // The backends' first probe may still be running: wait for SERVING.
    let mut last = None;
    for _ in 0..200 {
        let output = healthcheck(&["-tls", "-tls-no-verify", "-addr", &addr]).await;
        if code(&output) == 0 {
            last = None;
            break;
        }
        last = Some(output);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last.is_none(),
        "never serving without verification: {last:?}"
    );

    let verified = healthcheck(&["-tls", "-addr", &addr]).await;
    assert_eq!(
        code(&verified),
        2,
        "a self-signed certificate fails verification: {verified:?}"
    );
    let plaintext = healthcheck(&["-addr", &addr]).await;
    assert_ne!(code(&plaintext), 0, "{plaintext:?}");
}

/// A grpc.health.v1 server that answers only checks carrying
/// `x-probe: yes` and a User-Agent starting with `probe/1`.
async fn picky_health_server() -> std::net::SocketAddr {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let check = |request: Request<()>| -> Result<Request<()>, Status> {
        let metadata = request.metadata();
        let agent = metadata
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !agent.starts_with("probe/1") {
            return Err(Status::permission_denied(format!("user-agent {agent:?}")));
        }
        match metadata.get("x-probe").and_then(|v| v.to_str().ok()) {
            Some("yes") => Ok(request),
            other => Err(Status::unauthenticated(format!("x-probe {other:?}"))),
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Keep the reporter alive: dropping it ends the health service.
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                service, check,
            ))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });
    addr
}

#[tokio::test]
async fn user_agent_and_rpc_headers_are_sent() {
    let addr = picky_health_server().await.to_string();
    let both = [
        "-addr",
        &addr,
        "-user-agent",
        "probe/1",
        "-rpc-header",
        "X-Probe: yes",
    ];
    let output = healthcheck(&both).await;
    assert_eq!(code(&output), 0, "{output:?}");

    let without_header = healthcheck(&["-addr", &addr, "-user-agent", "probe/1"]).await;
    assert_eq!(code(&without_header), 3, "{without_header:?}");
    let without_agent = healthcheck(&["-addr", &addr, "-rpc-header", "x-probe: yes"]).await;
    assert_eq!(code(&without_agent), 3, "{without_agent:?}");
    let malformed = healthcheck(&["-addr", &addr, "-rpc-header", "no colon"]).await;
    assert_eq!(code(&malformed), 1, "{malformed:?}");
}

//! TLS on the broker's port: server certificates, mutual TLS where the
//! client certificate's name is the agent identity (over gRPC, `/call_tool`
//! and MCP alike), and `broker healthcheck` over TLS. Certificates are made
//! fresh for each run with rcgen.

mod common;

use std::path::Path;

use tokio::process::Command;

use common::TestBroker;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use resource_broker::proto::{
    HeadObjectRequest, PutObjectHeader, PutObjectRequest, object_store_client::ObjectStoreClient,
    put_object_request,
};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

struct Pki {
    dir: tempfile::TempDir,
}

/// A CA, a server certificate for localhost/127.0.0.1, a client certificate
/// named `extractor`, and an unrelated CA.
fn make_pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        write(name, cert.pem());
        Issuer::new(params, key)
    };
    let issuer = ca("ca.pem");
    ca("other-ca.pem");
    let leaf = |names: Vec<String>, ip: bool, prefix: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        if ip {
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
        }
        let cert = params.signed_by(&key, &issuer).unwrap();
        write(&format!("{prefix}.pem"), cert.pem());
        write(&format!("{prefix}.key"), key.serialize_pem());
    };
    leaf(vec!["localhost".into()], true, "server");
    leaf(vec!["extractor".into()], false, "client");
    Pki { dir }
}

impl Pki {
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

async fn mtls_broker(pki: &Pki) -> TestBroker {
    let policy = pki.path("policy.toml");
    std::fs::write(
        &policy,
        "[agents.extractor]\nobject_store = { access = \"read\", prefixes = [\"incoming/\"] }\n",
    )
    .unwrap();
    let broker = TestBroker::serve_tls(|config| {
        config.tls_cert = Some(pki.path("server.pem"));
        config.tls_key = Some(pki.path("server.key"));
        config.tls_client_ca = Some(pki.path("ca.pem"));
        config.policy_file = Some(policy);
    })
    .await;
    wait_for_tls_health(&broker, pki).await;
    broker
}

async fn healthcheck(broker: &TestBroker, pki: &Pki, ca: &str, client: bool) -> i32 {
    let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
    command
        .args([
            "healthcheck",
            "-tls",
            "-tls-server-name",
            "localhost",
            "-addr",
        ])
        .arg(broker.addr.to_string());
    command.arg("-tls-ca-cert").arg(pki.path(ca));
    if client {
        command
            .arg("-tls-client-cert")
            .arg(pki.path("client.pem"))
            .arg("-tls-client-key")
            .arg(pki.path("client.key"));
    }
    // Async, so the broker on this test's runtime keeps serving meanwhile.
    command.output().await.unwrap().status.code().unwrap()
}

async fn wait_for_tls_health(broker: &TestBroker, pki: &Pki) {
    for _ in 0..200 {
        if healthcheck(broker, pki, "ca.pem", true).await == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the TLS broker never became healthy");
}

async fn client(
    broker: &TestBroker,
    pki: &Pki,
    identity: bool,
) -> Result<ObjectStoreClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name("localhost");
    if identity {
        tls = tls.identity(Identity::from_pem(
            pki.read("client.pem"),
            pki.read("client.key"),
        ));
    }
    let channel = Channel::from_shared(format!("https://{}", broker.addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ObjectStoreClient::new(channel))
}

#[tokio::test]
async fn mutual_tls_identifies_the_agent_by_its_certificate() {
    let pki = make_pki();
    let broker = mtls_broker(&pki).await;

    let mut store = client(&broker, &pki, true).await.unwrap();
    let head = store
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: "incoming/none".into(),
        })
        .await;
    assert_eq!(
        head.unwrap_err().code(),
        Code::NotFound,
        "extractor may read incoming/"
    );
    let outside = store
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: "secret/x".into(),
        })
        .await;
    assert_eq!(outside.unwrap_err().code(), Code::PermissionDenied);
    let header = PutObjectRequest {
        part: Some(put_object_request::Part::Header(PutObjectHeader {
            key: "incoming/x".into(),
            ..Default::default()
        })),
    };
    let put = store.put_object(futures::stream::iter([header])).await;
    assert_eq!(
        put.unwrap_err().code(),
        Code::PermissionDenied,
        "a read grant does not write"
    );

    // Without a client certificate the handshake itself fails.
    let anonymous = match client(&broker, &pki, false).await {
        Err(_) => true,
        Ok(mut store) => store
            .head_object(HeadObjectRequest {
                bucket: String::new(),
                key: "incoming/none".into(),
            })
            .await
            .is_err(),
    };
    assert!(
        anonymous,
        "mutual TLS must refuse a client without a certificate"
    );
}

#[tokio::test]
async fn healthcheck_speaks_tls_and_rejects_the_wrong_ca() {
    let pki = make_pki();
    let broker = mtls_broker(&pki).await;
    assert_eq!(healthcheck(&broker, &pki, "ca.pem", true).await, 0);
    assert_eq!(
        healthcheck(&broker, &pki, "other-ca.pem", true).await,
        2,
        "a server signed by another CA is refused"
    );
    // With TLS 1.3 the server refuses a missing certificate after the client
    // thinks the handshake is done, so the failure shows on the first call.
    let code = healthcheck(&broker, &pki, "ca.pem", false).await;
    assert!(
        matches!(code, 2 | 3),
        "no client certificate, no health: exit {code}"
    );
}

#[tokio::test]
async fn bad_tls_settings_stop_start_up_with_the_variable_named() {
    let pki = make_pki();
    let mut config = resource_broker::config::ServeConfig::from_env().unwrap();
    config.tls_cert = Some(pki.path("server.pem"));
    config.tls_key = Some(pki.path("client.key"));
    let err = config.tls().unwrap_err().to_string();
    assert!(err.contains("BROKER_TLS_CERT/BROKER_TLS_KEY"), "{err}");
    config.tls_key = Some(Path::new("/nonexistent/key.pem").into());
    let err = config.tls().unwrap_err().to_string();
    assert!(err.contains("BROKER_TLS_KEY"), "{err}");
}

#[tokio::test]
async fn the_client_library_speaks_mutual_tls() {
    use resource_broker::client::{BrokerClient, ClientOptions};
    let pki = make_pki();
    let broker = mtls_broker(&pki).await;
    let options = ClientOptions {
        ca_cert: Some(pki.path("ca.pem")),
        client_cert: Some((pki.path("client.pem"), pki.path("client.key"))),
        ..ClientOptions::default()
    };
    let url = format!("https://localhost:{}", broker.addr.port());
    let client = BrokerClient::connect(&url, options.clone()).await.unwrap();
    let err = client.head_object("incoming/none").await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "the certificate names the agent: {err}"
    );
    assert_eq!(
        client.head_object("secret/x").await.unwrap_err().code(),
        Code::PermissionDenied
    );

    let wrong_ca = ClientOptions {
        ca_cert: Some(pki.path("other-ca.pem")),
        ..options
    };
    let client = BrokerClient::connect(&url, wrong_ca).await.unwrap();
    assert_eq!(
        client
            .head_object("incoming/none")
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
}

/// One HTTP/1.1 POST of `body` to `path` over mutual TLS with the client
/// certificate named `extractor`; returns the status and the JSON body.
async fn post_over_mtls(
    broker: &TestBroker,
    pki: &Pki,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    use std::sync::Arc;

    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_file(pki.path("client.pem")).unwrap()],
        PrivateKeyDer::from_pem_file(pki.path("client.key")).unwrap(),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // The server may close without close_notify; what was read is enough.
    let _ = tls.read_to_end(&mut response).await;
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}")),
    )
}

#[tokio::test]
async fn the_certificate_identifies_the_agent_on_call_tool_and_mcp_too() {
    use serde_json::json;
    let pki = make_pki();
    let broker = mtls_broker(&pki).await;

    // /call_tool: the extractor reads incoming/ (a missing key is 404, not
    // 401), and its grant's limits hold.
    let (status, body) = post_over_mtls(
        &broker,
        &pki,
        "/call_tool",
        json!({"tool": "get_object_metadata", "arguments": {"key": "incoming/none"}}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post_over_mtls(
        &broker,
        &pki,
        "/call_tool",
        json!({"tool": "get_object_metadata", "arguments": {"key": "secret/x"}}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post_over_mtls(
        &broker,
        &pki,
        "/call_tool",
        json!({"tool": "s3_put_object", "arguments": {"key": "incoming/x", "body": "x"}}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("may not write"),
        "{body}"
    );

    // MCP: the tools listed for the certificate are tools it can call.
    let (status, listed) = post_over_mtls(
        &broker,
        &pki,
        "/mcp",
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let tools = listed["result"]["tools"].as_array().unwrap();
    assert!(
        tools.iter().any(|t| t["name"] == "s3_list_objects"),
        "{listed}"
    );
    let (status, called) = post_over_mtls(
        &broker,
        &pki,
        "/mcp",
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "s3_list_objects", "arguments": {"prefix": "incoming/"}}}),
    )
    .await;
    assert_eq!(status, 200, "{called}");
    assert_ne!(called["result"]["isError"], true, "{called}");
    assert_eq!(
        called["result"]["structuredContent"]["count"], 0,
        "{called}"
    );
}

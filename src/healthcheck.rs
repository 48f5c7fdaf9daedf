//! `broker healthcheck`: a grpc.health.v1 check for container health checks,
//! with grpc_health_probe's flags and exit codes, so existing task
//! definitions keep working.

use std::time::Duration;

use clap::Args;
use tonic::{
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Exit codes, as grpc_health_probe's.
pub mod exit {
    pub const SERVING: u8 = 0;
    pub const INVALID_ARGUMENTS: u8 = 1;
    pub const CONNECTION_FAILURE: u8 = 2;
    pub const RPC_FAILURE: u8 = 3;
    pub const NOT_SERVING: u8 = 4;
}

/// Options of `broker healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Address of the broker (host:port; `:port` means this machine, as
    /// grpc_health_probe reads it).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub addr: String,

    /// Service to check; empty means the broker as a whole.
    #[arg(long, default_value = "")]
    pub service: String,

    /// Time allowed to connect.
    #[arg(long, default_value = "1s", value_parser = crate::config::parse_duration)]
    pub connect_timeout: Duration,

    /// Time allowed for the check itself.
    #[arg(long, default_value = "1s", value_parser = crate::config::parse_duration)]
    pub rpc_timeout: Duration,

    /// Connect with TLS (system roots unless --tls-ca-cert is given).
    #[arg(long)]
    pub tls: bool,

    /// PEM CA certificate(s) to verify the broker with.
    #[arg(long, requires = "tls")]
    pub tls_ca_cert: Option<std::path::PathBuf>,

    /// PEM client certificate, for mutual TLS.
    #[arg(long, requires_all = ["tls", "tls_client_key"])]
    pub tls_client_cert: Option<std::path::PathBuf>,

    /// PEM key of --tls-client-cert.
    #[arg(long, requires_all = ["tls", "tls_client_cert"])]
    pub tls_client_key: Option<std::path::PathBuf>,

    /// Server name to verify (default: the host of --addr).
    #[arg(long, requires = "tls")]
    pub tls_server_name: Option<String>,

    /// Encrypt but do not verify the broker's certificate (self-signed
    /// certificates in a private network).
    #[arg(long, requires = "tls", conflicts_with = "tls_ca_cert")]
    pub tls_no_verify: bool,

    /// User-Agent of the check (default: tonic's).
    #[arg(long)]
    pub user_agent: Option<String>,

    /// Metadata sent with the check, as `key: value`; repeatable.
    #[arg(long, value_parser = parse_rpc_header)]
    pub rpc_header: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,

    /// Accepted for grpc_health_probe's task definitions; the check's few
    /// bytes go uncompressed, which every server accepts.
    #[arg(long)]
    pub gzip: bool,

    /// Print what the check does and how long each step took (on stderr).
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Check plain HTTP instead of gRPC: GET this path (e.g. `/health` on an
    /// agent); 2xx is serving. Lets the one image health-check every process.
    #[arg(long, conflicts_with_all = ["tls", "service"])]
    pub http_path: Option<String>,
}

impl HealthcheckArgs {
    fn tls_config(&self) -> std::io::Result<ClientTlsConfig> {
        let mut config = ClientTlsConfig::new();
        config = match &self.tls_ca_cert {
            Some(path) => config.ca_certificate(Certificate::from_pem(std::fs::read(path)?)),
            None => config.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            config = config.identity(Identity::from_pem(
                std::fs::read(cert)?,
                std::fs::read(key)?,
            ));
        }
        if let Some(name) = &self.tls_server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

/// Runs the check, prints the outcome and returns the exit code.
pub async fn run(args: &HealthcheckArgs) -> u8 {
    if let Some(path) = &args.http_path {
        return http_check(args, path).await;
    }
    let addr = target(&args.addr);
    if args.verbose {
        eprintln!(
            "parsed options: addr={addr} service={:?} tls={} tls-no-verify={} \
             connect-timeout={:?} rpc-timeout={:?} headers={}",
            args.service,
            args.tls,
            args.tls_no_verify,
            args.connect_timeout,
            args.rpc_timeout,
            args.rpc_header.len()
        );
        eprintln!("establishing connection to {addr}");
    }
    let started = std::time::Instant::now();
    let channel = match connect(args, &addr).await {
        Ok(channel) => channel,
        Err(code) => return code,
    };
    let connected = started.elapsed();
    if args.verbose {
        eprintln!("connection established (took {connected:?})");
    }
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: args.service.clone(),
    });
    for (key, value) in &args.rpc_header {
        request.metadata_mut().append(key.clone(), value.clone());
    }
    let response = HealthClient::new(channel).check(request).await;
    if args.verbose {
        eprintln!(
            "time elapsed: connect={connected:?} rpc={:?}",
            started.elapsed() - connected
        );
    }
    match response {
        Ok(response) => {
            let status = response.into_inner().status();
            if status == ServingStatus::Serving {
                println!("status: SERVING");
                exit::SERVING
            } else {
                println!(
                    "service unhealthy (responded with {:?})",
                    status.as_str_name()
                );
                exit::NOT_SERVING
            }
        }
        Err(status) => {
            eprintln!(
                "error: health rpc failed: {} {}",
                status.code(),
                status.message()
            );
            exit::RPC_FAILURE
        }
    }
}

/// `host:port` from --addr: a bare `:port` is this machine, as Go's dialer
/// (and so grpc_health_probe) reads it.
fn target(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("localhost:{port}"),
        None => addr.to_owned(),
    }
}

/// The channel to the broker, or the exit code when there is none.
async fn connect(args: &HealthcheckArgs, addr: &str) -> Result<Channel, u8> {
    let scheme = if args.tls && !args.tls_no_verify {
        "https"
    } else {
        // Without verification this code does the TLS handshake itself.
        "http"
    };
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{scheme}://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(url)
        .map_err(|e| invalid(format!("invalid address {addr:?}: {e}")))?
        .connect_timeout(args.connect_timeout)
        .timeout(args.rpc_timeout);
    if let Some(agent) = &args.user_agent {
        endpoint = endpoint
            .user_agent(agent.clone())
            .map_err(|e| invalid(format!("invalid --user-agent: {e}")))?;
    }
    if args.tls && !args.tls_no_verify {
        let tls = args
            .tls_config()
            .map_err(|e| invalid(format!("cannot read the TLS files: {e}")))?;
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| invalid(format!("invalid TLS settings: {e}")))?;
    }
    let connecting = async {
        if args.tls_no_verify {
            let connector = unverified::connector(args)
                .map_err(|e| invalid(format!("invalid TLS settings: {e}")))?;
            Ok(endpoint.connect_with_connector(connector).await)
        } else {
            Ok(endpoint.connect().await)
        }
    };
    match tokio::time::timeout(args.connect_timeout, connecting).await {
        Ok(Ok(Ok(channel))) => Ok(channel),
        Ok(Err(code)) => Err(code),
        Ok(Ok(Err(e))) => {
            eprintln!("error: failed to connect service at {addr:?}: {e}");
            Err(exit::CONNECTION_FAILURE)
        }
        Err(_) => {
            eprintln!(
                "timeout: failed to connect service {addr:?} within {:?}",
                args.connect_timeout
            );
            Err(exit::CONNECTION_FAILURE)
        }
    }
}

fn invalid(message: String) -> u8 {
    eprintln!("error: {message}");
    exit::INVALID_ARGUMENTS
}

/// Parses grpc_health_probe's `-rpc-header "key: value"`.
fn parse_rpc_header(text: &str) -> Result<(AsciiMetadataKey, AsciiMetadataValue), String> {
    let (key, value) = text
        .split_once(':')
        .ok_or_else(|| format!("expected 'key: value', got {text:?}"))?;
    let key = AsciiMetadataKey::from_bytes(key.trim().to_ascii_lowercase().as_bytes())
        .map_err(|e| format!("invalid header name {key:?}: {e}"))?;
    let value = AsciiMetadataValue::try_from(value.trim_start())
        .map_err(|e| format!("invalid header value for {key}: {e}"))?;
    Ok((key, value))
}

/// `-tls-no-verify`: TLS that accepts any server certificate. The signature
/// of the handshake is still checked against the certificate presented; who
/// presented it is not.
mod unverified {
    use std::sync::Arc;

    use hyper_util::rt::TokioIo;
    use rustls::{
        ClientConfig, DigitallySignedStruct, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::CryptoProvider,
    };
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
    use tokio::net::TcpStream;

    use super::HealthcheckArgs;

    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A tonic connector: TCP, then TLS (h2) without certificate verification,
    /// with the client certificate when one is given.
    pub fn connector(
        args: &HealthcheckArgs,
    ) -> anyhow::Result<
        impl tower::Service<
            http::Uri,
            Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
            Error = std::io::Error,
            Future = impl Future + Send,
        > + Clone
        + Send
        + 'static,
    > {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)));
        let mut config = match (&args.tls_client_cert, &args.tls_client_key) {
            (Some(cert), Some(key)) => {
                let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
                builder.with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(key)?)?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let server_name = args.tls_server_name.clone();
        Ok(tower::service_fn(move |uri: http::Uri| {
            let (connector, server_name) = (connector.clone(), server_name.clone());
            async move {
                let host = uri.host().unwrap_or("localhost").to_owned();
                let port = uri.port_u16().unwrap_or(443);
                let name = ServerName::try_from(server_name.unwrap_or_else(|| host.clone()))
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                Ok(TokioIo::new(connector.connect(name, tcp).await?))
            }
        }))
    }
}

async fn http_check(args: &HealthcheckArgs, path: &str) -> u8 {
    let url = format!(
        "http://{}/{}",
        target(&args.addr),
        path.trim_start_matches('/')
    );
    let mut builder = reqwest::Client::builder();
    if let Some(agent) = &args.user_agent {
        builder = builder.user_agent(agent);
    }
    let client = match builder
        .connect_timeout(args.connect_timeout)
        .timeout(args.connect_timeout + args.rpc_timeout)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID_ARGUMENTS;
        }
    };
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => {
            println!("status: SERVING ({url} answered {})", response.status());
            exit::SERVING
        }
        Ok(response) => {
            println!("service unhealthy ({url} answered {})", response.status());
            exit::NOT_SERVING
        }
        Err(e) if e.is_connect() || e.is_timeout() => {
            eprintln!("error: failed to connect to {url}: {e}");
            exit::CONNECTION_FAILURE
        }
        Err(e) => {
            eprintln!("error: {url}: {e}");
            exit::RPC_FAILURE
        }
    }
}

/// Rewrites grpc_health_probe's single-dash spellings (`-addr=x`, `-service x`)
/// into clap's double-dash ones.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    const FLAGS: [&str; 13] = [
        "addr",
        "service",
        "connect-timeout",
        "rpc-timeout",
        "tls",
        "tls-ca-cert",
        "tls-client-cert",
        "tls-client-key",
        "tls-server-name",
        "tls-no-verify",
        "user-agent",
        "rpc-header",
        "gzip",
    ];
    args.into_iter()
        .map(|arg| {
            let name = arg.strip_prefix('-').filter(|rest| !rest.starts_with('-'));
            match name {
                Some(rest) if FLAGS.contains(&rest.split('=').next().unwrap_or_default()) => {
                    format!("-{arg}")
                }
                _ => arg,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_flags_become_double_dash() {
        let args = [
            "-addr=localhost:8000",
            "-service",
            "broker.v1.Database",
            "--rpc-timeout",
            "2s",
            "-x",
        ]
        .map(String::from);
        assert_eq!(
            normalize_args(args),
            [
                "--addr=localhost:8000",
                "--service",
                "broker.v1.Database",
                "--rpc-timeout",
                "2s",
                "-x"
            ]
        );
    }
}

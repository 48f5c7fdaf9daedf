//! `broker healthcheck`: a grpc.health.v1 check for container health checks,
//! with grpc_health_probe's flags and exit codes, so existing task
//! definitions keep working.

use std::time::Duration;

use clap::Args;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
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
    /// Address of the broker (host:port).
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

    /// Check plain HTTP instead of gRPC: GET this path (e.g. `/health` on an
    /// agent); 2xx is serving. Lets the one image health-check every process.
    #[arg(long, conflicts_with_all = ["tls", "service"])]
    pub http_path: Option<String>,
}

impl HealthcheckArgs {
    fn tls_config(&self) -> std::io::Result<Option<ClientTlsConfig>> {
        if !self.tls {
            return Ok(None);
        }
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
        Ok(Some(config))
    }
}

/// Runs the check, prints the outcome and returns the exit code.
pub async fn run(args: &HealthcheckArgs) -> u8 {
    if let Some(path) = &args.http_path {
        return http_check(args, path).await;
    }
    let scheme = if args.tls { "https" } else { "http" };
    let url = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("{scheme}://{}", args.addr)
    };
    let tls = match args.tls_config() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: cannot read the TLS files: {e}");
            return exit::INVALID_ARGUMENTS;
        }
    };
    let endpoint = match Endpoint::from_shared(url) {
        Ok(endpoint) => endpoint
            .connect_timeout(args.connect_timeout)
            .timeout(args.rpc_timeout),
        Err(e) => {
            eprintln!("error: invalid address {:?}: {e}", args.addr);
            return exit::INVALID_ARGUMENTS;
        }
    };
    let endpoint = match tls {
        None => endpoint,
        Some(tls) => match endpoint.tls_config(tls) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                eprintln!("error: invalid TLS settings: {e}");
                return exit::INVALID_ARGUMENTS;
            }
        },
    };
    let channel = match tokio::time::timeout(args.connect_timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => {
            eprintln!("error: failed to connect service at {:?}: {e}", args.addr);
            return exit::CONNECTION_FAILURE;
        }
        Err(_) => {
            eprintln!(
                "timeout: failed to connect service {:?} within {:?}",
                args.addr, args.connect_timeout
            );
            return exit::CONNECTION_FAILURE;
        }
    };
    let request = HealthCheckRequest {
        service: args.service.clone(),
    };
    match HealthClient::new(channel).check(request).await {
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

async fn http_check(args: &HealthcheckArgs, path: &str) -> u8 {
    let url = format!("http://{}/{}", args.addr, path.trim_start_matches('/'));
    let client = match reqwest::Client::builder()
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
    const FLAGS: [&str; 9] = [
        "addr",
        "service",
        "connect-timeout",
        "rpc-timeout",
        "tls",
        "tls-ca-cert",
        "tls-client-cert",
        "tls-client-key",
        "tls-server-name",
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

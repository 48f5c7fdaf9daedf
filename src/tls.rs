//! TLS (rustls) for the broker's port: a server certificate, and optionally
//! mutual TLS, where a client certificate signed by `BROKER_TLS_CLIENT_CA`
//! is required and its first DNS name is the agent's identity. And the
//! client library's side of it.

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Builds the server configuration from PEM files; errors name the variable.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = read_certs(cert, "BROKER_TLS_CERT")?;
    let key = read_key(key, "BROKER_TLS_KEY")?;
    let builder = ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = read_roots(path, "BROKER_TLS_CLIENT_CA")?;
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| anyhow::anyhow!("BROKER_TLS_CLIENT_CA {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("BROKER_TLS_CERT/BROKER_TLS_KEY do not match: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client library's configuration: the broker is verified against
/// `ca` (PEM; `BROKER_CA_CERT`) or the system's roots, and `identity`
/// (certificate and key PEM files; `BROKER_CLIENT_CERT`, `BROKER_CLIENT_KEY`)
/// is presented for mutual TLS. HTTP/2 only.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let roots = match ca {
        Some(path) => read_roots(path, "BROKER_CA_CERT")?,
        None => {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                anyhow::bail!(
                    "no CA certificate found in the system's store to verify the broker with; set BROKER_CA_CERT ({})",
                    native
                        .errors
                        .first()
                        .map_or_else(|| "the store is empty".to_owned(), ToString::to_string)
                );
            }
            roots
        }
    };
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = read_certs(cert, "BROKER_CLIENT_CERT")?;
            let key = read_key(key, "BROKER_CLIENT_KEY")?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                anyhow::anyhow!("BROKER_CLIENT_CERT/BROKER_CLIENT_KEY do not match: {e}")
            })?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The CA certificates in a PEM file, as trust roots.
fn read_roots(path: &Path, variable: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs(path, variable)? {
        roots
            .add(ca)
            .map_err(|e| anyhow::anyhow!("{variable} {}: {e}", path.display()))?;
    }
    Ok(roots)
}

fn read_key(path: &Path, variable: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| anyhow::anyhow!("{variable} {}: no private key found ({e})", path.display()))
}

fn read_certs(path: &Path, variable: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{variable} {}: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{variable} {}: no certificate found", path.display());
    }
    Ok(certs)
}

/// The identity a verified client certificate presents: its first DNS name.
pub fn peer_name(certificates: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let leaf = certificates?.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    cert.valid_dns_names().next().map(str::to_owned)
}

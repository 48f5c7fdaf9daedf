//! How a client reaches the broker: token, TLS, deadlines, address
//! re-resolution. [`ClientOptions::from_env`] reads the agent's environment.

use std::{path::PathBuf, time::Duration};

use super::error::{ClientError, Result};

/// Client settings. `Default` is a plaintext client with no token, a 30 s
/// deadline per unary call and none on streams.
#[derive(Clone)]
pub struct ClientOptions {
    /// Bearer token sent as `authorization` on every call (`BROKER_TOKEN`).
    pub token: Option<String>,
    /// PEM CA certificate(s) to verify an `https://` broker with
    /// (`BROKER_CA_CERT`); the system roots when unset.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (`BROKER_CLIENT_CERT`,
    /// `BROKER_CLIENT_KEY`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Deadline of each unary call (`BROKER_TIMEOUT`, default 30s). The
    /// broker bounds all its work by it.
    pub timeout: Option<Duration>,
    /// Deadline of each streaming call (GetObject, PutObject); none by
    /// default, as a large object may take long (`BROKER_STREAM_TIMEOUT`).
    pub stream_timeout: Option<Duration>,
    /// Time allowed to open a connection to one broker address.
    pub connect_timeout: Duration,
    /// How often a connection is pinged, idle or not (default 10 s)...
    pub keep_alive_interval: Duration,
    /// ...and how long a pong may take before the connection is closed and
    /// its calls fail with UNAVAILABLE (default 5 s): a broker task that
    /// vanished without closing its connections is noticed within both.
    pub keep_alive_timeout: Duration,
    /// How often a broker host name is resolved again, so that tasks that
    /// come and go behind one DNS name (Cloud Map) are followed.
    pub resolve_interval: Duration,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("timeout", &self.timeout)
            .field("stream_timeout", &self.stream_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("resolve_interval", &self.resolve_interval)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            token: None,
            ca_cert: None,
            client_cert: None,
            timeout: Some(Duration::from_secs(30)),
            stream_timeout: None,
            connect_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            resolve_interval: Duration::from_secs(10),
        }
    }
}

impl ClientOptions {
    /// Options from `BROKER_TOKEN`, `BROKER_CA_CERT`, `BROKER_CLIENT_CERT` +
    /// `BROKER_CLIENT_KEY`, `BROKER_TIMEOUT` and `BROKER_STREAM_TIMEOUT`.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    pub(crate) fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let duration = |name: &str| -> Result<Option<Duration>> {
            var(name)
                .map(|text| {
                    crate::config::parse_duration(&text)
                        .map_err(|e| ClientError::config(format!("{name}={text:?}: {e}")))
                })
                .transpose()
        };
        let defaults = Self::default();
        let client_cert = match (var("BROKER_CLIENT_CERT"), var("BROKER_CLIENT_KEY")) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            _ => {
                return Err(ClientError::config(
                    "set both BROKER_CLIENT_CERT and BROKER_CLIENT_KEY, or neither",
                ));
            }
        };
        Ok(Self {
            token: var("BROKER_TOKEN"),
            ca_cert: var("BROKER_CA_CERT").map(PathBuf::from),
            client_cert,
            timeout: duration("BROKER_TIMEOUT")?.or(defaults.timeout),
            stream_timeout: duration("BROKER_STREAM_TIMEOUT")?,
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn options(vars: &[(&str, &str)]) -> Result<ClientOptions> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ClientOptions::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn reads_the_environment() {
        let o = options(&[("BROKER_TOKEN", "t0k"), ("BROKER_TIMEOUT", "2s")]).unwrap();
        assert_eq!(o.token.as_deref(), Some("t0k"));
        assert_eq!(o.timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.stream_timeout, None);
        assert!(
            !format!("{o:?}").contains("t0k"),
            "the token never shows in Debug"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = options(&[("BROKER_TIMEOUT", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("BROKER_TIMEOUT"), "{err}");
        let err = options(&[("BROKER_CLIENT_CERT", "c.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("BROKER_CLIENT_KEY"), "{err}");
    }
}

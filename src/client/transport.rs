//! The channel under the client's calls: either the broker over the network,
//! spread across every address its URLs resolve to, or the broker.v1 services
//! in this process (direct mode). Both are the same tower service, so the
//! calls, deadlines, token and errors are identical in the two modes.
//!
//! Balancing is round robin over the resolved addresses. An address whose
//! connection fails is set aside for a short while, and names are resolved
//! again periodically, so a broker task that goes away (or a Cloud Map
//! record that is removed) stops receiving calls.

use std::{
    net::SocketAddr,
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use http::Uri;
use rustls_pki_types::ServerName;
use tonic::body::Body;
use tower::{Service, ServiceExt};

use super::{
    connection::{Connection, Dialer, KeepAlive},
    error::{ClientError, Result},
    options::ClientOptions,
};
use crate::server::InProcess;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long an address whose connection failed is skipped.
const SET_ASIDE: Duration = Duration::from_secs(2);

/// A broker, remote or in-process.
#[derive(Clone)]
pub enum Transport {
    Remote(Arc<Balancer>),
    Local(InProcess),
}

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each call readies the channel it picks.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self {
            Self::Remote(balancer) => {
                let member = balancer.pick();
                Box::pin(async move {
                    let member = member?;
                    let result = member.connection.call(request).await;
                    if result.as_ref().is_err_and(unreachable) {
                        member.set_aside();
                    }
                    result
                })
            }
            Self::Local(router) => {
                let router = router.clone();
                Box::pin(async move {
                    let Ok(response) = router.oneshot(request).await;
                    Ok(response.map(Body::new))
                })
            }
        }
    }
}

/// Whether a call's failure says the address cannot be reached (a
/// deadline that passed does not: the broker may just be slow to answer).
fn unreachable(error: &BoxError) -> bool {
    error.downcast_ref::<tonic::ConnectError>().is_some()
        || error
            .downcast_ref::<tonic::Status>()
            .is_some_and(|status| status.code() == tonic::Code::Unavailable)
}

/// One broker URL as given (`http://broker.ca-a2a.local:8000`).
#[derive(Debug, Clone)]
struct Target {
    uri: Uri,
    host: String,
    port: u16,
    tls: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|e| ClientError::config(format!("broker URL {url:?}: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(ClientError::config(format!(
                    "broker URL {url:?}: use http:// or https://"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| ClientError::config(format!("broker URL {url:?} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            uri,
            host,
            port,
            tls,
        })
    }

    fn is_literal(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// One resolved broker address and its (lazily opened) connection.
pub struct Member {
    addr: SocketAddr,
    connection: Connection,
    /// Milliseconds since the balancer's epoch until which this address is skipped.
    set_aside_until: std::sync::atomic::AtomicU64,
    epoch: Instant,
}

impl Member {
    fn set_aside(&self) {
        let until = self.epoch.elapsed() + SET_ASIDE;
        self.set_aside_until
            .store(until.as_millis() as u64, Ordering::Relaxed);
        tracing::debug!(addr = %self.addr, "broker address set aside after a connection failure");
    }

    fn usable(&self) -> bool {
        self.set_aside_until.load(Ordering::Relaxed) <= self.epoch.elapsed().as_millis() as u64
    }
}

/// Round robin over the addresses of one or more broker URLs.
pub struct Balancer {
    targets: Vec<Target>,
    dial_template: DialTemplate,
    members: RwLock<Vec<Arc<Member>>>,
    next: AtomicUsize,
    epoch: Instant,
}

impl Balancer {
    /// Resolves `urls` (comma-separated) once, failing when nothing resolves,
    /// and keeps resolving host names every `resolve_interval`.
    pub async fn connect(urls: &str, options: &ClientOptions) -> Result<Arc<Self>> {
        let targets: Vec<Target> = urls
            .split(',')
            .filter(|u| !u.trim().is_empty())
            .map(Target::parse)
            .collect::<Result<_>>()?;
        if targets.is_empty() {
            return Err(ClientError::config("no broker URL given"));
        }
        let balancer = Arc::new(Self {
            dial_template: DialTemplate::new(options, &targets)?,
            targets,
            members: RwLock::default(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        });
        let addrs = balancer.resolve().await;
        if addrs.is_empty() {
            return Err(ClientError::config(format!(
                "no address found for broker URL {urls:?} (check the host name and DNS)"
            )));
        }
        balancer.update(addrs)?;
        if balancer.targets.iter().any(|t| !t.is_literal()) {
            tokio::spawn(keep_resolving(
                Arc::downgrade(&balancer),
                options.resolve_interval,
            ));
        }
        Ok(balancer)
    }

    /// The addresses calls are spread over now.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.read().iter().map(|m| m.addr).collect()
    }

    /// How many addresses calls are spread over now.
    pub fn address_count(&self) -> usize {
        self.read().len()
    }

    fn pick(&self) -> Result<Arc<Member>, BoxError> {
        let members = self.read();
        if members.is_empty() {
            return Err("no broker address is known (DNS returned none)".into());
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = members.len();
        let member = (0..n)
            .map(|i| &members[(start + i) % n])
            .find(|m| m.usable())
            // All set aside: try one anyway, so the set recovers by itself.
            .unwrap_or(&members[start % n]);
        Ok(Arc::clone(member))
    }

    /// Every address of every target; targets that fail to resolve are
    /// logged and skipped.
    async fn resolve(&self) -> Vec<(SocketAddr, usize)> {
        let mut addrs = Vec::new();
        for (index, target) in self.targets.iter().enumerate() {
            match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(found) => addrs.extend(found.map(|addr| (addr, index))),
                Err(e) => {
                    tracing::warn!(host = %target.host, error = %e, "cannot resolve the broker host")
                }
            }
        }
        addrs.sort();
        addrs.dedup_by_key(|(addr, _)| *addr);
        addrs
    }

    /// Replaces the member set by `addrs`, keeping the connections of
    /// addresses already known.
    fn update(&self, addrs: Vec<(SocketAddr, usize)>) -> Result<()> {
        let current = self.read().clone();
        let mut members = Vec::with_capacity(addrs.len());
        for (addr, target) in addrs {
            match current.iter().find(|m| m.addr == addr) {
                Some(member) => members.push(Arc::clone(member)),
                None => {
                    let dialer = self.dial_template.dialer(&self.targets[target], addr)?;
                    members.push(Arc::new(Member {
                        addr,
                        connection: Connection::new(dialer),
                        set_aside_until: 0.into(),
                        epoch: self.epoch,
                    }));
                }
            }
        }
        let changed = members.len() != current.len()
            || members.iter().zip(&current).any(|(a, b)| a.addr != b.addr);
        if changed {
            tracing::info!(addresses = ?members.iter().map(|m| m.addr).collect::<Vec<_>>(), "broker addresses");
        }
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = members;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Member>>> {
        self.members.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Re-resolves until the balancer is dropped. An empty answer keeps the
/// last known addresses rather than leaving the client with none.
async fn keep_resolving(balancer: Weak<Balancer>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(balancer) = balancer.upgrade() else {
            return;
        };
        let addrs = balancer.resolve().await;
        if !addrs.is_empty()
            && let Err(e) = balancer.update(addrs)
        {
            tracing::warn!(error = %e, "cannot use the resolved broker addresses");
        }
    }
}

/// What every per-address connection shares: TLS settings and timeouts.
struct DialTemplate {
    /// Only when a URL is `https://` (a plaintext client never reads the
    /// system's certificate store).
    tls: Option<tokio_rustls::TlsConnector>,
    connect_timeout: Duration,
    keep_alive: KeepAlive,
}

impl DialTemplate {
    fn new(options: &ClientOptions, targets: &[Target]) -> Result<Self> {
        let tls = if targets.iter().any(|t| t.tls) {
            let identity = options
                .client_cert
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path()));
            let config = crate::tls::client_config(options.ca_cert.as_deref(), identity)
                .map_err(|e| ClientError::config(format!("{e:#}")))?;
            Some(tokio_rustls::TlsConnector::from(config))
        } else {
            None
        };
        Ok(Self {
            tls,
            connect_timeout: options.connect_timeout,
            keep_alive: KeepAlive {
                interval: options.keep_alive_interval,
                timeout: options.keep_alive_timeout,
            },
        })
    }

    /// How to dial `addr` while presenting the target's host name (for TLS
    /// verification and the `:authority` header).
    fn dialer(&self, target: &Target, addr: SocketAddr) -> Result<Dialer> {
        let authority =
            target.uri.authority().cloned().ok_or_else(|| {
                ClientError::config(format!("broker URL {} has no host", target.uri))
            })?;
        let tls = match (&self.tls, target.tls) {
            (Some(connector), true) => {
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|e| ClientError::config(format!("broker URL {}: {e}", target.uri)))?;
                Some((connector.clone(), name))
            }
            _ => None,
        };
        Ok(Dialer {
            addr,
            authority,
            tls,
            connect_timeout: self.connect_timeout,
            keep_alive: self.keep_alive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreachable_addresses_are_set_aside() {
        let boxed = |e: Box<dyn std::error::Error + Send + Sync>| e;
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(unreachable(&boxed(Box::new(tonic::ConnectError(
            Box::new(refused)
        )))));
        assert!(unreachable(&boxed(Box::new(tonic::Status::unavailable(
            "closed"
        )))));
        assert!(!unreachable(&boxed(Box::new(
            tonic::Status::deadline_exceeded("slow")
        ))));
    }

    #[test]
    fn urls_parse_with_default_ports_and_schemes() {
        let t = Target::parse("broker.ca-a2a.local:8000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("broker.ca-a2a.local", 8000, false)
        );
        let t = Target::parse("https://broker").unwrap();
        assert_eq!((t.port, t.tls), (443, true));
        let t = Target::parse("http://[::1]:9000").unwrap();
        assert!(t.is_literal());
        let err = Target::parse("ftp://broker").unwrap_err().to_string();
        assert!(err.contains("http:// or https://"), "{err}");
    }
}

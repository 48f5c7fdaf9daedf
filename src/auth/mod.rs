//! Who may touch what. Every broker.v1 call is authenticated (bearer token
//! or client certificate name) and checked against the policy here, once:
//! the method against the agent's service grant in the layer, keys and
//! buckets against its prefixes in [`Caller::check_object`], SQL against
//! its allow-list of statements in [`Caller::check_statement`]. Deny by
//! default: a broker.v1 method without a [`requirement`] is refused to
//! everyone. Health and reflection stay open. Without a policy file the
//! broker runs open.

pub mod policy;
pub mod summary;
pub mod token;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use axum::{extract::Request, response::Response};
use tonic::Status;

pub use policy::{Access, Grant, Policy};

use crate::resilience::load_shed::CallerId;

/// The identity and rights of the agent making a call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub agent: Arc<str>,
    pub grant: Arc<Grant>,
}

/// The name of a TLS client certificate, set on requests by the server.
#[derive(Debug, Clone)]
pub struct PeerCertificateName(pub String);

/// The service a method belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    ObjectStore,
    Database,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::ObjectStore => "the object store",
            Resource::Database => "the database",
        }
    }
}

/// Every broker.v1 method and what it needs. Write means PutObject,
/// DeleteObject, Execute, Transaction and InitSchema.
const METHODS: [(&str, Resource, Access); 9] = {
    use {Access::*, Resource::*};
    [
        ("/broker.v1.ObjectStore/ListObjects", ObjectStore, Read),
        ("/broker.v1.ObjectStore/HeadObject", ObjectStore, Read),
        ("/broker.v1.ObjectStore/GetObject", ObjectStore, Read),
        ("/broker.v1.ObjectStore/PutObject", ObjectStore, Write),
        ("/broker.v1.ObjectStore/DeleteObject", ObjectStore, Write),
        ("/broker.v1.Database/Query", Database, Read),
        ("/broker.v1.Database/Execute", Database, Write),
        ("/broker.v1.Database/Transaction", Database, Write),
        ("/broker.v1.Database/InitSchema", Database, Write),
    ]
};

/// The entry of [`METHODS`] for `path`.
fn method(path: &str) -> Option<(&'static str, Resource, Access)> {
    METHODS.into_iter().find(|(method, ..)| *method == path)
}

/// What the broker.v1 method at `path` needs; `None` for other paths.
pub fn requirement(path: &str) -> Option<(Resource, Access)> {
    method(path).map(|(_, resource, access)| (resource, access))
}

/// `path` as a static string when it is a broker.v1 method.
pub fn method_name(path: &str) -> Option<&'static str> {
    method(path).map(|(name, ..)| name)
}

impl Caller {
    /// Everything allowed (the broker without a policy file).
    pub fn anonymous() -> Self {
        // One shared value: open mode answers every call with it.
        static ANONYMOUS: std::sync::LazyLock<Caller> = std::sync::LazyLock::new(|| Caller {
            agent: "anonymous".into(),
            grant: Arc::new(Grant::everything()),
        });
        ANONYMOUS.clone()
    }

    /// Whether this caller may use `resource` at `access` level.
    pub fn may(&self, resource: Resource, access: Access) -> bool {
        let granted = match resource {
            Resource::ObjectStore => self.grant.object_store.access,
            Resource::Database => self.grant.database.access,
        };
        granted >= access
    }

    /// Checks a key (or listing prefix) and bucket against the agent's
    /// object grant. `bucket` is the one the request named ("" = default).
    pub fn check_object(&self, bucket: &str, key: &str) -> Result<(), Status> {
        let grant = &self.grant.object_store;
        let bucket_allowed =
            bucket.is_empty() || grant.buckets.iter().any(|b| b == "*" || b == bucket);
        if !bucket_allowed {
            return Err(Status::permission_denied(format!(
                "agent {} may not use bucket {bucket:?}",
                self.agent
            )));
        }
        let key_allowed =
            grant.prefixes.is_empty() || grant.prefixes.iter().any(|p| key.starts_with(p.as_str()));
        if !key_allowed {
            return Err(Status::permission_denied(format!(
                "agent {} may only use keys under {:?}",
                self.agent, grant.prefixes
            )));
        }
        Ok(())
    }

    /// Checks a statement against the agent's allow-list of statements,
    /// when its grant has one. The refusal names the statement by its audit
    /// fingerprint, not its text.
    pub fn check_statement(&self, sql: &str) -> Result<(), Status> {
        match &self.grant.database.statements {
            Some(statements) if !statements.allows(sql) => Err(Status::permission_denied(format!(
                "agent {} may run only the statements its policy lists, and {} is not one of them",
                self.agent,
                crate::audit::sql_fingerprint(sql)
            ))),
            _ => Ok(()),
        }
    }
}

/// The caller of a request, as the auth layer identified it.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::permission_denied("the call was not authenticated"))
}

/// The current policy (or open mode), reloadable.
#[derive(Clone)]
pub struct Auth {
    policy: Arc<RwLock<Option<Arc<Policy>>>>,
    path: Option<PathBuf>,
}

impl Auth {
    /// Loads the policy file, or runs open (and says so loudly) without one.
    pub fn from_file(path: Option<&Path>) -> anyhow::Result<Self> {
        let policy = match path {
            Some(path) => {
                let policy = Policy::load(path)?;
                warn_about(&policy);
                tracing::info!(path = %path.display(), agents = policy.agents.len(), "access policy loaded");
                Some(Arc::new(policy))
            }
            None => {
                tracing::warn!(
                    "NO ACCESS POLICY: BROKER_POLICY_FILE is not set, so every caller may read and write \
                     everything without a token. Set a policy file in production."
                );
                None
            }
        };
        Ok(Self {
            policy: Arc::new(RwLock::new(policy)),
            path: path.map(Path::to_path_buf),
        })
    }

    /// Re-reads the policy file; a policy that does not load is rejected and
    /// the current one kept.
    pub fn reload(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let policy = Policy::load(path)?;
        warn_about(&policy);
        let agents = policy.agents.len();
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(policy));
        tracing::info!(path = %path.display(), agents, "access policy reloaded");
        Ok(())
    }

    /// Whether the broker runs without a policy (everyone may do everything).
    pub fn is_open(&self) -> bool {
        self.path.is_none()
    }

    /// Identifies the caller of a request from its headers and certificate.
    pub fn identify(
        &self,
        headers: &http::HeaderMap,
        certificate: Option<&str>,
    ) -> Result<Caller, Status> {
        let policy = self
            .policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(policy) = policy else {
            return Ok(Caller::anonymous());
        };
        let bearer = match headers.get(http::header::AUTHORIZATION) {
            None => None,
            Some(value) => {
                let token = value
                    .to_str()
                    .ok()
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .map(str::trim)
                    .filter(|t| !t.is_empty());
                Some(token.ok_or_else(|| {
                    Status::unauthenticated("the authorization header must be `Bearer <token>`")
                })?)
            }
        };
        if let Some(token) = bearer {
            return match policy.by_token_hash(&token::hash(token)) {
                Some((name, grant))
                    if grant.token_expires.is_some_and(|t| t <= chrono::Utc::now()) =>
                {
                    Err(Status::unauthenticated(format!(
                        "the token of agent {name:?} expired; make a new one with `broker token`"
                    )))
                }
                Some((name, grant)) => Ok(Caller {
                    agent: name.into(),
                    grant: grant.clone(),
                }),
                None => Err(Status::unauthenticated("unknown token")),
            };
        }
        if let Some(name) = certificate {
            return match policy.by_name(name) {
                Some(grant) => Ok(Caller {
                    agent: name.into(),
                    grant: grant.clone(),
                }),
                None => Err(Status::unauthenticated(format!(
                    "no agent named {name:?} in the policy"
                ))),
            };
        }
        Err(Status::unauthenticated(
            "a bearer token is required (authorization: Bearer <token>)",
        ))
    }
}

/// Authenticates a broker.v1 call and checks the method against the
/// caller's grant, then runs `next`.
pub async fn authenticate<F, Fut>(auth: &Auth, mut request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let path = request.uri().path().to_owned();
    if path.starts_with("/grpc.") {
        return next(request).await;
    }
    let certificate = request
        .extensions()
        .get::<PeerCertificateName>()
        .map(|c| c.0.clone());
    let caller = match auth.identify(request.headers(), certificate.as_deref()) {
        Ok(caller) => caller,
        Err(status) => return status.into_http(),
    };
    if let Some(facts) = request.extensions().get::<crate::audit::CallFacts>() {
        facts.set_agent(&caller.agent);
    }
    let Some((resource, access)) = requirement(&path) else {
        return Status::permission_denied(format!(
            "{path} is not a method the access policy knows"
        ))
        .into_http();
    };
    if !caller.may(resource, access) {
        let verb = if access == Access::Write {
            "write to"
        } else {
            "read"
        };
        return Status::permission_denied(format!(
            "agent {} may not {verb} {}",
            caller.agent,
            resource.name()
        ))
        .into_http();
    }
    // Open mode has no agents: per-caller limits then fall back to the
    // peer address, so one busy client does not starve the others.
    if !auth.is_open() {
        request
            .extensions_mut()
            .insert(CallerId(caller.agent.to_string()));
    }
    request.extensions_mut().insert(caller);
    next(request).await
}

/// Logs what in a valid policy is probably a mistake.
fn warn_about(policy: &Policy) {
    for warning in policy.warnings() {
        tracing::warn!("access policy: {warning}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::{
        Router,
        body::Body,
        extract::State,
        middleware::{self, Next},
        routing::any,
    };
    use prost::Message;
    use tower::ServiceExt;

    use super::*;
    use crate::resilience::load_shed::PeerAddr;

    /// Every method of every broker.v1 service in the compiled descriptor.
    fn proto_methods() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        set.file
            .iter()
            .filter(|file| file.package() == "broker.v1")
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service.method.iter().map(move |method| {
                        format!("/{}.{}/{}", file.package(), service.name(), method.name())
                    })
                })
            })
            .collect()
    }

    #[test]
    fn every_method_in_the_proto_has_a_requirement() {
        let methods = proto_methods();
        assert!(methods.len() >= 9, "{methods:?}");
        for method in &methods {
            assert!(requirement(method).is_some(), "{method} has no requirement");
        }
        assert_eq!(requirement("/broker.v1.ObjectStore/CopyObject"), None);
    }

    const TOKEN: &str = "test-token-0123456789";

    fn policy_auth() -> (Auth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(
            &path,
            format!(
                "[agents.reader]\ntoken_sha256 = \"{}\"\nobject_store = {{ access = \"read\" }}\n",
                token::hash(TOKEN)
            ),
        )
        .unwrap();
        (Auth::from_file(Some(&path)).unwrap(), dir)
    }

    /// Runs `path` through the auth layer; the inner handler answers with
    /// the caller id it was given (empty for none).
    async fn through_layer(auth: Auth, path: &str) -> (Option<String>, String) {
        let app = Router::new()
            .route(
                "/{*rest}",
                any(|request: Request| async move {
                    request
                        .extensions()
                        .get::<CallerId>()
                        .map(|c| c.0.clone())
                        .unwrap_or_default()
                }),
            )
            .layer(middleware::from_fn_with_state(
                auth,
                |State(auth): State<Auth>, request: Request, next: Next| async move {
                    authenticate(&auth, request, |request| next.run(request)).await
                },
            ));
        let mut request = http::Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(PeerAddr("192.0.2.1:4000".parse().unwrap()));
        let response = app.oneshot(request).await.unwrap();
        let status = response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_method_without_a_requirement_is_denied() {
        let (auth, _dir) = policy_auth();
        let (status, caller) =
            through_layer(auth.clone(), "/broker.v1.ObjectStore/HeadObject").await;
        assert_eq!((status, caller.as_str()), (None, "reader"));
        let (status, _) = through_layer(auth, "/broker.v1.ObjectStore/CopyObject").await;
        assert_eq!(status.as_deref(), Some("7"), "PERMISSION_DENIED");
        let (status, _) =
            through_layer(Auth::from_file(None).unwrap(), "/broker.v1.Database/Vacuum").await;
        assert_eq!(status.as_deref(), Some("7"), "open mode too");
    }

    #[tokio::test]
    async fn open_mode_limits_callers_by_peer_not_as_one_agent() {
        let (status, caller) =
            through_layer(Auth::from_file(None).unwrap(), "/broker.v1.Database/Query").await;
        assert_eq!(status, None);
        assert_eq!(caller, "", "no agent id: the shedder uses the peer address");
    }

    /// Log lines written while `f` runs.
    fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let result = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        (result, text)
    }

    #[test]
    fn open_mode_says_so_loudly() {
        let (auth, logs) = logs_of(|| Auth::from_file(None).unwrap());
        assert!(auth.is_open());
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains("NO ACCESS POLICY"), "{logs}");
        assert!(logs.contains("BROKER_POLICY_FILE"), "{logs}");
    }

    #[test]
    fn a_prefix_without_a_slash_is_warned_about_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(
            &path,
            "[agents.a]\nobject_store = { access = \"read\", prefixes = [\"incoming\"] }\n",
        )
        .unwrap();
        let (auth, logs) = logs_of(|| Auth::from_file(Some(&path)).unwrap());
        assert!(!auth.is_open());
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains("\"incoming\""), "{logs}");
        let (reloaded, logs) = logs_of(|| auth.reload());
        reloaded.unwrap();
        assert!(logs.contains("\"incoming\""), "reload warns too: {logs}");
    }
}

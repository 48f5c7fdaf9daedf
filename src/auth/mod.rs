//! Who may touch what. Every broker.v1 call is authenticated (bearer token
//! or client certificate name) and checked against the policy here, once:
//! the method against the agent's service grant in the layer, keys and
//! buckets against its prefixes in [`Caller::check_object`]. Health and
//! reflection stay open. Without a policy file the broker runs open.

pub mod policy;
pub mod token;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use axum::{extract::Request, middleware::Next, response::Response};
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

/// What each broker.v1 method needs. Write means PutObject, DeleteObject,
/// Execute, Transaction and InitSchema.
pub fn requirement(path: &str) -> Option<(Resource, Access)> {
    use {Access::*, Resource::*};
    Some(match path {
        "/broker.v1.ObjectStore/ListObjects"
        | "/broker.v1.ObjectStore/HeadObject"
        | "/broker.v1.ObjectStore/GetObject" => (ObjectStore, Read),
        "/broker.v1.ObjectStore/PutObject" | "/broker.v1.ObjectStore/DeleteObject" => {
            (ObjectStore, Write)
        }
        "/broker.v1.Database/Query" => (Database, Read),
        "/broker.v1.Database/Execute"
        | "/broker.v1.Database/Transaction"
        | "/broker.v1.Database/InitSchema" => (Database, Write),
        _ => return Option::None,
    })
}

impl Caller {
    /// Everything allowed (the broker without a policy file).
    pub fn anonymous() -> Self {
        Self {
            agent: "anonymous".into(),
            grant: Arc::new(Grant::everything()),
        }
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
        let agents = policy.agents.len();
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(policy));
        tracing::info!(path = %path.display(), agents, "access policy reloaded");
        Ok(())
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
                    grant: Arc::new(grant.clone()),
                }),
                None => Err(Status::unauthenticated("unknown token")),
            };
        }
        if let Some(name) = certificate {
            return match policy.by_name(name) {
                Some(grant) => Ok(Caller {
                    agent: name.into(),
                    grant: Arc::new(grant.clone()),
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

/// Axum middleware (with [`Auth`] as state): authenticates broker.v1 calls
/// and checks the method against the caller's grant.
pub async fn authenticate(
    axum::extract::State(auth): axum::extract::State<Auth>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if path.starts_with("/grpc.") {
        return next.run(request).await;
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
    if let Some((resource, access)) = requirement(&path)
        && !caller.may(resource, access)
    {
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
    request
        .extensions_mut()
        .insert(CallerId(caller.agent.to_string()));
    request.extensions_mut().insert(caller);
    next.run(request).await
}

//! The cross-cutting steps of every gRPC call, outermost first: request id,
//! log line, metrics and audit record ([`telemetry`]); authentication and
//! the method's grant ([`auth`]); load shedding; the client's deadline. Each
//! step lives in its own module as a function around the rest of the call;
//! this layer chains them into one future per call (four axum middlewares
//! cost a clone of the inner service and a boxed future each, per call).

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{extract::Request, response::Response};
use futures::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use crate::{
    audit::AuditLog,
    auth::{self, Auth},
    resilience::{
        deadline::{self, Deadlines},
        load_shed::{self, LoadShedder},
    },
    telemetry,
};

/// What the steps need, shared by every call.
#[derive(Clone)]
pub struct CallSteps(Arc<Steps>);

struct Steps {
    audit: AuditLog,
    auth: Auth,
    shedder: LoadShedder,
    deadlines: Deadlines,
}

impl CallSteps {
    pub fn new(audit: AuditLog, auth: Auth, shedder: LoadShedder, deadlines: Deadlines) -> Self {
        Self(Arc::new(Steps {
            audit,
            auth,
            shedder,
            deadlines,
        }))
    }
}

impl<S> Layer<S> for CallSteps {
    type Service = WithCallSteps<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithCallSteps {
            steps: self.clone(),
            inner,
        }
    }
}

/// A service whose calls go through [`CallSteps`].
#[derive(Clone)]
pub struct WithCallSteps<S> {
    steps: CallSteps,
    inner: S,
}

/// Any request body, as axum's router takes: the in-process doorways send
/// tonic's, the server hyper's (each boxed once, as axum's `Body`).
impl<S, B> Service<http::Request<B>> for WithCallSteps<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service readied above serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let steps = Arc::clone(&self.steps.0);
        let request = request.map(axum::body::Body::new);
        Box::pin(async move { Ok(steps.run(request, inner).await) })
    }
}

impl Steps {
    async fn run<S>(&self, request: Request, inner: S) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        telemetry::logged(&self.audit, request, |request| {
            auth::authenticate(&self.auth, request, |request| {
                load_shed::enforce(&self.shedder, request, |request| {
                    deadline::enforce(self.deadlines, request, |request| async move {
                        let Ok(response) = inner.oneshot(request).await;
                        response
                    })
                })
            })
        })
        .await
    }
}

//! The per-request layer: a request id (the client's `x-request-id`, or a
//! new one) echoed in the response and attached to every log line of the
//! call; the in-flight gauge; and, once the response has really ended (for
//! gRPC, when the trailers with `grpc-status` go out after the last message
//! of a stream), one log line and the request metrics. Metrics are labelled
//! by route (unknown paths as `other`), never by a raw URL path.

use std::{
    borrow::Cow,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Frame, SizeHint};
use tracing::Instrument;

use super::{
    metrics::{RequestLabels, metrics},
    tracing_export,
};
use crate::{
    audit::{AuditLog, CallFacts},
    resilience::load_shed::PeerAddr,
};

/// The header carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";
/// The same as a header name built once (a `&str` key is parsed and, for a
/// header HTTP does not define, copied on every insert).
static REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);

/// Axum middleware (with the audit log as state): see the module documentation.
pub async fn log_requests(State(audit): State<AuditLog>, request: Request, next: Next) -> Response {
    logged(&audit, request, |request| next.run(request)).await
}

/// Runs `next` with the request logged, counted and audited (see the
/// module documentation).
pub async fn logged<F, Fut>(audit: &AuditLog, mut request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = Instant::now();
    let method = request.uri().path().to_owned();
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let request_id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_owned);
    let request_id_value = HeaderValue::from_str(&request_id).ok();
    if let Some(value) = &request_id_value {
        request
            .headers_mut()
            .insert(REQUEST_ID_HEADER.clone(), value.clone());
    }
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        otel.name = route_label(&method),
        otel.kind = "server",
    );
    tracing_export::join_caller_trace(&span, request.headers());
    // The handlers and layers below fill in the audit record's facts only
    // when there is a record to write.
    let facts = (method.starts_with("/broker.v1.") && audit.is_recording()).then(|| {
        let facts = CallFacts::default();
        if let Some(PeerAddr(peer)) = request.extensions().get::<PeerAddr>() {
            facts.set_peer(peer.to_string());
        }
        request.extensions_mut().insert(facts.clone());
        facts
    });
    metrics().requests_in_flight.inc();
    let mut response = next(request).instrument(span.clone()).await;
    if let Some(mut value) = request_id_value {
        // Sent as "never indexed" (RFC 7541, 6.2.3): an id is new on every
        // call, so HPACK's table gains nothing from it, and an indexed one
        // filled the table of each end with ids that every later id was
        // compared against (a tenth of the broker's instructions per call).
        value.set_sensitive(true);
        response
            .headers_mut()
            .insert(REQUEST_ID_HEADER.clone(), value);
    }
    let mut entry = Entry {
        method,
        started,
        grpc,
        http_status: response.status().as_u16(),
        span,
        audit: facts.map(|facts| (audit.clone(), facts, request_id)),
        done: false,
    };
    if grpc && let Some(code) = grpc_status(response.headers()) {
        // Trailers-only response (an error before any message).
        entry.finish(Some(code));
        return response;
    }
    response.map(|body| Body::new(LoggedBody { inner: body, entry }))
}

/// The `method` label of a request: its gRPC method or HTTP route when the
/// broker serves it, else `other`, so that made-up paths cannot grow the
/// metric families (or span names) without bound.
fn route_label(path: &str) -> &'static str {
    const ROUTES: [&str; 8] = [
        "/health",
        "/metrics",
        "/call_tool",
        "/mcp",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    crate::auth::method_name(path)
        .or_else(|| ROUTES.into_iter().find(|route| *route == path))
        .unwrap_or("other")
}

/// 32 random hex digits.
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = vec![0; 32];
    for (digits, byte) in id
        .chunks_exact_mut(2)
        .zip(rand::random::<u128>().to_be_bytes())
    {
        digits[0] = HEX[usize::from(byte >> 4)];
        digits[1] = HEX[usize::from(byte & 0xf)];
    }
    String::from_utf8(id).expect("hex digits are ASCII")
}

fn grpc_status(headers: &HeaderMap) -> Option<tonic::Code> {
    let code = headers
        .get(&crate::codec::GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(tonic::Code::from(code))
}

/// A gRPC status code as tonic's `Debug` spells it (`Ok`, `NotFound`, ...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

struct Entry {
    method: String,
    started: Instant,
    grpc: bool,
    http_status: u16,
    span: tracing::Span,
    /// For broker.v1 calls: where the audit record goes, and what it says.
    audit: Option<(AuditLog, CallFacts, String)>,
    done: bool,
}

impl Entry {
    /// Logs and counts the request once; `code` is its gRPC status, `None`
    /// for plain HTTP or a stream that ended without one (cancelled).
    fn finish(&mut self, code: Option<tonic::Code>) {
        if self.done {
            return;
        }
        self.done = true;
        let seconds = self.started.elapsed().as_secs_f64();
        let code: Cow<'static, str> = match (self.grpc, code) {
            (true, Some(code)) => code_name(code).into(),
            (true, None) => "Cancelled".into(),
            (false, _) => self.http_status.to_string().into(),
        };
        let _entered = self.span.enter();
        let duration_ms = seconds * 1000.0;
        if self.grpc {
            tracing::info!(method = %self.method, grpc_code = %code, duration_ms, "request");
        } else {
            tracing::info!(path = %self.method, http_status = self.http_status, duration_ms, "request");
        }
        if let Some((audit, facts, request_id)) = &self.audit {
            audit.write(facts, request_id, &self.method, &code, duration_ms);
        }
        let labels = RequestLabels {
            method: route_label(&self.method).into(),
            code,
        };
        metrics().requests.get_or_create(&labels).inc();
        metrics()
            .request_duration
            .get_or_create(&labels)
            .observe(seconds);
        metrics().requests_in_flight.dec();
    }
}

struct LoggedBody {
    inner: Body,
    entry: Entry,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.entry.finish(Some(code));
                }
            }
            Poll::Ready(Some(Err(_))) => this.entry.finish(Some(tonic::Code::Internal)),
            Poll::Ready(None) => this.entry.finish(if this.entry.grpc {
                None
            } else {
                Some(tonic::Code::Ok)
            }),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.entry.finish(None);
    }
}

#[cfg(test)]
mod tests {
    use super::{code_name, new_request_id, route_label};

    #[test]
    fn code_labels_are_tonics_names() {
        for value in 0..=16 {
            let code = tonic::Code::from(value);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }

    #[test]
    fn new_request_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn unknown_paths_share_one_label() {
        for known in [
            "/broker.v1.Database/Query",
            "/broker.v1.ObjectStore/GetObject",
            "/grpc.health.v1.Health/Check",
            "/call_tool",
            "/health",
            "/mcp",
        ] {
            assert_eq!(route_label(known), known);
        }
        for unknown in [
            "/wp-admin/setup.php",
            "/health/../../etc",
            "/broker.v1.ObjectStore/Nope",
            "/",
        ] {
            assert_eq!(route_label(unknown), "other", "{unknown}");
        }
    }
}

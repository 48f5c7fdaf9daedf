//! Deadlines: every gRPC call has one. The client's `grpc-timeout` (lowered
//! to a configured maximum), or else a server default: one for unary calls,
//! a longer one for the GetObject/PutObject streams, whose 1 GiB transfers a
//! unary default would cut. Health Watch and reflection streams are meant
//! to stay open and get none. The layer stops waiting at the deadline
//! (dropping the handler's future, which cancels backend work: see
//! `database::cancel`), ends a response stream that outlives it with
//! DEADLINE_EXCEEDED, and publishes the deadline to the code below it so
//! that retries, backend attempts and statement timeouts fit inside.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The current call's deadline, if it has one (no clock read).
pub fn at() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Time left before the current call's deadline, if it has one.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// Runs `work` with a deadline `timeout` from now (used by tests and the layer).
pub async fn scope<F: Future>(timeout: Duration, work: F) -> F::Output {
    DEADLINE.scope(Instant::now() + timeout, work).await
}

/// The server's deadline settings (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For a unary call without `grpc-timeout`.
    pub unary: Duration,
    /// For a GetObject or PutObject stream without `grpc-timeout`.
    pub stream: Duration,
    /// The longest deadline a client may ask for.
    pub max: Duration,
}

/// How a method's messages flow, as far as deadlines care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Unary,
    /// A transfer: bounded, but by a longer default.
    Upload,
    Download,
    /// Open-ended by design (health Watch, reflection): no default.
    Open,
}

impl Shape {
    fn of(path: &str) -> Self {
        match path {
            "/broker.v1.ObjectStore/GetObject" => Shape::Download,
            "/broker.v1.ObjectStore/PutObject" => Shape::Upload,
            "/grpc.health.v1.Health/Watch"
            | "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            | "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" => Shape::Open,
            _ => Shape::Unary,
        }
    }

    /// The response is a stream of messages that may outlive the handler.
    fn streams_response(self) -> bool {
        matches!(self, Shape::Download | Shape::Open)
    }
}

impl Deadlines {
    /// The deadline of a call to `path` whose client asked for `asked`.
    fn for_call(&self, path: &str, asked: Option<Duration>) -> Option<Duration> {
        match (asked, Shape::of(path)) {
            (Some(asked), _) => Some(asked.min(self.max)),
            (None, Shape::Unary) => Some(self.unary),
            (None, Shape::Upload | Shape::Download) => Some(self.stream),
            (None, Shape::Open) => None,
        }
    }
}

/// Runs `next` (a gRPC call) within its deadline.
pub async fn enforce<F, Fut>(deadlines: Deadlines, request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let asked = grpc_timeout(request.headers());
    let shape = Shape::of(request.uri().path());
    let Some(timeout) = deadlines.for_call(request.uri().path(), asked) else {
        return next(request).await;
    };
    let deadline = Instant::now() + timeout;
    // The same instant for the layer and the code below it: an attempt
    // that runs out of time reports it (to its breaker) before this gives up.
    match tokio::time::timeout_at(deadline, DEADLINE.scope(deadline, next(request))).await {
        Ok(response) if shape.streams_response() && !is_trailers_only(&response) => {
            response.map(|body| {
                Body::new(DeadlineBody {
                    inner: Some(body),
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    timeout,
                })
            })
        }
        Ok(response) => response,
        Err(_) => exceeded(timeout).into_http(),
    }
}

fn exceeded(timeout: Duration) -> tonic::Status {
    tonic::Status::deadline_exceeded(format!("deadline of {timeout:?} exceeded"))
}

/// The trailers of a stream cut at its deadline.
fn deadline_trailers(timeout: Duration) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    let code = tonic::Code::DeadlineExceeded as i32;
    trailers.insert("grpc-status", http::HeaderValue::from(code));
    // Printable ASCII needs no percent-encoding in grpc-message.
    if let Ok(message) = http::HeaderValue::from_str(exceeded(timeout).message()) {
        trailers.insert("grpc-message", message);
    }
    trailers
}

/// An error answered before any message: nothing streams after it.
fn is_trailers_only(response: &Response) -> bool {
    response.headers().contains_key(&crate::codec::GRPC_STATUS)
}

/// A response stream cut at the deadline: the messages sent so far, then
/// trailers with DEADLINE_EXCEEDED. The handler's stream (and the backend
/// body it reads) is dropped there.
struct DeadlineBody {
    /// `None` once cut.
    inner: Option<Body>,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.inner = None;
            return Poll::Ready(Some(Ok(Frame::trailers(deadline_trailers(this.timeout)))));
        }
        Pin::new(inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

/// The deadline a call's `grpc-timeout` header asks for, if it is valid.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    // A name built once: a `&str` is parsed again on every lookup.
    static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    parse_grpc_timeout(headers.get(&GRPC_TIMEOUT)?.to_str().ok()?)
}

/// Parses gRPC's `grpc-timeout` header: up to 8 digits and a unit.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_calls_deadline_is_read_within_its_scope_only() {
        assert_eq!((at(), remaining()), (None, None));
        let start = Instant::now();
        scope(Duration::from_secs(5), async {
            assert_eq!(at(), Some(start + Duration::from_secs(5)));
            tokio::time::advance(Duration::from_secs(2)).await;
            assert_eq!(at(), Some(start + Duration::from_secs(5)), "fixed");
            assert_eq!(remaining(), Some(Duration::from_secs(3)));
        })
        .await;
        assert_eq!(at(), None);
    }

    fn deadlines() -> Deadlines {
        Deadlines {
            unary: Duration::from_secs(60),
            stream: Duration::from_secs(3600),
            max: Duration::from_secs(7200),
        }
    }

    #[test]
    fn calls_without_grpc_timeout_get_the_default_of_their_shape() {
        let d = deadlines();
        let minute = Some(Duration::from_secs(60));
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(d.for_call("/broker.v1.Database/Query", None), minute);
        assert_eq!(d.for_call("/grpc.health.v1.Health/Check", None), minute);
        assert_eq!(d.for_call("/broker.v1.ObjectStore/GetObject", None), hour);
        assert_eq!(d.for_call("/broker.v1.ObjectStore/PutObject", None), hour);
        assert_eq!(d.for_call("/grpc.health.v1.Health/Watch", None), None);
        assert_eq!(
            d.for_call("/broker.v1.Database/Query", Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5)),
            "the client's own deadline wins"
        );
        assert_eq!(
            d.for_call(
                "/broker.v1.ObjectStore/GetObject",
                Some(Duration::from_secs(36_000))
            ),
            Some(Duration::from_secs(7200)),
            "capped"
        );
    }

    #[test]
    fn every_streaming_method_has_a_stream_shape() {
        use prost::Message;
        for set in [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(set).unwrap();
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        let path =
                            format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        let streams = method.client_streaming() || method.server_streaming();
                        assert_eq!(
                            streams,
                            Shape::of(&path) != Shape::Unary,
                            "{path}: add it to Shape::of"
                        );
                        if method.server_streaming() {
                            assert!(Shape::of(&path).streams_response(), "{path}");
                        }
                    }
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_stream_ends_with_deadline_exceeded_at_the_deadline() {
        use http_body_util::BodyExt;
        let endless = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"chunk")), ()))
        });
        let mut body = DeadlineBody {
            inner: Some(Body::from_stream(endless)),
            deadline: Box::pin(tokio::time::sleep(Duration::from_millis(350))),
            timeout: Duration::from_millis(350),
        };
        let mut chunks = 0;
        let trailers = loop {
            let frame = body.frame().await.expect("a frame").unwrap();
            match frame.into_data() {
                Ok(_) => chunks += 1,
                Err(frame) => break frame.into_trailers().unwrap(),
            }
        };
        assert_eq!(chunks, 3);
        assert_eq!(trailers["grpc-status"], "4");
        assert!(body.frame().await.is_none(), "nothing after the trailers");
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_inside_a_scope_only() {
        assert_eq!(remaining(), None);
        scope(Duration::from_secs(2), async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(remaining(), Some(Duration::from_millis(1500)));
        })
        .await;
    }
}

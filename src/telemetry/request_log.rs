//! One log line per request, with method, status and duration, written when
//! the response has really ended: for gRPC that is when the trailers carrying
//! `grpc-status` go out, after the last message of a stream.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::{body::Body, extract::Request, middleware::Next, response::Response};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

/// Axum middleware: logs every request once it has finished.
pub async fn log_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.uri().path().to_owned();
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let response = next.run(request).await;
    let mut entry = Entry {
        method,
        started,
        grpc,
        http_status: response.status().as_u16(),
        done: false,
    };
    if grpc && let Some(code) = grpc_status(response.headers()) {
        // Trailers-only response (an error before any message).
        entry.finish(&code);
        return response;
    }
    response.map(|body| Body::new(LoggedBody { inner: body, entry }))
}

fn grpc_status(headers: &HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

struct Entry {
    method: String,
    started: Instant,
    grpc: bool,
    http_status: u16,
    done: bool,
}

impl Entry {
    fn finish(&mut self, outcome: &str) {
        if self.done {
            return;
        }
        self.done = true;
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        if self.grpc {
            tracing::info!(method = %self.method, grpc_status = outcome, duration_ms, "request");
        } else {
            tracing::info!(path = %self.method, http_status = self.http_status, duration_ms, "request");
        }
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
                    this.entry.finish(&code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.entry.finish("stream error"),
            Poll::Ready(None) => this
                .entry
                .finish(if this.entry.grpc { "0" } else { "done" }),
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
        self.entry.finish("cancelled");
    }
}

//! One HTTP/2 connection to one broker address, on the `h2` crate directly.
//!
//! A call's own task sends its headers and body and reads its answer; one
//! task per connection does the socket I/O and the keep-alive pings. That
//! is two wake-ups per unary call on the client's side. tonic's `Channel`
//! (tower's buffer task in front of hyper, and hyper's task per call that
//! waits for the answer's headers) made it four, and on a machine where the
//! client, the broker and PostgreSQL share the cores every wake-up is paid
//! for in throughput (README, "Performance").
//!
//! The connection is opened on the first call and again on the first call
//! after it closed; a call that finds the connection unable to take it
//! (closed, draining after a GOAWAY, out of stream ids) before its request
//! went out is sent once more on a new one.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use futures::future::{Either, select};
use h2::{Reason, client::SendRequest};
use http::{Uri, uri::Authority};
use http_body::{Body as _, Frame};
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tonic::{Code, ConnectError, Status, body::Body};

use crate::{resilience::deadline::grpc_timeout, server::MAX_FRAME_BYTES};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Flow-control windows the client grants the broker: hyper's defaults,
/// which the client used through tonic before.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Request data h2 may hold for one stream before the body is read further.
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// How to reach one broker address: what every connection to it shares.
pub struct Dialer {
    pub addr: SocketAddr,
    /// The URL's host and port, for `:authority`.
    pub authority: Authority,
    /// TLS settings and the name the broker's certificate must carry
    /// (`https` as `:scheme`), or none (`http`).
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    pub connect_timeout: Duration,
    pub keep_alive: KeepAlive,
}

/// A ping goes out every `interval`, idle or not; no pong within `timeout`
/// closes the connection (a broker task that vanished without a FIN), and
/// the calls on it fail with UNAVAILABLE.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// The broker at one address, connected lazily.
pub struct Connection {
    dialer: Dialer,
    live: Arc<Mutex<Option<Live>>>,
    /// One dial at a time; calls that arrive meanwhile wait for it.
    dialing: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

#[derive(Clone)]
struct Live {
    generation: u64,
    sender: SendRequest<Bytes>,
}

impl Connection {
    pub fn new(dialer: Dialer) -> Self {
        Self {
            dialer,
            live: Arc::default(),
            dialing: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
        }
    }

    /// Sends `request` and returns the broker's answer; its body streams
    /// in as the caller reads it. An error here means the call did not get
    /// an answer from the broker (a gRPC status from the broker is an `Ok`
    /// answer).
    pub async fn call(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, BoxError> {
        match grpc_timeout(request.headers()) {
            None => self.exchange(request).await,
            Some(deadline) => tokio::time::timeout(deadline, self.exchange(request))
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "no answer from the broker within the call's deadline ({deadline:?})"
                    ))
                    .into())
                }),
        }
    }

    async fn exchange(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, BoxError> {
        let (mut parts, body) = request.into_parts();
        parts.uri = self.uri(&parts.uri)?;
        let head = http::Request::from_parts(parts, ());
        let (response, stream) = self.open_stream(head, body.is_end_stream()).await?;
        let pipe = Box::pin(send_body(body, stream));
        let response = match select(pipe, response).await {
            Either::Left((sent, response)) => {
                sent.map_err(Box::new)?;
                response.await
            }
            // The broker answered before the whole body went out (an error,
            // typically): the rest is still sent, or given up when the
            // broker resets the stream.
            Either::Right((response, pipe)) => {
                tokio::spawn(pipe);
                response
            }
        };
        let response = response.map_err(failed)?;
        Ok(response.map(|recv| {
            Body::new(Incoming {
                recv,
                trailers: false,
                done: false,
            })
        }))
    }

    /// Opens a stream for `head`, dialling when there is no connection and
    /// once more when the one there can take no more streams: closed,
    /// draining after the broker's GOAWAY, or out of stream ids (a client
    /// connection has about a billion; at 35k calls/s that is eight hours).
    /// The request had not gone out on it.
    async fn open_stream(
        &self,
        head: http::Request<()>,
        end_of_stream: bool,
    ) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), BoxError> {
        let mut sender = self.ready_sender().await?;
        sender.send_request(head, end_of_stream).map_err(failed)
    }

    /// A sender that may open a stream now.
    async fn ready_sender(&self) -> Result<SendRequest<Bytes>, BoxError> {
        let live = self.live().await?;
        match live.sender.ready().await {
            Ok(sender) => Ok(sender),
            Err(e) => {
                tracing::debug!(addr = %self.dialer.addr, error = %e, "the broker connection takes no more calls; dialling again");
                self.forget(live.generation);
                let live = self.live().await?;
                live.sender.ready().await.map_err(failed)
            }
        }
    }

    fn uri(&self, uri: &Uri) -> Result<Uri, BoxError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if self.dialer.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        parts.authority = Some(self.dialer.authority.clone());
        parts.path_and_query = uri.path_and_query().cloned();
        Ok(Uri::from_parts(parts)?)
    }

    fn current(&self) -> Option<Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn forget(&self, generation: u64) {
        forget(&self.live, generation);
    }

    async fn live(&self) -> Result<Live, BoxError> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let sender = self.dial(generation).await?;
        let live = Live { generation, sender };
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
        Ok(live)
    }

    async fn dial(&self, generation: u64) -> Result<SendRequest<Bytes>, BoxError> {
        let addr = self.dialer.addr;
        let tcp = self
            .within("connecting to", TcpStream::connect(addr))
            .await?;
        tcp.set_nodelay(true).map_err(connect_error)?;
        match &self.dialer.tls {
            None => self.handshake(tcp, generation).await,
            Some((connector, name)) => {
                let handshake = connector.connect(name.clone(), tcp);
                let tls = self.within("the TLS handshake with", handshake).await?;
                self.handshake(tls, generation).await
            }
        }
    }

    /// One step of dialling, within the connect timeout; a failure is a
    /// `ConnectError` (UNAVAILABLE: the broker never saw the call).
    async fn within<T>(
        &self,
        step: &str,
        future: impl Future<Output = std::io::Result<T>>,
    ) -> Result<T, BoxError> {
        let Dialer {
            addr,
            connect_timeout,
            ..
        } = self.dialer;
        match tokio::time::timeout(connect_timeout, future).await {
            Ok(result) => result.map_err(connect_error),
            Err(_) => Err(connect_error(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{step} the broker at {addr} took longer than {connect_timeout:?}"),
            ))),
        }
    }

    async fn handshake<T>(&self, io: T, generation: u64) -> Result<SendRequest<Bytes>, BoxError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_BYTES)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| ConnectError(Box::new(e)))?;
        let addr = self.dialer.addr;
        let keep_alive = self.dialer.keep_alive;
        let live = Arc::downgrade(&self.live);
        let ping_pong = connection.ping_pong();
        tokio::spawn(async move {
            let ended = match ping_pong {
                Some(ping_pong) => {
                    match select(connection, Box::pin(keep_alive.run(ping_pong))).await {
                        Either::Left((ended, _)) => ended.err().map(|e| e.to_string()),
                        Either::Right((why, _)) => Some(why),
                    }
                }
                None => connection.await.err().map(|e| e.to_string()),
            };
            if let Some(why) = ended {
                tracing::debug!(%addr, error = %why, "broker connection closed");
            }
            if let Some(live) = live.upgrade() {
                forget(&live, generation);
            }
        });
        Ok(sender)
    }
}

fn forget(live: &Mutex<Option<Live>>, generation: u64) {
    let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
    if live.as_ref().is_some_and(|l| l.generation == generation) {
        *live = None;
    }
}

fn connect_error(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
    Box::new(ConnectError(Box::new(e)))
}

impl KeepAlive {
    /// Pings until a ping fails; returns why the connection is dead.
    async fn run(self, mut ping_pong: h2::PingPong) -> String {
        loop {
            tokio::time::sleep(self.interval).await;
            let pong = tokio::time::timeout(self.timeout, ping_pong.ping(h2::Ping::opaque()));
            match pong.await {
                Ok(Ok(_pong)) => {}
                Ok(Err(e)) => return format!("keep-alive ping failed: {e}"),
                Err(_) => {
                    return format!("no answer to a keep-alive ping within {:?}", self.timeout);
                }
            }
        }
    }
}

/// Sends the request body frame by frame. The first frame goes out at
/// once, in the same write as the request's HEADERS (a unary call is one
/// write, not two); each further frame waits for flow-control room first,
/// so at most one frame of a large body (a file streamed by PutObject) is
/// read ahead of what the broker's window takes. `Err` is the caller's body
/// failing (the stream is then reset). A failure to send is only logged:
/// the answer's future reports it, or the broker's answer if one came first
/// (a refusal that reset the stream while it was sent).
async fn send_body(mut body: Body, mut stream: h2::SendStream<Bytes>) -> Result<(), Status> {
    match pipe(&mut body, &mut stream).await {
        Ok(()) => Ok(()),
        Err(Failure::Body(status)) => {
            stream.send_reset(Reason::CANCEL);
            Err(status)
        }
        Err(Failure::Send(e)) => {
            tracing::debug!(error = %e, "the request body was not sent in full");
            Ok(())
        }
    }
}

enum Failure {
    Body(Status),
    Send(h2::Error),
}

async fn pipe(body: &mut Body, stream: &mut h2::SendStream<Bytes>) -> Result<(), Failure> {
    if body.is_end_stream() {
        return Ok(());
    }
    let mut first = true;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !std::mem::take(&mut first) && !room(stream).await? {
                        // The stream is closed; the answer says why.
                        return Ok(());
                    }
                    let end = body.is_end_stream();
                    stream.send_data(data, end).map_err(Failure::Send)?;
                    if end {
                        return Ok(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        stream.reserve_capacity(0);
                        return stream.send_trailers(trailers).map_err(Failure::Send);
                    }
                }
            },
            Some(Err(status)) => return Err(Failure::Body(status)),
            None => {
                stream.reserve_capacity(0);
                return stream.send_data(Bytes::new(), true).map_err(Failure::Send);
            }
        }
    }
}

/// Waits until the stream may send more: what was sent before has left
/// h2's buffer within the broker's window. `false` when the stream closed.
async fn room(stream: &mut h2::SendStream<Bytes>) -> Result<bool, Failure> {
    stream.reserve_capacity(1);
    while stream.capacity() == 0 {
        match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(Failure::Send(e)),
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// The answer's body: DATA frames (their window given back as they are
/// read), then the trailers that carry the gRPC status.
struct Incoming {
    recv: h2::RecvStream,
    trailers: bool,
    done: bool,
}

impl http_body::Body for Incoming {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if !self.trailers {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Only fails when the stream is already gone; the next
                    // read reports that.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(status_from_h2(e))));
                }
                None => self.trailers = true,
            }
        }
        let trailers = ready!(self.recv.poll_trailers(cx));
        self.done = true;
        Poll::Ready(match trailers {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(e) => Some(Err(status_from_h2(e))),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

fn failed(e: h2::Error) -> BoxError {
    Box::new(status_from_h2(e))
}

/// The gRPC status for an HTTP/2 failure, as gRPC's HTTP/2 mapping says: a
/// lost connection or a refused stream is UNAVAILABLE (the call may be
/// tried again), a cancelled stream CANCELLED.
fn status_from_h2(e: h2::Error) -> Status {
    let code = if e.is_io() || e.is_go_away() {
        Code::Unavailable
    } else {
        match e.reason() {
            Some(Reason::REFUSED_STREAM) => Code::Unavailable,
            Some(Reason::CANCEL) => Code::Cancelled,
            Some(Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
            Some(Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
            Some(_) => Code::Internal,
            None => Code::Unknown,
        }
    };
    Status::new(code, format!("HTTP/2 error talking to the broker: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_streams_may_be_tried_again() {
        assert_eq!(
            status_from_h2(Reason::REFUSED_STREAM.into()).code(),
            Code::Unavailable
        );
        assert_eq!(
            status_from_h2(Reason::CANCEL.into()).code(),
            Code::Cancelled
        );
        assert_eq!(
            status_from_h2(Reason::PROTOCOL_ERROR.into()).code(),
            Code::Internal
        );
    }
}

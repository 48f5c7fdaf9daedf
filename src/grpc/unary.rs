//! broker.v1's unary calls without tonic's streaming machinery: the request's
//! one message is read off the body (one DATA frame, usually, taken without
//! a copy), and the answer goes out as one buffer then the OK trailers. The
//! handlers are the same trait methods tonic's stubs call; what a client sees
//! is what tonic's server sends, error wording included. Under tonic, a
//! unary call ran a streaming decoder, a streaming encoder and a boxed body
//! that yields its frames through both (README, "Performance"). GetObject's
//! answer is [`download`](super::download)'s, and PutObject's request
//! messages are decoded as they arrive ([`streaming_request`]).

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use http::HeaderName;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use prost::Message;
use tonic::{Status, metadata::MetadataMap};

use crate::{
    codec::{self, GRPC_CONTENT_TYPE, Messages, PREFIX_BYTES, message_length},
    object_store::Gather,
};

static GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
static GRPC_ACCEPT_ENCODING: &str = "grpc-accept-encoding";

/// Headers a handler's response metadata may not set (tonic drops them too).
static RESERVED: [HeaderName; 5] = [
    HeaderName::from_static("te"),
    http::header::CONTENT_TYPE,
    HeaderName::from_static("grpc-message"),
    HeaderName::from_static("grpc-message-type"),
    HeaderName::from_static("grpc-status"),
];

/// The request's one message and its metadata, as tonic's stubs hand them
/// to a handler. `limit` bounds the message (OUT_OF_RANGE past it, before
/// the rest is read).
pub async fn request<M: Message + Default>(
    request: Request,
    limit: usize,
) -> Result<tonic::Request<M>, Status> {
    let (metadata, extensions, body) = request_parts(request)?;
    let message = read_message(body, limit).await?;
    let message = M::decode(message).map_err(|e| Status::internal(e.to_string()))?;
    Ok(tonic::Request::from_parts(metadata, extensions, message))
}

/// A client stream's messages (PutObject's), decoded as they arrive, each
/// at most `limit` long, with the request's metadata, as tonic's stubs
/// hand them to a handler.
pub fn streaming_request<M: Message + Default>(
    request: Request,
    limit: usize,
) -> Result<tonic::Request<Messages<M>>, Status> {
    let (metadata, extensions, body) = request_parts(request)?;
    let messages = Messages::request(tonic::body::Body::new(body), limit);
    Ok(tonic::Request::from_parts(metadata, extensions, messages))
}

/// A request's metadata, extensions and body; an error when its messages
/// are compressed (the broker accepts none).
fn request_parts(request: Request) -> Result<(MetadataMap, http::Extensions, Body), Status> {
    if let Some(encoding) = request.headers().get(&GRPC_ENCODING)
        && encoding != "identity"
    {
        let mut status = Status::unimplemented(format!(
            "Content is compressed with `{}` which isn't supported",
            String::from_utf8_lossy(encoding.as_bytes())
        ));
        status
            .metadata_mut()
            .insert(GRPC_ACCEPT_ENCODING, "identity".parse().expect("ASCII"));
        return Err(status);
    }
    let (parts, body) = request.into_parts();
    Ok((
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        body,
    ))
}

/// Reads exactly one uncompressed message from a request body.
async fn read_message(mut body: Body, limit: usize) -> Result<Bytes, Status> {
    // Usually the whole message is the body's one DATA frame.
    if let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::from_error(Box::new(e)))?;
        if let Some(data) = frame.data_ref()
            && data.len() >= PREFIX_BYTES
            && http_body::Body::is_end_stream(&body)
        {
            let length = message_length(&data[..PREFIX_BYTES], limit)?;
            return match data.len() - PREFIX_BYTES {
                rest if rest == length => Ok(data.slice(PREFIX_BYTES..)),
                rest if rest < length => Err(unexpected_eof()),
                _ => Err(more_than_one()),
            };
        }
        return read_pieces(frame, body, limit).await;
    }
    Err(Status::internal("Missing request message."))
}

/// [`read_message`] for a body in pieces, from its first frame on.
async fn read_pieces(first: Frame<Bytes>, mut body: Body, limit: usize) -> Result<Bytes, Status> {
    let mut gathered = Gather::default();
    let mut next: Option<Result<Frame<Bytes>, axum::Error>> = Some(Ok(first));
    let mut length = None;
    let mut message = None;
    while let Some(frame) = next {
        let frame = frame.map_err(|e| Status::from_error(Box::new(e)))?;
        next = body.frame().await;
        // Request trailers carry nothing a broker.v1 call reads.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if message.is_some() {
            if data.is_empty() {
                continue;
            }
            return Err(more_than_one());
        }
        gathered.push(data);
        if length.is_none() && gathered.len() >= PREFIX_BYTES {
            length = Some(message_length(&gathered.take_up_to(PREFIX_BYTES), limit)?);
        }
        if let Some(length) = length
            && gathered.len() >= length
        {
            message = Some(gathered.take_up_to(length));
            if !gathered.is_empty() {
                return Err(more_than_one());
            }
        }
    }
    match message {
        Some(message) => Ok(message),
        None if length.is_none() && gathered.is_empty() => {
            Err(Status::internal("Missing request message."))
        }
        None => Err(unexpected_eof()),
    }
}

fn unexpected_eof() -> Status {
    Status::internal("Unexpected EOF decoding stream.")
}

fn more_than_one() -> Status {
    Status::internal("protocol error: a unary call sent more than one message")
}

/// A handler's answer as the HTTP response tonic's stubs would send: the
/// message in one DATA frame, then `grpc-status: 0`; an error as a
/// trailers-only response. `limit` bounds the message (OUT_OF_RANGE past it).
pub fn response<M: Message>(answer: Result<tonic::Response<M>, Status>, limit: usize) -> Response {
    let (metadata, message, extensions) = match answer {
        Ok(answer) => answer.into_parts(),
        Err(status) => return status.into_http(),
    };
    let length = message.encoded_len();
    let limit = limit.min(u32::MAX as usize);
    if length > limit {
        return Status::out_of_range(format!(
            "Error, encoded message length too large: found {length} bytes, the limit is: {limit} bytes"
        ))
        .into_http();
    }
    let body = Body::new(OneMessage {
        message: Some(codec::frame_of_length(&message, length)),
        trailers: true,
    });
    grpc_response(metadata, extensions, body)
}

/// A successful call's HTTP response: gRPC's content type, the handler's
/// response metadata as headers (less those gRPC reserves), and `body`.
pub fn grpc_response(metadata: MetadataMap, extensions: http::Extensions, body: Body) -> Response {
    let mut headers = metadata.into_headers();
    if !headers.is_empty() {
        for name in &RESERVED {
            headers.remove(name);
        }
    }
    headers.insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE.clone());
    let mut response = http::Response::new(body);
    *response.headers_mut() = headers;
    *response.extensions_mut() = extensions;
    response
}

/// A unary answer's body: its message, then the OK trailers.
struct OneMessage {
    message: Option<Bytes>,
    trailers: bool,
}

impl http_body::Body for OneMessage {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if std::mem::take(&mut self.trailers) {
            return Poll::Ready(Some(Ok(Frame::trailers(codec::ok_trailers()))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && !self.trailers
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.message.as_ref().map_or(0, |m| m.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::proto::{HeadObjectRequest, ObjectInfo};

    const LIMIT: usize = 1024;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut frame = vec![flag];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        frame
    }

    /// A request whose body arrives as `pieces`, one DATA frame each, and
    /// says it has ended only once the stream of pieces has.
    fn http_request(pieces: Vec<Vec<u8>>) -> Request {
        let stream = futures::stream::iter(
            pieces
                .into_iter()
                .map(|piece| Ok::<_, Infallible>(Frame::data(Bytes::from(piece)))),
        );
        with_body(Body::new(http_body_util::StreamBody::new(stream)))
    }

    fn with_body(body: Body) -> Request {
        http::Request::builder()
            .uri("/broker.v1.ObjectStore/HeadObject")
            .header("content-type", "application/grpc")
            .header("x-caller", "agent-7")
            .body(body)
            .unwrap()
    }

    /// Reads `pieces` as a request body; one piece is also read as a body
    /// that ends with its one frame (the usual case, read without gathering),
    /// which must come out the same.
    async fn read(pieces: Vec<Vec<u8>>) -> Result<tonic::Request<HeadObjectRequest>, Status> {
        let read = request(http_request(pieces.clone()), LIMIT).await;
        if let [piece] = &pieces[..] {
            let whole = with_body(Body::new(http_body_util::Full::new(Bytes::from(
                piece.clone(),
            ))));
            let whole = request::<HeadObjectRequest>(whole, LIMIT).await;
            match (&read, &whole) {
                (Ok(a), Ok(b)) => assert_eq!(a.get_ref(), b.get_ref()),
                (Err(a), Err(b)) => {
                    assert_eq!((a.code(), a.message()), (b.code(), b.message()));
                }
                _ => panic!("{pieces:?}: {read:?} against {whole:?}"),
            }
        }
        read
    }

    fn head(key: &str) -> Vec<u8> {
        HeadObjectRequest {
            key: key.into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[tokio::test]
    async fn a_message_is_read_whole_however_it_is_split() {
        let whole = framed(0, &head("reports/q3.pdf"));
        let request = read(vec![whole.clone()]).await.unwrap();
        assert_eq!(request.get_ref().key, "reports/q3.pdf");
        assert_eq!(request.metadata().get("x-caller").unwrap(), "agent-7");
        // An empty message (InitSchema's request) is five bytes of frame.
        let empty = read(vec![framed(0, &[])]).await.unwrap();
        assert_eq!(empty.get_ref(), &HeadObjectRequest::default());
        for split in [whole.len(), 1, 3, 5, 6, whole.len() - 1] {
            let (a, b) = whole.split_at(split);
            let request = read(vec![a.to_vec(), b.to_vec()]).await.unwrap();
            assert_eq!(request.get_ref().key, "reports/q3.pdf", "split at {split}");
            assert_eq!(request.metadata().get("x-caller").unwrap(), "agent-7");
        }
    }

    #[tokio::test]
    async fn bad_frames_get_tonics_errors() {
        let message = head("a");
        let cases: Vec<(Vec<Vec<u8>>, tonic::Code, &str)> = vec![
            (vec![], tonic::Code::Internal, "Missing request message."),
            (
                vec![framed(0, &message)[..4].to_vec()],
                tonic::Code::Internal,
                "Unexpected EOF",
            ),
            (
                vec![framed(0, &message)[..7].to_vec()],
                tonic::Code::Internal,
                "Unexpected EOF",
            ),
            (
                vec![framed(1, &message)],
                tonic::Code::Internal,
                "compressed-flag but no grpc-encoding",
            ),
            (
                vec![framed(2, &message)],
                tonic::Code::Internal,
                "invalid compression flag: 2",
            ),
            (
                vec![framed(0, &vec![0; LIMIT + 1])],
                tonic::Code::OutOfRange,
                "found 1025 bytes, the limit is: 1024 bytes",
            ),
            (
                vec![framed(0, &message), framed(0, &message)],
                tonic::Code::Internal,
                "more than one message",
            ),
            (
                vec![[framed(0, &message), framed(0, &message)].concat()],
                tonic::Code::Internal,
                "more than one message",
            ),
            (vec![framed(0, &[0xff])], tonic::Code::Internal, "decode"),
        ];
        for (pieces, code, wording) in cases {
            let status = read(pieces.clone()).await.unwrap_err();
            assert_eq!(status.code(), code, "{pieces:?}: {status:?}");
            assert!(status.message().contains(wording), "{pieces:?}: {status:?}");
        }
    }

    #[tokio::test]
    async fn compressed_requests_are_refused_as_tonic_does() {
        let mut compressed = http_request(vec![framed(1, &head("a"))]);
        compressed
            .headers_mut()
            .insert("grpc-encoding", HeaderValue::from_static("gzip"));
        let status = request::<HeadObjectRequest>(compressed, LIMIT)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().contains("`gzip`"), "{status:?}");
        assert_eq!(
            status.metadata().get("grpc-accept-encoding").unwrap(),
            "identity"
        );
        // "identity" is no compression at all.
        let mut identity = http_request(vec![framed(0, &head("a"))]);
        identity
            .headers_mut()
            .insert("grpc-encoding", HeaderValue::from_static("identity"));
        assert!(request::<HeadObjectRequest>(identity, LIMIT).await.is_ok());
    }

    #[tokio::test]
    async fn an_answer_is_one_message_then_the_ok_trailers() {
        let info = ObjectInfo {
            key: "reports/q3.pdf".into(),
            size: 42,
            ..Default::default()
        };
        let mut answer = tonic::Response::new(info.clone());
        answer
            .metadata_mut()
            .insert("x-served-by", "broker".parse().unwrap());
        // A handler cannot forge the status or the content type.
        answer
            .metadata_mut()
            .insert("grpc-status", "13".parse().unwrap());
        let response = response(Ok(answer), LIMIT);
        assert_eq!(response.status(), http::StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["x-served-by"], "broker");
        assert!(headers.get("grpc-status").is_none());
        let body = response.into_body().collect().await.unwrap();
        let trailers = body.trailers().cloned().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(
            body.to_bytes(),
            Bytes::from(framed(0, &info.encode_to_vec()))
        );
    }

    #[tokio::test]
    async fn errors_and_oversized_answers_are_trailers_only() {
        let failed = response::<ObjectInfo>(Err(Status::not_found("no such key: a")), LIMIT);
        assert_eq!(failed.headers()["grpc-status"], "5");
        assert_eq!(failed.headers()["grpc-message"], "no%20such%20key:%20a");
        assert_eq!(failed.headers()["content-type"], "application/grpc");
        assert!(
            failed
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );

        let big = ObjectInfo {
            key: "k".repeat(LIMIT),
            ..Default::default()
        };
        let refused = response(Ok(tonic::Response::new(big)), LIMIT);
        assert_eq!(
            refused.headers()["grpc-status"],
            (tonic::Code::OutOfRange as i32).to_string()
        );
    }
}

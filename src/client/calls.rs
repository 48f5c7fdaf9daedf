//! The client's calls, made on the transport directly. A unary call's
//! request message is encoded into one buffer and sent as one HTTP/2
//! request; the answer's one message is read whole, then decoded. PutObject
//! sends its body as the frames `objects.rs` makes, and GetObject's answer
//! is read message by message by [`Messages`](crate::codec::Messages).
//! tonic's client does the same through an interceptor, a codec, a
//! streaming encoder and a streaming decoder, and that cost the client
//! library about as many instructions per call as the HTTP/2 work itself,
//! plus a copy of every chunk (README, "Performance"). What goes on the
//! wire is the same: the headers tonic sends, and the answer is read as
//! tonic reads it (a status in the headers or the trailers, else one
//! inferred from the HTTP status, as gRPC's HTTP mapping says).

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method, Uri, header, uri::PathAndQuery};
use http_body_util::BodyExt;
use prost::Message;
use tonic::{Status, body::Body};
use tower::ServiceExt;

use super::transport::Transport;
use crate::codec::{self, GRPC_CONTENT_TYPE, GRPC_STATUS, PREFIX_BYTES as PREFIX, settled};

/// The methods the client calls this way.
pub mod paths {
    pub const LIST_OBJECTS: &str = "/broker.v1.ObjectStore/ListObjects";
    pub const HEAD_OBJECT: &str = "/broker.v1.ObjectStore/HeadObject";
    pub const GET_OBJECT: &str = "/broker.v1.ObjectStore/GetObject";
    pub const PUT_OBJECT: &str = "/broker.v1.ObjectStore/PutObject";
    pub const DELETE_OBJECT: &str = "/broker.v1.ObjectStore/DeleteObject";
    pub const QUERY: &str = "/broker.v1.Database/Query";
    pub const EXECUTE: &str = "/broker.v1.Database/Execute";
    pub const TRANSACTION: &str = "/broker.v1.Database/Transaction";
    pub const INIT_SCHEMA: &str = "/broker.v1.Database/InitSchema";
}

/// Sends `request` (its metadata as headers: the token, `grpc-timeout`) to
/// `path` and returns the answer's message, at most `max_bytes` long.
pub async fn call<M, R>(
    transport: Transport,
    path: &'static str,
    request: tonic::Request<M>,
    max_bytes: usize,
) -> Result<R, Status>
where
    M: Message,
    R: Message + Default,
{
    call_with_body(transport, path, framed(request), max_bytes).await
}

/// [`call`] for a request whose body is already gRPC's framed messages (a
/// client stream: PutObject's).
pub async fn call_with_body<R>(
    transport: Transport,
    path: &'static str,
    request: tonic::Request<Body>,
    max_bytes: usize,
) -> Result<R, Status>
where
    R: Message + Default,
{
    let answer = send_body(transport, path, request).await?;
    read(answer, max_bytes).await
}

/// Sends `request` to `path` as one framed message and returns the answer
/// as it begins: its headers, and its body still to be read.
pub async fn send<M: Message>(
    transport: Transport,
    path: &'static str,
    request: tonic::Request<M>,
) -> Result<http::Response<Body>, Status> {
    send_body(transport, path, framed(request)).await
}

/// `request` with its message framed as the body.
fn framed<M: Message>(request: tonic::Request<M>) -> tonic::Request<Body> {
    request.map(|message| Body::new(http_body_util::Full::new(codec::frame(&message))))
}

/// Sends `request`'s body to `path` with its metadata as headers (the
/// token, `grpc-timeout`) and gRPC's own.
async fn send_body(
    transport: Transport,
    path: &'static str,
    request: tonic::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    // The client's requests carry no extensions, only metadata.
    let (metadata, _, body) = request.into_parts();
    let mut http = http::Request::new(body);
    *http.method_mut() = Method::POST;
    *http.uri_mut() = Uri::from(PathAndQuery::from_static(path));
    let headers = http.headers_mut();
    *headers = metadata.into_headers();
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert(header::CONTENT_TYPE, GRPC_CONTENT_TYPE.clone());
    transport.oneshot(http).await.map_err(Status::from_error)
}

/// The answer's one message, or the status it carries.
async fn read<R: Message + Default>(
    answer: http::Response<Body>,
    max_bytes: usize,
) -> Result<R, Status> {
    let (parts, mut body) = answer.into_parts();
    // An answer without a message (an error, typically) comes as headers
    // only ("Trailers-Only"): they carry its status.
    if parts.headers.contains_key(&GRPC_STATUS) {
        settled(Some(&parts.headers), parts.status)?;
        return decode(Bytes::new());
    }
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > PREFIX + max_bytes {
                    return Err(Status::resource_exhausted(format!(
                        "the broker's answer is larger than the client accepts ({max_bytes} bytes)"
                    )));
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => {
                if let Ok(map) = frame.into_trailers() {
                    trailers = Some(map);
                }
            }
        }
    }
    settled(trailers.as_ref(), parts.status)?;
    decode(data.freeze())
}

/// The one message of a successful answer.
fn decode<R: Message + Default>(mut data: Bytes) -> Result<R, Status> {
    if data.len() < PREFIX {
        return Err(Status::internal(if data.is_empty() {
            "the broker's answer has no message".to_owned()
        } else {
            format!("the broker's answer is cut short ({} bytes)", data.len())
        }));
    }
    let compressed = data.get_u8();
    let length = data.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::internal(
            "the broker's answer is compressed, which the client did not ask for",
        ));
    }
    if data.len() != length {
        return Err(Status::internal(format!(
            "the broker's answer holds {} bytes after a message of {length} (one message expected)",
            data.len()
        )));
    }
    R::decode(data).map_err(|e| Status::internal(format!("decoding the broker's answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::InitSchemaResponse;
    use tonic::Code;

    fn framed(message: &impl Message) -> Bytes {
        codec::frame(message)
    }

    #[test]
    fn one_message_is_decoded() {
        let message = InitSchemaResponse {
            tables: vec!["documents".into()],
        };
        let decoded: InitSchemaResponse = decode(framed(&message)).unwrap();
        assert_eq!(decoded, message);
    }

    #[test]
    fn a_missing_cut_or_second_message_is_an_internal_error() {
        let message = framed(&InitSchemaResponse {
            tables: vec!["documents".into()],
        });
        let empty = decode::<InitSchemaResponse>(Bytes::new()).unwrap_err();
        assert_eq!(empty.code(), Code::Internal);
        assert!(empty.message().contains("no message"));
        let cut = decode::<InitSchemaResponse>(message.slice(..message.len() - 1)).unwrap_err();
        assert_eq!(cut.code(), Code::Internal);
        let mut two = BytesMut::from(&message[..]);
        two.extend_from_slice(&message);
        assert_eq!(
            decode::<InitSchemaResponse>(two.freeze())
                .unwrap_err()
                .code(),
            Code::Internal
        );
        let mut compressed = BytesMut::from(&message[..]);
        compressed[0] = 1;
        assert!(
            decode::<InitSchemaResponse>(compressed.freeze())
                .unwrap_err()
                .message()
                .contains("compressed")
        );
    }

    #[tokio::test]
    async fn a_headers_only_answer_carries_its_status() {
        let answer = |status: &'static str| {
            let mut answer = http::Response::new(Body::empty());
            answer
                .headers_mut()
                .insert("grpc-status", HeaderValue::from_static(status));
            answer
        };
        let refused = read::<InitSchemaResponse>(answer("7"), 1024).await;
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
        let empty = read::<InitSchemaResponse>(answer("0"), 1024)
            .await
            .unwrap_err();
        assert_eq!(empty.code(), Code::Internal);
        assert!(empty.message().contains("no message"), "{empty}");
    }
}

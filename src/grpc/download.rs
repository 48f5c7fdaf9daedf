//! GetObject's answer without tonic's encoder. tonic encodes each message
//! into a buffer of its own, which for a chunk is a copy of the chunk: a
//! 1 MiB GetObject copied every byte once more in the broker and held the
//! copy beside the chunk until HTTP/2 had sent it. Here a chunk goes out as
//! two DATA frames, its framing (gRPC's prefix and the Protobuf field's
//! header, a few bytes) and then the chunk's own buffer; smaller messages
//! (the object's metadata, a short body) as one buffer, as tonic sends
//! them. What a client receives is the same bytes as from tonic's stub:
//! the same messages, then `grpc-status: 0`, or the error as trailers.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::{body::Body, response::Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use prost::encoding::{self, WireType};
use tonic::Status;

use super::unary;
use crate::{
    codec::{self, GRPC_STATUS, PREFIX_BYTES},
    proto::{GetObjectResponse, get_object_response::Part},
};

/// The field number of `GetObjectResponse.chunk`.
const CHUNK_FIELD: u32 = 2;

/// Chunks at least this long go out as their own frame; copying a shorter
/// one next to its framing costs less than a frame.
const OWN_FRAME_BYTES: usize = 16 * 1024;

type Messages = Pin<Box<dyn Stream<Item = Result<GetObjectResponse, Status>> + Send>>;

/// The handler's answer as the HTTP response tonic's stub would send; an
/// error before the first message as a trailers-only response.
pub fn response(answer: Result<tonic::Response<Messages>, Status>) -> Response {
    match answer {
        Ok(answer) => {
            let (metadata, messages, extensions) = answer.into_parts();
            let body = Body::new(Download {
                messages,
                chunk: None,
                done: false,
            });
            unary::grpc_response(metadata, extensions, body)
        }
        Err(status) => status.into_http(),
    }
}

/// A GetObject answer's body: each message framed, then the trailers.
struct Download {
    messages: Messages,
    /// A chunk whose framing has gone out: the next frame.
    chunk: Option<Bytes>,
    /// The trailers have gone out.
    done: bool,
}

impl Download {
    /// The next frame of `message`, keeping a large chunk for the one after.
    fn frame(&mut self, message: GetObjectResponse) -> Bytes {
        match message.part {
            Some(Part::Chunk(chunk)) if chunk.len() >= OWN_FRAME_BYTES => {
                let head = chunk_head(chunk.len());
                self.chunk = Some(chunk);
                head
            }
            part => codec::frame(&GetObjectResponse { part }),
        }
    }
}

impl http_body::Body for Download {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunk.take() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(self.messages.poll_next_unpin(cx)) {
            Some(Ok(message)) => Frame::data(self.frame(message)),
            Some(Err(status)) => {
                self.done = true;
                Frame::trailers(trailers(&status))
            }
            None => {
                self.done = true;
                let mut ok = HeaderMap::with_capacity(1);
                ok.insert(GRPC_STATUS.clone(), HeaderValue::from_static("0"));
                Frame::trailers(ok)
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.chunk.is_none()
    }
}

/// The trailers that end a call with `status` part way through its body.
fn trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(3);
    if let Err(unsendable) = status.add_header(&mut trailers) {
        trailers.clear();
        let _ = unsendable.add_header(&mut trailers);
    }
    trailers
}

/// What precedes the bytes of a chunk of `length` bytes in the body: gRPC's
/// prefix of the message, then the Protobuf header of its `chunk` field.
fn chunk_head(length: usize) -> Bytes {
    let field = encoding::key_len(CHUNK_FIELD) + encoding::encoded_len_varint(length as u64);
    let mut head = BytesMut::with_capacity(PREFIX_BYTES + field);
    head.put_u8(0);
    head.put_u32((field + length) as u32);
    encoding::encode_key(CHUNK_FIELD, WireType::LengthDelimited, &mut head);
    encoding::encode_varint(length as u64, &mut head);
    head.freeze()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::proto::ObjectInfo;

    fn chunk(bytes: Bytes) -> GetObjectResponse {
        GetObjectResponse {
            part: Some(Part::Chunk(bytes)),
        }
    }

    /// The body of an answer of `messages`, as frames.
    async fn frames(messages: Vec<Result<GetObjectResponse, Status>>) -> Vec<Frame<Bytes>> {
        let stream: Messages = Box::pin(futures::stream::iter(messages));
        let mut body = response(Ok(tonic::Response::new(stream))).into_body();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap());
        }
        assert!(http_body::Body::is_end_stream(&body));
        frames
    }

    #[test]
    fn a_chunks_head_and_bytes_are_the_encoded_message() {
        for length in [0, 1, 127, 128, OWN_FRAME_BYTES, 1024 * 1024] {
            let bytes = Bytes::from(vec![7u8; length]);
            let mut framed = chunk_head(length).to_vec();
            framed.extend_from_slice(&bytes);
            assert_eq!(framed, codec::frame(&chunk(bytes)), "{length} bytes");
        }
    }

    #[tokio::test]
    async fn large_chunks_go_out_as_they_are_after_their_framing() {
        let info = GetObjectResponse {
            part: Some(Part::Info(ObjectInfo {
                key: "reports/q3.pdf".into(),
                size: 1024 * 1024 + 10,
                ..Default::default()
            })),
        };
        let large = Bytes::from(vec![1u8; 1024 * 1024]);
        let small = Bytes::from(vec![2u8; 10]);
        let frames = frames(vec![
            Ok(info.clone()),
            Ok(chunk(large.clone())),
            Ok(chunk(small.clone())),
        ])
        .await;
        let data: Vec<&Bytes> = frames.iter().filter_map(Frame::data_ref).collect();
        assert_eq!(data.len(), 4, "metadata, framing, large chunk, small chunk");
        assert_eq!(data[0], &codec::frame(&info));
        assert_eq!(data[1], &chunk_head(large.len()));
        assert_eq!(data[2].as_ptr(), large.as_ptr(), "the chunk is not copied");
        assert_eq!(data[3], &codec::frame(&chunk(small)));
        let trailers = frames.last().and_then(Frame::trailers_ref).unwrap();
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn an_error_part_way_ends_the_body_with_its_status() {
        let frames = frames(vec![
            Ok(chunk(Bytes::from_static(b"abc"))),
            Err(Status::unavailable("reading the body failed: reset")),
            Ok(chunk(Bytes::from_static(b"never sent"))),
        ])
        .await;
        assert_eq!(frames.len(), 2);
        let trailers = frames[1].trailers_ref().unwrap();
        assert_eq!(trailers["grpc-status"], "14");
        assert!(
            trailers["grpc-message"]
                .to_str()
                .unwrap()
                .contains("reading%20the%20body%20failed")
        );
    }

    #[tokio::test]
    async fn an_error_before_the_first_message_is_trailers_only() {
        let refused = response(Err(Status::not_found("no such key: a")));
        assert_eq!(refused.headers()["grpc-status"], "5");
        assert_eq!(refused.headers()["content-type"], "application/grpc");
    }
}

//! GetObject's answer without tonic's encoder. tonic's stub sends each
//! message from a buffer of its own, so a 1 MiB chunk gathered from S3's
//! pieces was copied once more, and HTTP/2 held that copy beside the
//! chunk until sent. Here a chunk goes out as two DATA frames, its framing
//! (gRPC's prefix and the Protobuf field's header, a few bytes) and then
//! the chunk's own buffer; a short message (the object's metadata, a small
//! body) as one buffer. What a client receives is what tonic's stub sends:
//! the metadata, chunks of 1 MiB (the last one shorter), then
//! `grpc-status: 0`, or an error as trailers.
//!
//! Tried and not kept: sending S3's pieces as they come under a message
//! length fixed from Content-Length, with no copy at all. It held a third
//! of the memory with 64 calls in flight, but HTTP/2 writes each DATA frame
//! of that size with a system call of its own: a dozen writes (and client
//! wake-ups) per MiB cost more CPU than the copy (docs/performance.md).

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use futures::StreamExt;
use http::HeaderMap;
use http_body::Frame;
use tonic::Status;

use super::{convert, unary};
use crate::{
    codec,
    object_store::{ByteStream, ObjectReader, rechunk},
    proto::{GetObjectResponse, get_object_response::Part},
};

/// The opened object as the HTTP response tonic's stub would send; an
/// error before the first message as a trailers-only response.
pub fn response(answer: Result<tonic::Response<ObjectReader>, Status>) -> Response {
    match answer {
        Ok(answer) => {
            let (metadata, reader, extensions) = answer.into_parts();
            unary::grpc_response(metadata, extensions, Body::new(Download::new(reader)))
        }
        Err(status) => status.into_http(),
    }
}

/// A GetObject answer's body: the metadata message, the chunk messages,
/// then the trailers.
struct Download {
    /// The metadata message, framed, until it has gone out.
    info: Option<Bytes>,
    chunks: ByteStream,
    /// A chunk whose framing has gone out: the next frame.
    chunk: Option<Bytes>,
    /// The trailers have gone out.
    done: bool,
}

impl Download {
    fn new(reader: ObjectReader) -> Self {
        let info = GetObjectResponse {
            part: Some(Part::Info(convert::object_info(reader.info))),
        };
        Self {
            info: Some(codec::frame(&info)),
            chunks: rechunk(reader.body, reader.length),
            chunk: None,
            done: false,
        }
    }

    /// The next frame of `chunk`'s message, keeping a large chunk for the
    /// frame after its framing.
    fn frame(&mut self, chunk: Bytes) -> Bytes {
        let (first, rest) = codec::chunk_frames(chunk);
        self.chunk = rest;
        first
    }
}

impl http_body::Body for Download {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.info.take().or_else(|| self.chunk.take()) {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(self.chunks.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => Frame::data(self.frame(chunk)),
            Some(Err(e)) => {
                self.done = true;
                Frame::trailers(trailers(&e.into()))
            }
            None => {
                self.done = true;
                Frame::trailers(codec::ok_trailers())
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.info.is_none() && self.chunk.is_none()
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use prost::Message;

    use super::*;
    use crate::object_store::{CHUNK_SIZE, ObjectInfo, ObjectStoreError};

    fn chunk(bytes: Bytes) -> GetObjectResponse {
        GetObjectResponse {
            part: Some(Part::Chunk(bytes)),
        }
    }

    fn reader(length: Option<u64>, pieces: Vec<Result<Bytes, ObjectStoreError>>) -> ObjectReader {
        ObjectReader {
            info: ObjectInfo {
                key: "reports/q3.pdf".into(),
                size: 42,
                ..Default::default()
            },
            length,
            body: Box::pin(futures::stream::iter(pieces)),
        }
    }

    /// The answer's DATA frames and its trailers.
    async fn answer(reader: ObjectReader) -> (Vec<Bytes>, HeaderMap) {
        let mut body = response(Ok(tonic::Response::new(reader))).into_body();
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = body.frame().await {
            match frame.unwrap().into_data() {
                Ok(bytes) => data.push(bytes),
                Err(frame) => trailers = Some(frame.into_trailers().unwrap()),
            }
        }
        assert!(http_body::Body::is_end_stream(&body));
        (data, trailers.expect("trailers end the body"))
    }

    /// The messages in the frames, as a gRPC client reads them.
    fn messages(frames: &[Bytes]) -> Vec<GetObjectResponse> {
        let mut bytes = frames.concat();
        let mut messages = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(bytes[0], 0, "uncompressed");
            let length = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
            messages.push(GetObjectResponse::decode(&bytes[5..5 + length]).unwrap());
            bytes.drain(..5 + length);
        }
        messages
    }

    /// The chunks' lengths after the metadata message, and their bytes.
    fn chunks(messages: &[GetObjectResponse]) -> (Vec<usize>, Vec<u8>) {
        assert!(matches!(messages[0].part, Some(Part::Info(_))));
        let mut body = Vec::new();
        let lengths = messages[1..]
            .iter()
            .map(|message| match &message.part {
                Some(Part::Chunk(chunk)) => {
                    body.extend_from_slice(chunk);
                    chunk.len()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        (lengths, body)
    }

    fn body_of(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// `body` cut into pieces of `sizes`, over and over.
    fn cut(body: &[u8], sizes: &[usize]) -> Vec<Result<Bytes, ObjectStoreError>> {
        let mut pieces = Vec::new();
        let mut rest = body;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, after) = rest.split_at((*size).min(rest.len()));
            pieces.push(Ok(Bytes::copy_from_slice(piece)));
            rest = after;
        }
        pieces
    }

    #[tokio::test]
    async fn the_body_goes_out_in_chunks_of_a_mib_whatever_the_pieces() {
        let body = body_of(2 * CHUNK_SIZE + 1000);
        for sizes in [&[CHUNK_SIZE + 7][..], &[87 * 1024, 3, 400 * 1024], &[1]] {
            for length in [Some(body.len() as u64), None] {
                let (frames, trailers) = answer(reader(length, cut(&body, sizes))).await;
                assert_eq!(trailers["grpc-status"], "0");
                let (lengths, received) = chunks(&messages(&frames));
                assert_eq!(
                    lengths,
                    [CHUNK_SIZE, CHUNK_SIZE, 1000],
                    "{sizes:?} {length:?}"
                );
                assert!(received == body, "{sizes:?} {length:?}");
            }
        }
        // An empty body: the metadata alone.
        let (frames, trailers) = answer(reader(Some(0), vec![])).await;
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(messages(&frames).len(), 1);
    }

    #[tokio::test]
    async fn a_chunk_goes_out_uncopied_after_its_framing_and_a_short_one_in_one_frame() {
        let large = Bytes::from(body_of(300 * 1024));
        let (frames, _) = answer(reader(Some(large.len() as u64), vec![Ok(large.clone())])).await;
        assert_eq!(frames.len(), 3, "metadata, framing, the chunk");
        assert_eq!(frames[1], codec::chunk_frames(large.clone()).0);
        assert_eq!(
            frames[2].as_ptr(),
            large.as_ptr(),
            "the chunk is not copied"
        );

        let small = Bytes::from_static(b"a short object");
        let (frames, _) = answer(reader(Some(small.len() as u64), vec![Ok(small.clone())])).await;
        assert_eq!(frames.len(), 2, "metadata, then the whole message");
        assert_eq!(frames[1], codec::frame(&chunk(small)));
    }

    #[tokio::test]
    async fn a_failure_part_way_ends_the_body_with_its_status() {
        let (_, trailers) = answer(reader(
            Some(10),
            vec![
                Ok(Bytes::from_static(b"abc")),
                Err(ObjectStoreError::Unavailable(
                    "reading the body failed: reset".into(),
                )),
                Ok(Bytes::from_static(b"defghij")),
            ],
        ))
        .await;
        assert_eq!(trailers["grpc-status"], "14");
        let message = trailers["grpc-message"].to_str().unwrap();
        assert!(
            message.contains("reading%20the%20body%20failed"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn an_error_before_the_first_message_is_trailers_only() {
        let refused = response(Err(Status::not_found("no such key: a")));
        assert_eq!(refused.headers()["grpc-status"], "5");
        assert_eq!(refused.headers()["content-type"], "application/grpc");
    }
}

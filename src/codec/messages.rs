//! A stream of gRPC messages read off a body as it arrives, without
//! tonic's decoder: GetObject's answer in the client library, PutObject's
//! request in the broker. tonic's `Streaming` copies every DATA frame into
//! a buffer of its own and decodes from there, so each 1 MiB chunk was
//! copied once more. Here the frames are kept as they arrive ([`Gather`])
//! and each message is decoded from them in place: a `bytes` field that
//! lies within one frame is handed on uncopied, and each end sends a large
//! chunk as a frame of its own after its framing
//! ([`chunk_frames`](super::chunk_frames)).
//!
//! What is checked is what tonic checks: each message's prefix (uncompressed,
//! within the size accepted: [`message_length`]), a body that does not end
//! part way through a message, and, for an answer, a status in its headers
//! (trailers-only) or an HTTP error at once and otherwise the status in the
//! trailers, else from the HTTP status ([`settled`]).

use std::{
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Buf;
use futures::Stream;
use http::HeaderMap;
use http_body::Body as _;
use prost::Message;
use tonic::{Status, body::Body};

use super::{GRPC_STATUS, PREFIX_BYTES, message_length, settled};
use crate::object_store::Gather;

/// The messages of one body, as they arrive.
pub struct Messages<M> {
    body: Body,
    received: Gather,
    /// The length of the message whose prefix has been read.
    next: Option<usize>,
    /// The longest message accepted.
    limit: usize,
    /// An answer's HTTP status, whose end carries the call's status; none
    /// for a request, which just ends.
    answer: Option<http::StatusCode>,
    trailers: Option<HeaderMap>,
    /// The body has ended (its trailers, if any, are in `trailers`).
    ended: bool,
    /// The last item (the end, or an error) has been given.
    done: bool,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message + Default> Messages<M> {
    /// An answer's messages, each at most `limit` long. Fails when the
    /// answer carries an error status in its headers or is an HTTP error.
    pub fn answer(answer: http::Response<Body>, limit: usize) -> Result<Self, Status> {
        let (parts, body) = answer.into_parts();
        // Headers only ("Trailers-Only"): the call's status, no messages.
        let trailers_only = parts.headers.contains_key(&GRPC_STATUS);
        if trailers_only || parts.status != http::StatusCode::OK {
            settled(Some(&parts.headers), parts.status)?;
        }
        Ok(Self {
            answer: Some(parts.status),
            trailers: trailers_only.then_some(parts.headers),
            ended: trailers_only,
            ..Self::request(body, limit)
        })
    }

    /// A request's messages, each at most `limit` long.
    pub fn request(body: Body, limit: usize) -> Self {
        Self {
            body,
            received: Gather::default(),
            next: None,
            limit,
            answer: None,
            trailers: None,
            ended: false,
            done: false,
            _message: PhantomData,
        }
    }

    /// The next whole message among the bytes received, if there is one.
    fn decoded(&mut self) -> Option<Result<M, Status>> {
        if self.next.is_none() && self.received.len() >= PREFIX_BYTES {
            let mut prefix = [0; PREFIX_BYTES];
            self.received.copy_to_slice(&mut prefix);
            match message_length(&prefix, self.limit) {
                Ok(length) => self.next = Some(length),
                Err(status) => return Some(Err(status)),
            }
        }
        let length = self.next.filter(|&length| self.received.len() >= length)?;
        self.next = None;
        Some(
            M::decode((&mut self.received).take(length))
                .map_err(|e| Status::internal(format!("decoding a streamed message: {e}"))),
        )
    }

    /// How the stream ended, once the body has: an error when it stopped
    /// part way through a message, and for an answer the status it carries.
    fn outcome(&self) -> Result<(), Status> {
        if let Some(http) = self.answer {
            settled(self.trailers.as_ref(), http)?;
        }
        if self.next.is_some() || !self.received.is_empty() {
            return Err(Status::internal(
                "the stream ended part way through a message",
            ));
        }
        Ok(())
    }
}

impl<M: Message + Default> Stream for Messages<M> {
    type Item = Result<M, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(message) = self.decoded() {
                self.done = message.is_err();
                return Poll::Ready(Some(message));
            }
            if self.ended {
                self.done = true;
                return Poll::Ready(self.outcome().err().map(Err));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.received.push(data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                    }
                },
                Some(Err(status)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => self.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::StreamExt;
    use http::HeaderValue;
    use http_body::Frame;
    use tonic::Code;

    use super::*;
    use crate::{
        codec,
        proto::{GetObjectResponse, ObjectInfo, get_object_response::Part},
    };

    fn info() -> GetObjectResponse {
        GetObjectResponse {
            part: Some(Part::Info(ObjectInfo {
                key: "reports/q3.pdf".into(),
                size: 300_000,
                ..Default::default()
            })),
        }
    }

    fn chunk(bytes: Bytes) -> GetObjectResponse {
        GetObjectResponse {
            part: Some(Part::Chunk(bytes)),
        }
    }

    fn status_trailers(code: &'static str) -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static(code));
        trailers
    }

    /// An answer whose body is `frames`, then `trailers` if given.
    fn answer(frames: Vec<Bytes>, trailers: Option<HeaderMap>) -> http::Response<Body> {
        let frames = frames
            .into_iter()
            .map(|data| Ok(Frame::data(data)))
            .chain(trailers.map(|t| Ok(Frame::trailers(t))));
        let body = http_body_util::StreamBody::new(futures::stream::iter(
            frames.collect::<Vec<Result<Frame<Bytes>, Status>>>(),
        ));
        http::Response::new(Body::new(body))
    }

    async fn read_all(
        answer: http::Response<Body>,
        max_bytes: usize,
    ) -> Result<Vec<Result<GetObjectResponse, Status>>, Status> {
        Ok(Messages::answer(answer, max_bytes)?.collect().await)
    }

    /// `message` framed, cut after the chunk field's header the way the
    /// broker sends a large chunk: its framing, then its bytes.
    fn as_the_broker_sends(bytes: &Bytes) -> [Bytes; 2] {
        let framed = codec::frame(&chunk(bytes.clone()));
        let head = framed.len() - bytes.len();
        [framed.slice(..head), bytes.clone()]
    }

    #[tokio::test]
    async fn messages_are_read_across_any_frames_and_large_chunks_are_not_copied() {
        let large = Bytes::from(vec![9u8; 300 * 1024]);
        let small = Bytes::from_static(b"the rest");
        let mut frames = vec![codec::frame(&info())];
        frames.extend(as_the_broker_sends(&large));
        // A message split at every byte: prefix, field header and bytes.
        frames.extend(
            codec::frame(&chunk(small.clone()))
                .chunks(1)
                .map(Bytes::copy_from_slice),
        );
        let messages = read_all(answer(frames, Some(status_trailers("0"))), 1 << 20)
            .await
            .unwrap();
        let messages: Vec<_> = messages.into_iter().map(Result::unwrap).collect();
        assert_eq!(messages, [info(), chunk(large.clone()), chunk(small)]);
        let Some(Part::Chunk(received)) = &messages[1].part else {
            unreachable!()
        };
        assert_eq!(received.as_ptr(), large.as_ptr(), "the frame itself");
    }

    #[tokio::test]
    async fn the_status_in_the_trailers_ends_the_messages() {
        let frames = vec![codec::frame(&info())];
        let mut trailers = status_trailers("14");
        trailers.insert(
            "grpc-message",
            HeaderValue::from_static("reading%20the%20body%20failed"),
        );
        let messages = read_all(answer(frames, Some(trailers)), 1024)
            .await
            .unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].as_ref().unwrap(), &info());
        let failed = messages[1].as_ref().unwrap_err();
        assert_eq!(failed.code(), Code::Unavailable);
        assert_eq!(failed.message(), "reading the body failed");

        let missing = read_all(answer(vec![codec::frame(&info())], None), 1024)
            .await
            .unwrap();
        assert_eq!(
            missing[1].as_ref().unwrap_err().code(),
            Code::Internal,
            "no grpc-status at the end"
        );
    }

    #[tokio::test]
    async fn a_body_cut_part_way_through_a_message_is_an_error_not_a_short_one() {
        let framed = codec::frame(&chunk(Bytes::from(vec![1u8; 100])));
        for cut in [3, PREFIX_BYTES, framed.len() - 1] {
            let messages = read_all(
                answer(vec![framed.slice(..cut)], Some(status_trailers("0"))),
                1024,
            )
            .await
            .unwrap();
            assert_eq!(messages.len(), 1, "cut at {cut}");
            let failed = messages[0].as_ref().unwrap_err();
            assert_eq!(failed.code(), Code::Internal);
            assert!(failed.message().contains("part way"), "{failed}");
        }
    }

    #[tokio::test]
    async fn oversized_compressed_or_undecodable_messages_end_the_call() {
        let framed = codec::frame(&chunk(Bytes::from(vec![1u8; 100])));
        let too_long = read_all(answer(vec![framed.clone()], None), 50)
            .await
            .unwrap();
        assert_eq!(too_long.len(), 1, "nothing after the error");
        assert_eq!(too_long[0].as_ref().unwrap_err().code(), Code::OutOfRange);

        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        let compressed = read_all(answer(vec![compressed.into()], None), 1024)
            .await
            .unwrap();
        assert!(
            compressed[0]
                .as_ref()
                .unwrap_err()
                .message()
                .contains("compressed")
        );

        let garbage = Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]);
        let garbage = read_all(answer(vec![garbage], None), 1024).await.unwrap();
        assert_eq!(garbage[0].as_ref().unwrap_err().code(), Code::Internal);
    }

    #[tokio::test]
    async fn an_error_in_the_headers_or_the_http_status_fails_the_call_at_once() {
        let mut refused = answer(vec![], None);
        refused
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_static("5"));
        let refused = read_all(refused, 1024).await.unwrap_err();
        assert_eq!(refused.code(), Code::NotFound);

        let mut unavailable = answer(vec![Bytes::from_static(b"<html>")], None);
        *unavailable.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        let unavailable = read_all(unavailable, 1024).await.unwrap_err();
        assert_eq!(unavailable.code(), Code::Unavailable);

        // A trailers-only answer with status 0: no messages, no error.
        let mut empty = answer(vec![], None);
        empty
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_static("0"));
        assert!(read_all(empty, 1024).await.unwrap().is_empty());
    }
}

//! The Protobuf codec of the broker.v1 stubs, client and server: prost, with
//! a small first buffer per call. tonic's default allocates 8 KiB for each
//! call's request and again for its response; a Query and its answer are
//! usually a few hundred bytes, and on glibc an allocation that size also
//! makes the allocator sweep its free lists first. Buffers still grow to
//! the message (a 1 MiB chunk, a large result set).
//!
//! Also what both ends use for the calls they make without tonic's codec
//! (`client/calls.rs`, `grpc/unary.rs`, `grpc/download.rs`): gRPC's framing
//! of one message and of an object chunk, the check of a message's prefix,
//! the status an answer ends with, and streams of messages decoded in
//! place as they arrive ([`Messages`]).

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::encoding::{self, WireType};
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec},
};
use tonic_prost::ProstCodec;

mod messages;
pub use messages::Messages;

/// The prefix before each gRPC message: a compression flag and four bytes
/// of length.
pub const PREFIX_BYTES: usize = 5;

/// The header (or trailer) carrying a call's status, as a name built once
/// (a `&str` key is parsed again on every lookup).
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The trailers of a call that succeeded: `grpc-status: 0`.
pub fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert(GRPC_STATUS.clone(), HeaderValue::from_static("0"));
    trailers
}

/// gRPC's content type.
pub static GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");

/// `message` with its prefix, uncompressed, in one buffer.
pub fn frame(message: &impl prost::Message) -> Bytes {
    frame_of_length(message, message.encoded_len())
}

/// [`frame`] for a message whose encoded length the caller has already
/// worked out (a message's `encoded_len` walks all of its fields).
pub fn frame_of_length(message: &impl prost::Message, length: usize) -> Bytes {
    let mut frame = BytesMut::with_capacity(PREFIX_BYTES + length);
    frame.put_u8(0);
    frame.put_u32(length as u32);
    message.encode_raw(&mut frame);
    frame.freeze()
}

/// The field number of the `chunk` bytes field of both GetObjectResponse
/// and PutObjectRequest.
const CHUNK_FIELD: u32 = 2;

/// Chunks at least this long go out as a DATA frame of their own; copying
/// a shorter one next to its framing costs less than a frame.
const OWN_FRAME_BYTES: usize = 16 * 1024;

/// The longest framing of a chunk: gRPC's prefix, the field's key and a
/// length of up to five bytes of varint.
const MAX_CHUNK_HEAD_BYTES: usize = PREFIX_BYTES + 1 + 5;

/// The message holding `chunk` as its `chunk` field (a GetObjectResponse
/// or a PutObjectRequest), framed, as the DATA frames to send: a short
/// chunk in one buffer with its framing; a long one as its framing (gRPC's
/// prefix and the field's header, a few bytes), then the chunk's own
/// buffer, uncopied (HTTP/2 writes the two with one `writev`).
pub fn chunk_frames(chunk: Bytes) -> (Bytes, Option<Bytes>) {
    let mut head = BytesMut::with_capacity(
        MAX_CHUNK_HEAD_BYTES
            + if chunk.len() < OWN_FRAME_BYTES {
                chunk.len()
            } else {
                0
            },
    );
    let length = chunk.len();
    let field = encoding::key_len(CHUNK_FIELD) + encoding::encoded_len_varint(length as u64);
    head.put_u8(0);
    head.put_u32((field + length) as u32);
    encoding::encode_key(CHUNK_FIELD, WireType::LengthDelimited, &mut head);
    encoding::encode_varint(length as u64, &mut head);
    if length < OWN_FRAME_BYTES {
        head.extend_from_slice(&chunk);
        return (head.freeze(), None);
    }
    (head.freeze(), Some(chunk))
}

/// The message length a frame's prefix announces, checked as tonic does.
pub fn message_length(prefix: &[u8], limit: usize) -> Result<usize, Status> {
    match prefix[0] {
        0 => {}
        1 => {
            return Err(Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ));
        }
        flag => {
            return Err(Status::internal(format!(
                "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1), while sending request"
            )));
        }
    }
    let length = u32::from_be_bytes(prefix[1..PREFIX_BYTES].try_into().expect("4 bytes")) as usize;
    if length > limit {
        return Err(Status::out_of_range(format!(
            "Error, decoded message length too large: found {length} bytes, the limit is: {limit} bytes"
        )));
    }
    Ok(length)
}

/// The call's outcome from its trailers, or from the HTTP status when they
/// carry none (gRPC's HTTP-to-gRPC status mapping, as tonic applies it).
pub fn settled(trailers: Option<&HeaderMap>, http: http::StatusCode) -> Result<(), Status> {
    // Success is read off directly: a `Status` copies the trailers.
    if trailers
        .and_then(|t| t.get(&GRPC_STATUS))
        .is_some_and(|code| code == "0")
    {
        return Ok(());
    }
    if let Some(status) = trailers.and_then(Status::from_header_map) {
        return match status.code() {
            Code::Ok => Ok(()),
            _ => Err(status),
        };
    }
    let code = match http {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        http::StatusCode::OK => Code::Internal,
        _ => Code::Unknown,
    };
    let detail = match http {
        http::StatusCode::OK => "the answer ended without a grpc-status".to_owned(),
        other => format!("HTTP status {other} from the broker, without a grpc-status"),
    };
    Err(Status::new(code, detail))
}

/// First size of a call's encode and decode buffers.
const FIRST_BUFFER_BYTES: usize = 512;

/// Encoded messages are handed to HTTP/2 once this much is buffered (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(FIRST_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

/// [`ProstCodec`] with [`FIRST_BUFFER_BYTES`]; `build.rs` names it as the
/// generated stubs' codec.
pub struct BrokerCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for BrokerCodec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> Codec for BrokerCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{get_object_response, put_object_request};

    #[test]
    fn a_chunks_frames_are_the_framed_message_and_a_long_chunk_is_not_copied() {
        for length in [
            0,
            1,
            127,
            128,
            OWN_FRAME_BYTES - 1,
            OWN_FRAME_BYTES,
            1 << 20,
        ] {
            let chunk = Bytes::from(vec![7u8; length]);
            let (first, rest) = chunk_frames(chunk.clone());
            let mut sent = first.to_vec();
            if let Some(rest) = &rest {
                assert_eq!(rest.as_ptr(), chunk.as_ptr(), "{length} bytes: not copied");
                assert!(first.len() <= MAX_CHUNK_HEAD_BYTES);
                sent.extend_from_slice(rest);
            }
            assert_eq!(rest.is_some(), length >= OWN_FRAME_BYTES, "{length} bytes");
            let download = crate::proto::GetObjectResponse {
                part: Some(get_object_response::Part::Chunk(chunk.clone())),
            };
            let upload = crate::proto::PutObjectRequest {
                part: Some(put_object_request::Part::Chunk(chunk)),
            };
            assert_eq!(sent, frame(&download), "{length} bytes");
            assert_eq!(sent, frame(&upload), "{length} bytes");
        }
    }

    #[test]
    fn the_status_comes_from_trailers_or_else_the_http_status() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("5"));
        trailers.insert("grpc-message", HeaderValue::from_static("no%20such%20key"));
        let status = settled(Some(&trailers), http::StatusCode::OK).unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no such key");
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(settled(Some(&trailers), http::StatusCode::OK).is_ok());
        assert_eq!(
            settled(None, http::StatusCode::OK).unwrap_err().code(),
            Code::Internal
        );
        assert_eq!(
            settled(None, http::StatusCode::SERVICE_UNAVAILABLE)
                .unwrap_err()
                .code(),
            Code::Unavailable
        );
        assert_eq!(
            settled(None, http::StatusCode::NOT_FOUND)
                .unwrap_err()
                .code(),
            Code::Unimplemented
        );
        assert_eq!(
            settled(None, http::StatusCode::IM_A_TEAPOT)
                .unwrap_err()
                .code(),
            Code::Unknown
        );
    }
}

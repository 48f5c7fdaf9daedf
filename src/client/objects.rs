//! Object bodies on the client side: a download as a stream of chunks, and
//! uploads from any byte stream, re-cut into chunks of at most 1 MiB.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body::Frame;

use super::error::{ClientError, Result};
use crate::{
    codec::{self, Messages},
    object_store::{CHUNK_SIZE, Gather},
    proto::{
        self, GetObjectResponse, PutObjectHeader, PutObjectRequest, get_object_response,
        put_object_request,
    },
};

/// Content type and user metadata of an upload.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub metadata: std::collections::HashMap<String, String>,
}

impl PutOptions {
    pub fn content_type(content_type: impl Into<String>) -> Self {
        Self {
            content_type: Some(content_type.into()),
            ..Self::default()
        }
    }
}

/// How far an upload has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub sent: u64,
    /// The body's size when known (files).
    pub total: Option<u64>,
}

/// A download: the object's metadata, then its body as chunks.
pub struct ObjectReader {
    info: proto::ObjectInfo,
    body: Messages<GetObjectResponse>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ObjectReader {
    /// Reads the metadata message that opens every GetObject stream.
    pub(crate) async fn open(mut body: Messages<GetObjectResponse>) -> Result<Self> {
        match body.next().await.transpose()? {
            Some(GetObjectResponse {
                part: Some(get_object_response::Part::Info(info)),
            }) => Ok(Self { info, body }),
            _ => Err(ClientError::Decode(
                "GetObject did not start with the object's metadata".into(),
            )),
        }
    }

    /// Size (of the whole object), etag, content type, metadata.
    pub fn info(&self) -> &proto::ObjectInfo {
        &self.info
    }

    /// The whole body in memory; fails with `RESOURCE_EXHAUSTED` past
    /// `max_bytes` rather than growing without bound.
    pub async fn bytes(mut self, max_bytes: usize) -> Result<Bytes> {
        // A body of one chunk is handed on as it is; several are joined once.
        let mut body = Gather::default();
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > max_bytes {
                return Err(tonic::Status::resource_exhausted(format!(
                    "object {:?} is larger than the {max_bytes} bytes allowed in memory; stream it instead",
                    self.info.key
                ))
                .into());
            }
            body.push(chunk);
        }
        Ok(body.take_all())
    }

    /// Writes the body to `path` (created or truncated); returns the bytes written.
    pub async fn write_to(mut self, path: &std::path::Path) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let context = || format!("writing {}", path.display());
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| ClientError::io(context(), e))?;
        let mut written = 0;
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            file.write_all(&chunk)
                .await
                .map_err(|e| ClientError::io(context(), e))?;
            written += chunk.len() as u64;
        }
        file.flush()
            .await
            .map_err(|e| ClientError::io(context(), e))?;
        Ok(written)
    }
}

impl Stream for ObjectReader {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return match self.body.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(GetObjectResponse {
                    part: Some(get_object_response::Part::Chunk(chunk)),
                }))) => Poll::Ready(Some(Ok(chunk))),
                // Anything else mid-body is ignored, as the contract allows.
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(status.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

/// PutObject's request body: the header message, then `body` in chunk
/// messages of at most [`CHUNK_SIZE`], each as its DATA frames
/// ([`codec::chunk_frames`]: a long chunk goes out as the body's own
/// buffer, uncopied). A body error is sent on `failure` and the body never
/// ends cleanly (a clean end would complete the upload): the caller then
/// drops the call, the broker sees it cancelled and aborts the upload.
pub(crate) fn put_body<S>(
    header: PutObjectHeader,
    body: S,
    failure: tokio::sync::oneshot::Sender<std::io::Error>,
    mut progress: impl FnMut(u64) + Send + 'static,
) -> tonic::body::Body
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let header = codec::frame(&PutObjectRequest {
        part: Some(put_object_request::Part::Header(header)),
    });
    let frames = async_stream::stream! {
        yield header;
        let mut body = std::pin::pin!(body);
        let mut sent = 0u64;
        while let Some(next) = body.next().await {
            let mut data = match next {
                Ok(data) => data,
                Err(e) => {
                    let _ = failure.send(e);
                    futures::future::pending::<()>().await;
                    return;
                }
            };
            while !data.is_empty() {
                let chunk = data.split_to(data.len().min(CHUNK_SIZE));
                sent += chunk.len() as u64;
                let (first, rest) = codec::chunk_frames(chunk);
                yield first;
                if let Some(rest) = rest {
                    yield rest;
                }
                progress(sent);
            }
        }
    };
    let frames = frames.map(|data| Ok::<_, tonic::Status>(Frame::data(data)));
    tonic::body::Body::new(http_body_util::StreamBody::new(frames))
}

/// A file as a stream of chunks.
pub(crate) fn file_chunks(
    file: tokio::fs::File,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    tokio_util_like::reader_stream(file)
}

/// A small reader stream (tokio-util's ReaderStream, without the dependency).
mod tokio_util_like {
    use bytes::{Bytes, BytesMut};
    use futures::Stream;
    use tokio::io::{AsyncRead, AsyncReadExt};

    pub fn reader_stream<R: AsyncRead + Unpin + Send + 'static>(
        mut reader: R,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        async_stream::try_stream! {
            loop {
                let mut buffer = BytesMut::with_capacity(super::CHUNK_SIZE);
                while buffer.len() < super::CHUNK_SIZE {
                    if reader.read_buf(&mut buffer).await? == 0 {
                        break;
                    }
                }
                if buffer.is_empty() {
                    break;
                }
                yield buffer.freeze();
            }
        }
    }
}

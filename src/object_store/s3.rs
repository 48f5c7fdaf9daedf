//! [`S3Store`]: the object store over the S3 protocol (AWS S3, or any
//! S3-compatible server through `S3_ENDPOINT_URL`).

use std::collections::HashMap;

use aws_sdk_s3::{
    Client,
    config::{
        BehaviorVersion, Region, RequestChecksumCalculation, StalledStreamProtectionConfig,
        retry::RetryConfig, timeout::TimeoutConfig,
    },
    primitives::{ByteStream as SdkByteStream, DateTime as SdkDateTime},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryFutureExt};

use super::{
    ByteRange, ByteStream, DEFAULT_MAX_KEYS, ListRequest, NewObject, ObjectInfo, ObjectPage,
    ObjectReader, ObjectStoreError, PutResult, Result, upload::Upload, validate_bucket,
    validate_key, validate_metadata, validate_prefix,
};
use super::{gather::Parts, upload::PendingUploads};
use crate::{
    config::S3Config,
    resilience::{
        Guard,
        Idempotency::{Idempotent, Once},
        ResilienceConfig,
    },
};

/// The object store over one S3 endpoint, with a default bucket.
#[derive(Clone)]
pub struct S3Store {
    pub(super) client: Client,
    /// Whether uploads' bodies are hashed into their signature
    /// ([`S3Config::signs_bodies`]).
    pub(super) sign_bodies: bool,
    default_bucket: String,
    part_size: usize,
    pub(super) guard: Guard,
    pub(super) uploads: PendingUploads,
}

impl S3Store {
    /// Builds the S3 client from the AWS credential chain (environment,
    /// profile, ECS task role, IMDS) and `config`.
    pub async fn from_config(config: &S3Config, resilience: &ResilienceConfig) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.aws_region.clone()));
        if let Some(credentials) = &config.static_credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                &credentials.access_key_id,
                &credentials.secret_access_key,
                None,
                None,
                "static",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            // TLS already protects the body; checksums only where S3 demands them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            // The guard retries (idempotent calls only, within budget and deadline).
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .operation_attempt_timeout(config.attempt_timeout)
                    .build(),
            )
            // A body that stops flowing for the read timeout fails instead
            // of holding the stream until its deadline. (The SDK's own
            // read_timeout would also cover sending an upload's body.)
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(config.read_timeout)
                    .build(),
            );
        if let Some(endpoint) = &config.s3_endpoint_url {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Self {
            client: Client::from_conf(builder.build()),
            sign_bodies: config.signs_bodies(),
            default_bucket: config.bucket().to_owned(),
            part_size: config.part_size_mib * 1024 * 1024,
            guard: Guard::new("s3", resilience),
            uploads: PendingUploads::default(),
        }
    }

    /// The bucket used when a request names none.
    pub fn default_bucket(&self) -> &str {
        &self.default_bucket
    }

    /// The bucket a request means: its own, or the default.
    fn bucket<'a>(&'a self, requested: &'a str) -> Result<&'a str> {
        if requested.is_empty() {
            if self.default_bucket.is_empty() {
                return Err(ObjectStoreError::InvalidArgument(
                    "no bucket named and no default bucket configured (S3_BUCKET)".into(),
                ));
            }
            Ok(&self.default_bucket)
        } else {
            validate_bucket(requested)?;
            Ok(requested)
        }
    }

    /// Lists one page of keys under a prefix.
    pub async fn list(&self, request: &ListRequest) -> Result<ObjectPage> {
        let bucket = self.bucket(&request.bucket)?;
        validate_prefix(&request.prefix)?;
        let max_keys = match request.max_keys {
            0 => DEFAULT_MAX_KEYS,
            n if (1..=DEFAULT_MAX_KEYS).contains(&n) => n,
            n => {
                return Err(ObjectStoreError::InvalidArgument(format!(
                    "max_keys must be between 0 and {DEFAULT_MAX_KEYS}, got {n}"
                )));
            }
        };
        let token = Some(request.continuation_token.clone()).filter(|t| !t.is_empty());
        let output = self
            .guard
            .call("ListObjects", Idempotent, || {
                self.client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&request.prefix)
                    .max_keys(max_keys)
                    .set_continuation_token(token.clone())
                    .send()
                    .map_err(|e| ObjectStoreError::from_sdk(e, bucket, ""))
            })
            .await?;
        let objects = output
            .contents()
            .iter()
            .map(|object| ObjectInfo {
                key: object.key().unwrap_or_default().to_owned(),
                size: object.size().unwrap_or_default(),
                etag: unquote(object.e_tag()),
                last_modified: object.last_modified().and_then(to_chrono),
                ..ObjectInfo::default()
            })
            .collect();
        let next_continuation_token = output
            .is_truncated()
            .unwrap_or(false)
            .then(|| output.next_continuation_token().map(str::to_owned))
            .flatten();
        Ok(ObjectPage {
            objects,
            next_continuation_token,
        })
    }

    /// Returns an object's metadata.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo> {
        let bucket = self.bucket(bucket)?;
        validate_key(key)?;
        let output = self
            .guard
            .call("HeadObject", Idempotent, || {
                self.client
                    .head_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .map_err(|e| ObjectStoreError::from_sdk(e, bucket, key))
            })
            .await?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: output.content_length().unwrap_or_default(),
            etag: unquote(output.e_tag()),
            content_type: output.content_type().unwrap_or_default().to_owned(),
            last_modified: output.last_modified().and_then(to_chrono),
            metadata: output.metadata().cloned().unwrap_or_default(),
        })
    }

    /// Opens an object (or a range of it) for reading. The body streams from
    /// S3 as it is read; it is never held whole.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectReader> {
        let bucket = self.bucket(bucket)?;
        validate_key(key)?;
        let range_header = match range {
            None
            | Some(ByteRange {
                offset: 0,
                length: 0,
            }) => None,
            Some(ByteRange { offset, length: 0 }) => Some(format!("bytes={offset}-")),
            Some(ByteRange { offset, length }) => {
                let last = offset.checked_add(length - 1).ok_or_else(|| {
                    ObjectStoreError::InvalidArgument("range offset + length overflows".into())
                })?;
                Some(format!("bytes={offset}-{last}"))
            }
        };
        let output = self
            .guard
            .call("GetObject", Idempotent, || {
                self.client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .set_range(range_header.clone())
                    .send()
                    .map_err(|e| ObjectStoreError::from_sdk(e, bucket, key))
            })
            .await?;
        // In a ranged read the total size is the part of Content-Range after '/'.
        let size = match (&range_header, output.content_range()) {
            (Some(_), Some(content_range)) => content_range
                .rsplit_once('/')
                .and_then(|(_, total)| total.parse().ok())
                .ok_or_else(|| {
                    ObjectStoreError::Internal(format!(
                        "unreadable Content-Range {content_range:?}"
                    ))
                })?,
            _ => output.content_length().unwrap_or_default(),
        };
        let info = ObjectInfo {
            key: key.to_owned(),
            size,
            etag: unquote(output.e_tag()),
            content_type: output.content_type().unwrap_or_default().to_owned(),
            last_modified: output.last_modified().and_then(to_chrono),
            metadata: output.metadata().cloned().unwrap_or_default(),
        };
        let length = output.content_length().and_then(|n| u64::try_from(n).ok());
        Ok(ObjectReader {
            info,
            length,
            body: pieces(output.body),
        })
    }

    /// Uploads a body of any size: small bodies in one PutObject, larger ones
    /// as a multipart upload of `part_size` parts. If `body` fails or this
    /// future is dropped, the multipart upload is aborted and no object appears.
    pub async fn put<S>(&self, object: NewObject, body: S) -> Result<PutResult>
    where
        S: Stream<Item = Result<Bytes>> + Send,
    {
        let bucket = self.bucket(&object.bucket)?.to_owned();
        validate_key(&object.key)?;
        validate_metadata(&object.metadata)?;
        let NewObject {
            key,
            content_type,
            metadata,
            ..
        } = object;
        let content_type = Some(content_type).filter(|c| !c.is_empty());
        let metadata = Some(metadata).filter(|m| !m.is_empty());

        let mut body = std::pin::pin!(body);
        let mut parts = Parts::new(self.part_size);
        let mut size: u64 = 0;
        let mut upload: Option<Upload> = None;
        while let Some(piece) = body.next().await {
            let mut piece = match piece {
                Ok(piece) => piece,
                Err(e) => {
                    if let Some(upload) = upload.take() {
                        upload.abort().await;
                    }
                    return Err(e);
                }
            };
            size += piece.len() as u64;
            while !piece.is_empty() {
                let Some(part) = parts.fill(&mut piece) else {
                    continue;
                };
                let current = match &mut upload {
                    Some(current) => current,
                    None => upload.insert(
                        Upload::start(
                            self,
                            bucket.clone(),
                            key.clone(),
                            content_type.clone(),
                            metadata.clone(),
                        )
                        .await?,
                    ),
                };
                current.upload_part(part.clone()).await?;
                parts.reuse(part);
            }
        }

        let etag = match upload {
            Some(mut upload) => {
                if !parts.is_empty() {
                    upload.upload_part(parts.take_rest()).await?;
                }
                upload.complete().await?
            }
            None => {
                let body = parts.take_rest();
                let output = self
                    .guard
                    .call("PutObject", Once, || {
                        let request = self
                            .client
                            .put_object()
                            .bucket(&bucket)
                            .key(&key)
                            .set_content_type(content_type.clone())
                            .set_metadata(metadata.clone())
                            .body(SdkByteStream::from(body.clone()))
                            .customize();
                        if self.sign_bodies {
                            request
                        } else {
                            request.disable_payload_signing()
                        }
                        .send()
                        .map_err(|e| ObjectStoreError::from_sdk(e, &bucket, &key))
                    })
                    .await?;
                unquote(output.e_tag())
            }
        };
        Ok(PutResult {
            key,
            size: size as i64,
            etag,
        })
    }

    /// Deletes an object; a missing key is not an error.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let bucket = self.bucket(bucket)?;
        validate_key(key)?;
        let deleted = self
            .guard
            .call("DeleteObject", Once, || {
                self.client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .map_err(|e| ObjectStoreError::from_sdk(e, bucket, key))
            })
            .await;
        match deleted {
            Ok(_) | Err(ObjectStoreError::NoSuchKey { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Checks that the default bucket is reachable (for health probes).
    pub async fn probe(&self) -> Result<()> {
        let bucket = self.bucket("")?;
        self.guard
            .call("HeadBucket", Once, || {
                self.client
                    .head_bucket()
                    .bucket(bucket)
                    .send()
                    .map_err(|e| ObjectStoreError::from_sdk(e, bucket, ""))
            })
            .await
            .map(drop)
    }

    /// Aborts every multipart upload still in progress (at shutdown, once
    /// the drain is over), so that no parts are left behind in the bucket.
    pub async fn abort_pending_uploads(&self) {
        self.uploads.abort_all(&self.client).await;
    }
}

/// An S3 body as the stream of its pieces, errors made the store's.
fn pieces(mut body: SdkByteStream) -> ByteStream {
    Box::pin(async_stream::try_stream! {
        while let Some(piece) = body.next().await {
            yield piece.map_err(|e| ObjectStoreError::Unavailable(format!("reading the body failed: {e}")))?;
        }
    })
}

/// ETags without S3's surrounding quotes.
pub(super) fn unquote(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_owned()
}

fn to_chrono(time: &SdkDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

/// User metadata as S3 wants it.
pub(super) type Metadata = Option<HashMap<String, String>>;

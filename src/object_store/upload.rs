//! A multipart upload that cannot leak: it is aborted when it fails, when it
//! is dropped before completion (a cancelled client stream drops it), and at
//! shutdown (every upload in progress is registered in [`PendingUploads`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use aws_sdk_s3::{
    Client,
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use bytes::Bytes;
use futures::TryFutureExt;

use super::{ObjectStoreError, Result, s3::Metadata, s3::unquote};
use crate::resilience::{Guard, Idempotency::Once};

/// Multipart uploads in progress: upload id → (bucket, key).
#[derive(Clone, Default)]
pub(super) struct PendingUploads(Arc<Mutex<HashMap<String, (String, String)>>>);

impl PendingUploads {
    fn insert(&self, upload_id: &str, bucket: &str, key: &str) {
        self.lock()
            .insert(upload_id.to_owned(), (bucket.to_owned(), key.to_owned()));
    }

    fn remove(&self, upload_id: &str) {
        self.lock().remove(upload_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Aborts every registered upload.
    pub(super) async fn abort_all(&self, client: &Client) {
        let pending: Vec<_> = self.lock().drain().collect();
        for (upload_id, (bucket, key)) in pending {
            abort(client, &bucket, &key, &upload_id).await;
        }
    }
}

/// A multipart upload in progress.
pub(super) struct Upload {
    client: Client,
    guard: Guard,
    pending: PendingUploads,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    finished: bool,
}

impl Upload {
    /// Starts an upload. The start runs in a task of its own: if the caller
    /// goes away while S3 is creating the upload, the task still receives
    /// the upload id and drops the [`Upload`], which aborts it, so no upload
    /// is left behind whatever moment the client chooses to cancel.
    pub(super) async fn start(
        client: Client,
        guard: Guard,
        pending: PendingUploads,
        bucket: String,
        key: String,
        content_type: Option<String>,
        metadata: Metadata,
    ) -> Result<Self> {
        let task = tokio::spawn(async move {
            let output = guard
                .call("CreateMultipartUpload", Once, || {
                    client
                        .create_multipart_upload()
                        .bucket(&bucket)
                        .key(&key)
                        .set_content_type(content_type.clone())
                        .set_metadata(metadata.clone())
                        .send()
                        .map_err(|e| ObjectStoreError::from_sdk(e, &bucket, &key))
                })
                .await?;
            let upload_id = output
                .upload_id()
                .ok_or_else(|| ObjectStoreError::Internal("S3 returned no upload id".into()))?
                .to_owned();
            tracing::debug!(bucket, key, upload_id, "multipart upload started");
            pending.insert(&upload_id, &bucket, &key);
            Ok(Self {
                client,
                guard,
                pending,
                bucket,
                key,
                upload_id,
                parts: Vec::new(),
                finished: false,
            })
        });
        task.await
            .map_err(|e| ObjectStoreError::Internal(format!("starting the upload failed: {e}")))?
    }

    /// Uploads the next part; on failure the whole upload is aborted.
    pub(super) async fn upload_part(&mut self, body: Bytes) -> Result<()> {
        let part_number = self.parts.len() as i32 + 1;
        let result = self
            .guard
            .call("UploadPart", Once, || {
                self.client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .upload_id(&self.upload_id)
                    .part_number(part_number)
                    .body(ByteStream::from(body.clone()))
                    .send()
                    .map_err(|e| ObjectStoreError::from_sdk(e, &self.bucket, &self.key))
            })
            .await;
        match result {
            Ok(output) => {
                self.parts.push(
                    CompletedPart::builder()
                        .part_number(part_number)
                        .set_e_tag(output.e_tag().map(str::to_owned))
                        .build(),
                );
                Ok(())
            }
            Err(error) => {
                self.abort_in_place().await;
                Err(error)
            }
        }
    }

    /// Completes the upload and returns the object's ETag.
    pub(super) async fn complete(mut self) -> Result<String> {
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(std::mem::take(&mut self.parts)))
            .build();
        let result = self
            .guard
            .call("CompleteMultipartUpload", Once, || {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .upload_id(&self.upload_id)
                    .multipart_upload(parts.clone())
                    .send()
                    .map_err(|e| ObjectStoreError::from_sdk(e, &self.bucket, &self.key))
            })
            .await;
        match result {
            Ok(output) => {
                self.finished = true;
                self.pending.remove(&self.upload_id);
                Ok(unquote(output.e_tag()))
            }
            Err(error) => {
                self.abort_in_place().await;
                Err(error)
            }
        }
    }

    /// Aborts the upload: S3 discards the parts.
    pub(super) async fn abort(mut self) {
        self.abort_in_place().await;
    }

    async fn abort_in_place(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.pending.remove(&self.upload_id);
        abort(&self.client, &self.bucket, &self.key, &self.upload_id).await;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Dropped mid-way: the client went away. Abort in the background.
        self.pending.remove(&self.upload_id);
        let (client, bucket, key, upload_id) = (
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { abort(&client, &bucket, &key, &upload_id).await });
        }
    }
}

/// Aborts one upload; cleanup bypasses the breaker, since it must be tried.
async fn abort(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => tracing::info!(bucket, key, upload_id, "multipart upload aborted"),
        Err(e) => tracing::warn!(
            bucket,
            key,
            upload_id,
            error = %ObjectStoreError::from_sdk(e, bucket, key),
            "aborting a multipart upload failed; a bucket lifecycle rule will clean it up"
        ),
    }
}

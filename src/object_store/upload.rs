//! A multipart upload that cannot leak: it is aborted when it fails, when it
//! is dropped before completion (a cancelled client stream drops it; the
//! abort waits for the part in flight), and at shutdown (every upload in
//! progress is registered in [`PendingUploads`], which then refuses new ones).

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

use aws_sdk_s3::operation::upload_part::UploadPartOutput;
use tokio::task::JoinHandle;

use super::{ObjectStoreError, Result, S3Store, s3::Metadata, s3::unquote};
use crate::resilience::{Guard, Idempotency::Once, deadline};

/// Multipart uploads in progress; closed at shutdown.
#[derive(Clone, Default)]
pub(super) struct PendingUploads(Arc<Mutex<Registry>>);

#[derive(Default)]
struct Registry {
    /// Upload id → (bucket, key, held while one of its parts is being sent).
    uploads: HashMap<String, (String, String, Sending)>,
    closed: bool,
}

/// Held while a part is in flight, so that an abort can wait for it.
type Sending = Arc<tokio::sync::Mutex<()>>;

impl PendingUploads {
    /// Registers an upload; `None` once closed (the caller must abort it:
    /// nobody would at shutdown).
    fn insert(&self, upload_id: &str, bucket: &str, key: &str) -> Option<Sending> {
        let mut registry = self.lock();
        if registry.closed {
            return None;
        }
        let sending = Sending::default();
        registry.uploads.insert(
            upload_id.to_owned(),
            (bucket.to_owned(), key.to_owned(), sending.clone()),
        );
        Some(sending)
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn remove(&self, upload_id: &str) {
        self.lock().uploads.remove(upload_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses new uploads and parts, then aborts every registered upload
    /// once its part in flight (if any) has landed.
    pub(super) async fn abort_all(&self, client: &Client) {
        let pending: Vec<_> = {
            let mut registry = self.lock();
            registry.closed = true;
            registry.uploads.drain().collect()
        };
        for (upload_id, (bucket, key, sending)) in pending {
            let _sent = sending.lock().await;
            abort(client, &bucket, &key, &upload_id).await;
        }
    }
}

/// A multipart upload in progress.
pub(super) struct Upload {
    client: Client,
    sign_bodies: bool,
    guard: Guard,
    pending: PendingUploads,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    sending: Sending,
    /// The part being sent. It runs in a task of its own, so that an
    /// abort after a cancel waits for it: a part that lands after the
    /// abort would stay in the bucket.
    in_flight: Option<JoinHandle<Result<UploadPartOutput>>>,
    finished: bool,
}

impl Upload {
    /// Starts an upload. The start runs in a task of its own: if the caller
    /// goes away while S3 is creating the upload, the task still receives
    /// the upload id and drops the [`Upload`], which aborts it, so no upload
    /// is left behind whatever moment the client chooses to cancel.
    pub(super) async fn start(
        store: &S3Store,
        bucket: String,
        key: String,
        content_type: Option<String>,
        metadata: Metadata,
    ) -> Result<Self> {
        let (client, sign_bodies) = (store.client.clone(), store.sign_bodies);
        let (guard, pending) = (store.guard.clone(), store.uploads.clone());
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
            let Some(sending) = pending.insert(&upload_id, &bucket, &key) else {
                abort(&client, &bucket, &key, &upload_id).await;
                return Err(shutting_down());
            };
            Ok(Self {
                client,
                sign_bodies,
                guard,
                pending,
                bucket,
                key,
                upload_id,
                parts: Vec::new(),
                sending,
                in_flight: None,
                finished: false,
            })
        });
        task.await
            .map_err(|e| ObjectStoreError::Internal(format!("starting the upload failed: {e}")))?
    }

    /// Uploads the next part; on failure the whole upload is aborted.
    pub(super) async fn upload_part(&mut self, body: Bytes) -> Result<()> {
        let part_number = self.parts.len() as i32 + 1;
        let (client, guard) = (self.client.clone(), self.guard.clone());
        let sign_bodies = self.sign_bodies;
        let (bucket, key, upload_id) = (
            self.bucket.clone(),
            self.key.clone(),
            self.upload_id.clone(),
        );
        let (sending, pending) = (self.sending.clone(), self.pending.clone());
        let left = deadline::remaining();
        let send = async move {
            let _sending = sending.lock_owned().await;
            // Checked under the lock: a shutdown abort waits for this part,
            // or this part sees the shutdown.
            if pending.is_closed() {
                return Err(shutting_down());
            }
            let attempt = guard.call("UploadPart", Once, || {
                let request = client
                    .upload_part()
                    .bucket(&bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(part_number)
                    .body(ByteStream::from(body.clone()))
                    .customize();
                if sign_bodies {
                    request
                } else {
                    request.disable_payload_signing()
                }
                .send()
                .map_err(|e| ObjectStoreError::from_sdk(e, &bucket, &key))
            });
            match left {
                Some(left) => deadline::scope(left, attempt).await,
                None => attempt.await,
            }
        };
        let task = self.in_flight.insert(tokio::spawn(send));
        let result = task.await.unwrap_or_else(|e| {
            Err(ObjectStoreError::Internal(format!(
                "uploading a part failed: {e}"
            )))
        });
        self.in_flight = None;
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
        // Dropped mid-way: the client went away. Abort in the background,
        // once the part in flight (if any) has landed.
        self.pending.remove(&self.upload_id);
        let (client, bucket, key, upload_id, in_flight) = (
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
            self.in_flight.take(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(part) = in_flight {
                    let _ = part.await;
                }
                abort(&client, &bucket, &key, &upload_id).await
            });
        }
    }
}

fn shutting_down() -> ObjectStoreError {
    ObjectStoreError::Unavailable("the broker is shutting down; the upload was stopped".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_registry_refuses_new_uploads() {
        let pending = PendingUploads::default();
        assert!(pending.insert("u1", "b", "k").is_some());
        pending.remove("u1");
        // Nothing registered: closing makes no S3 call.
        let client = Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .build(),
        );
        pending.abort_all(&client).await;
        assert!(pending.is_closed());
        assert!(pending.insert("u2", "b", "k").is_none());
        assert!(pending.lock().uploads.is_empty());
    }
}

//! A multipart upload that cannot leak: it is aborted when it fails and when
//! it is dropped before completion (a cancelled client stream drops it).

use aws_sdk_s3::{
    Client,
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use bytes::Bytes;

use super::{ObjectStoreError, Result, s3::Metadata, s3::unquote};

/// A multipart upload in progress.
pub(super) struct Upload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    finished: bool,
}

impl Upload {
    pub(super) async fn start(
        client: Client,
        bucket: &str,
        key: &str,
        content_type: Option<String>,
        metadata: Metadata,
    ) -> Result<Self> {
        let output = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .set_content_type(content_type)
            .set_metadata(metadata)
            .send()
            .await
            .map_err(|e| ObjectStoreError::from_sdk(e, bucket, key))?;
        let upload_id = output
            .upload_id()
            .ok_or_else(|| ObjectStoreError::Internal("S3 returned no upload id".into()))?
            .to_owned();
        tracing::debug!(bucket, key, upload_id, "multipart upload started");
        Ok(Self {
            client,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id,
            parts: Vec::new(),
            finished: false,
        })
    }

    /// Uploads the next part; on failure the whole upload is aborted.
    pub(super) async fn upload_part(&mut self, body: Bytes) -> Result<()> {
        let part_number = self.parts.len() as i32 + 1;
        let result = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(part_number)
            .body(ByteStream::from(body))
            .send()
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
            Err(e) => {
                let error = ObjectStoreError::from_sdk(e, &self.bucket, &self.key);
                self.abort_in_place().await;
                Err(error)
            }
        }
    }

    /// Completes the upload and returns the object's ETag.
    pub(super) async fn complete(mut self) -> Result<String> {
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(output) => {
                self.finished = true;
                Ok(unquote(output.e_tag()))
            }
            Err(e) => {
                let error = ObjectStoreError::from_sdk(e, &self.bucket, &self.key);
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
        abort(&self.client, &self.bucket, &self.key, &self.upload_id).await;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Dropped mid-way: the client went away. Abort in the background.
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

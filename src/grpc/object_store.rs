//! `broker.v1.ObjectStore` over [`S3Store`].

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::{
    audit, auth,
    object_store::{
        ByteRange, ListRequest, NewObject, ObjectReader, ObjectStoreError, S3Store, rechunk,
    },
    proto::{self, object_store_server::ObjectStore},
};

/// The ObjectStore gRPC service.
#[derive(Clone)]
pub struct ObjectStoreService {
    store: S3Store,
}

impl ObjectStoreService {
    pub fn new(store: S3Store) -> Self {
        Self { store }
    }

    /// Notes the call's target for the audit trail, then checks it against
    /// the caller's grant: `key` is the key or listing prefix.
    fn authorize<T>(&self, request: &Request<T>, bucket: &str, key: &str) -> Result<(), Status> {
        audit::note_target(request, || audit::object_target(bucket, key));
        let bucket = other_bucket(self.store.default_bucket(), bucket);
        auth::caller(request)?.check_object(bucket, key)
    }

    /// GetObject up to its body: the caller's right to the key checked,
    /// the range checked, the object opened. The answer's messages are
    /// framed by [`download`](super::download) (or, through tonic's stub,
    /// by [`ObjectStore::get_object`]).
    pub async fn open_object(
        &self,
        request: Request<proto::GetObjectRequest>,
    ) -> Result<ObjectReader, Status> {
        self.authorize(&request, &request.get_ref().bucket, &request.get_ref().key)?;
        let request = request.into_inner();
        let range = match request.range {
            None => None,
            Some(proto::ByteRange { offset, length }) if offset < 0 || length < 0 => {
                return Err(Status::invalid_argument(
                    "range offset and length must not be negative",
                ));
            }
            Some(range) => Some(ByteRange {
                offset: range.offset as u64,
                length: range.length as u64,
            }),
        };
        Ok(self.store.get(&request.bucket, &request.key, range).await?)
    }

    /// PutObject, whatever decodes its messages: tonic's stub or
    /// [`Messages`](crate::codec::Messages) (`grpc/services.rs`).
    pub async fn upload<S>(
        &self,
        request: Request<S>,
    ) -> Result<Response<proto::PutObjectResponse>, Status>
    where
        S: Stream<Item = Result<proto::PutObjectRequest, Status>> + Send + Unpin + 'static,
    {
        use proto::put_object_request::Part;
        let caller = auth::caller(&request)?.clone();
        let facts = request.extensions().get::<audit::CallFacts>().cloned();
        let mut messages = request.into_inner();
        let header = match messages.next().await.transpose()? {
            Some(proto::PutObjectRequest {
                part: Some(Part::Header(header)),
            }) => header,
            _ => {
                return Err(Status::invalid_argument(
                    "the first PutObject message must be a header",
                ));
            }
        };
        if let Some(facts) = facts {
            facts.set_target(audit::object_target(&header.bucket, &header.key));
        }
        caller.check_object(
            other_bucket(self.store.default_bucket(), &header.bucket),
            &header.key,
        )?;
        let body = messages.map(|message| match message {
            Ok(proto::PutObjectRequest {
                part: Some(Part::Chunk(chunk)),
            }) => Ok(chunk),
            Ok(_) => Err(ObjectStoreError::InvalidArgument(
                "only the first PutObject message may be a header; the rest must be chunks".into(),
            )),
            // A message over the size limit: the client's to fix.
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                Err(ObjectStoreError::OutOfRange(status.message().to_owned()))
            }
            Err(status) => Err(ObjectStoreError::Cancelled(status.message().to_owned())),
        });
        let object = NewObject {
            bucket: header.bucket,
            key: header.key,
            content_type: header.content_type,
            metadata: header.metadata,
        };
        let result = self.store.put(object, body).await?;
        Ok(Response::new(convert::put_result(result)))
    }
}

type GetObjectStream = Pin<Box<dyn Stream<Item = Result<proto::GetObjectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ObjectStore for ObjectStoreService {
    async fn list_objects(
        &self,
        request: Request<proto::ListObjectsRequest>,
    ) -> Result<Response<proto::ListObjectsResponse>, Status> {
        self.authorize(
            &request,
            &request.get_ref().bucket,
            &request.get_ref().prefix,
        )?;
        let request = request.into_inner();
        let page = self
            .store
            .list(&ListRequest {
                bucket: request.bucket,
                prefix: request.prefix,
                max_keys: request.max_keys,
                continuation_token: request.continuation_token,
            })
            .await?;
        Ok(Response::new(proto::ListObjectsResponse {
            objects: page.objects.into_iter().map(convert::object_info).collect(),
            next_continuation_token: page.next_continuation_token.unwrap_or_default(),
        }))
    }

    async fn head_object(
        &self,
        request: Request<proto::HeadObjectRequest>,
    ) -> Result<Response<proto::ObjectInfo>, Status> {
        self.authorize(&request, &request.get_ref().bucket, &request.get_ref().key)?;
        let request = request.into_inner();
        let info = self.store.head(&request.bucket, &request.key).await?;
        Ok(Response::new(convert::object_info(info)))
    }

    type GetObjectStream = GetObjectStream;

    async fn get_object(
        &self,
        request: Request<proto::GetObjectRequest>,
    ) -> Result<Response<GetObjectStream>, Status> {
        use proto::get_object_response::Part;
        let reader = self.open_object(request).await?;
        let info = proto::GetObjectResponse {
            part: Some(Part::Info(convert::object_info(reader.info))),
        };
        let chunks = rechunk(reader.body, reader.length).map(|chunk| {
            Ok(proto::GetObjectResponse {
                part: Some(Part::Chunk(chunk?)),
            })
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(info) }).chain(chunks),
        )))
    }

    async fn put_object(
        &self,
        request: Request<Streaming<proto::PutObjectRequest>>,
    ) -> Result<Response<proto::PutObjectResponse>, Status> {
        self.upload(request).await
    }

    async fn delete_object(
        &self,
        request: Request<proto::DeleteObjectRequest>,
    ) -> Result<Response<proto::DeleteObjectResponse>, Status> {
        self.authorize(&request, &request.get_ref().bucket, &request.get_ref().key)?;
        let request = request.into_inner();
        self.store.delete(&request.bucket, &request.key).await?;
        Ok(Response::new(proto::DeleteObjectResponse {}))
    }
}

/// The bucket a request names, or "" when it names the default one: naming
/// the default bucket explicitly needs no extra grant.
fn other_bucket<'a>(default_bucket: &str, bucket: &'a str) -> &'a str {
    if bucket == default_bucket { "" } else { bucket }
}

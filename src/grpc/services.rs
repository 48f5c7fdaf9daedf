//! The broker.v1 services as one tower service that picks the service by
//! the request path's prefix. Every agent call takes this path, so it goes
//! without a router: axum's routing cost a path match, a clone of the route
//! and two boxed futures per call, twice (the router around the call steps
//! and the one inside them), about a tenth of the broker's CPU for a
//! `select 1` (README, "Performance").

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use axum::{body::Body, extract::Request, response::Response};
use futures::{
    TryFutureExt,
    future::{BoxFuture, MapOk},
};
use tower::Service;

use super::{DATABASE_SERVICE, DatabaseService, OBJECT_STORE_SERVICE, ObjectStoreService};
use crate::{
    database::Database,
    object_store::S3Store,
    proto::{database_server::DatabaseServer, object_store_server::ObjectStoreServer},
};

/// Largest gRPC message accepted or sent (a PutObject chunk plus framing).
/// Query's answers are bounded by the broker's row and byte caps instead.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024 + 1024;

/// `broker.v1.ObjectStore` and `broker.v1.Database`.
#[derive(Clone)]
pub struct BrokerServices {
    object_store: ObjectStoreServer<ObjectStoreService>,
    database: DatabaseServer<DatabaseService>,
}

impl BrokerServices {
    pub fn new(store: S3Store, db: Database) -> Self {
        Self {
            object_store: ObjectStoreServer::new(ObjectStoreService::new(store))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            database: DatabaseServer::new(DatabaseService::new(db))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(usize::MAX),
        }
    }

    /// Whether a request for `path` is one of these services' (a method
    /// they do not have included: they answer it with UNIMPLEMENTED).
    pub fn serves(path: &str) -> bool {
        Which::of(path).is_some()
    }
}

/// Which of the two services a path names.
#[derive(Clone, Copy)]
enum Which {
    ObjectStore,
    Database,
}

impl Which {
    fn of(path: &str) -> Option<Self> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if method.is_empty() || method.contains('/') {
            return None;
        }
        match service {
            OBJECT_STORE_SERVICE => Some(Self::ObjectStore),
            DATABASE_SERVICE => Some(Self::Database),
            _ => None,
        }
    }
}

type Answer = http::Response<tonic::body::Body>;

impl Service<Request> for BrokerServices {
    type Response = Response;
    type Error = Infallible;
    type Future = MapOk<BoxFuture<'static, Result<Answer, Infallible>>, fn(Answer) -> Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // tonic's servers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let answer = match Which::of(request.uri().path()) {
            Some(Which::ObjectStore) => self.object_store.call(request),
            Some(Which::Database) => self.database.call(request),
            None => {
                let path = request.uri().path();
                let status = tonic::Status::unimplemented(format!("unknown method {path}"));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        };
        answer.map_ok(|answer| answer.map(Body::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_picked_by_the_path() {
        assert!(BrokerServices::serves("/broker.v1.Database/Query"));
        assert!(BrokerServices::serves("/broker.v1.ObjectStore/GetObject"));
        // A method the service lacks is still its to refuse.
        assert!(BrokerServices::serves("/broker.v1.Database/DropEverything"));
        for other in [
            "/broker.v1.Database/",
            "/broker.v1.Database",
            "/broker.v1.Database/Query/extra",
            "/broker.v1.Databases/Query",
            "/grpc.health.v1.Health/Check",
            "/health",
            "",
        ] {
            assert!(!BrokerServices::serves(other), "{other}");
        }
    }
}

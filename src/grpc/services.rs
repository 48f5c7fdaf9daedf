//! The broker.v1 services as one tower service that picks the service by
//! the request path's prefix. Every agent call takes this path, so it goes
//! without a router: axum's routing cost a path match, a clone of the route
//! and two boxed futures per call, twice (the router around the call steps
//! and the one inside them), about a tenth of the broker's CPU for a
//! `select 1` (README, "Performance"). Unary methods and PutObject are
//! served by [`unary`](super::unary), GetObject's answer by
//! [`download`](super::download); tonic's stubs answer unknown methods.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{body::Body, extract::Request, response::Response};
use futures::{
    TryFutureExt,
    future::{BoxFuture, Either, MapOk},
};
use prost::Message;
use tonic::Status;
use tower::Service;

use super::{
    DATABASE_SERVICE, DatabaseService, OBJECT_STORE_SERVICE, ObjectStoreService, download, unary,
};
use crate::{
    database::Database,
    object_store::S3Store,
    proto::{
        database_server::{Database as _, DatabaseServer},
        object_store_server::{ObjectStore as _, ObjectStoreServer},
    },
};

/// Largest gRPC message accepted or sent (a PutObject chunk plus framing).
/// Query's answers are bounded by the broker's row and byte caps instead.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024 + 1024;

/// `broker.v1.ObjectStore` and `broker.v1.Database`: the unary methods and
/// PutObject by [`unary`], GetObject's answer by [`download`], unknown
/// methods by tonic's stubs, over the same handlers.
#[derive(Clone)]
pub struct BrokerServices {
    object_store: Arc<ObjectStoreService>,
    database: Arc<DatabaseService>,
    object_store_stub: ObjectStoreServer<ObjectStoreService>,
    database_stub: DatabaseServer<DatabaseService>,
}

impl BrokerServices {
    pub fn new(store: S3Store, db: Database) -> Self {
        let object_store = Arc::new(ObjectStoreService::new(store));
        let database = Arc::new(DatabaseService::new(db));
        Self {
            object_store_stub: ObjectStoreServer::from_arc(Arc::clone(&object_store))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            database_stub: DatabaseServer::from_arc(Arc::clone(&database))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(usize::MAX),
            object_store,
            database,
        }
    }

    /// Whether a request for `path` is one of these services' (a method
    /// they do not have included: they answer it with UNIMPLEMENTED).
    pub fn serves(path: &str) -> bool {
        Which::of(path).is_some()
    }
}

/// Which of the two services a path names, and the method.
#[derive(Clone, Copy)]
enum Which<'a> {
    ObjectStore(&'a str),
    Database(&'a str),
}

impl<'a> Which<'a> {
    fn of(path: &'a str) -> Option<Self> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if method.is_empty() || method.contains('/') {
            return None;
        }
        match service {
            OBJECT_STORE_SERVICE => Some(Self::ObjectStore(method)),
            DATABASE_SERVICE => Some(Self::Database(method)),
            _ => None,
        }
    }
}

/// A handler of a unary method, as the service traits declare it.
type Handler<S, Req, Resp> =
    for<'a> fn(&'a S, tonic::Request<Req>) -> BoxFuture<'a, Result<tonic::Response<Resp>, Status>>;

/// Serves one unary call with `handler` (see [`unary`]).
fn serve_unary<S, Req, Resp>(
    service: &Arc<S>,
    request: Request,
    handler: Handler<S, Req, Resp>,
    answer_limit: usize,
) -> Unary
where
    S: Send + Sync + 'static,
    Req: Message + Default + Send + 'static,
    Resp: Message + 'static,
{
    serve(service, request, handler, move |answer| {
        unary::response(answer, answer_limit)
    })
}

/// Serves a call of one request message with `handler`, its answer sent
/// by `respond`.
fn serve<S, Req, Resp>(
    service: &Arc<S>,
    request: Request,
    handler: Handler<S, Req, Resp>,
    respond: impl FnOnce(Result<tonic::Response<Resp>, Status>) -> Response + Send + 'static,
) -> Unary
where
    S: Send + Sync + 'static,
    Req: Message + Default + Send + 'static,
    Resp: 'static,
{
    let service = Arc::clone(service);
    Box::pin(async move {
        let answer = match unary::request(request, MAX_MESSAGE_BYTES).await {
            Ok(request) => handler(&service, request).await,
            Err(status) => Err(status),
        };
        Ok(respond(answer))
    })
}

type Unary = BoxFuture<'static, Result<Response, Infallible>>;
type Answer = http::Response<tonic::body::Body>;
type Streaming = MapOk<BoxFuture<'static, Result<Answer, Infallible>>, fn(Answer) -> Response>;

impl Service<Request> for BrokerServices {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Unary, Streaming>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // tonic's servers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let (store, db) = (&self.object_store, &self.database);
        let unary = match Which::of(request.uri().path()) {
            Some(Which::Database("Query")) => {
                serve_unary(db, request, |s, r| s.query(r), usize::MAX)
            }
            Some(Which::Database("Execute")) => {
                serve_unary(db, request, |s, r| s.execute(r), usize::MAX)
            }
            Some(Which::Database("Transaction")) => {
                serve_unary(db, request, |s, r| s.transaction(r), usize::MAX)
            }
            Some(Which::Database("InitSchema")) => {
                serve_unary(db, request, |s, r| s.init_schema(r), usize::MAX)
            }
            Some(Which::ObjectStore("HeadObject")) => {
                serve_unary(store, request, |s, r| s.head_object(r), MAX_MESSAGE_BYTES)
            }
            Some(Which::ObjectStore("ListObjects")) => {
                serve_unary(store, request, |s, r| s.list_objects(r), MAX_MESSAGE_BYTES)
            }
            Some(Which::ObjectStore("DeleteObject")) => {
                serve_unary(store, request, |s, r| s.delete_object(r), MAX_MESSAGE_BYTES)
            }
            Some(Which::ObjectStore("GetObject")) => serve(
                store,
                request,
                |s, r| Box::pin(s.open_object(r).map_ok(tonic::Response::new)),
                download::response,
            ),
            Some(Which::ObjectStore("PutObject")) => {
                let store = Arc::clone(store);
                Box::pin(async move {
                    let answer = match unary::streaming_request(request, MAX_MESSAGE_BYTES) {
                        Ok(request) => store.upload(request).await,
                        Err(status) => Err(status),
                    };
                    Ok(unary::response(answer, MAX_MESSAGE_BYTES))
                })
            }
            Some(Which::ObjectStore(_)) => {
                return Either::Right(
                    self.object_store_stub
                        .call(request)
                        .map_ok(boxed as fn(Answer) -> Response),
                );
            }
            Some(Which::Database(_)) => {
                return Either::Right(
                    self.database_stub
                        .call(request)
                        .map_ok(boxed as fn(Answer) -> Response),
                );
            }
            None => {
                let path = request.uri().path();
                let status = Status::unimplemented(format!("unknown method {path}"));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        };
        Either::Left(unary)
    }
}

fn boxed(answer: Answer) -> Response {
    answer.map(Body::new)
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

//! The gRPC edge: Protobuf in, domain calls, Protobuf out. Handlers only
//! convert; the work happens in [`crate::object_store`] and [`crate::database`].

mod convert;
mod database;
mod download;
mod object_store;
pub mod rows;
mod services;
mod status;
mod steps;
mod unary;

pub use database::DatabaseService;
pub use object_store::ObjectStoreService;
pub use services::BrokerServices;
pub use steps::{CallSteps, WithCallSteps};

/// Fully qualified names of the broker's gRPC services (health check names).
pub const OBJECT_STORE_SERVICE: &str = "broker.v1.ObjectStore";
pub const DATABASE_SERVICE: &str = "broker.v1.Database";

//! resource-broker: a gRPC broker that owns an S3 bucket and a PostgreSQL
//! database and serves them to agents as typed Protobuf RPCs.
//!
//! Where things live:
//! - [`server::serve`] is the whole server; [`config`] its configuration.
//! - [`grpc`] is the gRPC edge (Protobuf <-> domain), [`web`] the plain HTTP one.
//! - [`object_store`] and [`database`] do the work against S3 and PostgreSQL.
//! - [`health`] probes the backends; [`telemetry`] logs requests.
//! - [`dev`] runs everything locally; [`healthcheck`] is the container probe.

pub mod agents;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod busy_poll;
pub mod client;
pub mod codec;
pub mod config;
pub mod database;
pub mod dev;
pub mod grpc;
pub mod health;
pub mod healthcheck;
pub mod loadtest;
pub mod mcp;
pub mod object_store;
pub mod proto;
pub mod resilience;
pub mod secrets;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod web;

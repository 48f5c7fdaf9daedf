//! Generated Protobuf and gRPC code for `broker.v1`. Never edited by hand:
//! `build.rs` writes it from `proto/broker/v1/*.proto`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("broker.v1");
// The servers (build.rs generates them apart: their Query answers are
// `crate::grpc::rows::QueryResponse`).
include!(concat!(env!("OUT_DIR"), "/servers/broker.v1.rs"));

/// Field numbers of `broker.v1.QueryResponse`, for its two hand-written
/// forms: the broker's, written from PostgreSQL's cells
/// (`crate::grpc::rows`), and the client library's, rows kept encoded
/// (`crate::client::rows`).
pub mod query_response_fields {
    pub const COLUMNS: u32 = 1;
    pub const ROWS: u32 = 2;
    pub const TRUNCATED: u32 = 3;
}

/// The encoded file descriptor set, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("broker_descriptor");

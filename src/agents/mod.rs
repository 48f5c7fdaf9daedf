//! The seed's document pipeline: orchestrator → extractor → validation →
//! archivist, each agent talking to S3 and PostgreSQL only through
//! [`crate::client::BrokerClient`].

pub mod extract;
pub mod validation;

//! The in-process doorway: a tonic client over `server::in_process` behaves
//! exactly like one over the network.

mod common;

use common::{TestDatabase, TestS3, test_config};
use resource_broker::{
    proto::{QueryRequest, database_client::DatabaseClient},
    server::{Backends, in_process},
};

#[tokio::test]
async fn a_tonic_client_runs_over_the_in_process_service() {
    let (db, s3) = (TestDatabase::create().await, TestS3::start().await);
    let backends = Backends::from_config(&test_config(&db, &s3)).await.unwrap();
    let mut client = DatabaseClient::new(in_process(&backends));
    let rows = client
        .query(QueryRequest {
            sql: "SELECT 41 + 1 AS answer".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rows.columns[0].name, "answer");
    let err = client
        .query(QueryRequest {
            sql: "SELEC 1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

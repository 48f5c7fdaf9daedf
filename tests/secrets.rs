//! The database password from AWS Secrets Manager, fetched at start-up from
//! a Secrets Manager endpoint speaking the real JSON protocol on loopback.

mod common;

use axum::{Json, Router, http::HeaderMap, routing::post};
use common::{TestDatabase, TestS3, test_config};
use resource_broker::{config::ServeConfig, secrets};
use serde_json::{Value, json};

const ARN: &str = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:broker-db-AbCdEf";
const MARKER: &str = "marker-password-7f3a9c";

/// Answers GetSecretValue for [`ARN`] with an RDS-style JSON secret.
async fn secrets_manager() -> String {
    let app = Router::new().route(
        "/",
        post(|headers: HeaderMap, body: String| async move {
            let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
            let request: Value = serde_json::from_str(&body).unwrap_or_default();
            let content_type = [("content-type", "application/x-amz-json-1.1")];
            if target != "secretsmanager.GetSecretValue" || request["SecretId"] != ARN {
                let error = json!({"__type": "ResourceNotFoundException", "message": "Secrets Manager can't find the specified secret."});
                return (axum::http::StatusCode::BAD_REQUEST, content_type, Json(error));
            }
            let secret = json!({"username": "postgres", "password": MARKER}).to_string();
            (axum::http::StatusCode::OK, content_type, Json(json!({"ARN": ARN, "Name": "broker-db", "SecretString": secret})))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn config_with_secret(db: &TestDatabase, s3: &TestS3, arn: &str) -> ServeConfig {
    let mut config = test_config(db, s3);
    config.postgres.database_url = None;
    let url: tokio_postgres::Config = db.url.parse().unwrap();
    config.postgres.postgres_port = url.get_ports()[0];
    config.postgres.postgres_host = "127.0.0.1".into();
    config.postgres.postgres_db = url.get_dbname().unwrap().into();
    config.postgres.postgres_user = url.get_user().unwrap().into();
    config.postgres.postgres_password_secret_arn = Some(arn.into());
    config.postgres.secrets_endpoint_url = Some(secrets_manager().await);
    config
}

#[tokio::test]
async fn the_password_comes_from_secrets_manager() {
    let (db, s3) = (TestDatabase::create().await, TestS3::start().await);
    let config = config_with_secret(&db, &s3, ARN).await;
    config.validate().unwrap();
    let resolved = secrets::resolve(&config).await.unwrap();
    assert_eq!(resolved.postgres.postgres_password.as_deref(), Some(MARKER));
    assert!(
        !format!("{resolved:?}").contains(MARKER),
        "Debug never shows the password"
    );

    // The broker starts with it (the test cluster trusts loopback, so this
    // checks the start-up path; the value itself is checked above).
    let broker = common::TestBroker::serve(db, s3, config).await;
    broker.wait_for_health("broker.v1.Database", true).await;
}

#[tokio::test]
async fn a_missing_secret_stops_start_up_naming_the_secret() {
    let (db, s3) = (TestDatabase::create().await, TestS3::start().await);
    let missing = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:nope";
    let config = config_with_secret(&db, &s3, missing).await;
    let err = format!("{:#}", secrets::resolve(&config).await.unwrap_err());
    assert!(
        err.contains(missing) && err.contains("ResourceNotFoundException"),
        "{err}"
    );

    let mut both = config.clone();
    both.postgres.postgres_password = Some(MARKER.into());
    let err = both.validate().unwrap_err().to_string();
    assert!(err.contains("set one of") && !err.contains(MARKER), "{err}");
}

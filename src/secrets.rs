//! Secrets fetched at start-up: the database password from AWS Secrets
//! Manager (`POSTGRES_PASSWORD_SECRET_ARN`). The value goes into the
//! configuration and nowhere else; errors name the secret, never its value.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::{Client, error::DisplayErrorContext};

use crate::config::ServeConfig;

/// `config` with every secret reference replaced by the secret's value.
pub async fn resolve(config: &ServeConfig) -> anyhow::Result<ServeConfig> {
    let mut config = config.clone();
    if let Some(arn) = config.postgres.postgres_password_secret_arn.take() {
        let text = fetch(&config, &arn).await?;
        config.postgres.postgres_password = Some(password_from(&text).ok_or_else(|| {
            anyhow::anyhow!(
                "POSTGRES_PASSWORD_SECRET_ARN {arn}: the secret is JSON without a string \"password\" field"
            )
        })?);
    }
    Ok(config)
}

async fn fetch(config: &ServeConfig, arn: &str) -> anyhow::Result<String> {
    // An ARN names its region (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME).
    let region = arn
        .strip_prefix("arn:")
        .and_then(|rest| rest.split(':').nth(2))
        .filter(|r| !r.is_empty())
        .unwrap_or(&config.s3.aws_region)
        .to_owned();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region));
    if let Some(credentials) = &config.s3.static_credentials {
        loader = loader.credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            &credentials.access_key_id,
            &credentials.secret_access_key,
            None,
            None,
            "static",
        ));
    }
    if let Some(endpoint) = &config.postgres.secrets_endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let client = Client::new(&loader.load().await);
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "POSTGRES_PASSWORD_SECRET_ARN {arn}: cannot fetch the secret: {}",
                DisplayErrorContext(&e)
            )
        })?;
    output.secret_string.ok_or_else(|| {
        anyhow::anyhow!("POSTGRES_PASSWORD_SECRET_ARN {arn}: the secret has no string value")
    })
}

/// A plain secret is the password; a JSON object gives its "password".
fn password_from(text: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(fields)) => {
            fields.get("password")?.as_str().map(str::to_owned)
        }
        _ => Some(text.trim_end_matches(['\r', '\n']).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::password_from;

    #[test]
    fn plain_and_rds_style_secrets() {
        assert_eq!(password_from("s3cr3t\n").as_deref(), Some("s3cr3t"));
        assert_eq!(
            password_from(r#"{"username":"app","password":"p@ss"}"#).as_deref(),
            Some("p@ss")
        );
        assert_eq!(password_from(r#"{"username":"app"}"#), None);
    }
}

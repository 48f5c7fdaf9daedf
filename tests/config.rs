//! Start-up configuration through the real binary: bad or missing values
//! stop `broker serve` (and `broker dev`) before anything is served, with a
//! message that names the environment variable, and never echo a password.

use std::process::{Command, Output};

/// A password no message may ever contain.
const MARKER: &str = "Sup3rSecretMarker";

/// Runs `broker <command>` with only `env` in its environment.
fn broker(command: &str, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg(command)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run the broker binary")
}

/// Asserts that `broker serve` refused to start, naming every one of `variables`.
fn assert_refused(output: &Output, variables: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "the broker started anyway: {stderr}"
    );
    for variable in variables {
        assert!(
            stderr.contains(variable),
            "{variable} not named in: {stderr}"
        );
    }
    assert!(
        !stderr.contains(MARKER) && !stdout.contains(MARKER),
        "the password leaked: {stderr}{stdout}"
    );
}

#[test]
fn a_missing_bucket_is_named() {
    let output = broker("serve", &[("POSTGRES_PASSWORD", MARKER)]);
    assert_refused(&output, &["S3_BUCKET"]);
}

#[test]
fn values_clap_rejects_name_the_flag_and_the_variable() {
    let cases = [
        ("BROKER_ADDR", "x", "--addr"),
        ("POSTGRES_PORT", "abc", "--postgres-port"),
        ("BROKER_LOG_FORMAT", "yaml", "--log-format"),
        ("BROKER_PG_ACQUIRE_TIMEOUT", "soon", "--acquire-timeout"),
        ("BROKER_PG_POOL_MAX", "-1", "--pool-max"),
    ];
    for (variable, value, flag) in cases {
        let output = broker(
            "serve",
            &[
                ("S3_BUCKET", "bucket"),
                ("POSTGRES_PASSWORD", MARKER),
                (variable, value),
            ],
        );
        assert_refused(&output, &[variable, flag, &format!("[env: {variable}]")]);
    }
}

#[test]
fn a_garbled_database_url_is_named_without_its_password() {
    for url in [
        "garbage",
        &format!("postgres://agent:{MARKER}@db:notaport/documents_db"),
    ] {
        let output = broker("serve", &[("S3_BUCKET", "bucket"), ("DATABASE_URL", url)]);
        assert_refused(&output, &["DATABASE_URL"]);
    }
}

#[test]
fn a_pool_minimum_above_its_maximum_is_named() {
    let output = broker(
        "serve",
        &[
            ("S3_BUCKET", "bucket"),
            ("BROKER_PG_POOL_MIN", "8"),
            ("BROKER_PG_POOL_MAX", "4"),
            ("POSTGRES_PASSWORD", MARKER),
        ],
    );
    assert_refused(&output, &["BROKER_PG_POOL_MIN", "BROKER_PG_POOL_MAX"]);
}

#[test]
fn a_certificate_without_its_key_names_the_missing_variable() {
    let output = broker(
        "serve",
        &[
            ("S3_BUCKET", "bucket"),
            ("BROKER_TLS_CERT", "/tmp/cert.pem"),
        ],
    );
    assert_refused(&output, &["BROKER_TLS_KEY"]);
}

#[test]
fn broker_dev_checks_the_environment_before_starting_anything() {
    for (variable, value) in [("BROKER_ADDR", "x"), ("BROKER_PG_POOL_MAX", "lots")] {
        let output = broker("dev", &[(variable, value), ("DATABASE_URL", MARKER)]);
        assert_refused(&output, &[variable]);
    }
}

#[test]
fn busy_polling_needs_one_worker_thread_and_a_short_window() {
    let base = [("S3_BUCKET", "bucket"), ("POSTGRES_PASSWORD", MARKER)];
    let with = |extra: &[(&'static str, &'static str)]| {
        let env: Vec<_> = base.iter().chain(extra).copied().collect();
        broker("serve", &env)
    };
    // A worker per core: the poller would keep one of them from sleeping
    // and leave the others blocking as before.
    assert_refused(
        &with(&[("BROKER_BUSY_POLL", "100us")]),
        &["BROKER_BUSY_POLL", "TOKIO_WORKER_THREADS=1"],
    );
    assert_refused(
        &with(&[("BROKER_BUSY_POLL", "100us"), ("TOKIO_WORKER_THREADS", "2")]),
        &["TOKIO_WORKER_THREADS=1"],
    );
    for value in ["5ms", "soon"] {
        assert_refused(
            &with(&[("BROKER_BUSY_POLL", value), ("TOKIO_WORKER_THREADS", "1")]),
            &["BROKER_BUSY_POLL", "--busy-poll"],
        );
    }
}

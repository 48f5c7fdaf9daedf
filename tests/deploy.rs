//! What ships, checked offline: scripts/check-deploy.sh lints the
//! Dockerfile, compose file, CloudFormation template, Kubernetes manifest
//! and scripts, validates the task definitions against the ECS API model,
//! and runs the deploy scripts against a fake aws/docker, checking the calls.

#[test]
fn the_deployment_checks_pass() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new("bash")
        .arg(format!("{root}/scripts/check-deploy.sh"))
        .output()
        .expect("run scripts/check-deploy.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#!/usr/bin/env bash
# The one test command (CI runs it too): installs what is missing, then
# checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked

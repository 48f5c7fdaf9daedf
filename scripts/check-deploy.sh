#!/usr/bin/env bash
# Offline checks of everything that ships: no Docker engine or AWS account
# needed. Lints the Dockerfile, compose file, CloudFormation template,
# Kubernetes manifest and scripts; validates the task definitions against
# the ECS API model; runs the deploy scripts against a fake aws/docker that
# records calls, and checks the calls. Tools come from .venv and apt
# (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/bin
fail() { printf 'check-deploy: FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf 'check-deploy: ok: %s\n' "$*"; }
need() {
  [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || fail "$1 is missing: run bash scripts/setup.sh"
}
for tool in "$venv/hadolint" "$venv/cfn-lint" "$venv/shellcheck" "$venv/python" docker-compose; do
  need "$tool"
done

"$venv/hadolint" Dockerfile || fail "hadolint Dockerfile"
ok "hadolint Dockerfile"
docker-compose -f docker-compose.yml config -q || fail "docker-compose config"
ok "docker-compose config"
"$venv/cfn-lint" deploy/cloudformation/*.yaml || fail "cfn-lint"
ok "cfn-lint"
"$venv/shellcheck" -x deploy/*.sh scripts/*.sh .ci/run tests/deploy/fakebin/* || fail "shellcheck"
ok "shellcheck"
"$venv/python" -c 'import sys, yaml; list(yaml.safe_load_all(open(sys.argv[1])))' deploy/kubernetes/broker.yaml \
  || fail "kubernetes manifest"
ok "kubernetes manifest parses"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export FAKE_LOG="$work/calls.log" DEPLOY_STATE_DIR="$work/state"
export PATH="$PWD/tests/deploy/fakebin:$PATH"
# Expects each pattern (a grep -E on the call log) to match, in this order.
expect_calls() {
  local what="$1" line=0 found
  shift
  for pattern in "$@"; do
    found="$(tail -n "+$((line + 1))" "$FAKE_LOG" | grep -n -E -m1 -- "$pattern" | cut -d: -f1 || true)"
    [ -n "$found" ] || { cat "$FAKE_LOG" >&2; fail "$what: no call matching /$pattern/ after call $line"; }
    line=$((line + found))
  done
  ok "$what"
}
fresh() { : >"$FAKE_LOG"; }

for script in deploy/deploy.sh deploy/update-agents.sh deploy/rollback.sh; do
  "$script" --help | grep -q -- --dry-run || fail "$script --help"
done
ok "--help on every script"

params="$work/params.env"
printf '%s\n' 'VpcId=vpc-1' 'SubnetIds=subnet-a,subnet-b' 'AgentSecurityGroupId=sg-agents' \
  'PostgresPasswordSecretArn=arn:aws:secretsmanager:eu-west-3:123456789012:secret:db' >"$params"

fresh
deploy/deploy.sh --parameters "$params" --tag v1 >/dev/null 2>&1 || { cat "$FAKE_LOG" >&2; fail "deploy.sh"; }
image="123456789012.dkr.ecr.eu-west-3.amazonaws.com/ca-a2a-mcp-server:v1"
expect_calls "deploy.sh: ECR, build, push, stack, wait, health" \
  "^aws --region eu-west-3 sts get-caller-identity" \
  "^aws .* ecr describe-repositories --repository-names ca-a2a-mcp-server" \
  "^aws .* ecr create-repository --repository-name ca-a2a-mcp-server" \
  "^docker build --tag $image " \
  "^aws .* ecr get-login-password" \
  "^docker login --username AWS --password-stdin 123456789012.dkr.ecr.eu-west-3.amazonaws.com" \
  "^docker push $image" \
  "^aws .* cloudformation deploy --stack-name ca-a2a-broker .*--capabilities CAPABILITY_IAM .*ImageUri=$image .*SubnetIds=subnet-a,subnet-b .*PostgresPasswordSecretArn=" \
  "^aws .* ecs wait services-stable --cluster ca-a2a-cluster --services mcp-server" \
  "^aws .* ecs describe-tasks --cluster ca-a2a-cluster --tasks arn:task/1 arn:task/2"

fresh
deploy/deploy.sh --parameters "$params" --tag v2 --skip-build --skip-push --region us-east-1 --profile prod >/dev/null 2>&1 \
  || fail "deploy.sh --skip-build --skip-push"
grep -q '^docker' "$FAKE_LOG" && fail "--skip-build/--skip-push still called docker"
expect_calls "deploy.sh --region --profile --skip-*" "^aws --region us-east-1 --profile prod cloudformation deploy"

fresh
deploy/deploy.sh --dry-run >"$work/dry.out" 2>&1 || fail "deploy.sh --dry-run"
[ -s "$FAKE_LOG" ] && fail "--dry-run called: $(cat "$FAKE_LOG")"
grep -q '^+ aws --region eu-west-3 cloudformation deploy' "$work/dry.out" || fail "--dry-run does not print the stack deploy"
grep -q '^+ docker push' "$work/dry.out" || fail "--dry-run does not print the push"
ok "deploy.sh --dry-run prints every call and makes none"

fresh
deploy/update-agents.sh >/dev/null 2>&1 || fail "update-agents.sh"
expect_calls "update-agents.sh: new revisions with BROKER_URL, redeploy, wait" \
  "ecs describe-services --cluster ca-a2a-cluster --services orchestrator" \
  "ecs register-task-definition --cli-input-json file://" \
  "ecs update-service --cluster ca-a2a-cluster --service orchestrator --task-definition arn:aws:ecs:eu-west-3:123456789012:task-definition/orchestrator:8 --force-new-deployment" \
  "ecs update-service --cluster ca-a2a-cluster --service extractor .*--force-new-deployment" \
  "ecs update-service --cluster ca-a2a-cluster --service archivist .*--force-new-deployment" \
  "ecs wait services-stable --cluster ca-a2a-cluster --services orchestrator extractor archivist"
registered="$work/registered-orchestrator.json"
"$venv/python" - "$registered" <<'PY' || fail "the registered task definition does not carry BROKER_URL alone"
import json, sys
env = json.load(open(sys.argv[1]))["containerDefinitions"][0]["environment"]
names = {e["name"]: e["value"] for e in env}
assert names.get("BROKER_URL") == "http://mcp-server.ca-a2a.local:8000", names
assert "MCP_SERVER_URL" not in names and names.get("AWS_REGION") == "eu-west-3", names
PY
ok "update-agents.sh sets BROKER_URL and keeps the rest"
"$venv/python" tests/deploy/validate_task_definitions.py deploy/cloudformation/broker.yaml "$registered" \
  || fail "task definitions against the ECS API model"

fresh
deploy/rollback.sh --option 1 >/dev/null 2>&1 || fail "rollback.sh --option 1"
expect_calls "rollback option 1: agents back to their previous revisions" \
  "ecs update-service --cluster ca-a2a-cluster --service orchestrator --task-definition arn:aws:ecs:eu-west-3:123456789012:task-definition/orchestrator:7 --force-new-deployment" \
  "ecs update-service --cluster ca-a2a-cluster --service archivist --task-definition arn:aws:ecs:eu-west-3:123456789012:task-definition/archivist:7" \
  "ecs wait services-stable --cluster ca-a2a-cluster --services orchestrator extractor archivist"
grep -q "register-task-definition" "$FAKE_LOG" && fail "option 1 registered a revision although the previous one was known"

rm -rf "$DEPLOY_STATE_DIR"
fresh
deploy/rollback.sh --option 1 --services orchestrator >/dev/null 2>&1 || fail "rollback.sh --option 1 without state"
expect_calls "rollback option 1 without a recorded revision: a revision without the URL" \
  "ecs register-task-definition" "ecs update-service --cluster ca-a2a-cluster --service orchestrator --task-definition .*:8"
"$venv/python" -c 'import json,sys; env=json.load(open(sys.argv[1]))["containerDefinitions"][0]["environment"]; assert not [e for e in env if e["name"] in ("BROKER_URL","MCP_SERVER_URL")], env' \
  "$work/registered-orchestrator.json" || fail "option 1 left a broker URL"

fresh
deploy/rollback.sh --option 2 >/dev/null 2>&1 || fail "rollback.sh --option 2"
expect_calls "rollback option 2: broker scaled to 0" \
  "ecs update-service --cluster ca-a2a-cluster --service mcp-server --desired-count 0" \
  "ecs wait services-stable --cluster ca-a2a-cluster --services mcp-server"

fresh
deploy/rollback.sh --option 3 >/dev/null 2>&1 || fail "rollback.sh --option 3"
expect_calls "rollback option 3: stack deleted, every revision deregistered" \
  "cloudformation delete-stack --stack-name ca-a2a-broker" \
  "cloudformation wait stack-delete-complete --stack-name ca-a2a-broker" \
  "ecs list-task-definitions --family-prefix ca-a2a-mcp-server" \
  "ecs deregister-task-definition --task-definition .*ca-a2a-mcp-server:1" \
  "ecs deregister-task-definition --task-definition .*ca-a2a-mcp-server:2"

deploy/rollback.sh >/dev/null 2>&1 && fail "rollback.sh without --option succeeded"
ok "rollback.sh without an option refuses"
echo "check-deploy: all checks passed"

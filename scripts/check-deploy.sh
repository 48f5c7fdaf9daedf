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
"$venv/python" - <<'PY' || fail "compose, Kubernetes, Dockerfile and template shape"
import re, sys, yaml
sys.path.insert(0, "tests/deploy")
from validate_task_definitions import CfnLoader, Tag, resolve

compose = yaml.safe_load(open("docker-compose.yml"))
assert "version" not in compose, "docker-compose.yml: the version key is obsolete"
orchestrator = compose["services"]["orchestrator"]["depends_on"]
for peer in ("broker", "extractor", "archivist"):
    assert orchestrator.get(peer) == {"condition": "service_healthy"}, f"orchestrator must wait for {peer} to be healthy"

# Liveness, the same everywhere: the process answers (GET /metrics), not the
# backends' gRPC health, which would restart every task during an outage.
liveness = ["broker", "healthcheck", "--addr", "127.0.0.1:8000", "--http-path", "/metrics"]
docker = re.search(r'^HEALTHCHECK .*\n\s+CMD (\[.*\])', open("Dockerfile").read(), re.M)
assert docker and yaml.safe_load(docker.group(1)) == liveness, "Dockerfile HEALTHCHECK is not the liveness check"
deployment = next(d for d in yaml.safe_load_all(open("deploy/kubernetes/broker.yaml")) if d["kind"] == "Deployment")
container = deployment["spec"]["template"]["spec"]["containers"][0]
assert container["livenessProbe"]["exec"]["command"] == liveness, "Kubernetes liveness is not the liveness check"
assert container["readinessProbe"]["grpc"] == {"port": 8000, "service": ""}, "Kubernetes readiness is not the backends' health"

template = yaml.load(open("deploy/cloudformation/broker.yaml"), Loader=CfnLoader)
params, resources = template["Parameters"], template["Resources"]
assert params["DesiredCount"]["MinValue"] >= 2, "DesiredCount must be at least 2"
task = resolve(resources["TaskDefinition"]["Properties"], True)
broker = next(c for c in task["ContainerDefinitions"] if c["Name"] == "broker")
assert broker["HealthCheck"]["Command"] == ["CMD"] + liveness, "ECS container health check is not the liveness check"
assert "POSTGRES_PASSWORD" not in {e["Name"] for e in broker["Environment"]}, "password in plain text"
value_from = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"][1]["Secrets"][0]["ValueFrom"]
assert isinstance(value_from, Tag) and value_from.name == "If" and value_from.value[0] == "PlainPassword", value_from
assert value_from.value[2].value == "${PostgresPasswordSecretArn}:${PostgresPasswordJsonKey}::", "JSON secret key syntax"
assert {"Name": "BROKER_POLICY_FILE", "Value": "/run/broker/policy.toml"} in broker["Environment"]
assert broker["DependsOn"] == [{"ContainerName": "policy", "Condition": "SUCCESS"}], "broker must wait for the policy"
egress = resolve(resources["BrokerSecurityGroup"]["Properties"]["SecurityGroupEgress"], True)
assert [e for e in egress if e["FromPort"] == 5432] == [e for e in egress if "DestinationSecurityGroupId" in e], egress
statements = resolve(resources["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"], True)
assert any(s["Action"] == "kms:Decrypt" for s in statements), "no kms:Decrypt with a customer-managed key"
assert not any(s["Action"] == "kms:Decrypt" for s in resolve(resources["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"], False))
alarm = resources["UnhealthyTasksAlarm"]
assert alarm.get("Condition") == "WatchRunningTasks" and alarm["Properties"]["Namespace"] == "ECS/ContainerInsights"
assert resources["Cluster"]["Properties"]["ClusterSettings"] == [{"Name": "containerInsights", "Value": "enabled"}]
spread = template["Outputs"]["SpreadSubnets"]["Value"]
selects = [t.value[0] for t in spread.value[1] if t.name == "Select"]
assert selects == [0, 1], "the template must refuse a single subnet (Fn::Select index 1)"
PY
ok "compose order, liveness/readiness checks, template guards"

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

# The image tag: the commit, or commit-dirty-<timestamp> for a changed tree.
repo="$work/repo"
git init -q "$repo" && git -C "$repo" -c user.name=t -c user.email=t@t commit -q --allow-empty -m init
tag_of() { bash -c '. deploy/lib.sh && image_tag "$1"' tag_of "$1"; }
[ "$(tag_of "$repo")" = "$(git -C "$repo" rev-parse --short=12 HEAD)" ] || fail "clean tree: tag is not the commit"
touch "$repo/broker.params"
[ "$(tag_of "$repo")" = "$(git -C "$repo" rev-parse --short=12 HEAD)" ] || fail "a file the image is not built from made the tag dirty"
mkdir "$repo/src" && touch "$repo/src/new.rs"
[[ "$(tag_of "$repo")" =~ ^[0-9a-f]{12}-dirty-[0-9]{14}$ ]] || fail "changed sources: tag $(tag_of "$repo") is not COMMIT-dirty-TIMESTAMP"
ok "image tag: commit, -dirty-<timestamp> for changed sources"

params="$work/params.env"
printf '%s\n' 'VpcId=vpc-1' 'SubnetIds=subnet-a,subnet-b' 'AgentSecurityGroupId=sg-agents' \
  'PostgresPasswordSecretArn=arn:aws:secretsmanager:eu-west-3:123456789012:secret:db' >"$params"

fresh
deploy/deploy.sh --parameters "$params" --tag v1 >/dev/null 2>&1 || { cat "$FAKE_LOG" >&2; fail "deploy.sh"; }
image="123456789012.dkr.ecr.eu-west-3.amazonaws.com/ca-a2a-mcp-server:v1"
expect_calls "deploy.sh: pre-flight, ECR, build, push, stack, wait, health" \
  "^aws --region eu-west-3 ecs describe-services --cluster ca-a2a-cluster --services mcp-server --query services\[\?status=='ACTIVE'\]" \
  "^aws .* ecs describe-clusters --clusters ca-a2a-cluster --include SETTINGS" \
  "^aws --region eu-west-3 sts get-caller-identity" \
  "^aws .* ecr describe-repositories --repository-names ca-a2a-mcp-server" \
  "^aws .* ecr create-repository --repository-name ca-a2a-mcp-server" \
  "^aws .* ecr describe-images --repository-name ca-a2a-mcp-server --image-ids imageTag=v1" \
  "^docker build --platform linux/amd64 --tag $image " \
  "^aws .* ecr get-login-password" \
  "^docker login --username AWS --password-stdin 123456789012.dkr.ecr.eu-west-3.amazonaws.com" \
  "^docker push $image" \
  "^aws .* cloudformation deploy --stack-name ca-a2a-broker .*--capabilities CAPABILITY_IAM .*ImageUri=$image .*SubnetIds=subnet-a,subnet-b .*PostgresPasswordSecretArn=.* ClusterContainerInsights=enabled" \
  "^aws .* ecs wait services-stable --cluster ca-a2a-cluster --services mcp-server" \
  "^aws .* ecs describe-tasks --cluster ca-a2a-cluster --tasks arn:task/1 arn:task/2"
grep -q 'describe-stack-resource' "$FAKE_LOG" && fail "no service of that name yet, but deploy.sh asked who owns it"

fresh
FAKE_PUSHED_TAG=v1 deploy/deploy.sh --parameters "$params" --tag v1 >/dev/null 2>&1 || fail "deploy.sh of a pushed tag"
grep -q '^docker' "$FAKE_LOG" && fail "deploy.sh rebuilt and pushed a tag already in ECR (tags are immutable)"
expect_calls "deploy.sh: a tag already in ECR is deployed, not pushed again" "cloudformation deploy .*ImageUri=$image"

fresh
deploy/deploy.sh --parameters "$params" --tag v2 --skip-build --skip-push --region us-east-1 --profile prod >/dev/null 2>&1 \
  || fail "deploy.sh --skip-build --skip-push"
grep -q '^docker' "$FAKE_LOG" && fail "--skip-build/--skip-push still called docker"
expect_calls "deploy.sh --region --profile --skip-*" "^aws --region us-east-1 --profile prod cloudformation deploy"

# --dry-run prints exactly the calls a real run makes (same global options,
# services and operations, in the same order) and makes none.
calls_of() { sed -E -n 's/^\+ //; /^(aws|docker) /p' "$1" | awk '{ if ($1 == "aws") print $1, $2, $3, $4, $5, $6, $7; else print $1, $2 }' | uniq; }
same_calls() {
  local what="$1" dry="$work/dry.out"
  shift
  fresh
  "$@" >/dev/null 2>&1 || { cat "$FAKE_LOG" >&2; fail "$what"; }
  sed 's/^/+ /' "$FAKE_LOG" >"$work/real.out"
  fresh
  "$@" --dry-run >"$dry" 2>&1 || { cat "$dry" >&2; fail "$what --dry-run"; }
  [ -s "$FAKE_LOG" ] && fail "$what --dry-run called: $(cat "$FAKE_LOG")"
  diff <(calls_of "$work/real.out") <(calls_of "$dry") >&2 || fail "$what --dry-run does not print the calls a real run makes"
  ok "$what --dry-run prints every call (with --region/--profile) and makes none"
}
same_calls "deploy.sh" deploy/deploy.sh --parameters "$params" --tag v3 --region us-east-1 --profile prod
grep -q '^+ aws --region us-east-1 --profile prod ecr describe-repositories' "$work/dry.out" || fail "--dry-run hides describe-repositories"
same_calls "update-agents.sh" deploy/update-agents.sh --region us-east-1 --profile prod
grep -q '^+ aws --region us-east-1 --profile prod ecs describe-task-definition' "$work/dry.out" || fail "--dry-run hides describe-task-definition"
rm -rf "$DEPLOY_STATE_DIR"
for option in 1 2 3; do
  same_calls "rollback.sh --option $option" deploy/rollback.sh --option "$option" --region us-east-1 --profile prod
done
rm -rf "$DEPLOY_STATE_DIR"

fresh
printf '%s\n' 'ServiceName=resource-broker' >>"$work/named.env"
cat "$params" "$work/named.env" >"$work/renamed.env"
FAKE_EXISTING_SERVICE=arn:aws:ecs:eu-west-3:123456789012:service/ca-a2a-cluster/mcp-server \
  deploy/deploy.sh --parameters "$params" --tag v4 >"$work/seed.out" 2>&1 && fail "deploy.sh went on next to the seed's mcp-server"
grep -q 'ServiceName=resource-broker' "$work/seed.out" || fail "the seed pre-flight does not say what to do: $(cat "$work/seed.out")"
grep -q 'cloudformation deploy' "$FAKE_LOG" && fail "deploy.sh deployed next to the seed's mcp-server"
ok "deploy.sh stops next to the seed's mcp-server and explains the cutover"
fresh
FAKE_EXISTING_SERVICE=arn:aws:ecs:eu-west-3:123456789012:service/ca-a2a-cluster/mcp-server \
  FAKE_STACK_SERVICE=arn:aws:ecs:eu-west-3:123456789012:service/ca-a2a-cluster/mcp-server \
  deploy/deploy.sh --parameters "$params" --tag v5 >/dev/null 2>&1 || fail "deploy.sh refused to update its own service"
fresh
FAKE_INSIGHTS=disabled deploy/deploy.sh --parameters "$work/renamed.env" --tag v6 >/dev/null 2>&1 || fail "deploy.sh ServiceName="
expect_calls "deploy.sh: ServiceName from the parameters, insights off reported" \
  "ecs describe-services --cluster ca-a2a-cluster --services resource-broker" \
  "cloudformation deploy .*ServiceName=resource-broker.* ClusterContainerInsights=disabled" \
  "ecs wait services-stable --cluster ca-a2a-cluster --services resource-broker"
grep -q -- '--services mcp-server' "$FAKE_LOG" && fail "deploy.sh used mcp-server despite ServiceName="
printf '%s\n' 'VpcId=vpc-1' 'SubnetIds=subnet-a' >"$work/one-subnet.env"
deploy/deploy.sh --parameters "$work/one-subnet.env" >"$work/subnet.out" 2>&1 && fail "deploy.sh accepted one subnet"
grep -q 'at least two subnets' "$work/subnet.out" || fail "one subnet: $(cat "$work/subnet.out")"
ok "deploy.sh refuses a single subnet"

fresh
deploy/update-agents.sh --token-secret extractor=arn:aws:secretsmanager:eu-west-3:123456789012:secret:extractor-token \
  >/dev/null 2>&1 || fail "update-agents.sh"
expect_calls "update-agents.sh: new revisions with BROKER_URL, redeploy, wait" \
  "cloudformation describe-stacks --stack-name ca-a2a-broker .*BrokerUrl" \
  "ecs describe-services --cluster ca-a2a-cluster --services orchestrator" \
  "ecs describe-task-definition --task-definition arn:aws:ecs:eu-west-3:123456789012:task-definition/orchestrator:7" \
  "ecs register-task-definition --cli-input-json file://" \
  "ecs update-service --cluster ca-a2a-cluster --service orchestrator --task-definition arn:aws:ecs:eu-west-3:123456789012:task-definition/orchestrator:9 --force-new-deployment" \
  "ecs update-service --cluster ca-a2a-cluster --service extractor .*--force-new-deployment" \
  "ecs update-service --cluster ca-a2a-cluster --service archivist .*--force-new-deployment" \
  "ecs wait services-stable --cluster ca-a2a-cluster --services orchestrator extractor archivist"
"$venv/python" - "$work" <<'PY' || fail "the registered task definitions do not carry BROKER_URL alone"
import json, sys
for agent in ("orchestrator", "extractor", "archivist"):
    container = json.load(open(f"{sys.argv[1]}/registered-{agent}.json"))["containerDefinitions"][0]
    names = {e["name"]: e["value"] for e in container["environment"]}
    assert names.get("BROKER_URL") == "http://mcp-server.ca-a2a.local:8000", names
    assert "MCP_SERVER_URL" not in names and names.get("AWS_REGION") == "eu-west-3", names
    secrets = {s["name"]: s["valueFrom"] for s in container.get("secrets", [])}
    token = {"BROKER_TOKEN": "arn:aws:secretsmanager:eu-west-3:123456789012:secret:extractor-token"}
    assert secrets == (token if agent == "extractor" else {}), (agent, secrets)
PY
ok "update-agents.sh sets BROKER_URL (and a token from a secret) and keeps the rest"
"$venv/python" tests/deploy/validate_task_definitions.py deploy/cloudformation/broker.yaml "$work"/registered-*.json \
  || fail "task definitions against the ECS API model"
[ "$(cat "$DEPLOY_STATE_DIR/orchestrator.previous")" = "arn:aws:ecs:eu-west-3:123456789012:task-definition/orchestrator:7" ] \
  || fail "update-agents.sh did not remember the pre-broker revision"

# A second run, from revisions that already point at the broker, keeps the
# pre-broker revision for rollback.
fresh
FAKE_CURRENT_REVISION=9 deploy/update-agents.sh --url http://other.ca-a2a.local:8000 >/dev/null 2>&1 || fail "update-agents.sh again"
[ "$(cat "$DEPLOY_STATE_DIR/orchestrator.previous")" = "arn:aws:ecs:eu-west-3:123456789012:task-definition/orchestrator:7" ] \
  || fail "a second update-agents.sh replaced the pre-broker revision with $(cat "$DEPLOY_STATE_DIR/orchestrator.previous")"
ok "a second update-agents.sh keeps the pre-broker revision"

direct_mode() {
  "$venv/python" - "$@" <<'PY'
import json, sys
for path in sys.argv[1:]:
    container = json.load(open(path))["containerDefinitions"][0]
    names = {e["name"] for e in container["environment"]} | {s["name"] for s in container.get("secrets", [])}
    assert not names & {"BROKER_URL", "MCP_SERVER_URL", "BROKER_TOKEN"}, (path, names)
    assert "AWS_REGION" in names, (path, names)
PY
}
rm -f "$work"/registered-*.json
fresh
FAKE_CURRENT_REVISION=9 deploy/rollback.sh --option 1 >/dev/null 2>&1 || fail "rollback.sh --option 1"
expect_calls "rollback option 1: revisions from the pre-broker ones, without a broker URL" \
  "ecs describe-task-definition --task-definition arn:aws:ecs:eu-west-3:123456789012:task-definition/orchestrator:7" \
  "ecs register-task-definition" \
  "ecs update-service --cluster ca-a2a-cluster --service orchestrator --task-definition arn:aws:ecs:eu-west-3:123456789012:task-definition/orchestrator:9 --force-new-deployment" \
  "ecs describe-task-definition --task-definition arn:aws:ecs:eu-west-3:123456789012:task-definition/archivist:7" \
  "ecs update-service --cluster ca-a2a-cluster --service archivist --task-definition arn:aws:ecs:eu-west-3:123456789012:task-definition/archivist:9" \
  "ecs wait services-stable --cluster ca-a2a-cluster --services orchestrator extractor archivist"
direct_mode "$work"/registered-{orchestrator,extractor,archivist}.json || fail "option 1 left a broker URL or token"

rm -rf "$DEPLOY_STATE_DIR" "$work"/registered-*.json
fresh
FAKE_CURRENT_REVISION=9 deploy/rollback.sh --option 1 --services orchestrator >/dev/null 2>&1 || fail "rollback.sh --option 1 without state"
expect_calls "rollback option 1 without a remembered revision: the current one without the URL" \
  "ecs describe-task-definition --task-definition .*orchestrator:9" "ecs register-task-definition" \
  "ecs update-service --cluster ca-a2a-cluster --service orchestrator --task-definition .*:9"
direct_mode "$work/registered-orchestrator.json" || fail "option 1 left a broker URL or token"

fresh
deploy/rollback.sh --option 2 >/dev/null 2>&1 || fail "rollback.sh --option 2"
expect_calls "rollback option 2: broker scaled to 0" \
  "cloudformation describe-stacks --stack-name ca-a2a-broker .*ServiceName" \
  "ecs update-service --cluster ca-a2a-cluster --service mcp-server --desired-count 0" \
  "ecs wait services-stable --cluster ca-a2a-cluster --services mcp-server"
fresh
deploy/rollback.sh --option 2 --service resource-broker >/dev/null 2>&1 || fail "rollback.sh --option 2 --service"
expect_calls "rollback option 2 --service" "ecs update-service --cluster ca-a2a-cluster --service resource-broker --desired-count 0"

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

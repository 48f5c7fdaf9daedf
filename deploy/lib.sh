# Shared by deploy.sh, update-agents.sh and rollback.sh (sourced, not run).
# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the scripts that source this

REGION="${AWS_REGION:-eu-west-3}"
PROFILE=""
CLUSTER="ca-a2a-cluster"
DRY_RUN=0
AGENTS=(orchestrator extractor archivist)
BROKER_SERVICE="mcp-server"
BROKER_FAMILY="ca-a2a-mcp-server"
STATE_DIR="${DEPLOY_STATE_DIR:-$(dirname "${BASH_SOURCE[0]}")/.state}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Prints a command; runs it unless --dry-run.
run() {
  printf '+ %s\n' "$*" >&2
  if [ "$DRY_RUN" = 0 ]; then
    "$@"
  fi
}

# An AWS CLI call with the chosen region and profile.
awscli() {
  local args=(aws --region "$REGION")
  if [ -n "$PROFILE" ]; then
    args+=(--profile "$PROFILE")
  fi
  run "${args[@]}" "$@"
}

# An AWS CLI read whose output the script needs; in --dry-run it prints the
# call and answers PLACEHOLDER instead.
awsread() {
  local placeholder="$1"
  shift
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ aws --region %s%s %s\n' "$REGION" "${PROFILE:+ --profile $PROFILE}" "$*" >&2
    printf '%s\n' "$placeholder"
    return 0
  fi
  awscli "$@"
}

# Options every script takes; sets SHIFT_BY to the words consumed.
common_option() {
  SHIFT_BY=1
  case "$1" in
    --region) REGION="${2:?--region needs a value}"; SHIFT_BY=2 ;;
    --profile) PROFILE="${2:?--profile needs a value}"; SHIFT_BY=2 ;;
    --cluster) CLUSTER="${2:?--cluster needs a value}"; SHIFT_BY=2 ;;
    --dry-run) DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

# Writes a copy of task definition JSON $1 to $2 with the agents' broker URL
# set to $3 (or removed when $3 is empty), keeping only fields that
# register-task-definition accepts.
edit_broker_url() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
source, target, url = sys.argv[1], sys.argv[2], sys.argv[3]
with open(source) as f:
    task = json.load(f)
task = task.get("taskDefinition", task)
for field in ("taskDefinitionArn", "revision", "status", "requiresAttributes", "compatibilities",
              "registeredAt", "registeredBy", "deregisteredAt"):
    task.pop(field, None)
for container in task.get("containerDefinitions", []):
    env = [e for e in container.get("environment", []) if e["name"] not in ("BROKER_URL", "MCP_SERVER_URL")]
    if url:
        env.append({"name": "BROKER_URL", "value": url})
    container["environment"] = env
with open(target, "w") as f:
    json.dump(task, f, indent=2)
PY
}

# Registers a new revision of service $1's task definition with the broker
# URL set to $2 (empty: removed); prints the new ARN. Remembers the
# revision it replaces for rollback.sh.
new_revision_with_url() {
  local service="$1" url="$2" current work
  current="$(awsread "arn:aws:ecs:${REGION}:000000000000:task-definition/${service}:1" \
    ecs describe-services --cluster "$CLUSTER" --services "$service" \
    --query 'services[0].taskDefinition' --output text)"
  mkdir -p "$STATE_DIR"
  work="$(mktemp -d)"
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ aws ecs describe-task-definition --task-definition %s (then BROKER_URL=%s)\n' "$current" "${url:-<unset>}" >&2
    printf '+ aws ecs register-task-definition --cli-input-json file://%s/%s.json\n' "$work" "$service" >&2
    printf '%s\n' "$current"
    rm -rf "$work"
    return 0
  fi
  awscli ecs describe-task-definition --task-definition "$current" --output json >"$work/current.json"
  edit_broker_url "$work/current.json" "$work/$service.json" "$url"
  printf '%s\n' "$current" >"$STATE_DIR/$service.previous"
  awscli ecs register-task-definition --cli-input-json "file://$work/$service.json" \
    --query 'taskDefinition.taskDefinitionArn' --output text
  rm -rf "$work"
}

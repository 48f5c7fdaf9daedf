# Shared by deploy.sh, update-agents.sh and rollback.sh (sourced, not run).
# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are used by the scripts that source this

REGION="${AWS_REGION:-eu-west-3}"
PROFILE=""
CLUSTER="ca-a2a-cluster"
STACK="ca-a2a-broker"
DRY_RUN=0
AGENTS=(orchestrator extractor archivist)
BROKER_FAMILY="ca-a2a-mcp-server"
STATE_DIR="${DEPLOY_STATE_DIR:-$(dirname "${BASH_SOURCE[0]}")/.state}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Prints a command as a shell would read it back.
show() {
  {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  } >&2
}

# Prints a command; runs it unless --dry-run.
run() {
  show "$@"
  if [ "$DRY_RUN" = 0 ]; then
    "$@"
  fi
}

# Sets AWS_ARGV to an AWS CLI call with the chosen region and profile.
aws_argv() {
  AWS_ARGV=(aws --region "$REGION")
  if [ -n "$PROFILE" ]; then
    AWS_ARGV+=(--profile "$PROFILE")
  fi
  AWS_ARGV+=("$@")
}

# An AWS CLI call that changes something: printed, and skipped in --dry-run.
awscli() {
  aws_argv "$@"
  run "${AWS_ARGV[@]}"
}

# An AWS CLI call whose output the script needs (a read, or a register
# that answers an ARN): printed exactly as it runs; in --dry-run it answers
# PLACEHOLDER instead of calling AWS.
awsread() {
  local placeholder="$1"
  shift
  aws_argv "$@"
  if [ "$DRY_RUN" = 1 ]; then
    show "${AWS_ARGV[@]}"
    printf '%s\n' "$placeholder"
    return 0
  fi
  run "${AWS_ARGV[@]}"
}

# An AWS CLI read used as a test (exit status only, output discarded); in
# --dry-run it is printed and answers "no", so the call that would follow
# is printed too.
awsprobe() {
  aws_argv "$@"
  if [ "$DRY_RUN" = 1 ]; then
    show "${AWS_ARGV[@]}"
    return 1
  fi
  run "${AWS_ARGV[@]}" >/dev/null 2>&1
}

# Options every script takes; sets SHIFT_BY to the words consumed.
common_option() {
  SHIFT_BY=1
  case "$1" in
    --region) REGION="${2:?--region needs a value}"; SHIFT_BY=2 ;;
    --profile) PROFILE="${2:?--profile needs a value}"; SHIFT_BY=2 ;;
    --cluster) CLUSTER="${2:?--cluster needs a value}"; SHIFT_BY=2 ;;
    --stack) STACK="${2:?--stack needs a name}"; SHIFT_BY=2 ;;
    --dry-run) DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

# What the image is built from (the Dockerfile's COPY sources).
IMAGE_SOURCES=(Dockerfile .dockerignore Cargo.toml Cargo.lock build.rs proto src)

# Prints the image tag for the source tree $1: its git commit, plus
# -dirty-<UTC timestamp> when what the image is built from has changes,
# committed or not (ECR tags are immutable, and such an image is not the
# commit's); a timestamp outside git.
image_tag() {
  local sha
  if ! sha="$(git -C "$1" rev-parse --short=12 HEAD 2>/dev/null)"; then
    date -u +%Y%m%d%H%M%S
    return 0
  fi
  if [ -n "$(git -C "$1" status --porcelain -- "${IMAGE_SOURCES[@]}" 2>/dev/null)" ]; then
    printf '%s-dirty-%s\n' "$sha" "$(date -u +%Y%m%d%H%M%S)"
  else
    printf '%s\n' "$sha"
  fi
}

# Reads output $1 of the stack; prints PLACEHOLDER $2 in --dry-run.
stack_output() {
  awsread "$2" cloudformation describe-stacks --stack-name "$STACK" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue | [0]" --output text
}

# Task definition helper (python3): `edit SOURCE TARGET URL TOKEN_ARN` writes
# a copy of SOURCE (describe-task-definition output) to TARGET, keeping only
# fields register-task-definition accepts, with the agents' broker URL set
# to URL: BROKER_URL and its alias MCP_SERVER_URL are both removed, then
# BROKER_URL added when URL is not empty. With URL empty BROKER_TOKEN goes
# too (direct mode needs none); with TOKEN_ARN, BROKER_TOKEN comes from
# that Secrets Manager secret. `has-url SOURCE` succeeds when SOURCE sets
# a broker URL.
task_definition_tool() {
  python3 - "$@" <<'PY'
import json, sys

URL_NAMES = ("BROKER_URL", "MCP_SERVER_URL")

def load(path):
    with open(path) as f:
        task = json.load(f)
    return task.get("taskDefinition", task)

command = sys.argv[1]
if command == "has-url":
    task = load(sys.argv[2])
    names = {e["name"] for c in task.get("containerDefinitions", []) for e in c.get("environment", [])}
    sys.exit(0 if names & set(URL_NAMES) else 1)
source, target, url, token_arn = sys.argv[2:6]
task = load(source)
for field in ("taskDefinitionArn", "revision", "status", "requiresAttributes", "compatibilities",
              "registeredAt", "registeredBy", "deregisteredAt"):
    task.pop(field, None)
for container in task.get("containerDefinitions", []):
    dropped = set(URL_NAMES)
    if not url or token_arn:
        dropped.add("BROKER_TOKEN")
    env = [e for e in container.get("environment", []) if e["name"] not in dropped]
    if url:
        env.append({"name": "BROKER_URL", "value": url})
    container["environment"] = env
    secrets = [s for s in container.get("secrets", []) if s["name"] not in dropped]
    if url and token_arn:
        secrets.append({"name": "BROKER_TOKEN", "valueFrom": token_arn})
    if secrets or "secrets" in container:
        container["secrets"] = secrets
with open(target, "w") as f:
    json.dump(task, f, indent=2)
PY
}

# What --dry-run assumes describe-task-definition answers for family $1.
placeholder_task_definition() {
  printf '{"taskDefinition": {"family": "%s", "containerDefinitions": [{"name": "%s", "image": "IMAGE", "environment": []}]}}\n' "$1" "$1"
}

# Registers a new revision of agent service $1's task definition with the
# broker URL set to $2 (empty: removed, for direct mode) and BROKER_TOKEN
# from secret $4 when given, built from revision $3 (default: the service's
# current one); prints the new ARN. When setting a URL, remembers the
# revision it replaces for rollback.sh, unless one is already remembered
# and the current revision already points at a broker (a second run must
# not replace the pre-broker revision with a broker one).
register_agent_revision() {
  local service="$1" url="$2" base="${3:-}" token_arn="${4:-}" current work family
  current="$(awsread "arn:aws:ecs:${REGION}:000000000000:task-definition/${service}:1" \
    ecs describe-services --cluster "$CLUSTER" --services "$service" \
    --query 'services[0].taskDefinition' --output text)"
  base="${base:-$current}"
  family="${base##*/}"
  family="${family%:*}"
  work="$(mktemp -d)"
  awsread "$(placeholder_task_definition "$family")" \
    ecs describe-task-definition --task-definition "$base" --output json >"$work/base.json"
  if [ -n "$url" ]; then
    local state="$STATE_DIR/$service.previous"
    if [ ! -f "$state" ] || ! task_definition_tool has-url "$work/base.json"; then
      if [ "$DRY_RUN" = 1 ]; then
        log "$service: would remember $current for rollback.sh --option 1"
      else
        mkdir -p "$STATE_DIR"
        printf '%s\n' "$current" >"$state"
      fi
    else
      log "$service: keeping the remembered pre-broker revision $(cat "$state")"
    fi
  fi
  task_definition_tool edit "$work/base.json" "$work/$service.json" "$url" "$token_arn"
  awsread "arn:aws:ecs:${REGION}:000000000000:task-definition/${family}:2" \
    ecs register-task-definition --cli-input-json "file://$work/$service.json" \
    --query 'taskDefinition.taskDefinitionArn' --output text
  rm -rf "$work"
}

#!/usr/bin/env bash
# Points the agents at the broker (BROKER_URL) and redeploys them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

usage() {
  cat <<USAGE
Usage: deploy/update-agents.sh [options]

For each agent service (orchestrator, extractor, archivist): registers a new
revision of its task definition with BROKER_URL set (MCP_SERVER_URL removed,
as BROKER_URL replaces it), updates the service to it, and waits until all
are stable. The revision each service ran before it pointed at a broker is
remembered (deploy/.state) for rollback.sh --option 1; running this again
keeps that pre-broker revision.

  --url URL          broker URL (default: the stack's BrokerUrl output,
                     http://SERVICE.ca-a2a.local:8000)
  --token-secret AGENT=ARN
                     BROKER_TOKEN of AGENT from this Secrets Manager secret
                     (repeat per agent; the agent's execution role must be
                     allowed secretsmanager:GetSecretValue on it)
  --services "A B"   agent services (default: "orchestrator extractor archivist")
  --stack NAME       the broker's stack, for the default URL (default: ca-a2a-broker)
  --region REGION    AWS region (default: \$AWS_REGION or eu-west-3)
  --profile NAME     AWS CLI profile
  --cluster NAME     ECS cluster (default: ca-a2a-cluster)
  --dry-run          print every AWS call instead of running it
  -h, --help         this help
USAGE
}

URL=""
declare -A TOKEN_SECRETS=()
while [ $# -gt 0 ]; do
  if common_option "$@"; then shift "$SHIFT_BY"; continue; fi
  case "$1" in
    --url) URL="${2:?--url needs a value}"; shift 2 ;;
    --token-secret)
      pair="${2:?--token-secret needs AGENT=ARN}"
      [[ "$pair" == ?*=arn:* ]] || die "--token-secret $pair: expected AGENT=arn:..."
      TOKEN_SECRETS["${pair%%=*}"]="${pair#*=}"
      shift 2 ;;
    --services) read -r -a AGENTS <<<"${2:?--services needs a list}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
for agent in "${!TOKEN_SECRETS[@]}"; do
  [[ " ${AGENTS[*]} " == *" $agent "* ]] || die "--token-secret names $agent, which is not among --services"
done
if [ -z "$URL" ]; then
  URL="$(stack_output BrokerUrl http://mcp-server.ca-a2a.local:8000)" \
    || die "cannot read the BrokerUrl output of stack $STACK: deploy it first, or pass --url"
  [ -n "$URL" ] && [ "$URL" != None ] || die "stack $STACK has no BrokerUrl output: deploy it first, or pass --url"
fi

for service in "${AGENTS[@]}"; do
  log "$service: BROKER_URL=$URL"
  arn="$(register_agent_revision "$service" "$URL" "" "${TOKEN_SECRETS[$service]:-}")"
  awscli ecs update-service --cluster "$CLUSTER" --service "$service" \
    --task-definition "$arn" --force-new-deployment >/dev/null
done
log "waiting for ${AGENTS[*]} to be stable"
awscli ecs wait services-stable --cluster "$CLUSTER" --services "${AGENTS[@]}"
log "agents use the broker at $URL"

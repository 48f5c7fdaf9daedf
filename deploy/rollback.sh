#!/usr/bin/env bash
# The seed's three ways back.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

usage() {
  cat <<USAGE
Usage: deploy/rollback.sh --option 1|2|3 [options]

  --option 1   agents back to direct mode: for each agent service, a new
               revision of the task definition it ran before update-agents.sh
               (remembered in deploy/.state; without it, the current one)
               with BROKER_URL, MCP_SERVER_URL and BROKER_TOKEN removed,
               redeployed. MCP_SERVER_URL goes too because the client reads
               it as BROKER_URL. The agents then need their own S3/PostgreSQL
               credentials.
  --option 2   stop the broker: scale its service (the stack's ServiceName
               output, mcp-server by default) to 0 tasks.
  --option 3   remove the broker: delete its stack (service, roles, alarms,
               Cloud Map name) and deregister every ca-a2a-mcp-server
               task definition revision.

  --stack NAME       the broker's stack (default: ca-a2a-broker)
  --service NAME     broker service for option 2 (default: from the stack)
  --services "A B"   agent services for option 1 (default: "orchestrator extractor archivist")
  --region REGION    AWS region (default: \$AWS_REGION or eu-west-3)
  --profile NAME     AWS CLI profile
  --cluster NAME     ECS cluster (default: ca-a2a-cluster)
  --dry-run          print every AWS call instead of running it
  -h, --help         this help
USAGE
}

OPTION=""
BROKER_SERVICE=""
while [ $# -gt 0 ]; do
  if common_option "$@"; then shift "$SHIFT_BY"; continue; fi
  case "$1" in
    --option) OPTION="${2:?--option needs 1, 2 or 3}"; shift 2 ;;
    --service) BROKER_SERVICE="${2:?--service needs a name}"; shift 2 ;;
    --services) read -r -a AGENTS <<<"${2:?--services needs a list}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

case "$OPTION" in
  1)
    for service in "${AGENTS[@]}"; do
      base=""
      if [ -f "$STATE_DIR/$service.previous" ]; then
        base="$(cat "$STATE_DIR/$service.previous")"
        log "$service: from its pre-broker revision $base, without a broker URL"
      else
        log "$service: no remembered pre-broker revision; from the current one, without a broker URL"
      fi
      arn="$(register_agent_revision "$service" "" "$base")"
      awscli ecs update-service --cluster "$CLUSTER" --service "$service" \
        --task-definition "$arn" --force-new-deployment >/dev/null
    done
    awscli ecs wait services-stable --cluster "$CLUSTER" --services "${AGENTS[@]}"
    log "agents are in direct mode"
    ;;
  2)
    if [ -z "$BROKER_SERVICE" ]; then
      BROKER_SERVICE="$(stack_output ServiceName mcp-server)" \
        || die "cannot read the ServiceName output of stack $STACK: pass --service"
      [ -n "$BROKER_SERVICE" ] && [ "$BROKER_SERVICE" != None ] \
        || die "stack $STACK has no ServiceName output: pass --service"
    fi
    awscli ecs update-service --cluster "$CLUSTER" --service "$BROKER_SERVICE" --desired-count 0 >/dev/null
    awscli ecs wait services-stable --cluster "$CLUSTER" --services "$BROKER_SERVICE"
    log "broker $BROKER_SERVICE scaled to 0 (deploy.sh brings it back to DesiredCount)"
    ;;
  3)
    awscli cloudformation delete-stack --stack-name "$STACK"
    awscli cloudformation wait stack-delete-complete --stack-name "$STACK"
    revisions="$(awsread "arn:aws:ecs:${REGION}:000000000000:task-definition/${BROKER_FAMILY}:1" \
      ecs list-task-definitions --family-prefix "$BROKER_FAMILY" --status ACTIVE \
      --query 'taskDefinitionArns' --output text)"
    for arn in $revisions; do
      awscli ecs deregister-task-definition --task-definition "$arn" >/dev/null
    done
    log "broker removed"
    ;;
  *)
    usage >&2
    die "choose --option 1, 2 or 3"
    ;;
esac

#!/usr/bin/env bash
# Builds the image, pushes it to ECR and deploys the broker stack on ECS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

usage() {
  cat <<USAGE
Usage: deploy/deploy.sh [options]

Creates the ECR repository ca-a2a-mcp-server if missing, builds and pushes
the image, deploys the CloudFormation stack (deploy/cloudformation/broker.yaml),
waits until the ECS service is stable and every task is healthy.

  --parameters FILE  CloudFormation parameters, one KEY=VALUE per line
                     (VpcId, SubnetIds, AgentSecurityGroupId,
                     PostgresPasswordSecretArn, ...); see deploy/README.md
  --stack NAME       stack name (default: ca-a2a-broker)
  --tag TAG          image tag (default: the git commit, else a timestamp)
  --skip-build       do not build the image
  --skip-push        do not push the image (use one already in ECR)
  --region REGION    AWS region (default: \$AWS_REGION or eu-west-3)
  --profile NAME     AWS CLI profile
  --cluster NAME     ECS cluster (default: ca-a2a-cluster)
  --dry-run          print every AWS and docker call instead of running it
  -h, --help         this help
USAGE
}

STACK="ca-a2a-broker"
PARAMETERS=""
TAG=""
SKIP_BUILD=0
SKIP_PUSH=0
while [ $# -gt 0 ]; do
  if common_option "$@"; then shift "$SHIFT_BY"; continue; fi
  case "$1" in
    --parameters) PARAMETERS="${2:?--parameters needs a file}"; shift 2 ;;
    --stack) STACK="${2:?--stack needs a name}"; shift 2 ;;
    --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --skip-push) SKIP_PUSH=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
if [ -z "$TAG" ]; then
  TAG="$(git -C "$here" rev-parse --short HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)"
fi
overrides=()
if [ -n "$PARAMETERS" ]; then
  [ -f "$PARAMETERS" ] || die "--parameters $PARAMETERS: no such file"
  while IFS= read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    overrides+=("$line")
  done <"$PARAMETERS"
elif [ "$DRY_RUN" = 0 ]; then
  die "--parameters FILE is required (VpcId, SubnetIds, AgentSecurityGroupId, PostgresPasswordSecretArn)"
fi

account="$(awsread 000000000000 sts get-caller-identity --query Account --output text)"
registry="${account}.dkr.ecr.${REGION}.amazonaws.com"
image="${registry}/${BROKER_FAMILY}:${TAG}"

log "ECR repository ${BROKER_FAMILY}"
if [ "$DRY_RUN" = 1 ] || ! awscli ecr describe-repositories --repository-names "$BROKER_FAMILY" >/dev/null 2>&1; then
  awscli ecr create-repository --repository-name "$BROKER_FAMILY" \
    --image-scanning-configuration scanOnPush=true --image-tag-mutability IMMUTABLE >/dev/null
fi

if [ "$SKIP_BUILD" = 0 ]; then
  log "building $image"
  run docker build --tag "$image" "$here/.."
fi
if [ "$SKIP_PUSH" = 0 ]; then
  log "pushing $image"
  password="$(awsread dry-run-password ecr get-login-password)"
  printf '+ docker login --username AWS --password-stdin %s\n' "$registry" >&2
  if [ "$DRY_RUN" = 0 ]; then
    printf '%s' "$password" | docker login --username AWS --password-stdin "$registry"
  fi
  run docker push "$image"
fi

log "deploying stack $STACK"
awscli cloudformation deploy --stack-name "$STACK" \
  --template-file "$here/cloudformation/broker.yaml" \
  --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
  --parameter-overrides "ImageUri=$image" "ClusterName=$CLUSTER" "${overrides[@]}"

log "waiting for service $BROKER_SERVICE to be stable"
awscli ecs wait services-stable --cluster "$CLUSTER" --services "$BROKER_SERVICE"
counts="$(awsread "2 2" ecs describe-services --cluster "$CLUSTER" --services "$BROKER_SERVICE" \
  --query 'services[0].[runningCount,desiredCount]' --output text)"
read -r running desired <<<"$counts"
[ "$running" = "$desired" ] || die "$running of $desired tasks running"
tasks="$(awsread task-1 ecs list-tasks --cluster "$CLUSTER" --service-name "$BROKER_SERVICE" \
  --query 'taskArns' --output text)"
# shellcheck disable=SC2086 # one word per task ARN
health="$(awsread "HEALTHY HEALTHY" ecs describe-tasks --cluster "$CLUSTER" --tasks $tasks \
  --query 'tasks[].healthStatus' --output text)"
for status in $health; do
  [ "$status" = HEALTHY ] || die "a broker task is $status (aws logs tail /ecs/ca-a2a-mcp-server)"
done
log "broker healthy: $running task(s), image $image"
log "next: deploy/update-agents.sh to point the agents at it"

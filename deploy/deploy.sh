#!/usr/bin/env bash
# Builds the image, pushes it to ECR and deploys the broker stack on ECS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

usage() {
  cat <<USAGE
Usage: deploy/deploy.sh [options]

Checks that the service name is free (or already this stack's), creates the
ECR repository ca-a2a-mcp-server if missing, builds (linux/amd64) and pushes
the image, deploys the CloudFormation stack (deploy/cloudformation/broker.yaml),
waits until the ECS service is stable and every task is healthy.

  --parameters FILE  CloudFormation parameters, one KEY=VALUE per line
                     (VpcId, SubnetIds, AgentSecurityGroupId,
                     PostgresPasswordSecretArn, ServiceName, ...); see
                     deploy/README.md
  --stack NAME       stack name (default: ca-a2a-broker)
  --tag TAG          image tag (default: the git commit, plus
                     -dirty-<timestamp> when the sources have changes);
                     a tag already in ECR is not built or pushed again
  --skip-build       do not build the image
  --skip-push        do not push the image (use one already in ECR)
  --region REGION    AWS region (default: \$AWS_REGION or eu-west-3)
  --profile NAME     AWS CLI profile
  --cluster NAME     ECS cluster (default: ca-a2a-cluster)
  --dry-run          print every AWS and docker call instead of running it
  -h, --help         this help
USAGE
}

PARAMETERS=""
TAG=""
SKIP_BUILD=0
SKIP_PUSH=0
while [ $# -gt 0 ]; do
  if common_option "$@"; then shift "$SHIFT_BY"; continue; fi
  case "$1" in
    --parameters) PARAMETERS="${2:?--parameters needs a file}"; shift 2 ;;
    --tag) TAG="${2:?--tag needs a value}"; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --skip-push) SKIP_PUSH=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
TAG="${TAG:-$(image_tag "$here/..")}"

overrides=()
declare -A param=()
if [ -n "$PARAMETERS" ]; then
  [ -f "$PARAMETERS" ] || die "--parameters $PARAMETERS: no such file"
  while IFS= read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    [[ "$line" == ?*=* ]] || die "$PARAMETERS: expected KEY=VALUE, got: $line"
    overrides+=("$line")
    param["${line%%=*}"]="${line#*=}"
  done <"$PARAMETERS"
elif [ "$DRY_RUN" = 0 ]; then
  die "--parameters FILE is required (VpcId, SubnetIds, AgentSecurityGroupId, PostgresPasswordSecretArn)"
fi
BROKER_SERVICE="${param[ServiceName]:-mcp-server}"
if [ -n "$PARAMETERS" ]; then
  IFS=, read -r -a subnets <<<"${param[SubnetIds]:-}"
  [ "${#subnets[@]}" -ge 2 ] \
    || die "SubnetIds in $PARAMETERS must list at least two subnets (in two availability zones), got '${param[SubnetIds]:-}'"
fi

# Pre-flight: a service of that name that this stack does not own is the
# seed's MCP server (or someone else's): CloudFormation would fail on it.
existing="$(awsread "" ecs describe-services --cluster "$CLUSTER" --services "$BROKER_SERVICE" \
  --query "services[?status=='ACTIVE'].serviceArn | [0]" --output text)"
if [ -n "$existing" ] && [ "$existing" != None ]; then
  owned="$(awsread "" cloudformation describe-stack-resource --stack-name "$STACK" \
    --logical-resource-id Service --query StackResourceDetail.PhysicalResourceId --output text 2>/dev/null || true)"
  if [ "$owned" != "$existing" ]; then
    die "service $BROKER_SERVICE already runs in cluster $CLUSTER and is not part of stack $STACK
  (most likely the seed's MCP server). Deploy the broker next to it under another name:
    1. add ServiceName=resource-broker to $PARAMETERS and run deploy.sh again;
    2. deploy/update-agents.sh (it reads the new URL from the stack);
    3. once the agents are healthy, retire the seed service:
       aws ecs update-service --cluster $CLUSTER --service $BROKER_SERVICE --desired-count 0
       aws ecs delete-service --cluster $CLUSTER --service $BROKER_SERVICE
  See \"Next to the seed's mcp-server\" in deploy/README.md."
  fi
fi

# The running-tasks alarm needs Container Insights on the cluster; tell the
# template whether it is on unless the parameters say so (or it creates
# the cluster, with insights).
if [ -z "${param[ClusterContainerInsights]:-}" ] && [ "${param[CreateCluster]:-false}" != true ]; then
  insights="$(awsread enabled ecs describe-clusters --clusters "$CLUSTER" --include SETTINGS \
    --query "clusters[0].settings[?name=='containerInsights'].value | [0]" --output text)"
  case "$insights" in
    enabled | enhanced) insights=enabled ;;
    *)
      insights=disabled
      log "Container Insights is off on $CLUSTER: no running-tasks alarm. To have it:"
      log "  aws ecs update-cluster-settings --cluster $CLUSTER --settings name=containerInsights,value=enabled"
      ;;
  esac
  overrides+=("ClusterContainerInsights=$insights")
fi

account="$(awsread 000000000000 sts get-caller-identity --query Account --output text)"
registry="${account}.dkr.ecr.${REGION}.amazonaws.com"
image="${registry}/${BROKER_FAMILY}:${TAG}"

log "ECR repository ${BROKER_FAMILY}"
if ! awsprobe ecr describe-repositories --repository-names "$BROKER_FAMILY"; then
  awscli ecr create-repository --repository-name "$BROKER_FAMILY" \
    --image-scanning-configuration scanOnPush=true --image-tag-mutability IMMUTABLE >/dev/null
fi

# Tags are immutable: an image already pushed under this tag is reused.
if [ "$SKIP_BUILD" = 0 ] || [ "$SKIP_PUSH" = 0 ]; then
  if awsprobe ecr describe-images --repository-name "$BROKER_FAMILY" --image-ids "imageTag=$TAG"; then
    log "$image is already in ECR: not building or pushing it again"
    SKIP_BUILD=1
    SKIP_PUSH=1
  fi
fi
if [ "$SKIP_BUILD" = 0 ]; then
  log "building $image"
  # The task definition pins X86_64: build for it whatever this machine is.
  run docker build --platform linux/amd64 --tag "$image" "$here/.."
fi
if [ "$SKIP_PUSH" = 0 ]; then
  log "pushing $image"
  password="$(awsread dry-run-password ecr get-login-password)"
  show docker login --username AWS --password-stdin "$registry"
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

#!/usr/bin/env bash
# `make swarm-up`: deploy the stack on Docker Swarm (docker-compose.yml + deploy/swarm/docker-stack.yml, plus
# deploy/swarm/docker-stack.gpu.yml with GPU=1) and wait until every replica runs healthy. Run it on a manager
# node (`docker swarm init` makes this machine one). Tiny RANDOM-WEIGHT models without checkpoints, as `make up`.
# Reads the variables docker-compose.yml documents, <SERVICE>_REPLICAS, STACK (default modelyard) and
# MODELYARD_SWARM_OVERLAYS (more compose files, space-separated).
set -euo pipefail

cd "$(dirname "$0")/../.."
stack=${STACK:-modelyard}
files=(-c docker-compose.yml -c deploy/swarm/docker-stack.yml)
[[ "${GPU:-0}" != 0 ]] && files+=(-c deploy/swarm/docker-stack.gpu.yml)
for overlay in ${MODELYARD_SWARM_OVERLAYS:-}; do files+=(-c "$overlay"); done  # yours, last (tests/swarm has one)
say() { echo "[modelyard swarm] $*"; }

if [[ $(docker info --format '{{.Swarm.ControlAvailable}}') != true ]]; then
    say "this engine is not a swarm manager: run 'docker swarm init' (or run this on a manager node)" >&2
    exit 1
fi
# shellcheck source=deploy/compose/prepare.sh
source deploy/compose/prepare.sh
# Swarm bind-mounts the same absolute path on whichever node a task lands on.
MODELYARD_CONFIG_DIR=$(cd "$MODELYARD_CONFIG_DIR" && pwd)
MODELYARD_MODELS_DIR=$(cd "$models" && pwd)
MODELYARD_DATA_DIR=$(cd "$data" && pwd)
gateway_config=${MODELYARD_SWARM_GATEWAY_CONFIG:-./deploy/swarm/gateway.yaml}
# Swarm configs are immutable: one named after the stack and the file's hash, so a changed file is a new config.
MODELYARD_GATEWAY_CONFIG_NAME=${stack}_gateway-$(sha256sum "$gateway_config" | cut -c1-12)
export MODELYARD_CONFIG_DIR MODELYARD_MODELS_DIR MODELYARD_DATA_DIR MODELYARD_GATEWAY_CONFIG_NAME
say "config: $MODELYARD_CONFIG_DIR  models: $MODELYARD_MODELS_DIR  data: $MODELYARD_DATA_DIR  (same paths on every node)"
docker stack deploy --resolve-image never "${files[@]}" "$stack"

# Wait until every service runs as many healthy tasks as it asks for (a task is "running" once its healthcheck
# passes).
deadline=$((SECONDS + ${MODELYARD_UP_TIMEOUT:-600}))
while :; do
    replicas=$(docker stack services "$stack" --format '{{.Name}} {{.Replicas}}')
    if ! awk '{split($2, r, "/"); if (r[1] != r[2]) bad = 1} END {exit !bad}' <<<"$replicas"; then
        break
    fi
    if ((SECONDS > deadline)); then
        echo "$replicas" >&2
        docker stack ps "$stack" --no-trunc --filter desired-state=running >&2
        say "not every replica is running: see 'docker service logs ${stack}_<service>'" >&2
        exit 1
    fi
    sleep 2
done
echo "$replicas"
port=${MODELYARD_GATEWAY_PORT:-50050}
if [[ "${MODELYARD_GATEWAY_PUBLISH_MODE:-host}" == ingress ]]; then
    say "up: gateway at <any node>:$port (the routing mesh publishes it on every node)"
else
    node=$(docker service ps "${stack}_gateway" --filter desired-state=running --format '{{.Node}}' | head -1)
    say "up: gateway at $node:$port (published on the node its task runs on)"
fi
say "try: .venv/bin/modelyard pipelines --gateway 127.0.0.1:$port"

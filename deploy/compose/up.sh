#!/usr/bin/env bash
# `make up`: start the compose stack (CPU; the GPU overlay too with GPU=1) and wait until every container is
# healthy. Without real checkpoints in the models folder it writes tiny RANDOM-WEIGHT models there and mounts
# deploy/compose/tiny as /config, and says so. Reads the variables docker-compose.yml documents.
set -euo pipefail

cd "$(dirname "$0")/../.."
compose=${COMPOSE:-$(docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)}
files=(-f docker-compose.yml)
[[ "${GPU:-0}" != 0 ]] && files+=(-f docker-compose.gpu.yml)
say() { echo "[modelyard up] $*"; }
# shellcheck source=deploy/compose/prepare.sh
source deploy/compose/prepare.sh
say "config: $MODELYARD_CONFIG_DIR  models: $models  data: $data"
$compose "${files[@]}" up -d

# Wait for every container of the project to report healthy (compose v1 has no `up --wait`).
deadline=$((SECONDS + ${MODELYARD_UP_TIMEOUT:-600}))
while :; do
    ids=$($compose "${files[@]}" ps -q)
    states=$(docker inspect --format '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' $ids)
    if ! grep -qv ' healthy$' <<<"$states"; then
        break
    fi
    if ((SECONDS > deadline)) || grep -Eq ' (exited|restarting|dead)( |$)|unhealthy' <<<"$states"; then
        echo "$states" >&2
        say "not healthy: see '$compose logs <service>'" >&2
        exit 1
    fi
    sleep 2
done
port=${MODELYARD_GATEWAY_PORT:-50050}
say "up: gateway at ${MODELYARD_GATEWAY_BIND:-127.0.0.1}:$port"
say "try: .venv/bin/modelyard pipelines --gateway 127.0.0.1:$port"

#!/usr/bin/env bash
# `make images`: the wheelhouse (once), a base image, then one image per deployable from deploy/Dockerfile,
# sharing layers (torch once for medsam, biomedclip, tapip3d). Prints each image's size and the build time.
#
#   BASE_IMAGE=...  the base (default: python:3.11-slim-bookworm when present or pullable, otherwise
#                   modelyard/base:bookworm, built from Debian packages by build-base.sh)
#   SERVICES="medsam gateway"  a subset;  TAG=latest;  WHEELHOUSE_DIR=build/wheelhouse
#
# Images are labelled with a digest of what they are built from (the build context, the base image); when every
# requested image carries the current one, nothing is built and the wheelhouse is not needed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
TAG=${TAG:-latest}
# shellcheck source=model-services.sh
source "$here/model-services.sh"  # the model services, from their manifests (`make generate`)
SERVICES=${SERVICES:-$MODEL_SERVICES_MAIN $MODEL_SERVICES_OWN gateway}
WHEELHOUSE_DIR=${WHEELHOUSE_DIR:-build/wheelhouse}
stock=python:3.11-slim-bookworm
started=$(date +%s)

if [[ -z "${BASE_IMAGE:-}" ]]; then
    if docker image inspect "$stock" >/dev/null 2>&1 || docker pull --quiet "$stock" >/dev/null 2>&1; then
        BASE_IMAGE=$stock
    else
        echo "cannot pull $stock (no registry reachable): the base comes from Debian packages"
        "$here/build-base.sh" modelyard/base:bookworm
        BASE_IMAGE=modelyard/base:bookworm
    fi
fi

# The digest of every file the build context admits (.dockerignore), of the Dockerfile and of the base image.
inputs_digest() {
    docker image inspect --format '{{.Id}}' "$BASE_IMAGE"
    git ls-files -z --cached --others --exclude-standard -- pyproject.toml README.md protos/modelyard services \
        gateway ops demo deploy/Dockerfile deploy/docker/requirements deploy/docker/pip-install |
        grep -zv -e '__pycache__/' -e '\.pyc$' | sort -z | xargs -0 sha256sum 2>&1
}
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    inputs=$(inputs_digest | sha256sum | cut -c1-16)
else
    inputs=unknown  # not a git checkout: always build
fi
current=1
for service in $SERVICES; do
    label=$(docker image inspect --format '{{index .Config.Labels "org.modelyard.inputs"}}' "modelyard/$service:$TAG" \
        2>/dev/null || true)
    [[ "$inputs" != unknown && "$label" == "$inputs" ]] || current=0
done
if ((current)); then
    echo "images are current (inputs $inputs): $SERVICES"
    exit 0
fi

# The wheelhouse downloads only when pyproject.toml's requirements changed. During the builds it is served on
# loopback (RUN steps use the host's network): pip installs from it, and no wheel is ever copied into a layer.
"$here/wheelhouse.sh" "$WHEELHOUSE_DIR"
port=${WHEELS_PORT:-38517}  # the Dockerfile's default: the URL is part of the layer cache key
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is taken: set WHEELS_PORT to a free one (layers cached under another port rebuild)" >&2
    exit 1
fi
python3 -m http.server --bind 127.0.0.1 --directory "$WHEELHOUSE_DIR" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

mkdir -p build/logs
for service in $SERVICES; do
    log=build/logs/image-$service.log
    echo "building modelyard/$service:$TAG (base $BASE_IMAGE; log $log)"
    t0=$(date +%s)
    # The legacy builder unless asked otherwise: it is all an engine without the buildx plugin has.
    if ! DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build -f deploy/Dockerfile --target "$service" \
        --network host --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg WHEELS="http://127.0.0.1:$port" \
        --label "org.modelyard.inputs=$inputs" -t "modelyard/$service:$TAG" . >"$log" 2>&1; then
        tail -30 "$log" >&2
        echo "building modelyard/$service:$TAG failed (log $log)" >&2
        exit 1
    fi
    echo "  built in $(($(date +%s) - t0))s"
done

echo "images ($(($(date +%s) - started))s):"
for service in $SERVICES; do
    docker image inspect --format '{{.Size}}' "modelyard/$service:$TAG" |
        awk -v name="modelyard/$service:$TAG" '{ printf "  %-28s %6.2f GB\n", name, $1 / 1e9 }'
done
echo "  ($MODEL_SERVICES_MAIN share the base, core and torch layers; $MODEL_SERVICES_OWN and the gateway have no torch)"

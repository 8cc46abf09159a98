#!/usr/bin/env bash
# Download every wheel the images install, once, on the host (pip with the host's CA bundle and index), so that
# image builds never reach the network and torch's multi-GB wheels are fetched a single time.
#
#   deploy/docker/wheelhouse.sh [DIR]     (default build/wheelhouse)
#
# DIR/main         the torch services' and the gateway's wheels, resolved together: one version of each
# DIR/<service>    the set of each service with an environment of its own (model-services.sh: wilor's is
#                  mediapipe 0.10.21, numpy<2, protobuf<5, plus opencv's headless build)
# DIR/upstream     with UPSTREAM=1 (make images-upstream): what the official TAPIP3D and WiLoR code import beyond
#                  DIR/main, resolved with every DIR/main wheel pinned, so an upstream image never replaces a
#                  package of the layers below it and the standard images' set never changes for these
# The requirements are deploy/docker/requirements/<layer>.txt (`make requirements`, from pyproject.toml's extras,
# the one place ranges are pinned), the files the Dockerfile installs.
# Nothing is downloaded while a set's requirement lists are those of its last complete run (DIR/.lists,
# DIR/.lists-upstream); otherwise wheels already in DIR are reused, and a wheel no longer required is dropped.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/wheelhouse}
python=${PYTHON:-python3}
reqs=$here/requirements
# shellcheck source=model-services.sh
source "$here/model-services.sh"  # the model services, from their manifests (`make generate`)
mkdir -p "$out/main"
for service in $MODEL_SERVICES_OWN; do mkdir -p "$out/$service"; done
lists=$(mktemp -d)
trap 'rm -rf "$lists"' EXIT

# The images' interpreter, whatever the host's: CPython 3.11 on x86_64 glibc (bookworm's 2.36), wheels only.
target=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_28_x86_64 --platform linux_x86_64 --platform any)

fill() {  # fill DIR from requirement files, reusing DIR's wheels; DIR ends up with exactly what they resolve to
    local dir=$1
    shift
    rm -rf "$dir.new"
    "$python" -m pip download --quiet "${target[@]}" --find-links "$dir" --dest "$dir.new" "$@"
    rm -rf "$dir"
    mv "$dir.new" "$dir"
}

fingerprint() { cat "$@" | sha256sum | cut -d' ' -f1; }

# -- the standard images' sets ------------------------------------------------------------------------------------
for layer in core torch gateway $MODEL_SERVICES_MAIN $MODEL_SERVICES_OWN; do cp "$reqs/$layer.txt" "$lists/"; done
# setuptools and wheel build the project's own wheel inside the build (build isolation, offline).
printf 'setuptools>=69\nwheel\n' >"$lists/build.txt"
standard=$(fingerprint "$lists"/*.txt)
if [[ -f "$out/.lists" && "$(cat "$out/.lists")" == "$standard" ]]; then
    echo "wheelhouse $out is up to date"
else
    rm -f "$out/.lists"
    main=(-r "$reqs/core.txt" -r "$reqs/torch.txt" -r "$reqs/gateway.txt" -r "$lists/build.txt")
    for service in $MODEL_SERVICES_MAIN; do main+=(-r "$reqs/$service.txt"); done
    fill "$out/main" "${main[@]}"
    for service in $MODEL_SERVICES_OWN; do
        fill "$out/$service" -r "$reqs/$service.txt"
        # mediapipe (wilor) requires opencv-contrib-python, whose cv2 links libGL/X11; its image swaps in the
        # headless build of the same version.
        opencv=$(ls "$out/$service" | sed -n 's/^opencv_contrib_python-\([^-]*\)-.*/\1/p')
        if [[ -n "$opencv" ]]; then
            "$python" -m pip download --quiet "${target[@]}" --no-deps --find-links "$out/$service" \
                --dest "$out/$service" "opencv-contrib-python-headless==$opencv"
        fi
    done
    echo "$standard" >"$out/.lists"
    echo "wheelhouse $out: $(du -sh "$out" | cut -f1) ($(ls "$out/main" | wc -l) + $(ls "$out/wilor" | wc -l) wheels)"
fi

# -- the upstream images' additions (UPSTREAM=1) ------------------------------------------------------------------
[[ "${UPSTREAM:-0}" == 1 ]] || exit 0
mkdir -p "$out/upstream"
# Every wheel of DIR/main pinned: name==version from its file name (PEP 427).
for wheel in "$out"/main/*.whl; do
    name=${wheel##*/}
    echo "${name%%-*}==$(cut -d- -f2 <<<"$name")"
done | sort >"$lists/main-pins.txt"
upstream=$(fingerprint "$reqs/tapip3d-upstream.txt" "$reqs/wilor-upstream.txt" "$lists/main-pins.txt")
if [[ -f "$out/.lists-upstream" && "$(cat "$out/.lists-upstream")" == "$upstream" ]]; then
    echo "wheelhouse $out/upstream is up to date"
    exit 0
fi
rm -f "$out/.lists-upstream"
# omegaconf 2.3 (tapip3d-upstream) pins antlr4-python3-runtime==4.9.*, which PyPI has as a source archive only: it
# is pure Python, so its wheel (py3-none-any, any platform) is built here once and found by the fill below.
if ! ls "$out/upstream"/antlr4_python3_runtime-4.9.*.whl >/dev/null 2>&1; then
    "$python" -m pip wheel --quiet --no-deps --wheel-dir "$out/upstream" "antlr4-python3-runtime==4.9.*"
fi
rm -rf "$out/upstream.new"
"$python" -m pip download --quiet "${target[@]}" --find-links "$out/main" --find-links "$out/upstream" \
    --dest "$out/upstream.new" -c "$lists/main-pins.txt" -r "$reqs/tapip3d-upstream.txt" -r "$reqs/wilor-upstream.txt"
for wheel in "$out"/upstream.new/*.whl; do  # what DIR/main has already is served from there
    [[ -f "$out/main/${wheel##*/}" ]] && rm "$wheel"
done
rm -rf "$out/upstream"
mv "$out/upstream.new" "$out/upstream"
echo "$upstream" >"$out/.lists-upstream"
echo "wheelhouse $out/upstream: $(du -sh "$out/upstream" | cut -f1) ($(ls "$out/upstream" | wc -l) wheels beyond main)"

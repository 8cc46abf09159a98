#!/usr/bin/env bash
# Download every wheel the images install, once, on the host (pip with the host's CA bundle and index), so that
# image builds never reach the network and torch's multi-GB wheels are fetched a single time.
#
#   deploy/docker/wheelhouse.sh [DIR]     (default build/wheelhouse)
#
# DIR/main         the torch services' and the gateway's wheels, resolved together: one version of each
# DIR/wilor        wilor's own set (mediapipe 0.10.21, numpy<2, protobuf<5), plus opencv's headless build
# The requirements are deploy/docker/requirements/<layer>.txt (`make requirements`, from pyproject.toml's extras,
# the one place ranges are pinned), the files the Dockerfile installs.
# UPSTREAM=1 (make images-upstream) adds the packages the official TAPIP3D and WiLoR code import to DIR/main;
# without it the standard images' set stays as it is, so their wheelhouse never changes for the upstream ones.
# Nothing is downloaded while the requirement lists are those of the last complete run (DIR/.lists); otherwise
# wheels already in DIR are reused, and a wheel no longer required is dropped.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/wheelhouse}
python=${PYTHON:-python3}
reqs=$here/requirements
mkdir -p "$out/main" "$out/wilor"

lists=$(mktemp -d)
trap 'rm -rf "$lists"' EXIT
upstream_extras=()
[[ "${UPSTREAM:-0}" == 1 ]] && upstream_extras=(tapip3d-upstream wilor-upstream)
for layer in core torch medsam biomedclip tapip3d gateway wilor "${upstream_extras[@]}"; do
    cp "$reqs/$layer.txt" "$lists/"
done
upstream_reqs=()
for extra in "${upstream_extras[@]}"; do upstream_reqs+=(-r "$reqs/$extra.txt"); done
# setuptools and wheel build the project's own wheel inside the build (build isolation, offline).
printf 'setuptools>=69\nwheel\n' >"$lists/build.txt"
fingerprint=$(cat "$lists"/*.txt | sha256sum | cut -d' ' -f1)
if [[ -f "$out/.lists" && "$(cat "$out/.lists")" == "$fingerprint" ]]; then
    echo "wheelhouse $out is up to date"
    exit 0
fi
rm -f "$out/.lists"

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

# omegaconf 2.3 (tapip3d-upstream) pins antlr4-python3-runtime==4.9.*, which PyPI has as a source archive only: it
# is pure Python, so its wheel (py3-none-any, any platform) is built here once and found by the fill below.
if [[ ${#upstream_extras[@]} -gt 0 ]] && ! ls "$out/main"/antlr4_python3_runtime-4.9.*.whl >/dev/null 2>&1; then
    "$python" -m pip wheel --quiet --no-deps --wheel-dir "$out/main" "antlr4-python3-runtime==4.9.*"
fi
fill "$out/main" -r "$reqs/core.txt" -r "$reqs/torch.txt" -r "$reqs/medsam.txt" -r "$reqs/biomedclip.txt" \
    -r "$reqs/tapip3d.txt" -r "$reqs/gateway.txt" "${upstream_reqs[@]}" -r "$lists/build.txt"
fill "$out/wilor" -r "$reqs/wilor.txt"
# mediapipe requires opencv-contrib-python, whose cv2 links libGL/X11; the image swaps in the headless build.
opencv=$(ls "$out/wilor" | sed -n 's/^opencv_contrib_python-\([^-]*\)-.*/\1/p')
"$python" -m pip download --quiet "${target[@]}" --no-deps --find-links "$out/wilor" --dest "$out/wilor" \
    "opencv-contrib-python-headless==$opencv"
echo "$fingerprint" >"$out/.lists"
echo "wheelhouse $out: $(du -sh "$out" | cut -f1) ($(ls "$out/main" | wc -l) + $(ls "$out/wilor" | wc -l) wheels)"

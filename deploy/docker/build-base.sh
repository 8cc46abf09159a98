#!/usr/bin/env bash
# Build the base image from Debian packages, for engines that cannot pull (no registry reachable):
# debootstrap a minimal bookworm with Python 3.11 and venv (no compilers) and import it as an image.
# Users whose engine can pull skip this: the Dockerfile's BASE_IMAGE defaults to python:3.11-slim-bookworm.
#
#   deploy/docker/build-base.sh [IMAGE]        (default modelyard/base:bookworm; needs root for debootstrap)
#   DEBIAN_MIRROR=http://... to override the mirror (default: the host's apt sources)
set -euo pipefail

IMAGE=${1:-modelyard/base:bookworm}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE is present"
    exit 0
fi

sources=/etc/apt/sources.list.d/debian.sources
mirror=${DEBIAN_MIRROR:-}
if [[ -z "$mirror" && -f "$sources" ]]; then
    mirror=$(awk '$1 == "URIs:" { print $2; exit }' "$sources")
fi
if [[ -z "$mirror" && -f /etc/apt/sources.list ]]; then  # the one-line format: deb [options] URI suite ...
    mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
fi
if [[ -z "$mirror" ]]; then
    echo "no Debian mirror found in this host's apt sources: set DEBIAN_MIRROR to one" >&2
    exit 1
fi

if ! command -v debootstrap >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "debootstrap is missing: install it (apt-get install debootstrap) or run as root" >&2
        exit 1
    fi
    echo "installing debootstrap from Debian's packages"
    apt-get install -y -qq debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "debootstrap needs root: run 'sudo $0 $IMAGE', or build with a pullable BASE_IMAGE" >&2
    exit 1
fi

root=$(mktemp -d /tmp/modelyard-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm (minbase + python3, python3-venv) from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    exit 1
}
rm -f "$root.log"
# What a container never needs: package lists and caches, docs, man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/info/* "$root"/var/log/*.log
tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
echo "built $IMAGE: $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"

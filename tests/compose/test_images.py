"""`make images` on a machine whose images are current: nothing is built and no wheel is fetched, so `make up` in
a fresh clone with the images present starts in seconds (deploy/docker/build-images.sh labels each image with a
digest of what it is built from)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from modelyard.runtime.launch import free_port
from tests.compose.conftest import ROOT

# A build of the gateway's image from an index, and `make images` bringing the images up to date, take minutes.
pytestmark = pytest.mark.timeout(1800)

BUILD = [str(ROOT / "deploy" / "docker" / "build-images.sh")]


def test_current_images_are_neither_rebuilt_nor_need_the_wheelhouse(
    images: list[str], engine: Any, tmp_path: Path
) -> None:
    env = {**os.environ, "TAG": os.environ.get("MODELYARD_TAG", "latest")}
    update = subprocess.run(BUILD, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert update.returncode == 0, update.stdout[-3000:] + update.stderr[-3000:]  # up to date with this tree
    labels = {name: engine.images.get(name).labels.get("org.modelyard.inputs") for name in images}
    assert all(labels.values()) and len(set(labels.values())) == 1, labels  # one digest: the tree's

    missing = tmp_path / "no-wheelhouse"
    again = subprocess.run(BUILD, cwd=ROOT, env={**env, "WHEELHOUSE_DIR": str(missing)}, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"images are current (inputs {next(iter(labels.values()))})" in again.stdout
    assert "building modelyard/" not in again.stdout and not missing.exists()  # nothing built, no wheelhouse touched


def test_compose_builds_an_image_from_a_package_index_when_no_wheelhouse_is_served(
    engine: Any, compose: list[str], tmp_path: Path
) -> None:
    """`docker compose build` as a user whose engine reaches an index: no `make images`, no loopback wheelhouse.
    The index here is a PEP 503 page tree over the wheelhouse's files (PyPI itself is not reachable from builds on
    this machine), named by PIP_INDEX_URL as a user names their mirror; the gateway's image is the quick one."""
    wheels = ROOT / "build" / "wheelhouse" / "main"
    if not any(wheels.glob("*.whl")):
        pytest.skip("no wheelhouse to serve as an index (`make images` downloads it)")
    for wheel in wheels.glob("*.whl"):
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        (tmp_path / "simple" / project).mkdir(parents=True, exist_ok=True)
        (tmp_path / "simple" / project / wheel.name).symlink_to(wheel)
    port = free_port()
    index = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(tmp_path), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    override = tmp_path / "build-on-the-host-network.yml"  # so that the build reaches the index on loopback
    override.write_text('version: "3.8"\nservices:\n  gateway:\n    build: {network: host}\n')
    tag = f"index-test-{uuid.uuid4().hex[:8]}"
    base = "modelyard/base:bookworm"
    try:
        engine.images.get(base)
    except Exception:
        base = "python:3.11-slim-bookworm"
    env = {**os.environ, "MODELYARD_BASE_IMAGE": base, "MODELYARD_TAG": tag}
    try:
        done = subprocess.run(
            [*compose, "-p", tag, "-f", str(ROOT / "docker-compose.yml"), "-f", str(override), "build",
             "--build-arg", f"PIP_INDEX_URL=http://127.0.0.1:{port}/simple/", "gateway"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        output = engine.containers.run(
            f"modelyard/gateway:{tag}", ["-c", "import modelyard.gateway.server, grpc; print(grpc.__version__)"],
            entrypoint="python", network_mode="none", remove=True,
        )  # fmt: skip
        assert output.decode().strip()
    finally:
        index.terminate()
        index.wait()
        with contextlib.suppress(Exception):  # not built: nothing to remove
            engine.images.remove(f"modelyard/gateway:{tag}", force=True)

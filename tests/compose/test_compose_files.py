"""docker-compose.yml, the GPU overlay, the compose configs and the Dockerfile, checked without starting anything."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.medsam.architecture import TINY
from tests.compose.conftest import MODEL_SERVICES, ROOT, compose_command

COMPOSE_FILE = ROOT / "docker-compose.yml"
GPU_FILE = ROOT / "docker-compose.gpu.yml"
TOKEN_FILE = ROOT / "docker-compose.token.yml"
TINY_DIR = ROOT / "deploy" / "compose" / "tiny"


def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text())["services"])


def resolved(*files: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`compose config`: the files merged and interpolated by the compose tool itself."""
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    args = [a for f in files for a in ("-f", str(f))]
    done = subprocess.run(
        [*command, *args, "config"], cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def test_every_model_service_and_the_gateway_run_from_their_own_image() -> None:
    found = services()
    assert set(found) == {*MODEL_SERVICES, "gateway"}
    for name, service in found.items():
        assert service["image"] == f"modelyard/{name}:${{MODELYARD_TAG:-latest}}"
        assert service["restart"] == "on-failure:5"
        assert service["healthcheck"]["test"][:3] == ["CMD", "modelyard", "health"]  # grpc.health.v1 inside


def test_only_the_gateway_is_published_and_the_services_network_is_internal() -> None:
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    assert config["networks"]["backend"]["internal"] is True
    for name, service in config["services"].items():
        if name == "gateway":
            assert service["networks"] == ["backend", "edge"] and len(service["ports"]) == 1
        else:
            assert service["networks"] == ["backend"] and "ports" not in service


def test_volumes_config_and_models_read_only_data_read_write() -> None:
    for name, service in services().items():
        mounts = dict(re.search(r":(/\w+)(:ro)?$", v).groups() for v in service["volumes"])  # type: ignore[union-attr]
        expected = {"/config": ":ro", "/data": None} | ({} if name == "gateway" else {"/models": ":ro"})
        assert mounts == expected


def test_the_gpu_overlay_pins_each_service_from_the_planners_variables() -> None:
    env = {"MEDSAM_GPU": "2", "MEDSAM_MEMORY_FRACTION": "0.46", "TAPIP3D_GPU": "3", "TAPIP3D_MEMORY_FRACTION": ""}
    merged = resolved(COMPOSE_FILE, GPU_FILE, env=env)["services"]
    for name in MODEL_SERVICES:
        (device,) = merged[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert device["device_ids"] == [{"medsam": "2", "tapip3d": "3"}.get(name, "0")]
    assert merged["medsam"]["environment"]["MODELYARD_MEMORY_FRACTION"] == "0.46"
    assert merged["tapip3d"]["environment"]["MODELYARD_MEMORY_FRACTION"] in ("", None)  # empty: no cap
    assert "deploy" not in merged["gateway"]
    # exactly the variables the planner writes (ops/planner.py)
    text = GPU_FILE.read_text()
    assert set(re.findall(r"\$\{([A-Z0-9_]+):-", text)) == {
        f"{s.upper()}_{suffix}" for s in MODEL_SERVICES for suffix in ("GPU", "MEMORY_FRACTION")
    }


def test_the_cpu_file_validates_with_its_defaults() -> None:
    merged = resolved(COMPOSE_FILE)["services"]
    assert all("deploy" not in s for s in merged.values())


@pytest.mark.parametrize("name", ["tapip3d.yaml", "wilor.yaml", "gateway.yaml"])
def test_the_tiny_config_folder_copies_deploy_config_except_for_the_models(name: str) -> None:
    assert (TINY_DIR / name).read_text() == (ROOT / "deploy" / "config" / name).read_text(), (
        f"deploy/compose/tiny/{name} differs from deploy/config/{name}: run `make compose-config`"
    )


def test_the_tiny_medsam_config_names_the_architecture_the_models_step_writes() -> None:
    model = yaml.safe_load((TINY_DIR / "medsam.yaml").read_text())["model"]
    assert model["architecture"] == TINY.model_dump(mode="json")
    assert model["checkpoint"].startswith("/models/tiny-random/")


def test_the_dockerfile_has_a_stage_per_deployable_over_a_shared_runtime() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = {stage: parent for parent, stage in re.findall(r"^FROM (\S+) AS (\S+)$", text, re.MULTILINE)}
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.MULTILINE)
    for torch_service in ("medsam", "biomedclip", "tapip3d"):
        assert stages[torch_service] == "runtime"  # torch is installed once, in `runtime`
    assert stages["runtime"] == "core" and stages["gateway"] == "core" and stages["wilor"] == "base"
    # images for mounted official checkouts: a service image plus that code's PyPI imports, nothing compiled
    upstream = {stage for stage in stages if stage.endswith("-upstream")}
    assert upstream == {"tapip3d-upstream", "wilor-upstream"}
    assert stages["tapip3d-upstream"] == "tapip3d"  # wilor's own stage is MediaPipe without torch: WiLoR needs torch
    assert stages["wilor-upstream"] == "runtime"
    # the classic builder builds every stage before its target: the standard images must not build these
    order = list(stages)
    # ... and `--target gateway` / `--target wilor` never install torch: their stages come before it
    assert max(order.index("gateway"), order.index("wilor")) < order.index("runtime")
    assert all(order.index(s) > order.index(standard) for s in upstream for standard in ("gateway", "wilor"))
    assert text.count("USER 10001:10001") == 5 + len(upstream) and "apt-get" not in text and "gcc" not in text
    # every install goes through pip-install: the wheelhouse served to the build (WHEELS), else the package index;
    # no wheel is ever copied into a layer, and the requirement lists are the generated ones in the repository
    installs = re.findall(r"^(?:RUN| &&) [^\n]*pip[ -]install [^\n]*", text, re.MULTILINE)
    assert installs and all(re.search(r"pip-install (main|wilor|main,upstream) ", line) for line in installs)
    standard = text[: text.index(" AS tapip3d-upstream")]  # the standard images never see the upstream wheels
    assert not re.findall(r"pip-install \S*upstream", standard)
    assert "COPY build/" not in text
    assert re.findall(r"^ARG WHEELS=(.*)$", text, re.MULTILINE) == [""] * len(stages.keys() - {"base", "source"})
    copied = set(re.findall(r"^COPY deploy/docker/requirements/(\S+) ", text, re.MULTILINE))
    assert copied == {path.name for path in (ROOT / "deploy" / "docker" / "requirements").glob("*.txt")}


def test_the_pip_install_helper_uses_the_wheelhouse_when_given_and_the_index_otherwise(tmp_path: Path) -> None:
    fake_pip = tmp_path / "pip"
    fake_pip.write_text('#!/bin/sh\necho "$@"\n')
    fake_pip.chmod(0o755)
    helper = str(ROOT / "deploy" / "docker" / "pip-install")
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    offline = subprocess.run([helper, "wilor", "-r", "x.txt"], env={**env, "WHEELS": "http://127.0.0.1:1"},
                             capture_output=True, text=True, check=True)  # fmt: skip
    wheelhouse = ["--no-index", "--find-links", "http://127.0.0.1:1/wilor/"]
    assert offline.stdout.split() == ["install", *wheelhouse, "-r", "x.txt"]
    both = subprocess.run([helper, "main,upstream", "x"], env={**env, "WHEELS": "http://h:1"}, capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert both.stdout.split() == ["install", "--no-index", "--find-links", "http://h:1/main/", "--find-links",
                                   "http://h:1/upstream/", "x"]  # fmt: skip
    online = subprocess.run([helper, "main", "-r", "x.txt"], env={**env, "WHEELS": ""}, capture_output=True,
                            text=True, check=True)  # fmt: skip
    assert online.stdout.split() == ["install", "-r", "x.txt"]


def test_the_image_requirement_lists_are_generated_from_pyproject(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("pyproject_extras", ROOT / "deploy/docker/pyproject_extras.py")
    assert spec and spec.loader
    extras = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extras)
    folder = ROOT / "deploy" / "docker" / "requirements"
    committed = {path.name: path.read_text() for path in folder.glob("*.txt")}
    assert committed == extras.layer_files(), "stale: run `make requirements` after changing pyproject.toml"
    assert all(text.startswith("# Generated from pyproject.toml") for text in committed.values())


def test_compose_can_build_every_image_the_standard_way() -> None:
    for name, service in services().items():
        build = service["build"]
        assert build["context"] == "." and build["dockerfile"] == "deploy/Dockerfile" and build["target"] == name
        assert build["args"]["BASE_IMAGE"] == "${MODELYARD_BASE_IMAGE:-python:3.11-slim-bookworm}"
        assert service["image"] == f"modelyard/{name}:${{MODELYARD_TAG:-latest}}"


def test_containers_run_as_the_user_make_up_picks_and_give_up_after_five_failures() -> None:
    for service in resolved(COMPOSE_FILE, env={"MODELYARD_UID": "1000", "MODELYARD_GID": "1001"})["services"].values():
        assert service["user"] == "1000:1001"
        assert service["restart"] == "on-failure:5"  # a configuration problem ends as `exited (2)`, not a loop
    for service in resolved(COMPOSE_FILE)["services"].values():
        assert service["user"] == "10001:10001"  # the images' own user when nothing is set


def test_the_build_context_leaves_virtualenvs_wheels_and_data_out() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"  # everything out, then only the sources (and the requirement lists) back in
    included = [line.removeprefix("!") for line in lines[1:] if line.startswith("!")]
    assert included == ["pyproject.toml", "README.md", "protos/modelyard/", "services/", "gateway/",
                        "deploy/docker/requirements/", "deploy/docker/pip-install"]  # fmt: skip


def test_the_token_overlay_makes_the_services_require_the_secret_the_gateway_sends(tmp_path: Path) -> None:
    (tmp_path / "service.token").write_text("s3cret\n")
    env = {"MODELYARD_SERVICE_TOKEN": str(tmp_path / "service.token"), "MEDSAM_MEMORY_FRACTION": "0.4"}
    merged = resolved(COMPOSE_FILE, GPU_FILE, TOKEN_FILE, env=env)
    for name in MODEL_SERVICES:
        service = merged["services"][name]
        assert [s["source"] for s in service["secrets"]] == ["service_token"]
        assert service["environment"]["MODELYARD_TOKEN_FILE"] == "/run/secrets/service_token"
        assert "MODELYARD_MEMORY_FRACTION" in service["environment"]  # the GPU overlay's settings stay
    gateway = merged["services"]["gateway"]
    assert gateway["environment"]["MODELYARD_SERVICE_TOKEN_FILE"] == "/run/secrets/service_token"
    assert Path(merged["secrets"]["service_token"]["file"]) == tmp_path / "service.token"
    assert all("secrets" not in s for s in resolved(COMPOSE_FILE)["services"].values())  # opt-in

"""deploy/swarm's overlays and gateway config, checked without an engine (tests/swarm/test_swarm.py runs them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.gateway.config import GatewayConfig
from tests.compose.conftest import MODEL_SERVICES, ROOT

SWARM = ROOT / "deploy" / "swarm"


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def stack_config(*files: Path) -> dict[str, Any]:
    """The files merged and interpolated by `docker stack config` (Docker CLI 23 and later)."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI")
    args = [a for f in files for a in ("-c", str(f))]
    done = subprocess.run(["docker", "stack", "config", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0 and "unknown" in done.stderr:
        pytest.skip(f"this docker CLI has no `stack config`: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def test_every_file_docker_stack_deploy_reads_names_a_compose_version_older_clis_accept() -> None:
    for path in (ROOT / "docker-compose.yml", SWARM / "docker-stack.yml", SWARM / "docker-stack.gpu.yml"):
        assert str(load(path).get("version", "")).startswith("3."), f"{path.name}: Debian's CLI needs version 3.x"


def test_model_services_roll_start_first_and_are_replaced_whatever_ended_them() -> None:
    merged = stack_config(ROOT / "docker-compose.yml", SWARM / "docker-stack.yml")["services"]
    for name in MODEL_SERVICES:
        deploy = merged[name]["deploy"]
        assert deploy["update_config"]["order"] == "start-first" and deploy["update_config"]["parallelism"] == 1
        assert deploy["update_config"]["failure_action"] == "rollback"
        assert deploy["restart_policy"]["condition"] == "any"
        assert merged[name]["healthcheck"]["test"][:3] == ["CMD", "modelyard", "health"]  # gates the update
    assert merged["medsam"]["deploy"]["replicas"] == 2


def test_the_gateway_runs_one_replica_stopped_before_its_successor_starts() -> None:
    gateway = stack_config(ROOT / "docker-compose.yml", SWARM / "docker-stack.yml")["services"]["gateway"]
    assert gateway["deploy"]["replicas"] == 1 and gateway["deploy"]["update_config"]["order"] == "stop-first"
    assert gateway["configs"] == [{"source": "gateway", "target": "/etc/modelyard/gateway.yaml"}]
    assert gateway["command"][:4] == ["gateway", "serve", "--config", "/etc/modelyard/gateway.yaml"]


def test_the_swarm_gateway_config_reaches_every_replica_through_tasks_dns(tmp_path: Path) -> None:
    raw = load(SWARM / "gateway.yaml")
    assert raw["data_root"] == "/data"
    config = GatewayConfig.model_validate({**raw, "data_root": str(tmp_path)}, context={"base_dir": SWARM})
    assert set(config.services) == set(MODEL_SERVICES)
    for name, endpoint in config.services.items():
        assert endpoint.addresses == [f"dns:///tasks.{name}:50051"]


def test_the_gpu_overlay_reserves_one_generic_gpu_per_model_service() -> None:
    merged = stack_config(ROOT / "docker-compose.yml", SWARM / "docker-stack.yml", SWARM / "docker-stack.gpu.yml")
    for name in MODEL_SERVICES:
        reserved = merged["services"][name]["deploy"]["resources"]["reservations"]["generic_resources"]
        assert reserved == [{"discrete_resource_spec": {"kind": "gpu", "value": 1}}]
        assert "MODELYARD_MEMORY_FRACTION" in merged["services"][name]["environment"]
    assert "resources" not in merged["services"]["gateway"].get("deploy", {})

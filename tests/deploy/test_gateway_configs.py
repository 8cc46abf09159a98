"""The gateway's settings are the same wherever it is deployed (compose, compose with tiny models, Swarm,
Kubernetes): only where the services are (their addresses) differs, so a retry or drain setting cannot hold on
one engine and silently not on another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.gateway.config import GatewayConfig
from tests.compose.conftest import MODEL_SERVICES, ROOT

DEPLOYMENTS = {
    "compose": ROOT / "deploy" / "config" / "gateway.yaml",
    "compose, tiny models": ROOT / "deploy" / "compose" / "tiny" / "gateway.yaml",
    "swarm": ROOT / "deploy" / "swarm" / "gateway.yaml",
    "kubernetes": ROOT / "deploy" / "k8s" / "base" / "config" / "gateway.yaml",
}


def settings(path: Path, data_root: Path) -> dict[str, Any]:
    """The config as the gateway reads it, every default filled in, with the services' addresses taken out."""
    raw = yaml.safe_load(path.read_text())
    assert raw["data_root"] == "/data", path
    config = GatewayConfig.model_validate({**raw, "data_root": str(data_root)}, context={"base_dir": path.parent})
    dumped = config.model_dump(mode="json")
    assert sorted(dumped["services"]) == sorted(MODEL_SERVICES), path
    for endpoint in dumped["services"].values():
        endpoint.pop("addresses")
    return dumped


@pytest.mark.parametrize("deployment", [d for d in DEPLOYMENTS if d != "compose"])
def test_every_deployment_configures_the_gateway_as_compose_does(deployment: str, tmp_path: Path) -> None:
    assert settings(DEPLOYMENTS[deployment], tmp_path) == settings(DEPLOYMENTS["compose"], tmp_path)

"""`modelyard health`, the containers' healthcheck: exit 0 only when grpc.health.v1 says SERVING, in the main
environment and in wilor's (protobuf 4)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from modelyard.runtime.launch import LocalService, free_port
from tests.conftest import write_config
from tests.wilor_env import wilor_python


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    folder = tmp_path_factory.mktemp("echo")
    config = write_config(folder, {"max_delay_seconds": 1}, {"max_batch_size": 1}, "echo.yaml")
    with LocalService("echo", config, log_path=folder / "echo.log") as service:
        yield service


def health(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "modelyard.runtime.cli", "health", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("env", ["main", "wilor"])
def test_serving_exits_0_and_an_unreachable_server_exits_1(echo: LocalService, env: str) -> None:
    python = sys.executable if env == "main" else wilor_python()
    ok = health(python, "--address", echo.address)
    assert ok.returncode == 0 and ok.stdout.strip() == f"{echo.address}: SERVING", ok.stderr
    named = health(python, "--address", echo.address, "--service", "modelyard.v1.Echo")
    assert named.returncode == 0, named.stderr
    closed = f"127.0.0.1:{free_port()}"
    down = health(python, "--address", closed, "--timeout", "2")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr


def test_an_unknown_service_name_is_not_healthy(echo: LocalService) -> None:
    unknown = health(sys.executable, "--address", echo.address, "--service", "modelyard.v1.Nope")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr

"""A config error inside a container — the seed's host path that never reached it, a config file that is not
there — shows the runtime's own message in `compose logs`, and the container exits (code 2, a configuration
problem) and is never reported healthy; the restart policy retries five times with docker's growing back-off,
then leaves it exited, so a plain `docker compose up` without checkpoints ends in a visible failure, not a loop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.compose.conftest import ComposeProject, new_project

pytestmark = pytest.mark.timeout(900)


def failed_start(project: ComposeProject, service: str, timeout: float = 180) -> dict[str, Any]:
    """Wait until the service's container has exited with code 2 and been restarted at least once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container = project.container(service)
        state, restarts = container.attrs["State"], container.attrs["RestartCount"]
        assert state.get("Health", {}).get("Status") != "healthy"
        if state["ExitCode"] == 2 and restarts >= 1:
            return dict(state)
        time.sleep(0.5)
    raise AssertionError(f"{service} did not fail to start: {project.container(service).attrs['State']}")


def gave_up(project: ComposeProject, service: str, timeout: float = 300) -> dict[str, Any]:
    """Wait until the restart policy has stopped retrying: the container exited (2) after its five restarts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container = project.container(service)
        state = container.attrs["State"]
        if state["Status"] == "exited" and container.attrs["RestartCount"] == 5:
            time.sleep(3)  # and it stays so
            container.reload()
            assert container.attrs["State"]["Status"] == "exited" and container.attrs["RestartCount"] == 5
            return dict(container.attrs["State"])
        time.sleep(0.5)
    raise AssertionError(f"{service} is still being restarted: {project.container(service).attrs['State']}")


@pytest.fixture
def broken(engine: Any, compose: list[str], images: list[str], tmp_path: Path) -> Any:
    def start(files: dict[str, str]) -> ComposeProject:
        config = tmp_path / "config"
        config.mkdir()
        for name, text in files.items():
            (config / name).write_text(text)
        project = new_project(compose, engine, tmp_path, config)
        started.append(project)
        project.run("up", "-d", "medsam")  # medsam alone: it depends on nothing
        return project

    started: list[ComposeProject] = []
    yield start
    for project in started:
        project.down()


def test_a_host_path_in_the_config_is_named_as_one_in_the_logs(broken: Any) -> None:
    project = broken({"medsam.yaml": "model:\n  checkpoint: /home/alice/models/medsam_vit_b.pth\n"})
    state = failed_start(project, "medsam")
    assert state["Status"] in ("restarting", "exited", "running")  # running: between two restarts
    logs = project.logs("medsam")
    assert "file not found: /home/alice/models/medsam_vit_b.pth" in logs
    assert "looks like a path on the host that was never mounted into this container" in logs
    assert "mounted volumes here: /config, /data, /models" in logs  # what is mounted, to compare with
    assert project.health("medsam") != "healthy"


def test_a_missing_config_file_names_the_path_and_what_the_folder_holds(broken: Any) -> None:
    project = broken({"gateway.yaml": "data_root: /data\n"})  # a /config without medsam.yaml
    failed_start(project, "medsam")
    logs = project.logs("medsam")
    assert "config file not found: /config/medsam.yaml" in logs
    assert "the nearest existing folder is /config, holding: gateway.yaml" in logs
    assert gave_up(project, "medsam")["ExitCode"] == 2  # a configuration problem, not retried forever

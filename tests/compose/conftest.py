"""The compose suite: real containers from `make images`, started with docker-compose.yml, or a running deployment.

    pytest tests/compose                                  # builds missing images, starts its own compose project
    pytest tests/compose --gateway HOST:PORT --data-dir DIR [--compose-project NAME]

Without a reachable Docker engine (or compose tool) the engine-backed tests skip, saying why. Against a running
deployment the pipelines run through its gateway with inputs written into DIR, the host folder mounted as its
/data; fault injection needs --compose-project (its containers ARE killed, stopped, paused and disconnected).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelyard.gateway.client import GatewayClient
from modelyard.runtime.client import channel, wait_until_serving
from modelyard.runtime.launch import free_port
from modelyard.runtime.manifest import model_service_names

ROOT = Path(__file__).resolve().parents[2]
MODEL_SERVICES = model_service_names()
IMAGES = (*MODEL_SERVICES, "gateway")
# The suite's containers run as a uid of their own, neither root nor the images' user (as `make up` runs them as the
# host user's), so the tests see whose files the outputs are; without root, as our own uid.
STACK_UID = 4321 if os.geteuid() == 0 else os.getuid()
STACK_GID = 4321 if os.geteuid() == 0 else os.getgid()
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("modelyard compose")
    group.addoption("--gateway", help="HOST:PORT of a running deployment's gateway, tested instead of a new stack")
    group.addoption("--data-dir", help="with --gateway: the host folder mounted as the deployment's /data")
    group.addoption(
        "--compose-project",
        help="with --gateway: the deployment's compose project; enables fault injection into its containers",
    )


def compose_command() -> list[str] | None:
    """Compose v2 (`docker compose`) when the engine's CLI has it, the Debian docker-compose (v1) otherwise."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def docker_client() -> Any:
    """The Docker SDK's client, or a skip that says why there is none."""
    try:
        import docker
    except ImportError:
        pytest.skip("the docker SDK is not installed (`pip install -e '.[dev]'`)")
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # no socket, no permission, daemon down: all mean "no engine here"
        pytest.skip(f"no Docker engine reachable ({type(exc).__name__}: {exc}); tests/compose needs one")
    return client


@pytest.fixture(scope="session")
def engine() -> Any:
    return docker_client()


@pytest.fixture(scope="session")
def compose(engine: Any) -> list[str]:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    return command


@pytest.fixture(scope="session")
def images(engine: Any) -> list[str]:
    """The images `make images` builds; built here (deploy/docker/build-images.sh) when one is missing."""
    import docker

    tag = os.environ.get("MODELYARD_TAG", "latest")
    names = [f"modelyard/{name}:{tag}" for name in IMAGES]
    missing = []
    for name in names:
        try:
            engine.images.get(name)
        except docker.errors.ImageNotFound:
            missing.append(name)
    if missing:
        build = subprocess.run(
            [str(ROOT / "deploy" / "docker" / "build-images.sh")], cwd=ROOT, capture_output=True, text=True,
            timeout=3600, env={**os.environ, "TAG": tag},
        )  # fmt: skip
        assert build.returncode == 0, f"building {missing} failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    return names


def prepare_data_dir(path: Path) -> Path:
    """A /data folder the containers' user (STACK_UID) owns, as `make up` prepares it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, STACK_UID, STACK_GID)
    return path


def write_tiny_models(engine: Any, models: Path, tag: str = "latest") -> None:
    """deploy/compose/tiny_models.py inside the medsam and biomedclip images, as `make up` does."""
    for service in ("medsam", "biomedclip"):
        engine.containers.run(
            f"modelyard/{service}:{tag}",
            ["/compose/tiny_models.py", service],
            entrypoint="python",
            user=f"{os.getuid()}:{os.getgid()}",
            network_mode="none",
            volumes={str(models): {"bind": "/models", "mode": "rw"},
                     str(ROOT / "deploy" / "compose"): {"bind": "/compose", "mode": "ro"}},
            remove=True,
        )  # fmt: skip


@dataclass
class ComposeProject:
    """One compose project of docker-compose.yml, with its own name, folders and gateway port."""

    command: list[str]
    engine: Any
    name: str
    env: dict[str, str]
    files: list[Path] = field(default_factory=lambda: [ROOT / "docker-compose.yml"])

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        cmd = [*self.command, "-p", self.name]
        for f in self.files:
            cmd += ["-f", str(f)]
        done = subprocess.run(
            [*cmd, *args], cwd=ROOT, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def containers(self, service: str | None = None) -> list[Any]:
        labels = [f"{PROJECT_LABEL}={self.name}"] + ([f"{SERVICE_LABEL}={service}"] if service else [])
        return list(self.engine.containers.list(all=True, filters={"label": labels}))

    def container(self, service: str) -> Any:
        found = [c for c in self.containers(service) if c.labels.get("com.docker.compose.oneoff") != "True"]
        assert len(found) == 1, f"expected one {service} container in {self.name}, found {len(found)}"
        return found[0]

    def networks(self) -> list[Any]:
        return list(self.engine.networks.list(filters={"label": f"{PROJECT_LABEL}={self.name}"}))

    def logs(self, service: str) -> str:
        done = self.run("logs", "--no-color", service, check=False)
        return done.stdout + done.stderr

    def health(self, service: str) -> str:
        container = self.container(service)
        container.reload()
        state = container.attrs["State"]
        return str(state.get("Health", {}).get("Status") or state["Status"])

    def wait_healthy(self, services: tuple[str, ...], timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {s: self.health(s) for s in services}
            if all(v == "healthy" for v in states.values()):
                return
            time.sleep(1)
        logs = "\n".join(f"--- {s} ({states[s]})\n{self.logs(s)[-2000:]}" for s in services)
        raise AssertionError(f"not healthy after {timeout:.0f}s: {states}\n{logs}")

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "20")


def new_project(command: list[str], engine: Any, folder: Path, config_dir: Path, **env: str) -> ComposeProject:
    models = folder / "models"
    models.mkdir(parents=True, exist_ok=True)
    return ComposeProject(
        command,
        engine,
        f"modelyard-test-{uuid.uuid4().hex[:8]}",
        {
            "MODELYARD_CONFIG_DIR": str(config_dir),
            "MODELYARD_MODELS_DIR": str(models),
            "MODELYARD_DATA_DIR": str(prepare_data_dir(folder / "data")),
            "MODELYARD_GATEWAY_PORT": str(free_port()),
            "MODELYARD_GATEWAY_BIND": "127.0.0.1",
            "MODELYARD_UID": str(STACK_UID),
            "MODELYARD_GID": str(STACK_GID),
            **env,
        },
    )


@dataclass
class Deployment:
    """What the stack tests run against: a gateway address, the host folder behind /data, maybe the project."""

    gateway: str
    data: Path
    project: ComposeProject | None

    def client(self) -> GatewayClient:
        return GatewayClient(self.gateway)


@pytest.fixture(scope="session")
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A running deployment: the one --gateway names, or a fresh compose project (taken down at the end)."""
    gateway = request.config.getoption("--gateway")
    if gateway:
        data_dir = request.config.getoption("--data-dir")
        if not data_dir:
            pytest.fail("--gateway needs --data-dir: the host folder the deployment mounts as /data (inputs go there)")
        project_name = request.config.getoption("--compose-project")
        project = None
        if project_name:
            engine = docker_client()
            command = compose_command() or []
            project = ComposeProject(command, engine, project_name, {})
        with channel(gateway) as chan:
            wait_until_serving(chan, timeout=60)
        yield Deployment(gateway, Path(data_dir), project)
        return
    engine = request.getfixturevalue("engine")
    command = request.getfixturevalue("compose")
    request.getfixturevalue("images")
    folder = tmp_path_factory.mktemp("compose")
    project = new_project(command, engine, folder, ROOT / "deploy" / "compose" / "tiny")
    write_tiny_models(engine, Path(project.env["MODELYARD_MODELS_DIR"]))
    try:
        project.run("up", "-d")
        project.wait_healthy((*MODEL_SERVICES, "gateway"))
        yield Deployment(f"127.0.0.1:{project.env['MODELYARD_GATEWAY_PORT']}", folder / "data", project)
    finally:
        if project.containers():  # the last test takes it down and checks; this is for failures on the way
            project.down()

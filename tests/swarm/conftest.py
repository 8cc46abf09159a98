"""The swarm suite: the stack on a real Docker Swarm (deploy/swarm), from the images `make images` builds.

A single-node swarm is created for the suite when the engine is in none, and left at the end, pass or fail, with
whatever swarm mode left behind (docker_gwbridge). An engine already in a swarm that this suite did not create is
not touched: the suite skips, saying so (MODELYARD_SWARM_REUSE=1 deploys a test stack into it and removes only
that). Without a reachable engine it skips, saying why. Figures (timings, replica counts) are printed at the end.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelyard.runtime.client import channel, wait_until_serving
from modelyard.runtime.launch import free_port
from tests.compose import conftest as compose
from tests.compose.conftest import ROOT, Deployment, docker_client

# The compose suite's fixtures, shared: the images (built when missing) and the engine they need.
engine = compose.engine
images = compose.images

STACK_LABEL = "com.docker.stack.namespace"
OURS = "modelyard.test-swarm"  # node label: this swarm was created by the suite (a crashed run's is left too)
OVERLAY = Path(__file__).with_name("stack.yml")
FIGURES: list[str] = []


def figure(text: str) -> None:
    """A measured figure: printed now (with -s) and in the summary at the end."""
    print(text)
    FIGURES.append(text)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("Docker Swarm figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Swarm:
    """The engine in swarm mode, and what existed before the suite touched it (compared at the end)."""

    engine: Any
    created: bool
    before: dict[str, set[str]] = field(default_factory=dict)

    def inventory(self) -> dict[str, set[str]]:
        found = {
            "networks": {n.name for n in self.engine.networks.list()},
            "volumes": {v.name for v in self.engine.volumes.list()},
        }
        if self.active():
            found["services"] = {s.name for s in self.engine.services.list()}
            found["configs"] = {c.name for c in self.engine.configs.list()}
            found["secrets"] = {s.name for s in self.engine.secrets.list()}
        return found

    def active(self) -> bool:
        return bool(self.engine.info()["Swarm"]["LocalNodeState"] == "active")

    def leave(self) -> None:
        """Leave the swarm this suite created, and remove the bridge swarm mode made for itself."""
        if not self.created or not self.active():
            return
        self.engine.swarm.leave(force=True)
        if "docker_gwbridge" not in self.before["networks"]:
            for network in self.engine.networks.list(names=["docker_gwbridge"]):
                network.remove()


def _our_leftover(engine: Any) -> bool:
    """An active swarm that a crashed run of this suite created: a single node carrying our label."""
    try:
        nodes = engine.nodes.list()
    except Exception:  # a worker cannot list nodes: not ours
        return False
    return len(nodes) == 1 and OURS in (nodes[0].attrs["Spec"].get("Labels") or {})


@pytest.fixture(scope="session")
def swarm() -> Iterator[Swarm]:
    engine = docker_client()
    state = engine.info()["Swarm"]["LocalNodeState"]
    if state == "active" and _our_leftover(engine):
        engine.swarm.leave(force=True)  # a previous run died before leaving; start clean
        state = "inactive"
    if state == "active":
        if os.environ.get("MODELYARD_SWARM_REUSE") != "1":
            pytest.skip(
                "the engine is already in a swarm this suite did not create: not deploying into it "
                "(MODELYARD_SWARM_REUSE=1 deploys a test stack there, on a manager, and removes only that)"
            )
        if not engine.info()["Swarm"].get("ControlAvailable"):
            pytest.skip("the engine is a swarm worker: the suite deploys from a manager")
        found = Swarm(engine, created=False)
        found.before = found.inventory()
        yield found
        return
    if state != "inactive":
        pytest.skip(f"the engine's swarm state is {state!r}: neither in a swarm nor free to create one")
    swarm = Swarm(engine, created=True)
    swarm.before = swarm.inventory()
    started = time.monotonic()
    try:
        try:
            engine.swarm.init()
        except Exception as exc:  # several addresses and none chosen: this node only needs to reach itself
            if "advertise" not in str(exc):
                raise
            engine.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        node = engine.nodes.list()[0]
        node.update({**node.attrs["Spec"], "Labels": {OURS: "1"}})
        figure(f"swarm init: {time.monotonic() - started:.1f} s (single node, created by the suite)")
        yield swarm
    finally:
        swarm.leave()


@dataclass
class Stack:
    """One stack of docker-compose.yml + deploy/swarm/docker-stack.yml + tests/swarm/stack.yml, deployed by
    deploy/swarm/up.sh, with its own name, folders and gateway port."""

    swarm: Swarm
    name: str
    env: dict[str, str]
    deployment: Deployment

    def service(self, service: str) -> Any:
        (found,) = self.swarm.engine.services.list(filters={"name": f"{self.name}_{service}"})
        return found

    def tasks(self, service: str, state: str = "running") -> list[dict[str, Any]]:
        """The service's tasks whose desired state is `state` (running: current, or starting to replace one)."""
        return [t for t in self.service(service).tasks() if t["DesiredState"] == state]

    def task(self, service: str, task_id: str) -> dict[str, Any]:
        (found,) = [t for t in self.service(service).tasks() if t["ID"] == task_id]
        return found

    def running(self, service: str) -> list[dict[str, Any]]:
        """Tasks running, i.e. healthy: a task with a healthcheck is "starting" until the check passes."""
        return [t for t in self.tasks(service) if t["Status"]["State"] == "running"]

    def container(self, task: dict[str, Any]) -> Any:
        return self.swarm.engine.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])

    def wait_replicas(self, service: str, count: int, timeout: float = 300, without: Collection[str] = ()) -> float:
        """Seconds until `count` tasks run healthy, none of them in `without` (task ids); fails with the tasks."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            running = [t for t in self.running(service) if t["ID"] not in without]
            if len(running) == count and len(self.tasks(service)) == count:
                return time.monotonic() - started
            time.sleep(0.5)
        tasks = docker("service", "ps", "--no-trunc", f"{self.name}_{service}", check=False).stdout
        raise AssertionError(f"{service}: not {count} healthy replicas after {timeout:.0f}s:\n{tasks}")

    def labelled(self, kind: str) -> list[Any]:
        collection = getattr(self.swarm.engine, kind)
        return list(collection.list(filters={"label": f"{STACK_LABEL}={self.name}"}))

    def remove(self) -> None:
        """`docker stack rm`, then wait until its networks are gone (swarm removes them after the tasks)."""
        docker("stack", "rm", self.name)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (self.labelled("networks") or self.labelled("containers")):
            time.sleep(1)


@pytest.fixture(scope="session")
def stack(swarm: Swarm, images: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack as deploy/swarm/up.sh deploys it (tiny random-weight models, 2 MedSAM replicas), removed at the
    end; the last test checks that nothing is left."""
    folder = tmp_path_factory.mktemp("swarm")
    name = f"modelyard-test-{uuid.uuid4().hex[:8]}"
    env = {
        "STACK": name,
        "MODELYARD_TAG": os.environ.get("MODELYARD_TAG", "latest"),
        "MODELYARD_MODELS_DIR": str(folder / "models"),  # empty: up.sh writes the tiny models, mounts their configs
        "MODELYARD_DATA_DIR": str(folder / "data"),
        "MODELYARD_GATEWAY_PORT": str(free_port()),
        "MODELYARD_SWARM_OVERLAYS": str(OVERLAY),
        "MEDSAM_REPLICAS": "2",
        "MODELYARD_UP_TIMEOUT": "400",
    }
    env.pop("MODELYARD_CONFIG_DIR", None)
    started = time.monotonic()
    up = subprocess.run(
        [str(ROOT / "deploy" / "swarm" / "up.sh")],
        cwd=ROOT,
        env={k: v for k, v in {**os.environ, **env}.items() if k != "MODELYARD_CONFIG_DIR"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    deployment = Deployment(f"127.0.0.1:{env['MODELYARD_GATEWAY_PORT']}", folder / "data", None)
    result = Stack(swarm, name, env, deployment)
    try:
        assert up.returncode == 0, f"deploy/swarm/up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}"
        with channel(deployment.gateway) as chan:
            wait_until_serving(chan, timeout=120)  # the port published on this node
        figure(f"stack deploy until every replica healthy (up.sh): {time.monotonic() - started:.1f} s")
        yield result
    finally:
        if swarm.active() and result.labelled("services"):  # the last test removes it and checks
            result.remove()

"""`modelyard doctor`: what stands between this machine and a working deployment, and what to do about it.

Checks, each a function returning findings (ok / warn / fail, with the fix):
  engine   the Docker Engine answers (docker SDK, $DOCKER_HOST honoured)
  images   modelyard/<service>:latest and modelyard/gateway:latest exist (`make images` builds them)
  volumes  the host folders behind /config, /models and /data exist
  configs  every <service>.yaml validates with the service's own schema as the container will see it, naming
           host paths that will not exist inside a container and container paths whose host folder is missing
  gpus     what NVML sees, whether the engine can hand GPUs to containers, whether the GPU plan still matches
  ports    the gateway's published port is free (or served by our own stack)
  health   grpc.health.v1 of each running service (--address, or the local stack's .modelyard/stack.json) and the
           health of running modelyard containers
  swarm    when the engine is in a Docker Swarm: its nodes, and per stack service of our images the healthy
           replicas against the desired ones, rolling updates that stopped, and tasks swarm replaced
The exit code is 1 when any check fails; warnings do not fail.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from modelyard.ops.planner import ENV_BEGIN, ENV_END, MODEL_SERVICES
from modelyard.ops.volumes import Mounts, check_for_container, container_view, read_yaml
from modelyard.runtime.client import LOCAL_STATE_DIR
from modelyard.runtime.devices import GpuSnapshot, read_gpus
from modelyard.runtime.errors import ConfigError

Status = Literal["ok", "warn", "fail"]
CHECKS = ("engine", "images", "volumes", "configs", "gpus", "ports", "health", "swarm")
STACK_LABEL = "com.docker.stack.namespace"
IMAGE_PREFIX = "modelyard/"
GATEWAY_PORT = 50050


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str
    status: Status
    detail: str
    fix: str = ""


def image_name(service: str) -> str:
    return f"{IMAGE_PREFIX}{service}:latest"


# -- engine and images -------------------------------------------------------------------------------------------


def check_engine(connect: Callable[[], Any] | None = None) -> tuple[list[Finding], Any]:
    """Whether the Docker Engine answers; returns the client for the checks that need it (None when it does not)."""
    try:
        import docker
    except ImportError:
        return [
            Finding("engine", "docker SDK", "fail", "the docker Python package is not installed", "pip install docker")
        ], None
    try:
        client = (connect or (lambda: docker.from_env(timeout=10)))()
        client.ping()
        version = client.version()
    except Exception as exc:  # the SDK raises DockerException, requests' and socket errors alike
        return [
            Finding(
                "engine",
                "Docker Engine",
                "fail",
                f"not reachable: {exc}",
                "start the engine (systemctl start docker), or set DOCKER_HOST; your user needs access to its "
                "socket (the docker group)",
            )
        ], None
    detail = f"Docker Engine {version.get('Version', '?')} (API {version.get('ApiVersion', '?')})"
    return [Finding("engine", "Docker Engine", "ok", detail)], client


def check_images(client: Any, services: Sequence[str]) -> list[Finding]:
    from docker.errors import ImageNotFound

    findings = []
    for name in [image_name(s) for s in (*services, "gateway")]:
        try:
            image = client.images.get(name)
        except ImageNotFound:
            findings.append(Finding("images", name, "fail", "not built", "make images"))
            continue
        size = int(image.attrs.get("Size", 0)) / 1e6
        findings.append(Finding("images", name, "ok", f"{image.short_id}, {size:.0f} MB"))
    return findings


def check_containers(client: Any) -> list[Finding]:
    """Health of running modelyard containers, as the engine's healthcheck sees it."""
    findings = []
    for container in client.containers.list(all=True):
        tags = container.image.tags if container.image else []
        if not any(t.startswith(IMAGE_PREFIX) for t in tags):
            continue
        state = container.attrs.get("State", {})
        health = (state.get("Health") or {}).get("Status")
        subject = f"container {container.name}"
        if state.get("Status") != "running":
            code = state.get("ExitCode")
            findings.append(
                Finding(
                    "health",
                    subject,
                    "fail",
                    f"{state.get('Status')} (exit code {code})",
                    "docker logs " + container.name,
                )
            )
        elif health == "unhealthy":
            log = (state.get("Health", {}).get("Log") or [{}])[-1].get("Output", "").strip()
            findings.append(
                Finding("health", subject, "fail", f"unhealthy: {log[:200]}", "docker logs " + container.name)
            )
        else:
            findings.append(Finding("health", subject, "ok", health or "running (no healthcheck)"))
    return findings


# -- Docker Swarm ------------------------------------------------------------------------------------------------


def check_swarm(client: Any) -> list[Finding]:
    """Nodes and stack services of a swarm deployment (deploy/swarm); nothing when the engine is in no swarm."""
    info = client.info().get("Swarm") or {}
    if info.get("LocalNodeState") != "active":
        return []
    if not info.get("ControlAvailable"):
        return [
            Finding(
                "swarm",
                "this node",
                "warn",
                "a swarm worker: services and nodes are known to managers only",
                "run modelyard doctor on a manager node (docker node ls there)",
            )
        ]
    return _swarm_nodes(client.nodes.list()) + _swarm_services(client)


def _swarm_nodes(nodes: Sequence[Any]) -> list[Finding]:
    findings = []
    for node in nodes:
        attrs = node.attrs
        spec, status, desc = attrs.get("Spec", {}), attrs.get("Status", {}), attrs.get("Description", {})
        gpus = [
            r.get("DiscreteResourceSpec") or r.get("NamedResourceSpec")
            for r in (desc.get("Resources") or {}).get("GenericResources") or []
        ]
        labels = ", ".join(f"{k}={v}" for k, v in sorted((spec.get("Labels") or {}).items()))
        detail = (
            f"{spec.get('Role')}, {status.get('State')}, {spec.get('Availability')}, "
            f"engine {desc.get('Engine', {}).get('EngineVersion', '?')}"
            + (f", generic resources {gpus}" if gpus else "")
            + (f", labels {labels}" if labels else "")
        )
        subject = f"node {desc.get('Hostname', node.id)}"
        if status.get("State") != "ready":
            findings.append(Finding("swarm", subject, "fail", detail, "on that node: systemctl status docker"))
        elif spec.get("Availability") != "active":
            findings.append(
                Finding(
                    "swarm",
                    subject,
                    "warn",
                    detail + ": takes no new tasks",
                    f"docker node update --availability active {node.id}",
                )
            )
        else:
            findings.append(Finding("swarm", subject, "ok", detail))
    return findings


def _swarm_services(client: Any) -> list[Finding]:
    findings = []
    for service in client.services.list():
        spec = service.attrs.get("Spec", {})
        image = spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", "")
        stack = (spec.get("Labels") or {}).get(STACK_LABEL)
        if not stack or not image.startswith(IMAGE_PREFIX):
            continue
        name = spec.get("Name", service.name)
        desired = (spec.get("Mode", {}).get("Replicated") or {}).get("Replicas")
        tasks = service.tasks()
        current = [t for t in tasks if t.get("DesiredState") == "running"]
        # A task with a healthcheck reports "running" only once the check passes, so running means healthy.
        running = sum(t.get("Status", {}).get("State") == "running" for t in current)
        starting = len(current) - running
        replaced = [t for t in tasks if t.get("DesiredState") == "shutdown" and t.get("Status", {}).get("Err")]
        detail = f"{running}/{desired if desired is not None else 'global'} replicas healthy"
        detail += f", {starting} starting" if starting else ""
        if replaced:
            last = max(replaced, key=lambda t: t.get("Status", {}).get("Timestamp", ""))
            detail += f"; swarm replaced {len(replaced)} failed task(s), last: {last['Status']['Err']}"
        update = service.attrs.get("UpdateStatus") or {}
        fix = f"docker service ps --no-trunc {name}; docker service logs {name}"
        if desired and running == 0:
            findings.append(Finding("swarm", f"service {name}", "fail", detail, fix))
        elif update.get("State") in ("paused", "rollback_completed", "rollback_paused"):
            findings.append(
                Finding(
                    "swarm",
                    f"service {name}",
                    "fail",
                    f"{detail}; update {update['State']}: {update.get('Message', '')}",
                    fix,
                )
            )
        elif desired is not None and running < desired:
            findings.append(Finding("swarm", f"service {name}", "warn", detail, fix))
        else:
            findings.append(Finding("swarm", f"service {name}", "ok", detail))
    return findings


# -- volumes and configs -----------------------------------------------------------------------------------------


def check_volumes(mounts: Mounts) -> list[Finding]:
    findings = []
    if mounts.config.is_dir():
        findings.append(Finding("volumes", f"/config <- {mounts.config}", "ok", "present"))
    else:
        findings.append(
            Finding("volumes", f"/config <- {mounts.config}", "fail", "missing", "pass --config-dir (deploy/config)")
        )
    for point, host, why in (
        ("/models", mounts.models, "checkpoints and upstream checkouts go there"),
        ("/data", mounts.data, "the engine would create it owned by root, and the non-root services could not write"),
    ):
        if host.is_dir():
            findings.append(Finding("volumes", f"{point} <- {host}", "ok", "present"))
        else:
            findings.append(Finding("volumes", f"{point} <- {host}", "warn", f"missing: {why}", f"mkdir -p {host}"))
    return findings


def check_configs(mounts: Mounts, services: Sequence[str] = MODEL_SERVICES) -> list[Finding]:
    """Validate each service's YAML as its container will read it (see modelyard.ops.volumes)."""
    from modelyard.runtime.registry import load_service

    findings = []
    for service in services:
        file = mounts.config / f"{service}.yaml"
        if not file.is_file():
            findings.append(
                Finding(
                    "configs", file.name, "fail", f"no {file}", f"write {file} (the service reads /config/{file.name})"
                )
            )
            continue
        try:
            spec = load_service(service)
            checked = check_for_container(file, spec.config_schema, mounts)
        except ConfigError as exc:
            findings.append(Finding("configs", file.name, "fail", exc.message))
            continue
        findings += [Finding("configs", file.name, "fail", error, "fix this key") for error in checked.errors]
        problems = checked.problems
        for p in problems:
            findings.append(
                Finding("configs", f"{file.name}: {p.key}", "fail" if p.fatal else "warn", f"{p.value}: {p.problem}")
            )
        if not problems and not checked.errors:
            findings.append(Finding("configs", file.name, "ok", "valid, every path resolves through the mounts"))
    gateway = mounts.config / "gateway.yaml"
    if gateway.is_file():
        findings.extend(_check_gateway_config(gateway, mounts))
    return findings


def _check_gateway_config(file: Path, mounts: Mounts) -> list[Finding]:
    from pydantic import ValidationError

    from modelyard.gateway.config import GatewayConfig
    from modelyard.runtime.config import config_problems

    try:
        view = container_view(read_yaml(file), mounts)
        GatewayConfig.model_validate(view.data, context={"base_dir": mounts.config.absolute()})
    except ConfigError as exc:
        return [Finding("configs", file.name, "fail", exc.message)]
    except ValidationError as exc:
        problems = "; ".join(config_problems(exc, GatewayConfig))
        return [Finding("configs", file.name, "fail", problems, "fix the keys named above")]
    findings = [
        Finding("configs", f"{file.name}: {p.key}", "fail" if p.fatal else "warn", f"{p.value}: {p.problem}")
        for p in view.problems
    ]
    return findings or [Finding("configs", file.name, "ok", "valid")]


# -- GPUs --------------------------------------------------------------------------------------------------------


def planned_gpus(env_file: Path) -> dict[str, int]:
    """<SERVICE>_GPU values from the planner's block of an env file."""
    if not env_file.is_file():
        return {}
    planned: dict[str, int] = {}
    inside = False
    for line in env_file.read_text().splitlines():
        if line.startswith(ENV_BEGIN):
            inside = True
        elif line.startswith(ENV_END):
            inside = False
        elif inside and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            if key.endswith("_GPU") and value.strip().isdigit():
                planned[key.removesuffix("_GPU").lower()] = int(value)
    return planned


def check_gpus(snapshot: GpuSnapshot, planned: dict[str, int], runtimes: Sequence[str] | None) -> list[Finding]:
    """GPUs as NVML sees them, the plan against them, and whether the engine can hand them to containers
    (`runtimes` are the engine's; None when it was not reached)."""
    if not snapshot.available:
        status: Status = "fail" if planned else "warn"
        fix = "run where the GPUs are, or drop the GPU overlay" if planned else ""
        return [Finding("gpus", "NVML", status, f"{snapshot.reason}: the CPU stack only", fix)]
    findings = [
        Finding(
            "gpus",
            f"GPU {g.index} {g.name}",
            "ok",
            f"{g.used_mb}/{g.total_mb} MiB used, {g.utilization_pct} % busy",
        )
        for g in snapshot.gpus
    ]
    indices = {g.index for g in snapshot.gpus}
    for service, index in sorted(planned.items()):
        if index not in indices:
            findings.append(
                Finding(
                    "gpus",
                    f"plan: {service}",
                    "fail",
                    f"planned on GPU {index}, but NVML sees {sorted(indices)}",
                    "modelyard plan",
                )
            )
    if runtimes is not None and "nvidia" not in runtimes:
        findings.append(
            Finding(
                "gpus",
                "engine runtimes",
                "warn",
                f"the engine lists no nvidia runtime ({', '.join(runtimes) or 'none'}): GPU reservations may fail",
                "if `docker run --rm --gpus all debian nvidia-smi` fails: install nvidia-container-toolkit, then "
                "nvidia-ctk runtime configure --runtime=docker",
            )
        )
    return findings


# -- ports and health --------------------------------------------------------------------------------------------


def health_of(address: str, timeout: float = 3.0) -> str:
    """SERVING / NOT_SERVING / ..., or the gRPC code when the server does not answer."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def check_ports(ports: Sequence[int]) -> list[Finding]:
    findings = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    findings.append(Finding("ports", str(port), "fail", str(exc)))
                    continue
                status = health_of(f"127.0.0.1:{port}", timeout=1.0)
                if status == "SERVING":
                    findings.append(Finding("ports", str(port), "ok", "in use by a SERVING gRPC server (the stack)"))
                else:
                    findings.append(
                        Finding(
                            "ports",
                            str(port),
                            "fail",
                            f"in use by another process (gRPC health: {status})",
                            f"stop it (ss -ltnp 'sport = :{port}') or publish the gateway on another port",
                        )
                    )
                continue
        findings.append(Finding("ports", str(port), "ok", "free"))
    return findings


def check_health(addresses: dict[str, str]) -> list[Finding]:
    findings = []
    for name, address in sorted(addresses.items()):
        status = health_of(address)
        if status == "SERVING":
            findings.append(Finding("health", f"{name} {address}", "ok", "SERVING"))
        elif status == "NOT_SERVING":
            findings.append(
                Finding(
                    "health",
                    f"{name} {address}",
                    "fail",
                    "NOT_SERVING: still loading, draining, or unable to serve",
                    "read its log; it turns SERVING once loaded and warm",
                )
            )
        else:
            findings.append(
                Finding("health", f"{name} {address}", "fail", status, "is it running? (modelyard up / make up)")
            )
    return findings


# -- the command -------------------------------------------------------------------------------------------------


def findings_table(findings: Sequence[Finding]) -> Table:
    table = Table(title="modelyard doctor")
    for column in ("check", "subject", "", "detail", "fix"):
        table.add_column(column, overflow="fold")
    marks = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}
    for f in findings:
        table.add_row(f.check, f.subject, marks[f.status], f.detail, f.fix)
    return table


def run_checks(args: argparse.Namespace) -> list[Finding]:
    skip = set(args.skip.split(",")) if args.skip else set()
    unknown = skip - set(CHECKS)
    if unknown:
        raise SystemExit(f"unknown check(s) {', '.join(sorted(unknown))}; known: {', '.join(CHECKS)}")
    mounts = Mounts.default(
        Path(args.config_dir),
        Path(args.models_dir) if args.models_dir else None,
        Path(args.data_dir) if args.data_dir else None,
    )
    findings: list[Finding] = []
    client = None
    if not {"engine", "images"} <= skip:
        engine, client = check_engine()
        findings += engine if "engine" not in skip else []
    if "images" not in skip and client is not None:
        findings += check_images(client, MODEL_SERVICES)
    if "volumes" not in skip:
        findings += check_volumes(mounts)
    if "configs" not in skip and mounts.config.is_dir():
        findings += check_configs(mounts)
    if "gpus" not in skip:
        runtimes = None
        if client is not None:
            with contextlib.suppress(Exception):
                runtimes = list(client.info().get("Runtimes", {}))
        findings += check_gpus(read_gpus(), planned_gpus(Path(args.env_file)), runtimes)
    if "ports" not in skip:
        findings += check_ports(args.port or [GATEWAY_PORT])
    if "health" not in skip:
        addresses = dict(a.split("=", 1) for a in args.address or [])
        if not addresses:
            from modelyard.ops.local import read_state

            addresses = {name: p.address for name, p in read_state(Path(args.state_dir)).items()}
        findings += check_health(addresses)
        if client is not None:
            findings += check_containers(client)
        if not any(f.check == "health" for f in findings):
            findings.append(Finding("health", "services", "ok", "nothing running to check (no --address, no stack)"))
    if "swarm" not in skip and client is not None:
        findings += check_swarm(client)
    return findings


def _doctor(args: argparse.Namespace) -> int:
    findings = run_checks(args)
    console = Console()
    console.print(findings_table(findings))
    failed = [f for f in findings if f.status == "fail"]
    warned = [f for f in findings if f.status == "warn"]
    if failed:
        console.print(f"[red]{len(failed)} problem(s) to fix[/red], {len(warned)} warning(s)")
        return 1
    console.print(f"[green]nothing to fix[/green] ({len(warned)} warning(s))")
    return 0


def add_doctor_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="check engine, images, volumes, configs, GPUs, ports and health; say what to fix")
    p.add_argument("--config-dir", default="deploy/config", help="host folder mounted at /config")
    p.add_argument("--models-dir", help="host folder mounted at /models (default: $MODELYARD_MODELS_DIR or ./models)")
    p.add_argument("--data-dir", help="host folder mounted at /data (default: $MODELYARD_DATA_DIR or ./data)")
    p.add_argument("--env-file", default=".env", help="where `modelyard plan` wrote the GPU plan (default: .env)")
    p.add_argument("--port", type=int, action="append", help=f"host port to check (repeatable; default {GATEWAY_PORT})")
    p.add_argument("--address", action="append", help="NAME=host:port of a running service (repeatable)")
    p.add_argument("--state-dir", default=str(LOCAL_STATE_DIR), help="the local stack's state (used without --address)")
    p.add_argument("--skip", help=f"comma-separated checks to skip: {', '.join(CHECKS)}")
    p.set_defaults(func=_doctor)

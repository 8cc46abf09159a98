"""A service config as the container sees it, checked from the host.

Compose and Kubernetes mount three volumes at fixed container paths: `/config` (the YAML, read-only), `/models`
(checkpoints and upstream checkouts, read-only) and `/data` (read-write, shared with the gateway). Configs are
written for the container, so on the host their paths only make sense through those mounts. `container_view`
rewrites every container path to the host folder behind its mount, so the service's own schema can check the
config here, and names the two ways a path breaks inside a container: a host path that was never mounted (the
seed's `/workspace/configs//home/...` day) and a container path whose host folder lacks the file.

Host folders behind the mounts (the compose files use the same defaults and variables):
`/config` = the config folder (deploy/config), `/models` = $MODELYARD_MODELS_DIR or ./models,
`/data` = $MODELYARD_DATA_DIR or ./data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml
from pydantic import BaseModel

from modelyard.runtime.config import ServiceConfig, parse_config
from modelyard.runtime.errors import ConfigError
from modelyard.runtime.paths import looks_like_host_path

MODELS_DIR_ENV = "MODELYARD_MODELS_DIR"
DATA_DIR_ENV = "MODELYARD_DATA_DIR"
# Paths every container has without a volume; a config may name them (e.g. runtime.shared_memory_dir).
CONTAINER_SYSTEM_PATHS = ("/dev", "/tmp", "/proc", "/sys")


@dataclass(frozen=True)
class Mounts:
    """Host folder behind each container mount point."""

    config: Path
    models: Path
    data: Path

    @classmethod
    def default(cls, config_dir: Path, models_dir: Path | None = None, data_dir: Path | None = None) -> Mounts:
        return cls(
            config=config_dir,
            models=models_dir or Path(os.environ.get(MODELS_DIR_ENV, "models")),
            data=data_dir or Path(os.environ.get(DATA_DIR_ENV, "data")),
        )

    def points(self) -> dict[str, Path]:
        return {"/config": self.config.absolute(), "/models": self.models.absolute(), "/data": self.data.absolute()}


@dataclass(frozen=True)
class PathProblem:
    key: str  # dotted location in the YAML, e.g. model.upstream.checkpoint
    value: str
    problem: str
    fatal: bool = True


@dataclass(frozen=True)
class ContainerView:
    """A config's YAML with container paths rewritten to host paths, and what will not resolve in a container."""

    data: dict[str, Any]
    problems: list[PathProblem]


def _mount_of(value: str, mounts: Mounts) -> tuple[str, Path] | None:
    path = PurePosixPath(value)
    for point, host in mounts.points().items():
        if path == PurePosixPath(point) or path.is_relative_to(point):
            return point, host / path.relative_to(point)
    return None


def _check_path(key: str, value: str, mounts: Mounts) -> tuple[str, PathProblem | None]:
    """The host path to validate instead of `value`, and what is wrong with `value` inside a container."""
    if PureWindowsPath(value).drive:
        return value, PathProblem(key, value, "a Windows path: containers only see /config, /models and /data")
    if not value.startswith("/"):
        return value, None  # relative: resolved against /config by the schema, like in the container
    mounted = _mount_of(value, mounts)
    if mounted is not None:
        point, host = mounted
        root = mounts.points()[point]
        if host == root:
            return str(host), None  # the mount itself: whether its folder exists is the volumes' concern
        if not root.is_dir():
            return str(host), PathProblem(key, value, f"the host folder behind {point}, {root}, does not exist")
        if not host.exists():
            return str(host), PathProblem(
                key, value, f"{point} is mounted from {root}, which has no {host.relative_to(root)}: put it there"
            )
        return str(host), None
    if value.startswith(CONTAINER_SYSTEM_PATHS):
        return value, None
    if looks_like_host_path(value):
        return value, PathProblem(
            key,
            value,
            "will not exist inside the container: only /config, /models and /data are mounted, never host folders "
            "like /home/...; put the file under the models or data folder and use its /models/... or /data/... path",
        )
    return value, PathProblem(
        key, value, "not under a mounted volume (/config, /models, /data): it must be inside the image", fatal=False
    )


def _rewrite(node: Any, key: str, mounts: Mounts, problems: list[PathProblem]) -> Any:
    if isinstance(node, dict):
        return {k: _rewrite(v, f"{key}.{k}" if key else str(k), mounts, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, f"{key}[{i}]", mounts, problems) for i, v in enumerate(node)]
    if isinstance(node, str):
        host, problem = _check_path(key, node, mounts)
        if problem is not None:
            problems.append(problem)
        return host
    return node


def container_view(data: dict[str, Any], mounts: Mounts) -> ContainerView:
    """Rewrite every string under a mount point to its host path; list values that will not resolve in a container.
    Any string starting with '/' is treated as a path: config values that are not paths never start with one."""
    problems: list[PathProblem] = []
    rewritten = _rewrite(data, "", mounts, problems)
    return ContainerView(rewritten, problems)


def read_yaml(file: Path) -> dict[str, Any]:
    """A config file's mapping, or a ConfigError saying why it is not one."""
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {file} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {file} must be a mapping with 'model:' and 'runtime:' sections")
    return data


@dataclass(frozen=True)
class ContainerCheck:
    """A service config checked as its container will read it. `config` is None when it does not validate;
    `errors` are the schema's complaints that the path problems do not already explain."""

    config: ServiceConfig[Any] | None
    problems: list[PathProblem]
    errors: list[str]

    def summary(self) -> str:
        lines = [f"'{p.key}' = {p.value}: {p.problem}" for p in self.problems if p.fatal] + self.errors
        return "; ".join(lines)


def check_for_container(file: Path, model_schema: type[BaseModel], mounts: Mounts) -> ContainerCheck:
    """Validate a service config with its schema as the container would see it (paths through the mounts).
    Raises ConfigError only when the file cannot be read as a mapping."""
    view = container_view(read_yaml(file), mounts)
    try:
        config = parse_config(view.data, model_schema, mounts.config.absolute(), str(file))
    except ConfigError as exc:
        # parse_config lists one problem per line as "  - '<key>': ..."; a path already explained is not repeated.
        explained = tuple(f"'{p.key}'" for p in view.problems if p.fatal)
        lines = [line.strip().removeprefix("- ") for line in exc.message.splitlines()[1:]]
        errors = [line for line in lines if line and not line.startswith(explained)]
        return ContainerCheck(None, view.problems, errors)
    return ContainerCheck(config, view.problems, [])

"""A model service's declaration: `services/<name>/manifest.yaml`, the one place that says what the service is.

Everything that lists model services reads these files: the service's own registration (`ServiceSpec.declared`),
the GPU planner and the doctor (`installed_manifests`), and `make generate` (modelyard.ops.generate), which
writes the image stages, the compose, Swarm and Kubernetes entries, the gateway's service addresses and the
lists the build scripts loop over. Reading one needs no torch: the planner runs where no model is installed.
"""

from __future__ import annotations

from importlib import metadata, resources
from pathlib import Path
from typing import Literal, TypedDict

import yaml
from pydantic import Field, ValidationError

from modelyard.runtime.config import Strict
from modelyard.runtime.errors import ConfigError

MANIFEST_FILE = "manifest.yaml"
SERVICES_GROUP = "modelyard.services"  # the entry point group a service registers in


class Ports(Strict):
    grpc: int = Field(50051, ge=1, le=65535, description="the service's gRPC port in its container")
    metrics: int = Field(9090, ge=1, le=65535, description="its Prometheus /metrics port")


class Image(Strict):
    base: Literal["runtime", "base"] = Field(
        "runtime",
        description="runtime: over the shared torch layers of the main environment; base: a venv of its own",
    )
    install: str | None = Field(
        None, description="the install command, when `pip-install main -r <its requirements>` is not all"
    )
    comment: str = Field("", description="what the image stage needs saying (written above the stage)")
    start_period_s: int = Field(300, ge=0, description="how long loading may take before health counts")


class UpstreamImage(Strict):
    """`<name>-upstream` (`make images-upstream`): the packages the official code imports (the `<name>-upstream`
    extra), for `model.backend: upstream` with the user's checkout mounted; nothing of the checkout is in it."""

    over: Literal["service", "runtime"] = Field(
        description="service: over the service's own image; runtime: over the torch layers (the service's own "
        "environment cannot hold the official code's packages)"
    )
    comment: str = Field("", description="what the image stage needs saying (written above the stage)")
    start_period_s: int | None = Field(None, ge=0, description="loading time before health counts (over: runtime)")


class Memory(Strict):
    fallback_mb: tuple[int, int] = Field(
        description="(fixed MiB, MiB per batch item) with the published checkpoints, for the planner when a "
        "config cannot be checked on the host"
    )
    fallback_note: str = Field(description="where those figures come from")
    host_request: str = Field(description="host memory the container needs (a Kubernetes quantity, e.g. 3Gi)")
    host_limit: str = Field(description="host memory it may take at most")


class ServiceManifest(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9]*$", description="the service's name: CLI, image, host name")
    title: str = Field(description="the model's name as its authors write it")
    summary: str = Field(description="one line: what it does")
    proto_service: str = Field(pattern=r"^modelyard\.v1\.[A-Za-z0-9]+$", description="its gRPC service")
    extra: str = Field(description="the pip extra (pyproject.toml) its environment installs")
    environment: Literal["main", "own"] = Field(
        description="main: the shared environment (.venv, the torch image layers); own: .venv-<name>, its image "
        "from the base"
    )
    config: str = Field(description="its default config, relative to the repository (mounted as /config)")
    tiny_config: Literal["copy", "own"] = Field(
        "copy",
        description="the tiny stack's config (deploy/compose/tiny): a copy of the default, or one of its own "
        "naming tiny random-weight models",
    )
    ports: Ports = Ports()
    image: Image = Image()
    upstream_image: UpstreamImage | None = None
    memory: Memory
    swarm_replicas: int = Field(1, ge=0, description="replicas on Docker Swarm by default")


def read_manifest(path: Path) -> ServiceManifest:
    """The manifest at `path`, validated; a ConfigError names the file and what is wrong."""
    try:
        raw = yaml.safe_load(path.read_text())
        return ServiceManifest.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def manifests_in(root: Path) -> list[ServiceManifest]:
    """The services of a source tree (`root/services/*/manifest.yaml`), by name."""
    found = []
    for path in sorted((root / "services").glob(f"*/{MANIFEST_FILE}")):
        manifest = read_manifest(path)
        if manifest.name != path.parent.name:
            raise ConfigError(f"{path}: name {manifest.name!r} is not its folder's ({path.parent.name!r})")
        found.append(manifest)
    return found


def installed_manifests() -> list[ServiceManifest]:
    """The model services this installation registers, read from their packages without importing them (the
    reference service, echo, declares no manifest: it is never deployed)."""
    found = []
    for entry in metadata.entry_points(group=SERVICES_GROUP):
        package = entry.module.rpartition(".")[0]
        try:
            manifest = resources.files(package) / MANIFEST_FILE
            if manifest.is_file():
                found.append(ServiceManifest.model_validate(yaml.safe_load(manifest.read_text())))
        except ModuleNotFoundError:
            continue
    return sorted(found, key=lambda m: m.name)


def model_service_names() -> tuple[str, ...]:
    """The names of the installed model services, sorted."""
    return tuple(m.name for m in installed_manifests())


class Declared(TypedDict):
    name: str
    proto_service: str
    summary: str


def declared_by(service_module: str) -> Declared:
    """What a service's `ServiceSpec` takes from its manifest: pass the service module's `__file__`.

    SERVICE = ServiceSpec(**declared_by(__file__), config_schema=..., adapter=..., ...)
    """
    manifest = read_manifest(Path(service_module).with_name(MANIFEST_FILE))
    summary = f"{manifest.summary} ({manifest.title})"
    return Declared(name=manifest.name, proto_service=manifest.proto_service, summary=summary)

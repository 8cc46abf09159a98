"""Services are registered as entry points (group `modelyard.services`) and loaded by name on demand."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, entry_points, metadata

from modelyard.runtime.adapter import ServiceSpec
from modelyard.runtime.errors import ConfigError

GROUP = "modelyard.services"


def service_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def missing_dependency(exc: ImportError) -> str | None:
    """The package an ImportError says is missing or too old, or None when it is an error in modelyard's own
    modules (a bug to show with its traceback, not a package to install)."""
    name = exc.name or ""
    if not name or name == "modelyard" or name.startswith("modelyard."):
        return None
    return name.split(".")[0]


def install_hint(service: str) -> str:
    """How to get a service's packages: its pip extra where modelyard declares one."""
    try:
        extras = metadata("modelyard").get_all("Provides-Extra") or []
    except PackageNotFoundError:
        extras = []
    if service in extras:
        return f"install its dependencies: pip install 'modelyard[{service}]'"
    return "install the package named above into this environment"


def load_service(name: str) -> ServiceSpec:
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        raise ConfigError(f"unknown service '{name}'; known services: {', '.join(service_names())}")
    try:
        spec = matches[0].load()
    except ImportError as exc:
        if missing_dependency(exc) is None:
            raise
        raise ConfigError(f"service '{name}' cannot be imported ({exc}); {install_hint(name)}") from None
    if not isinstance(spec, ServiceSpec):
        raise ConfigError(f"entry point {matches[0].value} is not a ServiceSpec")
    return spec

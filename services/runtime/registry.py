"""Services are registered as entry points (group `modelyard.services`) and loaded by name on demand."""

from __future__ import annotations

from importlib.metadata import entry_points

from modelyard.runtime.adapter import ServiceSpec
from modelyard.runtime.errors import ConfigError

GROUP = "modelyard.services"


def service_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_service(name: str) -> ServiceSpec:
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        raise ConfigError(f"unknown service '{name}'; known services: {', '.join(service_names())}")
    try:
        spec = matches[0].load()
    except ImportError as exc:
        raise ConfigError(
            f"service '{name}' cannot be imported ({exc}); install its dependencies: pip install 'modelyard[{name}]'"
        ) from None
    if not isinstance(spec, ServiceSpec):
        raise ConfigError(f"entry point {matches[0].value} is not a ServiceSpec")
    return spec

"""The pipelines the gateway ships, and the stubs of the model services it can call."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import grpc

from modelyard.gateway.pipeline import Pipeline
from modelyard.gateway.pipelines.hand3d import Hand3D
from modelyard.gateway.pipelines.medvqa import MedVQA
from modelyard.runtime.manifest import ServiceManifest, installed_manifests

PIPELINES: dict[str, Pipeline[Any]] = {p.name: p for p in (MedVQA(), Hand3D())}


def stub_class(manifest: ServiceManifest) -> Callable[[grpc.Channel], Any]:
    """The generated client stub of a service's proto (protos/modelyard/v1/<name>.proto, as its manifest's
    proto_service names it)."""
    package, service = manifest.proto_service.rsplit(".", 1)
    module = importlib.import_module(f"{package}.{manifest.name}_pb2_grpc")
    stub: Callable[[grpc.Channel], Any] = getattr(module, f"{service}Stub")
    return stub


# Every installed model service, from its manifest: one the gateway's config names is reachable (Info, probes)
# whether or not a pipeline calls it yet.
STUBS: dict[str, Callable[[grpc.Channel], Any]] = {m.name: stub_class(m) for m in installed_manifests()}

"""The pipelines the gateway ships, and the stubs of the services they call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from modelyard.gateway.pipeline import Pipeline
from modelyard.gateway.pipelines.hand3d import Hand3D
from modelyard.gateway.pipelines.medvqa import MedVQA
from modelyard.v1 import biomedclip_pb2_grpc, medsam_pb2_grpc, tapip3d_pb2_grpc, wilor_pb2_grpc

PIPELINES: dict[str, Pipeline[Any]] = {p.name: p for p in (MedVQA(), Hand3D())}

STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "biomedclip": biomedclip_pb2_grpc.BiomedCLIPStub,
    "medsam": medsam_pb2_grpc.MedSAMStub,
    "tapip3d": tapip3d_pb2_grpc.TAPIP3DStub,
    "wilor": wilor_pb2_grpc.WiLoRStub,
}

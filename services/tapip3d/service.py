"""Registers TAPIP3D with the runtime (entry point `modelyard.services: tapip3d`)."""

from modelyard.runtime.adapter import ServiceSpec
from modelyard.tapip3d.config import TAPIP3DConfig
from modelyard.tapip3d.model import TAPIP3DAdapter
from modelyard.tapip3d.servicer import TAPIP3DServicer
from modelyard.v1 import tapip3d_pb2_grpc

SERVICE = ServiceSpec(
    name="tapip3d",
    proto_service="modelyard.v1.TAPIP3D",
    config_schema=TAPIP3DConfig,
    adapter=TAPIP3DAdapter,
    make_servicer=TAPIP3DServicer,
    add_to_server=tapip3d_pb2_grpc.add_TAPIP3DServicer_to_server,
    summary="3D point tracks in RGB-D video (TAPIP3D)",
)

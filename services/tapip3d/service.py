"""Registers TAPIP3D with the runtime (entry point `modelyard.services: tapip3d`)."""

from modelyard.runtime.adapter import ServiceSpec
from modelyard.runtime.manifest import declared_by
from modelyard.tapip3d.config import TAPIP3DConfig
from modelyard.tapip3d.model import TAPIP3DAdapter
from modelyard.tapip3d.servicer import TAPIP3DServicer
from modelyard.v1 import tapip3d_pb2_grpc

SERVICE = ServiceSpec(
    **declared_by(__file__),
    config_schema=TAPIP3DConfig,
    adapter=TAPIP3DAdapter,
    make_servicer=TAPIP3DServicer,
    add_to_server=tapip3d_pb2_grpc.add_TAPIP3DServicer_to_server,
)

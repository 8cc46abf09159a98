"""Registers MedSAM with the runtime (entry point `modelyard.services: medsam`)."""

from modelyard.medsam.config import MedSAMConfig
from modelyard.medsam.model import MedSAMAdapter
from modelyard.medsam.servicer import MedSAMServicer
from modelyard.runtime.adapter import ServiceSpec
from modelyard.runtime.manifest import declared_by
from modelyard.v1 import medsam_pb2_grpc

SERVICE = ServiceSpec(
    **declared_by(__file__),
    config_schema=MedSAMConfig,
    adapter=MedSAMAdapter,
    make_servicer=MedSAMServicer,
    add_to_server=medsam_pb2_grpc.add_MedSAMServicer_to_server,
)

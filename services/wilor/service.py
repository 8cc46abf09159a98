"""Registers WiLoR with the runtime (entry point `modelyard.services: wilor`)."""

from modelyard.runtime.adapter import ServiceSpec
from modelyard.runtime.manifest import declared_by
from modelyard.v1 import wilor_pb2_grpc
from modelyard.wilor.config import WiLoRConfig
from modelyard.wilor.model import WiLoRAdapter
from modelyard.wilor.servicer import WiLoRServicer

SERVICE = ServiceSpec(
    **declared_by(__file__),
    config_schema=WiLoRConfig,
    adapter=WiLoRAdapter,
    make_servicer=WiLoRServicer,
    add_to_server=wilor_pb2_grpc.add_WiLoRServicer_to_server,
)

"""Registers BiomedCLIP with the runtime (entry point `modelyard.services: biomedclip`)."""

from modelyard.biomedclip.config import BiomedCLIPConfig
from modelyard.biomedclip.model import BiomedCLIPAdapter
from modelyard.biomedclip.servicer import BiomedCLIPServicer
from modelyard.runtime.adapter import ServiceSpec
from modelyard.runtime.manifest import declared_by
from modelyard.v1 import biomedclip_pb2_grpc

SERVICE = ServiceSpec(
    **declared_by(__file__),
    config_schema=BiomedCLIPConfig,
    adapter=BiomedCLIPAdapter,
    make_servicer=BiomedCLIPServicer,
    add_to_server=biomedclip_pb2_grpc.add_BiomedCLIPServicer_to_server,
)

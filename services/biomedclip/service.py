"""Registers BiomedCLIP with the runtime (entry point `modelyard.services: biomedclip`)."""

from modelyard.biomedclip.config import BiomedCLIPConfig
from modelyard.biomedclip.model import BiomedCLIPAdapter
from modelyard.biomedclip.servicer import BiomedCLIPServicer
from modelyard.runtime.adapter import ServiceSpec
from modelyard.v1 import biomedclip_pb2_grpc

SERVICE = ServiceSpec(
    name="biomedclip",
    proto_service="modelyard.v1.BiomedCLIP",
    config_schema=BiomedCLIPConfig,
    adapter=BiomedCLIPAdapter,
    make_servicer=BiomedCLIPServicer,
    add_to_server=biomedclip_pb2_grpc.add_BiomedCLIPServicer_to_server,
    summary="biomedical image-text embeddings, zero-shot labels, heatmaps, boxes (BiomedCLIP)",
)

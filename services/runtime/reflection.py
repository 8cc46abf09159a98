"""gRPC server reflection under both names clients ask for: `grpc.reflection.v1alpha` (grpcio-reflection's)
and `grpc.reflection.v1` (grpcurl, Postman and newer tools try it first).

grpcio-reflection ships only v1alpha; v1 is the same protocol renamed (same messages, same field numbers), so
the one v1alpha servicer answers v1 calls too, registered under the v1 method name.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME


def enable_reflection(service_names: Sequence[str], server: grpc.Server) -> None:
    """Serve reflection for `service_names` (and both reflection services) on `server`, as v1alpha and v1."""
    names = tuple(dict.fromkeys((*service_names, V1ALPHA_SERVICE_NAME, V1_SERVICE_NAME)))
    servicer = reflection.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": v1}),)
    )

"""The one server bootstrap (runtime.server.GrpcServer) that model services and the gateway both run on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelyard.runtime.errors import ConfigError
from modelyard.runtime.metrics import ServiceMetrics
from modelyard.runtime.server import GrpcServer
from modelyard.v1 import echo_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Running(NamedTuple):
    bootstrap: GrpcServer
    channel: grpc.Channel
    port: int


@pytest.fixture
def server() -> Iterator[Running]:
    bootstrap = GrpcServer("bootstrap-test", ServiceMetrics("bootstrap-test"), max_message_mb=1, grpc_threads=4)
    bootstrap.add("modelyard.v1.Echo", echo_pb2_grpc.EchoServicer(), echo_pb2_grpc.add_EchoServicer_to_server)
    port = bootstrap.bind("127.0.0.1:0")
    bootstrap.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield Running(bootstrap, channel, port)
    channel.close()
    bootstrap.drain(0).wait()


def health_of(channel: grpc.Channel, service: str) -> int:
    check = health_pb2_grpc.HealthStub(channel).Check
    return check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_covers_the_server_and_each_of_its_services(server: Running) -> None:
    bootstrap, channel, _ = server
    bootstrap.set_serving(True)
    assert health_of(channel, "") == SERVING and health_of(channel, "modelyard.v1.Echo") == SERVING
    bootstrap.set_serving(False)
    assert health_of(channel, "") == NOT_SERVING and health_of(channel, "modelyard.v1.Echo") == NOT_SERVING


def test_reflection_lists_the_added_services_and_health(server: Running) -> None:
    _, channel, _ = server
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {service.name for service in answer.list_services_response.service}
    assert {"modelyard.v1.Echo", "grpc.health.v1.Health"} <= names


def test_an_oversized_request_is_answered_with_what_to_do(server: Running) -> None:
    _, channel, _ = server
    echo = channel.unary_unary("/modelyard.v1.Echo/Echo", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as err:
        echo(b"\0" * (3 << 19), timeout=5)  # 1.5 MiB against a 1 MiB limit
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over this service's 1 MiB message limit" in (err.value.details() or "")


def test_a_taken_port_is_a_configuration_error_naming_the_address(server: Running) -> None:
    taken = server.port
    second = GrpcServer("second", ServiceMetrics("second"), max_message_mb=1, grpc_threads=1)
    with pytest.raises(ConfigError, match=rf"cannot listen on 127.0.0.1:{taken}: the port is taken"):
        second.bind(f"127.0.0.1:{taken}")


def test_drain_reports_not_serving_and_refuses_new_calls(server: Running) -> None:
    bootstrap, channel, _ = server
    bootstrap.set_serving(True)
    bootstrap.drain(0).wait(5)
    with pytest.raises(grpc.RpcError) as err:
        health_of(channel, "")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

"""What a scraper and a generic gRPC client meet: process metrics, counters at 0 before their first event,
streams timed apart from unary calls, and server reflection under both v1alpha and v1."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
import yaml
from grpc_reflection.v1alpha import reflection_pb2

from modelyard.gateway.client import GatewayClient, JobNotFound
from modelyard.runtime.client import channel, wait_until_serving
from modelyard.runtime.launch import LocalService, free_port
from tests.conftest import write_config


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def list_services(address: str, reflection_service: str) -> list[str]:
    """ListServices over a raw stream: the v1 and v1alpha messages are the same on the wire."""
    with grpc.insecure_channel(address) as chan:
        call = chan.stream_stream(
            f"/{reflection_service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        (response,) = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    return [s.name for s in response.list_services_response.service]


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    folder = tmp_path_factory.mktemp("echo")
    config = write_config(folder, {"max_delay_seconds": 1}, {"max_batch_size": 1}, "echo.yaml")
    with LocalService("echo", config, metrics_port=free_port(), log_path=folder / "echo.log") as service:
        yield service


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("gateway")
    config = folder / "gateway.yaml"
    config.write_text(
        yaml.safe_dump({"data_root": str(folder), "services": {"medsam": {"addresses": ["127.0.0.1:1"]}}})
    )
    port, metrics_port = free_port(), free_port()
    with (folder / "gateway.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelyard.runtime.cli", "gateway", "serve", "--config", str(config),
             "--port", str(port), "--bind", "127.0.0.1", "--metrics-port", str(metrics_port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        with channel(address) as chan:
            wait_until_serving(chan, "", timeout=60)
        yield {"address": address, "metrics_port": metrics_port}
    finally:
        process.terminate()
        process.wait(30)


def test_every_service_exports_process_metrics(echo: LocalService) -> None:
    text = scrape(echo.metrics_port)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert name in text


def test_oom_backoffs_are_exported_at_zero_before_the_first_one(echo: LocalService) -> None:
    assert 'modelyard_oom_backoffs_total{service="echo"} 0.0' in scrape(echo.metrics_port)


def test_gateway_retries_are_exported_at_zero_for_every_service_and_retried_code(gateway: dict) -> None:
    text = scrape(gateway["metrics_port"])
    for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "CANCELLED"):
        assert f'modelyard_gateway_retries_total{{code="{code}",service="medsam"}} 0.0' in text
    assert "process_cpu_seconds_total" in text


def test_streams_are_timed_apart_from_unary_calls(gateway: dict) -> None:
    with GatewayClient(gateway["address"]) as client:
        client.jobs()
        with pytest.raises(JobNotFound):
            list(client.watch("no-such-job"))
    text = scrape(gateway["metrics_port"])
    assert 'modelyard_request_seconds_count{code="OK",method="ListJobs",service="gateway"}' in text
    assert 'modelyard_stream_seconds_count{code="NOT_FOUND",method="WatchJob",service="gateway"}' in text
    assert 'method="WatchJob"' not in "".join(line for line in text.splitlines() if "request_seconds" in line)


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_answers_as_v1_and_v1alpha(echo: LocalService, gateway: dict, version: str) -> None:
    name = f"grpc.reflection.{version}.ServerReflection"
    assert {"modelyard.v1.Echo", "grpc.health.v1.Health", name} <= set(list_services(echo.address, name))
    assert "modelyard.v1.Gateway" in list_services(gateway["address"], name)

"""What every service gets from the runtime, shown on the echo reference service over real gRPC."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelyard.runtime.arrays import SHM_DIR, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.client import ModelClient, SharedMemoryClient, channel, request_metadata, token_from
from modelyard.runtime.launch import LocalService, free_port
from modelyard.runtime.server import EXIT_BROKEN
from modelyard.v1 import echo_pb2, echo_pb2_grpc, types_pb2
from tests.conftest import write_config

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def echo_service(folder: Path, model: dict | None = None, runtime: dict | None = None) -> LocalService:
    model = {"max_delay_seconds": 10, "allow_faults": True, **(model or {})}
    runtime = {"max_batch_size": 1, **(runtime or {})}
    config = write_config(folder, model, runtime, "echo.yaml")
    return LocalService("echo", config, metrics_port=free_port(), log_path=folder / "echo.log")


def health(address: str) -> int:
    with grpc.insecure_channel(address) as chan:
        request = health_pb2.HealthCheckRequest(service="modelyard.v1.Echo")
        return health_pb2_grpc.HealthStub(chan).Check(request, timeout=5).status


def request(delay: float = 0.0, fault: int = 0, size: int = 4) -> echo_pb2.EchoRequest:
    return echo_pb2.EchoRequest(
        array=numpy_to_tensor(np.arange(size, dtype=np.float32)), delay_seconds=delay, fault=fault
    )


def metric(service: LocalService, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    with echo_service(tmp_path_factory.mktemp("echo"), runtime={"queue_size": 1, "max_message_mb": 1}) as service:
        yield service


@pytest.fixture(scope="module")
def stub(echo: LocalService) -> echo_pb2_grpc.EchoStub:
    return echo_pb2_grpc.EchoStub(grpc.insecure_channel(echo.address))


def test_health_is_not_serving_while_loading_then_serving(tmp_path: Path) -> None:
    service = echo_service(tmp_path, model={"load_delay_seconds": 3}).start()
    try:
        deadline = time.monotonic() + 60
        seen = []
        while time.monotonic() < deadline and SERVING not in seen:
            with contextlib.suppress(grpc.RpcError):  # not listening yet
                seen.append(health(service.address))
            time.sleep(0.1)
        assert seen[0] == NOT_SERVING and seen[-1] == SERVING
        with grpc.insecure_channel(service.address) as chan:
            stub = echo_pb2_grpc.EchoStub(chan)
            assert stub.Echo(request(), timeout=10).array.inline.shape == [4]
    finally:
        assert service.stop() == 0


def test_a_full_queue_answers_resource_exhausted_at_once(stub) -> None:
    running = stub.Echo.future(request(delay=3.0), timeout=30)
    time.sleep(0.5)
    # While the model is busy, one call waits at its door and one in the queue (queue_size 1): the next is
    # turned away at once. Calls are sent one by one until that happens, so a slow machine cannot fool the test.
    accepted, rejected = [], None
    for _ in range(6):
        started = time.monotonic()
        call = stub.Echo.future(request(delay=0.01), timeout=30)
        try:
            call.result(timeout=0.5)
            raise AssertionError("a call finished while the model was busy")
        except grpc.FutureTimeoutError:
            accepted.append(call)  # still waiting: it was queued
        except grpc.RpcError as exc:
            rejected, waited = exc, time.monotonic() - started
            break
    assert rejected is not None and rejected.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in rejected.details() and waited < 0.5  # back-pressure answers at once
    assert len(accepted) == 2
    assert running.result().array.inline.shape == [4]
    assert all(call.result().array.inline.shape == [4] for call in accepted)


def test_work_of_a_caller_whose_deadline_passed_never_runs(stub, echo: LocalService) -> None:
    batches_before = metric(echo, "modelyard_batch_size_count")
    running = stub.Echo.future(request(delay=1.0), timeout=30)
    time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as err:
        stub.Echo(request(delay=5.0), timeout=0.3)  # queued behind `running`, gives up
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    running.result()
    time.sleep(0.3)
    assert metric(echo, "modelyard_batch_size_count") == batches_before + 1  # the abandoned call never ran
    assert stub.Echo(request(), timeout=10).array.inline.shape == [4]


def test_a_cancelled_call_is_dropped(stub, echo: LocalService) -> None:
    batches_before = metric(echo, "modelyard_batch_size_count")
    running = stub.Echo.future(request(delay=1.0), timeout=30)
    time.sleep(0.2)
    doomed = stub.Echo.future(request(delay=5.0), timeout=30)
    time.sleep(0.2)
    doomed.cancel()
    running.result()
    time.sleep(0.3)
    assert metric(echo, "modelyard_batch_size_count") == batches_before + 1


def test_an_over_limit_request_says_how_to_send_large_data(stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Echo(request(size=400_000), timeout=30)  # 1.6 MB inline, limit 1 MiB
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message limit" in err.value.details() and "shared memory" in err.value.details()
    assert "data reference" in err.value.details()


def test_large_arrays_travel_through_shared_memory_and_leave_nothing_behind(stub) -> None:
    big = np.random.default_rng(0).random((1000, 1000), dtype=np.float32)  # 4 MB, over the 1 MiB limit
    before = set(SHM_DIR.iterdir())
    with SharedMemoryClient(stub.Info, SHM_DIR) as shm:
        assert shm.enabled
        response = stub.Echo(
            echo_pb2.EchoRequest(array=shm.tensor(big), output_region=shm.output_region(big.nbytes)), timeout=30
        )
        assert response.array.WhichOneof("payload") == "shared"
        assert np.array_equal(shm.read(response.array), big)
    assert set(SHM_DIR.iterdir()) == before


def logged_requests(log_path: Path, request_id: str, wait_s: float = 10.0) -> list[dict]:
    """The request lines of `request_id` (written off the request thread: they may lag the answer a little)."""
    deadline = time.monotonic() + wait_s
    while True:
        lines = [json.loads(line) for line in log_path.read_text().splitlines()]
        found = [entry for entry in lines if entry.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_the_request_id_comes_back_and_every_call_is_logged_once(stub, echo: LocalService) -> None:
    _response, call = stub.Echo.with_call(request(), metadata=request_metadata("req-42"), timeout=10)
    assert ("x-request-id", "req-42") in call.trailing_metadata()
    assert echo.log_path is not None
    (line,) = logged_requests(echo.log_path, "req-42")
    assert line["service"] == "echo" and line["method"] == "Echo" and line["status"] == "OK"
    assert line["duration_ms"] >= 0


def test_metrics_cover_latency_queue_wait_batch_size_and_oom_backoffs(stub, echo: LocalService) -> None:
    stub.Echo(request(), timeout=10)
    text = urllib.request.urlopen(f"http://127.0.0.1:{echo.metrics_port}/metrics", timeout=5).read().decode()
    for name in (
        'modelyard_request_seconds_count{code="OK",method="Echo",service="echo"}',
        "modelyard_queue_wait_seconds_count",
        "modelyard_batch_size_count",
        "modelyard_oom_backoffs_total",
    ):
        assert name in text


def test_out_of_memory_at_batch_one_is_resource_exhausted_with_memory_figures(stub, echo: LocalService) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Echo(request(fault=echo_pb2.ECHO_FAULT_OUT_OF_MEMORY), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "even at batch 1" in err.value.details() and "tried to allocate 588 MiB" in err.value.details()
    assert health(echo.address) == SERVING


def test_a_fatal_model_error_turns_health_not_serving_and_exits_so_a_restart_policy_brings_it_back(
    tmp_path: Path,
) -> None:
    service = echo_service(tmp_path)
    with service, grpc.insecure_channel(service.address) as chan:
        stub = echo_pb2_grpc.EchoStub(chan)
        in_flight = stub.Echo.future(request(delay=2.0), timeout=30)  # queued ahead of the fatal call
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as err:
            stub.Echo(request(fault=echo_pb2.ECHO_FAULT_FATAL), timeout=10)
        assert err.value.code() == grpc.StatusCode.INTERNAL and "no longer usable" in err.value.details()
        assert in_flight.result() is not None  # the call in flight ended normally before the exit
        with contextlib.suppress(grpc.RpcError):  # NOT_SERVING while it drains, or already gone
            assert health(service.address) == NOT_SERVING
        with pytest.raises(grpc.RpcError) as err:
            stub.Echo(request(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert service.process is not None and service.process.wait(60) == EXIT_BROKEN


def test_sigterm_lets_in_flight_calls_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    service = echo_service(tmp_path)
    with service, grpc.insecure_channel(service.address) as chan:
        stub = echo_pb2_grpc.EchoStub(chan)
        in_flight = stub.Echo.future(request(delay=2.0), timeout=30)
        time.sleep(0.5)
        assert service.process is not None
        service.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as err:
            stub.Echo(request(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        result = in_flight.result()
        assert np.array_equal(tensor_to_numpy(result.array, SHM_DIR), np.arange(4, dtype=np.float32))
        assert service.process.wait(30) == 0


def test_concurrent_calls_are_batched_when_a_batch_window_is_set(tmp_path: Path) -> None:
    with echo_service(tmp_path, runtime={"max_batch_size": 4, "batch_wait_ms": 200}) as service:
        with grpc.insecure_channel(service.address) as chan:
            stub = echo_pb2_grpc.EchoStub(chan)
            results: list[object] = []
            threads = [
                threading.Thread(target=lambda: results.append(stub.Echo(request(), timeout=10))) for _ in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert len(results) == 4
        assert metric(service, "modelyard_batch_size_sum") > metric(service, "modelyard_batch_size_count")


def test_calls_batched_together_fail_only_for_their_own_items(tmp_path: Path) -> None:
    with echo_service(tmp_path, runtime={"max_batch_size": 8, "batch_wait_ms": 200}) as service:
        with grpc.insecure_channel(service.address) as chan:
            stub = echo_pb2_grpc.EchoStub(chan)
            busy = stub.Echo.future(request(delay=1.5), timeout=30)
            time.sleep(0.5)  # the model is busy with it: the calls below wait together for the next batch
            good = [stub.Echo.future(request(size=n), timeout=30) for n in (1, 2, 3)]
            invalid = stub.Echo.future(request(fault=echo_pb2.ECHO_FAULT_INVALID_ITEM), timeout=30)
            raising = stub.Echo.future(request(fault=echo_pb2.ECHO_FAULT_RAISE), timeout=30)
            assert busy.result().array.inline.shape == [4]
            for n, call in zip((1, 2, 3), good, strict=True):
                assert np.array_equal(tensor_to_numpy(call.result().array, SHM_DIR), np.arange(n, dtype=np.float32))
            with pytest.raises(grpc.RpcError) as err:
                invalid.result()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "invalid (simulated)" in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                raising.result()
            assert err.value.code() == grpc.StatusCode.INTERNAL and "ValueError" in err.value.details()
            assert health(service.address) == SERVING
        # Each call holds one item: the one batch of 5 to 8 items held all five calls, good and faulty together.
        bucket = "modelyard_batch_size_bucket{le="
        assert metric(service, bucket + '"8.0"') - metric(service, bucket + '"4.0"') == 1


def test_info_reports_the_runtime_state(stub) -> None:
    info = stub.Info(types_pb2.InfoRequest(), timeout=10)
    assert info.service == "echo" and info.details["state"] == "ready" and info.fitted_batch_size == 1


def test_a_service_with_a_token_refuses_calls_without_it_and_keeps_health_and_reflection_open(
    tmp_path: Path,
) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    with echo_service(tmp_path, runtime={"token_file": str(tmp_path / "token")}) as service:
        for token in (None, "wrong"):
            with channel(service.address, token=token) as chan:
                for call in (
                    lambda: echo_pb2_grpc.EchoStub(chan).Echo(request(), timeout=10),
                    lambda: echo_pb2_grpc.EchoStub(chan).Info(types_pb2.InfoRequest(), timeout=10),
                ):
                    with pytest.raises(grpc.RpcError) as err:
                        call()
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in err.value.details()
        with channel(service.address, token="s3cret") as chan:
            reply = echo_pb2_grpc.EchoStub(chan).Echo(request(), timeout=10)
            assert np.array_equal(tensor_to_numpy(reply.array, SHM_DIR), np.arange(4, dtype=np.float32))
        assert health(service.address) == SERVING  # probes need no token
        with grpc.insecure_channel(service.address) as chan:
            reflection = reflection_pb2_grpc.ServerReflectionStub(chan)
            answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = {s.name for s in next(answers).list_services_response.service}
        assert "modelyard.v1.Echo" in names


def test_the_model_client_sends_the_token_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    service = echo_service(tmp_path)
    service.env["MODELYARD_TOKEN_FILE"] = str(tmp_path / "token")  # the runtime's variable, as orchestrators set it
    with service:
        for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED), (token_from(str(tmp_path / "token")), None)):
            with EchoClient(service.address, token=token) as client:
                if code is None:
                    assert client.info().service == "echo"
                else:
                    with pytest.raises(grpc.RpcError) as err:
                        client.info()
                    assert err.value.code() == code


def test_an_empty_token_file_stops_the_service_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    service = echo_service(tmp_path, runtime={"token_file": str(tmp_path / "token")})
    with pytest.raises(RuntimeError) as err:
        service.__enter__()
    assert "exited with code 2" in str(err.value) and "is empty" in str(err.value)


class EchoClient(ModelClient):
    service = "modelyard.v1.Echo"
    stub_class = echo_pb2_grpc.EchoStub

"""Calls to services, the gateway's and every service client's: what is retried, what is not, failover, deadlines,
one request id per call, RPCs picked from the stub."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from modelyard.runtime import cancel
from modelyard.runtime.calls import CallFailed, EndpointConfig, RetryPolicy, ServiceClient
from modelyard.runtime.client import ModelClient
from modelyard.runtime.launch import free_port
from modelyard.v1 import echo_pb2, echo_pb2_grpc


class Flaky(echo_pb2_grpc.EchoServicer):
    """Fails the first `failures` calls with `code`, optionally sleeping first; records request ids."""

    def __init__(self, code: grpc.StatusCode, failures: int, sleep_s: float = 0.0) -> None:
        self.code, self.failures, self.sleep_s = code, failures, sleep_s
        self.request_ids: list[str] = []
        self.authorizations: list[str] = []
        self.lock = threading.Lock()

    def Echo(self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext) -> echo_pb2.EchoResponse:
        with self.lock:
            metadata = dict(context.invocation_metadata())
            self.request_ids.append(metadata["x-request-id"])
            self.authorizations.append(metadata.get("authorization", ""))
            failing = len(self.request_ids) <= self.failures
        if failing and self.sleep_s:
            time.sleep(self.sleep_s)
        if failing:
            context.abort(self.code, f"simulated {self.code.name}")
        return echo_pb2.EchoResponse(array=request.array)


def serve(servicer: Flaky) -> tuple[grpc.Server, str]:
    server = grpc.server(ThreadPoolExecutor(4))
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, str]]:
    servicer = Flaky(grpc.StatusCode.UNAVAILABLE, 2)
    server, address = serve(servicer)
    yield servicer, address
    server.stop(0)


def client(*addresses: str, **overrides: float | int | str) -> ServiceClient:
    settings = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "attempt_timeout_s": 5.0, **overrides}
    config = EndpointConfig(addresses=list(addresses), **settings)
    return ServiceClient("echo", echo_pb2_grpc.EchoStub, config)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,  # sent by a replica shutting down (grpc/grpc#41785), not by the gateway
    ],
)
def test_retryable_codes_are_retried_with_the_same_request_id(code: grpc.StatusCode) -> None:
    servicer = Flaky(code, failures=2)
    server, address = serve(servicer)
    try:
        assert client(address).call(lambda stub: stub.Echo, echo_pb2.EchoRequest(), request_id="item-7") is not None
        assert servicer.request_ids == ["item-7"] * 3
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INTERNAL]
)
def test_other_codes_fail_at_once_with_the_services_message(code: grpc.StatusCode) -> None:
    servicer = Flaky(code, failures=5)
    server, address = serve(servicer)
    try:
        with pytest.raises(CallFailed) as err:
            client(address).call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
        assert err.value.code() == code and err.value.attempts == 1
        assert err.value.message == f"simulated {code.name}"
        assert len(servicer.request_ids) == 1
    finally:
        server.stop(0)


def test_a_call_of_a_cancelled_job_is_not_retried() -> None:
    servicer = Flaky(grpc.StatusCode.UNAVAILABLE, failures=1, sleep_s=2.0)  # the first call hangs, then fails
    server, address = serve(servicer)
    scope = cancel.Cancellation()
    token = cancel.current.set(scope)
    try:
        threading.Timer(0.3, scope.set).start()
        started = time.monotonic()
        with pytest.raises(grpc.FutureCancelledError):
            client(address).call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
        assert time.monotonic() - started < 1.5 and len(servicer.request_ids) == 1
    finally:
        cancel.current.reset(token)
        server.stop(0)


def test_a_call_cut_short_by_closing_its_client_is_not_retried() -> None:
    servicer = Flaky(grpc.StatusCode.UNAVAILABLE, failures=1, sleep_s=2.0)
    server, address = serve(servicer)
    echo = client(address)
    try:
        threading.Timer(0.3, echo.close).start()
        with pytest.raises(CallFailed) as err:
            echo.call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
        assert err.value.code() == grpc.StatusCode.CANCELLED and err.value.attempts == 1
        assert len(servicer.request_ids) == 1
    finally:
        server.stop(0)


def test_retries_are_bounded_by_attempts(flaky: tuple[Flaky, str]) -> None:
    servicer, address = flaky
    servicer.failures = 100
    with pytest.raises(CallFailed) as err:
        client(address, max_attempts=4).call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and err.value.attempts == 4


def test_retries_are_bounded_by_total_time(flaky: tuple[Flaky, str]) -> None:
    servicer, address = flaky
    servicer.failures = 10_000
    started = time.monotonic()
    with pytest.raises(CallFailed):
        client(address, max_attempts=10_000, max_total_s=0.5).call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
    assert time.monotonic() - started < 3


def test_a_calls_own_timeout_bounds_its_retries(flaky: tuple[Flaky, str]) -> None:
    servicer, address = flaky
    servicer.failures = 10_000
    started = time.monotonic()
    with pytest.raises(CallFailed):
        client(address, max_total_s=900).call(lambda stub: stub.Echo, echo_pb2.EchoRequest(), timeout=0.5)
    assert time.monotonic() - started < 3 and len(servicer.request_ids) > 1  # retried, then gave up in time


def test_each_attempt_has_its_own_deadline() -> None:
    servicer = Flaky(grpc.StatusCode.UNAVAILABLE, failures=1, sleep_s=1.0)  # the first call hangs past its deadline
    server, address = serve(servicer)
    try:
        assert client(address, attempt_timeout_s=0.3).call(lambda stub: stub.Echo, echo_pb2.EchoRequest()) is not None
        assert len(servicer.request_ids) == 2
    finally:
        server.stop(0)


def test_a_dead_replica_fails_over_to_a_live_one(flaky: tuple[Flaky, str]) -> None:
    servicer, address = flaky
    servicer.failures = 0
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    echo = client(dead, address)
    for _ in range(4):
        assert echo.call(lambda stub: stub.Echo, echo_pb2.EchoRequest()) is not None
    assert len(servicer.request_ids) == 4


def test_a_call_made_while_the_service_is_down_waits_for_it_and_succeeds_in_one_attempt() -> None:
    port = free_port()
    retries: list[grpc.StatusCode] = []
    config = EndpointConfig(addresses=[f"127.0.0.1:{port}"], attempt_timeout_s=30.0, max_total_s=30.0)
    echo = ServiceClient("echo", echo_pb2_grpc.EchoStub, config, on_retry=lambda _, code: retries.append(code))
    servicer = Flaky(grpc.StatusCode.UNAVAILABLE, failures=0)
    server = grpc.server(ThreadPoolExecutor(4))
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)

    def come_back() -> None:
        time.sleep(3)  # long enough for several failed connection attempts
        assert server.add_insecure_port(f"127.0.0.1:{port}") == port
        server.start()

    threading.Thread(target=come_back).start()
    try:
        assert echo.call(lambda stub: stub.Echo, echo_pb2.EchoRequest(), request_id="while-down") is not None
        assert retries == [] and servicer.request_ids == ["while-down"]
    finally:
        echo.close()
        server.stop(0)


def test_without_max_attempts_the_total_time_bounds_the_retries(flaky: tuple[Flaky, str]) -> None:
    servicer, address = flaky
    servicer.failures = 10_000
    assert EndpointConfig(addresses=[address]).max_attempts is None
    with pytest.raises(CallFailed) as err:
        client(address, max_total_s=1.0).call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and err.value.attempts > 10  # well past the old cap


def test_a_token_file_sends_the_bearer_token_on_every_attempt(tmp_path: Path, flaky: tuple[Flaky, str]) -> None:
    servicer, address = flaky
    (tmp_path / "token").write_text("s3cret\n")
    assert (
        client(address, token_file=str(tmp_path / "token")).call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
        is not None
    )
    assert servicer.authorizations == ["Bearer s3cret"] * 3  # two refused attempts, then the answer


def test_a_replica_that_comes_back_gets_calls_again() -> None:
    returning, live = Flaky(grpc.StatusCode.UNAVAILABLE, 0), Flaky(grpc.StatusCode.UNAVAILABLE, 0)
    port = free_port()
    server, address = serve(live)
    echo = client(f"127.0.0.1:{port}", address, connect_timeout_s=0.5)
    back = grpc.server(ThreadPoolExecutor(4))
    echo_pb2_grpc.add_EchoServicer_to_server(returning, back)
    try:
        for _ in range(4):
            assert (
                echo.call(lambda stub: stub.Echo, echo_pb2.EchoRequest()) is not None
            )  # the live one answers meanwhile
        assert returning.request_ids == [] and len(live.request_ids) == 4
        assert back.add_insecure_port(f"127.0.0.1:{port}") == port
        back.start()
        deadline = time.monotonic() + 30
        while not returning.request_ids and time.monotonic() < deadline:
            echo.call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
            time.sleep(0.05)
        assert returning.request_ids, "the replica that came back never got a call"
    finally:
        echo.close()
        server.stop(0)
        back.stop(0)


def test_an_rpc_is_picked_from_the_stub_and_a_wrong_pick_is_refused(flaky: tuple[Flaky, str]) -> None:
    _, address = flaky
    echo = client(address)
    try:
        assert echo.rpc_name(lambda stub: stub.Info) == "Info"
        with pytest.raises(TypeError, match="does not pick an RPC of the echo stub"):
            echo.call(lambda stub: print, echo_pb2.EchoRequest())
    finally:
        echo.close()


def test_a_call_failure_is_a_grpc_error_with_the_services_status(flaky: tuple[Flaky, str]) -> None:
    _, address = flaky
    echo = client(address, max_attempts=1)
    try:
        with pytest.raises(grpc.RpcError) as err:
            echo.call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert err.value.details() == "simulated UNAVAILABLE"  # type: ignore[attr-defined]
        assert str(err.value) == "echo: UNAVAILABLE: simulated UNAVAILABLE"
    finally:
        echo.close()


class EchoClient(ModelClient):
    service = "modelyard.v1.Echo"
    stub_class = echo_pb2_grpc.EchoStub


def test_a_service_client_retries_what_can_succeed_later_within_its_timeout() -> None:
    servicer = Flaky(grpc.StatusCode.UNAVAILABLE, failures=2)
    server, address = serve(servicer)
    try:
        with EchoClient(address, timeout=30) as echo:
            assert echo.call(lambda stub: stub.Echo, echo_pb2.EchoRequest(), timeout=10) is not None
        assert len(servicer.request_ids) == 3 and len(set(servicer.request_ids)) == 1  # one id, three attempts
        with EchoClient(address, retry=RetryPolicy(max_attempts=1)) as once:
            servicer.failures = 4
            with pytest.raises(grpc.RpcError) as err:
                once.call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert len(servicer.request_ids) == 4
    finally:
        server.stop(0)


def test_a_service_client_does_not_retry_what_cannot_succeed() -> None:
    servicer = Flaky(grpc.StatusCode.INVALID_ARGUMENT, failures=1)
    server, address = serve(servicer)
    try:
        with EchoClient(address) as echo, pytest.raises(CallFailed) as err:
            echo.call(lambda stub: stub.Echo, echo_pb2.EchoRequest())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.attempts == 1
    finally:
        server.stop(0)

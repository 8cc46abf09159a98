"""Long items: progress from the model thread to a server-streaming call, cancellation mid-item, and the one
interceptor treating streaming calls like unary ones (request id, log line, latency, errors → status)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from pydantic import BaseModel

from modelyard.runtime.adapter import ModelAdapter, ServiceSpec
from modelyard.runtime.config import RuntimeConfig, ServiceConfig
from modelyard.runtime.errors import Cancelled, InvalidInput
from modelyard.runtime.host import ModelHost
from modelyard.runtime.interceptor import RequestInterceptor
from modelyard.runtime.metadata import REQUEST_ID
from modelyard.runtime.metrics import ServiceMetrics
from modelyard.runtime.progress import Progress, Update
from modelyard.v1 import types_pb2


def test_progress_keeps_only_the_newest_report() -> None:
    progress = Progress()
    assert progress.take() is None
    progress.report(1, 10, "a")
    progress.report(2, 10, "b")
    update = progress.take()
    assert update is not None and (update.done, update.total, update.stage) == (2, 10, "b")
    assert progress.take() is None


def test_a_report_after_the_caller_left_raises_cancelled() -> None:
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        progress.report(1, 2)
    alive = [True]
    watched = Progress()
    watched.watch(lambda: alive[0])
    watched.report(1, 2)
    alive[0] = False  # e.g. the gRPC context is no longer active
    with pytest.raises(Cancelled):
        watched.report(2, 2)
    assert watched.cancelled


# -- the host ---------------------------------------------------------------------------------------------
class Steps(BaseModel):
    pass


class Item:
    def __init__(self, steps: int, progress: Progress) -> None:
        self.steps, self.progress = steps, progress
        self.done = 0
        self.thread = 0


class Stepper(ModelAdapter[Steps, Item, int]):
    """Works through an item in steps of 20 ms, reporting each."""

    def load(self) -> None:
        pass

    def infer(self, items: list[Item]) -> list[int | Exception]:
        for item in items:
            item.thread = threading.get_ident()
            for step in range(1, item.steps + 1):
                time.sleep(0.02)
                item.done = step
                item.progress.report(step, item.steps, "stepping")
        return [item.done for item in items]


class Context:
    """What the host reads of a gRPC context."""

    def __init__(self, active_for: float = 1e9) -> None:
        self.until = time.monotonic() + active_for

    def is_active(self) -> bool:
        return time.monotonic() < self.until

    def time_remaining(self) -> float | None:
        return None


@pytest.fixture
def host() -> Iterator[ModelHost]:
    spec = ServiceSpec("stepper", "modelyard.test.Stepper", Steps, Stepper, lambda h: None, lambda s, srv: None)
    config = ServiceConfig[Steps](model=Steps(), runtime=RuntimeConfig(device="cpu", warmup=False))
    host = ModelHost(spec, config, ServiceMetrics("stepper"))
    host.load()
    yield host
    host.close()


def test_a_stream_yields_progress_while_the_model_works_then_the_results(host: ModelHost) -> None:
    progress = Progress()
    item = Item(40, progress)
    events = list(host.stream([item], Context(), progress))  # type: ignore[arg-type]
    updates, results = events[:-1], events[-1]
    assert results == [40]
    assert len(updates) >= 2 and all(isinstance(u, Update) for u in updates)
    done = [u.done for u in updates]  # type: ignore[union-attr]
    assert done == sorted(done) and done[-1] == 40
    assert item.thread != threading.get_ident()  # the model ran on its own thread while this one streamed


def test_a_unary_call_whose_caller_leaves_stops_mid_item(host: ModelHost) -> None:
    progress = Progress()
    item = Item(200, progress)  # 4 s of work
    with pytest.raises(Cancelled):
        host.run([item], Context(active_for=0.3), progress)  # type: ignore[arg-type]
    time.sleep(0.1)
    assert item.done < 40  # stopped at a step, not after all 200


def test_closing_a_stream_early_stops_the_model(host: ModelHost) -> None:
    progress = Progress()
    item = Item(200, progress)
    events = host.stream([item], Context(), progress)  # type: ignore[arg-type]
    next(events)  # the first progress update
    events.close()  # the client went away mid-stream
    time.sleep(0.2)
    stopped_at = item.done
    time.sleep(0.2)
    assert item.done == stopped_at < 200


# -- the interceptor --------------------------------------------------------------------------------------
def count(request: types_pb2.InfoRequest, context: grpc.ServicerContext) -> Iterator[types_pb2.DataRef]:
    """Streams 0, 1, 2; a request saying "fail" breaks after the first message."""
    for i in range(3):
        if i == 1 and request.shared_memory_probe == "fail":
            raise InvalidInput("what to fix")
        yield types_pb2.DataRef(path=str(i))


@pytest.fixture
def streamer() -> Iterator[tuple[grpc.Channel, ServiceMetrics]]:
    metrics = ServiceMetrics("streamer")
    server = grpc.server(ThreadPoolExecutor(4))
    requests = RequestInterceptor("streamer", metrics, 1 << 20)
    handler = grpc.unary_stream_rpc_method_handler(
        count,
        request_deserializer=types_pb2.InfoRequest.FromString,
        response_serializer=types_pb2.DataRef.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [requests.wrap(grpc.method_handlers_generic_handler("modelyard.test.Streamer", {"Count": handler}))]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, metrics
    channel.close()
    server.stop(0)


def call(channel: grpc.Channel, probe: str) -> Any:
    method = channel.unary_stream(
        "/modelyard.test.Streamer/Count",
        request_serializer=types_pb2.InfoRequest.SerializeToString,
        response_deserializer=types_pb2.DataRef.FromString,
    )
    return method(types_pb2.InfoRequest(shared_memory_probe=probe), metadata=((REQUEST_ID, "req-1"),), timeout=10)


def latency_count(metrics: ServiceMetrics, code: str) -> float:
    labels = {"service": "streamer", "method": "Count", "code": code}
    return metrics.registry.get_sample_value("modelyard_stream_seconds_count", labels) or 0.0  # streams apart


def test_a_streaming_call_keeps_its_request_id_and_is_measured(streamer) -> None:
    channel, metrics = streamer
    stream = call(channel, "")
    assert [m.path for m in stream] == ["0", "1", "2"]
    assert (REQUEST_ID, "req-1") in stream.trailing_metadata()
    assert latency_count(metrics, "OK") == 1


def test_an_error_while_streaming_ends_the_stream_with_its_status(streamer) -> None:
    channel, metrics = streamer
    stream = call(channel, "fail")
    received = []
    with pytest.raises(grpc.RpcError) as err:
        for message in stream:
            received.append(message.path)
    assert received == ["0"]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details() == "what to fix"
    assert latency_count(metrics, "INVALID_ARGUMENT") == 1

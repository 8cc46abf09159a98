"""Prometheus metrics of one service, in their own registry, served on their own port."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelyard.runtime.devices import device_memory

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Streams (tracking progress, a whole pipeline run) last as long as their work: minutes to hours.
_STREAM_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class _GpuMemoryCollector(Collector):
    """Reads GPU memory at scrape time, so the numbers are never stale."""

    def __init__(self, service: str, device: list[str]) -> None:
        self._service = service
        self._device = device  # a one-element holder: the device is known only after load

    def collect(self) -> Iterator[GaugeMetricFamily]:
        device = self._device[0]
        if not device.startswith("cuda"):
            return
        mem = device_memory(device)
        for name, key, doc in (
            ("modelyard_gpu_memory_used_bytes", "allocated", "GPU memory allocated by this service"),
            (
                "modelyard_gpu_memory_reserved_bytes",
                "reserved",
                "GPU memory reserved by this service's allocator",
            ),
            ("modelyard_gpu_memory_total_bytes", "total", "total memory of the service's GPU"),
        ):
            family = GaugeMetricFamily(name, doc, labels=["service", "device"])
            family.add_metric([self._service, device], mem[key])
            yield family


class _Observations(Collector):
    """Observations made on request threads, applied to their metrics in batches: every `batch` of them, and
    whenever the registry is read (a scrape, or `get_sample_value`), so nothing read is ever stale. Applying one
    takes locks and a bucket search, several microseconds on a thread that just woke up; queueing it takes one
    append. Registered first, so a read applies them before any metric is collected."""

    def __init__(self, batch: int = 1024) -> None:
        self._pending: collections.deque[tuple[Callable[[float], None], float]] = collections.deque()
        self._batch = batch
        self._lock = threading.Lock()  # one applier at a time, so a gauge's sets land in the order made

    def add(self, apply: Callable[[float], None], value: float) -> None:
        self._pending.append((apply, value))
        if len(self._pending) >= self._batch:
            self.apply()

    def apply(self) -> None:
        with self._lock:
            pending = self._pending
            while pending:
                apply, value = pending.popleft()
                apply(value)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.apply()
        return iter(())


class ServiceMetrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self._observations = _Observations()
        self.registry.register(self._observations)
        self.device = ["cpu"]
        self.latency = Histogram(
            "modelyard_request_seconds", "request latency", ["service", "method", "code"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.stream_latency = Histogram(
            "modelyard_stream_seconds", "server-streaming call duration, start to last message",
            ["service", "method", "code"], buckets=_STREAM_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "modelyard_queue_wait_seconds", "time from enqueue to model start", ["service"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "modelyard_batch_size", "items per model call", ["service"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry,
        )  # fmt: skip
        self.oom_backoffs = Counter(
            "modelyard_oom_backoffs", "out-of-memory batch halvings", ["service"], registry=self.registry
        )
        self.queue_depth = Gauge("modelyard_queue_depth", "requests waiting", ["service"], registry=self.registry)
        self.oom_backoffs.labels(service)  # a series at 0 from the start: rate() and alerts need one
        # Children looked up once: labels() takes a lock and builds a key on every call (microseconds per call).
        self._calls: dict[tuple[str, str, bool], Any] = {}
        self._batch_size = self.batch_size.labels(service)
        self._queue_wait = self.queue_wait.labels(service)
        self._queue_depth = self.queue_depth.labels(service)
        self.registry.register(_GpuMemoryCollector(service, self.device))
        # process_* (CPU, RSS, open fds, start time) and python_info, as the default registry has them.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def observe_call(self, method: str, code: str, seconds: float, streaming: bool = False) -> None:
        """One call's duration, in modelyard_request_seconds (modelyard_stream_seconds for a stream)."""
        key = (method, code, streaming)
        child = self._calls.get(key)
        if child is None:
            histogram = self.stream_latency if streaming else self.latency
            child = self._calls.setdefault(key, histogram.labels(self.service, method, code).observe)
        self._observations.add(child, seconds)

    def set_queue_depth(self, depth: int) -> None:
        self._observations.add(self._queue_depth.set, depth)

    def observe_batch(self, items: int, waited_s: float) -> None:
        self._observations.add(self._batch_size.observe, items)
        self._observations.add(self._queue_wait.observe, waited_s)

    def observe_backoff(self, _from: int, _to: int) -> None:
        self.oom_backoffs.labels(self.service).inc()

"""Prometheus metrics of one service, in their own registry, served on their own port."""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, PlatformCollector, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


class _Histogram:
    """One histogram's series, by label values: a count per bucket and the sum, as Prometheus's own Histogram
    keeps them. Only the applier (`_Observations`, under its lock) adds to them."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.bounds = tuple(float(bound) for bound in buckets)  # then +Inf
        self.series: dict[tuple[str, ...], _Series] = {}

    def child(self, *values: str) -> _Series:
        series = self.series.get(values)
        if series is None:
            series = self.series.setdefault(values, _Series(self.bounds))
        return series

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        edges = [*map(floatToGoString, self.bounds), "+Inf"]
        for values, series in list(self.series.items()):
            cumulative = itertools.accumulate(series.counts)
            family.add_metric(list(values), list(zip(edges, cumulative, strict=True)), series.sum)
        return family


class _Series:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value
        self.sum += value


class _Observations(Collector):
    """Observations made on request threads, applied to their histograms in batches: every `batch` of them, and
    whenever the registry is read (a scrape, or `get_sample_value`), so nothing read is ever stale. Queueing one
    takes one append. The histograms are kept here rather than in prometheus_client's Histogram, whose observe
    takes two locks and several calls: ~12,000 instructions an observation against ~5,000 here, queueing
    included, and a call makes three."""

    def __init__(self, histograms: list[_Histogram], batch: int = 1024) -> None:
        self.histograms = histograms
        self._pending: collections.deque[tuple[Callable[[float], None], float]] = collections.deque()
        self._batch = batch
        self._lock = threading.Lock()  # one applier at a time

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

    def collect(self) -> Iterator[HistogramMetricFamily]:
        self.apply()
        with self._lock:
            return iter([histogram.family() for histogram in self.histograms])


class _QueueDepth(Collector):
    """The depth the last call found: a plain attribute, set without a lock (the last set is what a read sees)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.depth = 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("modelyard_queue_depth", "requests waiting", labels=["service"])
        family.add_metric([self.service], self.depth)
        yield family


class ServiceMetrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        labels = ("service", "method", "code")
        self.latency = _Histogram("modelyard_request_seconds", "request latency", labels, _LATENCY_BUCKETS)
        self.stream_latency = _Histogram(
            "modelyard_stream_seconds", "server-streaming call duration, start to last message", labels,
            _STREAM_BUCKETS,
        )  # fmt: skip
        self.queue_wait = _Histogram(
            "modelyard_queue_wait_seconds", "time from enqueue to model start", ("service",), _LATENCY_BUCKETS
        )
        self.batch_size = _Histogram(
            "modelyard_batch_size", "items per model call", ("service",), (1, 2, 4, 8, 16, 32, 64, 128)
        )
        self._observations = _Observations([self.latency, self.stream_latency, self.queue_wait, self.batch_size])
        self.registry.register(self._observations)
        self._queue_depth = _QueueDepth(service)
        self.registry.register(self._queue_depth)
        self.device = ["cpu"]
        self.oom_backoffs = Counter(
            "modelyard_oom_backoffs", "out-of-memory batch halvings", ["service"], registry=self.registry
        )
        self.oom_backoffs.labels(service)  # a series at 0 from the start: rate() and alerts need one
        # Children looked up once: a lookup builds a key on every call (microseconds per call).
        self._calls: dict[tuple[str, str, bool], Callable[[float], None]] = {}
        self._batch_size = self.batch_size.child(service).observe  # (series at 0 from the start, as above)
        self._queue_wait = self.queue_wait.child(service).observe
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
            child = self._calls.setdefault(key, histogram.child(self.service, method, code).observe)
        self._observations.add(child, seconds)

    def set_queue_depth(self, depth: int) -> None:
        self._queue_depth.depth = depth

    def observe_batch(self, items: int, waited_s: float) -> None:
        self._observations.add(self._batch_size, items)
        self._observations.add(self._queue_wait, waited_s)

    def observe_backoff(self, _from: int, _to: int) -> None:
        self.oom_backoffs.labels(self.service).inc()

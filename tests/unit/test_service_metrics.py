"""Service metrics: observations made on request threads are applied off them, and every read sees them all."""

from __future__ import annotations

import threading

import pytest

from modelyard.runtime.metrics import ServiceMetrics


def latency_count(metrics: ServiceMetrics, code: str = "OK") -> float | None:
    labels = {"service": "echo", "method": "Echo", "code": code}
    return metrics.registry.get_sample_value("modelyard_request_seconds_count", labels)


def test_a_read_of_the_registry_sees_every_observation_made_before_it() -> None:
    metrics = ServiceMetrics("echo")
    metrics.observe_call("Echo", "OK", 0.002)
    metrics.observe_call("Echo", "OK", 0.004)
    metrics.observe_batch(3, 0.001)
    metrics.set_queue_depth(5)
    metrics.set_queue_depth(2)  # the last one set is what a read sees
    assert latency_count(metrics) == 2
    labels = {"service": "echo", "method": "Echo", "code": "OK"}
    assert metrics.registry.get_sample_value("modelyard_request_seconds_sum", labels) == pytest.approx(0.006)
    assert metrics.registry.get_sample_value("modelyard_batch_size_sum", {"service": "echo"}) == 3
    assert metrics.registry.get_sample_value("modelyard_queue_depth", {"service": "echo"}) == 2


def test_observations_are_applied_in_batches_without_a_read() -> None:
    metrics = ServiceMetrics("echo")
    pending = metrics._observations._pending
    for _ in range(5000):
        metrics.observe_call("Echo", "OK", 0.001)
        assert len(pending) < 1024  # what waits for a read stays bounded
    assert latency_count(metrics) == 5000


def test_observations_from_many_threads_are_all_counted() -> None:
    metrics = ServiceMetrics("echo")

    def calls() -> None:
        for _ in range(2000):
            metrics.observe_call("Echo", "OK", 0.001)

    threads = [threading.Thread(target=calls) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert latency_count(metrics) == 16000


def test_the_histograms_read_as_prometheus_clients_own_histogram_fed_the_same_values() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from modelyard.runtime.metrics import _LATENCY_BUCKETS

    metrics = ServiceMetrics("echo")
    reference = CollectorRegistry()
    histogram = Histogram("modelyard_request_seconds", "request latency", ["service", "method", "code"],
                          buckets=_LATENCY_BUCKETS, registry=reference)  # fmt: skip
    # On a bound, between bounds, beyond the last one, and zero.
    values = [0.0, 0.0004, 0.001, 0.0011, 0.25, 0.2500001, 120, 121.5, 1e6, 0.001]
    for value in values:
        metrics.observe_call("Echo", "OK", value)
        histogram.labels("echo", "Echo", "OK").observe(value)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect()
            if family.name == "modelyard_request_seconds"
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    ours, theirs = samples(metrics.registry), samples(reference)
    assert ours == pytest.approx(theirs)
    assert len(ours) == len(_LATENCY_BUCKETS) + 3  # every bucket, +Inf, the count and the sum

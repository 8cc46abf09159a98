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

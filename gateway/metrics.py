"""Gateway metrics: jobs and items by state (read from the store at scrape time), retries by service and
status code, and the latency of every service call (per service and RPC)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelyard.runtime.calls import RETRYABLE


class _StoreCollector(Collector):
    def __init__(self, store_path: Path) -> None:
        self._path = store_path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("modelyard_gateway_jobs", "jobs by state", labels=["pipeline", "state"])
        items = GaugeMetricFamily("modelyard_gateway_items", "items by state", labels=["pipeline", "state"])
        try:
            db = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=5)
            try:
                for pipeline, state, count in db.execute("SELECT pipeline, state, COUNT(*) FROM jobs GROUP BY 1, 2"):
                    jobs.add_metric([pipeline, state], count)
                for pipeline, state, count in db.execute(
                    "SELECT j.pipeline, i.state, COUNT(*) FROM items i JOIN jobs j ON j.id = i.job_id GROUP BY 1, 2"
                ):
                    items.add_metric([pipeline, state], count)
            finally:
                db.close()
        except sqlite3.Error:
            pass
        yield jobs
        yield items


class GatewayMetrics:
    def __init__(self, store_path: Path, services: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self.retries = Counter(
            "modelyard_gateway_retries", "service calls retried", ["service", "code"], registry=self.registry
        )
        self.calls = Histogram(
            "modelyard_gateway_call_seconds",
            "service call latency, retries included",
            ["service", "rpc", "outcome"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store_path))
        for service in services:  # series at 0 for every service and retried code, before the first retry
            for code in sorted(RETRYABLE, key=lambda c: c.name):
                self.retries.labels(service, code.name)

    def on_retry(self, service: str, code: grpc.StatusCode) -> None:
        self.retries.labels(service, code.name).inc()

    def on_call(self, service: str, rpc: str, seconds: float, ok: bool) -> None:
        self.calls.labels(service, rpc, "ok" if ok else "failed").observe(seconds)

"""The model host: one adapter behind the scheduler and governor, with the service's readiness state.

Servicers call `host.run(items, context)`; they never touch the model directly.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import resource
import time
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2

from modelyard.runtime import __version__
from modelyard.runtime.adapter import ModelAdapter, ServiceSpec
from modelyard.runtime.arrays import SharedRegion, trust_region_owners
from modelyard.runtime.config import ServiceConfig
from modelyard.runtime.devices import device_memory, select_device
from modelyard.runtime.errors import Cancelled, DeadlineExceeded, FatalModelError, InvalidInput, NotReady
from modelyard.runtime.governor import MemoryGovernor
from modelyard.runtime.metrics import ServiceMetrics
from modelyard.runtime.paths import read_confined
from modelyard.runtime.progress import Progress, Update
from modelyard.runtime.scheduler import Scheduler
from modelyard.v1 import types_pb2

log = logging.getLogger("modelyard.runtime")


class State(str, Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    BROKEN = "broken"


def rss_bytes() -> int:
    """Current resident set size (not the peak)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def limit_cpu_threads(threads: int) -> None:
    """Cap torch's intra-op threads: on a shared CPU host every service defaulting to all cores makes each
    slower than one thread would (measured 5-10x for gScoreCAM on 2 shared cores)."""
    try:
        import torch
    except ImportError:  # a torch-free backend: nothing to cap
        return
    torch.set_num_threads(threads)


class ModelHost:
    def __init__(self, spec: ServiceSpec, config: ServiceConfig[Any], metrics: ServiceMetrics) -> None:
        self.spec = spec
        self.config = config
        self.runtime = config.runtime
        self.metrics = metrics
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.state = State.LOADING
        self.device = "cpu"
        self.adapter: ModelAdapter[Any, Any, Any] | None = None
        self.governor: MemoryGovernor | None = None
        self.scheduler: Scheduler | None = None
        self.on_broken: Callable[[], None] | None = None  # the server's: drain and exit
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    # -- lifecycle ------------------------------------------------------------------------------------
    def load(self) -> None:
        """Choose the device, load, warm up, then report SERVING. Raises ConfigError with what to fix."""
        started = time.monotonic()
        need = self.runtime.memory_need_mb
        if need is None:
            need = self.spec.adapter.memory_need_mb(self.config.model, self.runtime.max_batch_size)
        self.device = select_device(self.runtime.device, need, self.runtime.memory_fraction, self.spec.name)
        self.metrics.device[0] = self.device
        trust_region_owners(self.runtime.shared_memory_uids)
        if self.runtime.cpu_threads:
            limit_cpu_threads(self.runtime.cpu_threads)
        adapter = self.spec.adapter(self.config.model, self.device)
        adapter.load()
        self.adapter = adapter
        self.governor = MemoryGovernor(
            self.device,
            self.runtime.max_batch_size,
            self.runtime.probe_up_after,
            self.metrics.observe_backoff,
            in_inference_mode=adapter.inference_mode,
        )
        if self.runtime.warmup:
            # Through the governor, so warm-up gets a call's inference mode and out-of-memory and CUDA-failure
            # handling; the tuple runs warmup() and then hands back the one result the governor expects per item.
            self.governor.run(lambda _: (adapter.warmup(), [None])[1], [None])
        self.scheduler = Scheduler(
            adapter.infer,
            self.governor,
            queue_size=self.runtime.queue_size,
            max_batch_size=self.runtime.max_batch_size,
            batch_wait_ms=self.runtime.batch_wait_ms,
            on_batch=self.metrics.observe_batch,
            on_fatal=self.mark_broken,
        )
        self.scheduler.start()
        self.state = State.READY
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={
                "fields": {
                    "service": self.spec.name,
                    "device": self.device,
                    "load_s": time.monotonic() - started,
                }
            },
        )

    def drain(self) -> None:
        """Stop taking new calls (health NOT_SERVING); in-flight ones finish."""
        if self.state == State.READY:
            self.state = State.DRAINING
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    def close(self) -> None:
        if self.scheduler:
            self.scheduler.stop(timeout=5)
        if self.adapter:
            self.adapter.close()

    def mark_broken(self, exc: BaseException) -> None:
        """Health NOT_SERVING (orchestrators that probe restart on it), then the server drains and exits (for
        those that restart only on exit, such as compose)."""
        log.error("fatal model error, reporting NOT_SERVING and exiting once in-flight calls end: %s", exc)
        self.state = State.BROKEN
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.on_broken is not None:
            self.on_broken()

    def _set_health(self, status: int) -> None:
        self.health.set("", status)
        self.health.set(self.spec.proto_service, status)

    # -- requests -------------------------------------------------------------------------------------
    def run(self, items: list[Any], context: grpc.ServicerContext, progress: Progress | None = None) -> list[Any]:
        """Queue `items` for the model and wait for their results, honouring the caller's deadline.
        `progress`, when the items report to it, lets the model stop mid-item once the caller has gone."""
        self._check_ready(items)
        if progress is not None:
            progress.watch(context.is_active)
        results = self.scheduler.run_now(items, context.is_active)  # type: ignore[union-attr]
        if results is not None:  # the model was idle: it ran on this thread, nothing to wait for
            self.metrics.set_queue_depth(0)  # what this call found waiting
            return self._results(results)
        for event in self._wait_for(self._submit(items, context), context, progress):
            if not isinstance(event, Update):
                return event
        raise AssertionError("the events end with the results")  # pragma: no cover

    def stream(
        self, items: list[Any], context: grpc.ServicerContext, progress: Progress
    ) -> Iterator[Update | list[Any]]:
        """run() for server-streaming calls: yields the newest of the model's progress reports (through the
        `progress` the items carry) while it works, then the list of results as the last element. The model
        runs on its own thread, never this one, so the progress can be sent while it works."""
        self._check_ready(items)
        progress.watch(context.is_active)
        return self._wait_for(self._submit(items, context), context, progress)

    def _check_ready(self, items: list[Any]) -> None:
        if self.state != State.READY or self.scheduler is None:
            raise NotReady(f"{self.spec.name} is {self.state.value}; retry shortly or on another replica")
        if not items:
            raise InvalidInput("the request holds no items")

    def _submit(self, items: list[Any], context: grpc.ServicerContext) -> concurrent.futures.Future[list[Any]]:
        assert self.scheduler is not None  # (checked ready)
        self.metrics.set_queue_depth(self.scheduler.depth)
        return self.scheduler.submit(items, context.is_active)

    def _wait_for(
        self, future: concurrent.futures.Future[list[Any]], context: grpc.ServicerContext, progress: Progress | None
    ) -> Iterator[Update | list[Any]]:
        results = None
        try:
            while results is None:
                results = self._wait(future, context, timeout=0.25)
                update = progress.take() if progress is not None else None
                if update is not None:
                    yield update
        finally:
            if results is None and progress is not None:  # the caller went away (or the stream was closed)
                progress.cancel()  # stop the model's work
        yield self._results(results)

    @staticmethod
    def _results(results: list[Any]) -> list[Any]:
        """The call's results, or the first item error as the call's (see runtime.adapter)."""
        for index, result in enumerate(results):
            if isinstance(result, Exception):
                if isinstance(result, InvalidInput) and len(results) > 1:
                    raise InvalidInput(f"item {index}: {result.message}")
                raise result
        return results

    @staticmethod
    def _wait(
        future: concurrent.futures.Future[list[Any]], context: grpc.ServicerContext, timeout: float | None = None
    ) -> list[Any] | None:
        """Wait for the model (at most `timeout` seconds, then None), giving up when the caller cancels or its
        deadline passes (the model thread then drops the work, or stops it between batches or reports)."""
        remaining = context.time_remaining()
        # A call without a deadline reports about 9.2e18 s left (gRPC's infinite future): over ~3 years is none.
        deadline = None if remaining is None or remaining > 1e8 else time.monotonic() + remaining
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return future.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded("the deadline passed before the model finished; the work was stopped")
            if not context.is_active():
                raise Cancelled("the call was cancelled; the work was stopped")
            if until is not None and time.monotonic() >= until:
                return None

    def info(self, request: types_pb2.InfoRequest) -> types_pb2.ModelInfo:
        details = self.adapter.info() if self.adapter else {}
        mem = device_memory(self.device)
        arch = details.pop("architecture", {})
        extra = {str(k): str(v) for k, v in details.pop("details", {}).items()}
        extra["state"] = self.state.value
        random_weights = bool(details.pop("random_weights", False))
        return types_pb2.ModelInfo(
            service=self.spec.name,
            device=self.device,
            architecture=json.dumps(arch, sort_keys=True, default=str),
            gpu_memory_allocated_bytes=mem["allocated"],
            gpu_memory_reserved_bytes=mem["reserved"],
            rss_bytes=rss_bytes(),
            max_batch_size=self.runtime.max_batch_size,
            fitted_batch_size=self.governor.fitted_batch_size if self.governor else 0,
            shared_memory_ok=self._probe_shared_memory(request),
            data_probe_ok=self._probe_data_volume(request),
            version=__version__,
            details=extra,
            random_weights=random_weights,
            **{k: str(v) for k, v in details.items()},
        )

    def _probe_shared_memory(self, request: types_pb2.InfoRequest) -> bool:
        if not request.shared_memory_probe:
            return False
        try:
            # The same checks as any region (no links, a trusted owner's plain file), so a probe cannot ask
            # whether some other file starts with a guessed byte string.
            token = request.shared_memory_token
            span = (0, len(token))
            with SharedRegion.attach(self.runtime.shared_memory_dir, request.shared_memory_probe, span=span) as region:
                data = region.view(0, np.dtype("uint8"), (len(token),)).tobytes()
                return data == token
        except Exception:
            return False

    def _probe_data_volume(self, request: types_pb2.InfoRequest) -> bool:
        """Whether `data_probe`, read as any DataRef is (confined to the data volume, no links out, a regular
        file), holds exactly `data_token`: then the caller and this service mount the same volume."""
        if not request.data_probe or not request.data_token or self.runtime.data_root is None:
            return False
        try:
            return read_confined(self.runtime.data_root, request.data_probe, 64) == request.data_token
        except Exception:
            return False


__all__ = ["FatalModelError", "ModelHost", "State"]

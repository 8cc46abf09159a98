"""A bounded request queue in front of the model, one model thread, optional dynamic batching.

gRPC threads submit work and wait; the model thread takes requests in order, gathers concurrent ones into a
batch (up to max_batch_size items, waiting at most batch_wait_ms), drops work whose caller has gone, and runs
the batch through the memory governor. A full queue answers RESOURCE_EXHAUSTED at once (back-pressure).

Calls batched together do not fail each other. Each call gets its own slice of the results, so an exception in
one call's slot reaches that call only. When the model raises for a batch of several calls, each call runs again
on its own (a call whose caller has gone is dropped), so the error reaches only the call(s) that cause it. Errors
that concern the whole batch go to every call in it at once: FatalModelError (the CUDA context is broken; it
also calls on_fatal), Cancelled, and ResourceExhausted (out of memory even at batch 1).

When the model is idle, nothing is queued and no batching window is set, the calling thread runs the model
itself (`run_now`): the hand-off to the model thread and back costs ~0.2 ms per call, a third of a small
request's latency. One lock keeps the model to one caller at a time either way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from modelyard.runtime.errors import Cancelled, FatalModelError, ResourceExhausted
from modelyard.runtime.governor import MemoryGovernor

log = logging.getLogger("modelyard.runtime")

# Errors about the batch as a whole rather than any call in it: running the calls one by one would not spare
# any of them (a broken CUDA context, callers gone or a deadline passed; out of memory, which the governor
# already answers by halving the batch down to 1 before it raises ResourceExhausted).
_WHOLE_BATCH = (FatalModelError, Cancelled, ResourceExhausted)


@dataclass
class Work:
    items: list[Any]
    alive: Callable[[], bool]
    future: Future[list[Any]] = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class Scheduler:
    def __init__(
        self,
        infer: Callable[[list[Any]], Sequence[Any]],
        governor: MemoryGovernor,
        queue_size: int,
        max_batch_size: int,
        batch_wait_ms: float = 0.0,
        on_batch: Callable[[int, float], None] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._infer = infer
        self._governor = governor
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=queue_size)
        self._max_batch = max_batch_size
        self._batch_wait = batch_wait_ms / 1000.0
        self._on_batch = on_batch
        self._on_fatal = on_fatal
        self._thread = threading.Thread(target=self._loop, name="model", daemon=True)
        self._carry: Work | None = None
        self._model_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the model thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def run_now(self, items: list[Any], alive: Callable[[], bool]) -> list[Any] | None:
        """Run `items` on this thread and return their results when the model is idle and nothing waits (None
        otherwise: then `submit`). The model's errors are raised here, as `submit`'s future would raise them."""
        if self._batch_wait or self._carry is not None or not self._queue.empty():
            return None
        if not self._model_lock.acquire(blocking=False):
            return None
        try:
            if self._on_batch:
                self._on_batch(len(items), 0.0)
            try:
                return self._governor.run(self._infer, items, alive)
            except FatalModelError as exc:
                if self._on_fatal:
                    self._on_fatal(exc)
                raise
        finally:
            self._model_lock.release()

    def submit(self, items: list[Any], alive: Callable[[], bool]) -> Future[list[Any]]:
        """Queue work for the model thread; its future holds the results (or the error)."""
        work = Work(items, alive)
        try:
            self._queue.put_nowait(work)
        except queue.Full:
            raise ResourceExhausted(
                f"the request queue is full ({self._queue.maxsize} requests waiting): retry with backoff, "
                "add replicas, or raise runtime.queue_size"
            ) from None
        return work.future

    def _next_batch(self) -> list[Work] | None:
        first = self._carry or self._queue.get()
        self._carry = None
        if first is None:
            return None
        batch, count = [first], len(first.items)
        deadline = time.monotonic() + self._batch_wait
        while count < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)  # keep the stop marker for the next turn
                break
            if count + len(nxt.items) > self._max_batch:
                self._carry = nxt
                break
            batch.append(nxt)
            count += len(nxt.items)
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            with self._model_lock:  # liveness is checked after the wait for the model, not before
                live = []
                for work in batch:
                    if work.alive():
                        live.append(work)
                    else:
                        _drop(work)
                if live:
                    self._run(live)

    def _run(self, batch: list[Work]) -> None:
        started = time.monotonic()
        if self._on_batch:
            self._on_batch(sum(len(w.items) for w in batch), started - min(w.enqueued for w in batch))
        try:
            results = self._model(batch)
        except BaseException as exc:
            if len(batch) > 1 and not isinstance(exc, _WHOLE_BATCH):
                self._run_each(batch)
            else:
                self._fail(batch, exc)
            return
        offset = 0
        for work in batch:  # each call its own slice: an exception in one call's slot stays with that call
            work.future.set_result(results[offset : offset + len(work.items)])
            offset += len(work.items)

    def _run_each(self, batch: list[Work]) -> None:
        """The model raised for a batch of several calls. One call's items may be what made it raise, so each
        call runs again on its own: the error reaches only the call(s) that cause it, the others get results."""
        for index, work in enumerate(batch):
            if not work.alive():
                _drop(work)
                continue
            try:
                work.future.set_result(self._model([work]))
            except FatalModelError as exc:  # the model can no longer run: the calls left cannot run either
                self._fail(batch[index:], exc)
                return
            except BaseException as exc:
                self._fail([work], exc)

    def _model(self, batch: list[Work]) -> list[Any]:
        items = [item for work in batch for item in work.items]
        return self._governor.run(self._infer, items, alive=lambda: any(w.alive() for w in batch))

    def _fail(self, batch: list[Work], exc: BaseException) -> None:
        if isinstance(exc, FatalModelError) and self._on_fatal:
            self._on_fatal(exc)
        for work in batch:
            work.future.set_exception(exc)


def _drop(work: Work) -> None:
    work.future.set_exception(Cancelled("the caller went away before the model started"))

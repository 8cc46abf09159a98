"""Cancelling a job's work in flight: its service calls are cancelled, its retry back-offs cut short.

A job's worker threads run with their job's `Cancellation` as the current one (a context variable), so the
service clients (runtime/calls.py) can register each call with it without every pipeline passing it along.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

current: contextvars.ContextVar[Cancellation | None] = contextvars.ContextVar("modelyard_cancel", default=None)


class Cancellation(threading.Event):
    """A job's cancel flag (an Event) that also cancels the calls registered with it when set."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: set[Any] = set()
        self._guard = threading.Lock()

    def set(self) -> None:
        super().set()
        with self._guard:
            calls = list(self._calls)
        for call in calls:
            call.cancel()

    @contextmanager
    def tracking(self, call: Any) -> Iterator[None]:
        with self._guard:
            self._calls.add(call)
        if self.is_set():  # set before the call was registered
            call.cancel()
        try:
            yield
        finally:
            with self._guard:
                self._calls.discard(call)


@contextmanager
def tracking(call: Any) -> Iterator[None]:
    """Cancel `call` (a grpc future) when the current job is cancelled; its result() then raises
    grpc.FutureCancelledError, which is never retried."""
    scope = current.get()
    if scope is None:
        yield
        return
    with scope.tracking(call):
        yield


def sleep(seconds: float) -> None:
    """A retry back-off that ends early when the current job is cancelled."""
    scope = current.get()
    if scope is None:
        time.sleep(seconds)
    else:
        scope.wait(seconds)

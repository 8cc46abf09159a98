"""Progress of one long item: the model reports it as it works, the thread answering the call reads it.

The adapter calls `progress.report(done, total)` between steps; `ModelHost.stream` sends the newest report to a
streaming caller. Reports are coalesced: a slow reader gets the latest state, not a backlog. Once the caller
has gone (cancelled, deadline passed), `report` raises Cancelled, so the model stops mid-item rather than at
the next batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from modelyard.runtime.errors import Cancelled


@dataclass(frozen=True)
class Update:
    done: int  # units finished (e.g. frames)
    total: int  # units in the item
    stage: str = ""  # what is being done, e.g. "tracking forward"
    elapsed_s: float = 0.0  # since the Progress was created


class Progress:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Update | None = None
        self._cancelled = False
        self._alive: Callable[[], bool] = lambda: True
        self._started = time.monotonic()

    def watch(self, alive: Callable[[], bool]) -> None:
        """Also count the caller as gone once `alive()` is false (e.g. the gRPC context's is_active)."""
        self._alive = alive

    def report(self, done: int, total: int, stage: str = "") -> None:
        """Called by the model as it works. Raises Cancelled once the caller has gone."""
        with self._lock:
            if self._cancelled or not self._alive():
                self._cancelled = True
                raise Cancelled("the call was cancelled or its deadline passed; the work was stopped")
            self._latest = Update(done, total, stage, time.monotonic() - self._started)

    def take(self) -> Update | None:
        """The newest report not yet taken, if any."""
        with self._lock:
            latest, self._latest = self._latest, None
            return latest

    def cancel(self) -> None:
        """The caller has gone: the next report raises Cancelled in the model thread."""
        with self._lock:
            self._cancelled = True

    @property
    def cancelled(self) -> bool:
        """True once the caller has gone, whichever thread the model runs on."""
        return self._cancelled or not self._alive()

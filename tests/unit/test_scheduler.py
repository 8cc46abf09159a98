"""The request queue: back-pressure, dynamic batching, dropping work whose caller left."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from modelyard.runtime.errors import Cancelled, ResourceExhausted
from modelyard.runtime.governor import MemoryGovernor
from modelyard.runtime.scheduler import Scheduler


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: list[int]) -> list[int]:
        self.gate.wait(5)
        time.sleep(self.delay)
        self.batches.append(list(batch))
        return [x + 100 for x in batch]


def occupy(s: Scheduler, model: Recorder) -> Future:
    """Start a call that holds the model (blocked on the gate) from another thread, as a gRPC thread would."""
    model.gate.clear()
    holder: Future = Future()
    threading.Thread(target=lambda: holder.set_result(s.submit([0], lambda: True).result(10)), daemon=True).start()
    time.sleep(0.1)
    return holder


def scheduler(model: Recorder, queue_size: int = 4, max_batch: int = 8, wait_ms: float = 0.0) -> Scheduler:
    s = Scheduler(model, MemoryGovernor("cpu", max_batch), queue_size, max_batch, wait_ms)
    s.start()
    return s


def test_results_come_back_to_their_own_caller() -> None:
    s = scheduler(Recorder())
    assert s.submit([1, 2], lambda: True).result(5) == [101, 102]
    s.stop(5)


def test_an_idle_model_runs_on_the_callers_thread_without_a_hand_off() -> None:
    seen: list[str] = []
    s = Scheduler(lambda b: seen.append(threading.current_thread().name) or b, MemoryGovernor("cpu", 1), 4, 1)
    s.start()
    assert s.submit([1], lambda: True).result(5) == [1]
    assert seen == [threading.current_thread().name]
    s.stop(5)


def test_a_full_queue_answers_resource_exhausted_at_once() -> None:
    model = Recorder()
    s = scheduler(model, queue_size=1)
    holder = occupy(s, model)  # the model is busy
    second = s.submit([2], lambda: True)  # the model thread takes it and waits for the model
    time.sleep(0.1)
    third = s.submit([3], lambda: True)  # waits in the queue
    with pytest.raises(ResourceExhausted, match="queue is full"):
        s.submit([4], lambda: True)
    model.gate.set()
    assert holder.result(5) == [100] and second.result(5) == [102] and third.result(5) == [103]
    s.stop(5)


def test_concurrent_requests_are_batched_together_up_to_the_limit() -> None:
    model = Recorder()
    model.gate.clear()
    s = scheduler(model, queue_size=8, max_batch=4, wait_ms=50)
    blocker = s.submit([0], lambda: True)
    time.sleep(0.1)
    futures = [s.submit([i], lambda: True) for i in range(1, 6)]
    model.gate.set()
    assert blocker.result(5) == [100]
    assert [f.result(5) for f in futures] == [[101], [102], [103], [104], [105]]
    assert model.batches[1:] == [[1, 2, 3, 4], [5]]
    s.stop(5)


def test_work_whose_caller_left_never_reaches_the_model() -> None:
    model = Recorder()
    s = scheduler(model)
    holder = occupy(s, model)
    gone = s.submit([2], lambda: False)
    model.gate.set()
    with pytest.raises(Cancelled):
        gone.result(5)
    holder.result(5)
    s.stop(5)
    assert model.batches == [[0]]

"""The request queue: back-pressure, dynamic batching, dropping work whose caller left, and calls batched
together that do not fail each other."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import pytest
import torch

from modelyard.runtime.errors import Cancelled, FatalModelError, InvalidInput, ResourceExhausted
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
    assert s.run_now([1], lambda: True) == [1]
    assert seen == [threading.current_thread().name]
    s.stop(5)


def test_a_busy_model_is_not_run_on_the_callers_thread() -> None:
    model = Recorder()
    s = scheduler(model)
    holder = occupy(s, model)
    assert s.run_now([2], lambda: True) is None  # the caller submits instead and waits its turn
    model.gate.set()
    assert holder.result(5) == [100]
    s.stop(5)


def test_a_full_queue_answers_resource_exhausted_at_once() -> None:
    model = Recorder()
    s = scheduler(model, queue_size=1)
    holder = occupy(s, model)  # the model thread is busy with it
    second = s.submit([2], lambda: True)  # waits in the queue
    with pytest.raises(ResourceExhausted, match="queue is full"):
        s.submit([3], lambda: True)
    model.gate.set()
    assert holder.result(5) == [100] and second.result(5) == [102]
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


# -- calls batched together ----------------------------------------------------------------------------------


def alive() -> bool:
    return True


class Picky(Recorder):
    """A model for which negative items are bad: it puts an exception in a bad item's slot or, with `raises`,
    raises it for the whole batch. Every batch it is given is recorded, whatever it then does."""

    def __init__(self, error: Callable[[int], BaseException] | None = None, raises: bool = False) -> None:
        super().__init__()
        self.error = error or (lambda x: InvalidInput(f"item {x} is bad"))
        self.raises = raises

    def __call__(self, batch: list[int]) -> list[int | BaseException]:
        self.gate.wait(5)
        self.batches.append(list(batch))
        bad = [x for x in batch if x < 0]
        if bad and self.raises:
            raise self.error(bad[0])
        return [self.error(x) if x < 0 else x + 100 for x in batch]


def batched(model: Recorder, *calls: list[int], on_fatal: Callable[[BaseException], None] | None = None):
    """Submit `calls` while the model is busy with another, so that they reach it together in one batch;
    returns their futures, all settled, and leaves that first call's batch out of the model's record."""
    model.gate.clear()
    s = Scheduler(model, MemoryGovernor("cpu", 8), 8, 8, batch_wait_ms=50, on_fatal=on_fatal)
    s.start()
    busy = s.submit([0], alive)
    time.sleep(0.2)  # the model thread has taken it and waits at the gate
    futures = [s.submit(items, alive) for items in calls]
    model.gate.set()
    assert busy.result(5) == [100]
    s.stop(5)
    del model.batches[0]
    return futures


def test_an_exception_in_one_calls_slot_reaches_that_call_only() -> None:
    model = Picky()
    bad, good = batched(model, [-1], [2, 3])
    (slot,) = bad.result(5)
    assert isinstance(slot, InvalidInput) and slot.message == "item -1 is bad"
    assert good.result(5) == [102, 103]
    assert model.batches == [[-1, 2, 3]]  # one batch held both calls, and the model ran it once


def test_when_the_model_raises_for_a_batch_only_the_call_that_caused_it_fails() -> None:
    model = Picky(error=lambda x: ValueError(f"cannot take {x}"), raises=True)
    first, bad, last = batched(model, [1], [2, -3], [4, 5])
    assert first.result(5) == [101]
    with pytest.raises(ValueError, match="cannot take -3"):
        bad.result(5)
    assert last.result(5) == [104, 105]
    assert model.batches == [[1, 2, -3, 4, 5], [1], [2, -3], [4, 5]]  # the batch, then each call on its own


def test_a_call_whose_caller_left_while_its_batch_failed_is_dropped_not_run_again() -> None:
    left = threading.Event()

    def fail_and_lose_a_caller(x: int) -> ValueError:
        left.set()
        return ValueError(f"cannot take {x}")

    model = Picky(error=fail_and_lose_a_caller, raises=True)
    model.gate.clear()
    s = Scheduler(model, MemoryGovernor("cpu", 8), 8, 8, batch_wait_ms=50)
    s.start()
    busy = s.submit([0], alive)
    time.sleep(0.2)
    gone = s.submit([1], lambda: not left.is_set())
    bad, good = s.submit([-2], alive), s.submit([3], alive)
    model.gate.set()
    with pytest.raises(Cancelled, match="went away"):
        gone.result(5)
    with pytest.raises(ValueError):
        bad.result(5)
    assert good.result(5) == [103] and busy.result(5) == [100]
    s.stop(5)
    assert model.batches == [[0], [1, -2, 3], [-2], [3]]


@pytest.mark.parametrize(
    ("error", "seen_as", "fatal_reports"),
    [
        (lambda x: FatalModelError(f"the CUDA context broke on {x}"), FatalModelError, 1),
        (lambda x: Cancelled(f"stopped at {x}"), Cancelled, 0),
        (lambda x: ResourceExhausted(f"no room for {x}"), ResourceExhausted, 0),
        # the governor halves the batch down to 1 on out-of-memory, then answers RESOURCE_EXHAUSTED
        (lambda x: torch.cuda.OutOfMemoryError(f"CUDA out of memory at {x}"), ResourceExhausted, 0),
    ],
    ids=["fatal", "cancelled", "resource-exhausted", "out-of-memory"],
)
def test_an_error_about_the_whole_batch_reaches_every_call_in_it(
    error: Callable[[int], BaseException], seen_as: type[BaseException], fatal_reports: int
) -> None:
    fatal: list[BaseException] = []
    model = Picky(error=error, raises=True)
    bad, good = batched(model, [-1], [2], on_fatal=fatal.append)
    with pytest.raises(seen_as):
        bad.result(5)
    with pytest.raises(seen_as):
        good.result(5)
    assert bad.exception() is good.exception()  # the one error, not one per call
    assert len(fatal) == fatal_reports
    assert all(batch[0] == -1 for batch in model.batches)  # never a call run again on its own


def test_a_model_that_breaks_while_the_calls_run_again_fails_the_rest_and_reports_once() -> None:
    outcomes: list[BaseException] = [ValueError("one of these items is bad"), FatalModelError("the context broke")]

    class Breaking(Recorder):
        def __call__(self, batch: list[int]) -> list[int]:
            self.gate.wait(5)
            self.batches.append(list(batch))
            if batch != [0] and outcomes:
                raise outcomes.pop(0)
            return [x + 100 for x in batch]

    fatal: list[BaseException] = []
    model = Breaking()
    futures = batched(model, [1], [2], [3], on_fatal=fatal.append)
    for future in futures:
        with pytest.raises(FatalModelError, match="the context broke"):
            future.result(5)
    assert len(fatal) == 1
    assert model.batches == [[1, 2, 3], [1]]  # the calls after the break never reach the model


def test_a_batch_of_one_call_that_raises_is_not_run_again() -> None:
    model = Picky(error=lambda x: ValueError(f"cannot take {x}"), raises=True)
    s = scheduler(model)
    with pytest.raises(ValueError, match="cannot take -2"):
        s.submit([1, -2, 3], alive).result(5)
    s.stop(5)
    assert model.batches == [[1, -2, 3]]

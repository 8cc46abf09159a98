"""The memory governor, on the CPU, with a model that raises torch's own out-of-memory error above a batch size."""

from __future__ import annotations

import pytest
import torch

from modelyard.runtime.errors import Cancelled, FatalModelError, ResourceExhausted
from modelyard.runtime.governor import MemoryGovernor, needed_mb


class OomAbove:
    """A stand-in model: doubles its inputs, and runs out of memory on batches larger than `fits`."""

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.calls: list[int] = []
        self.inference_mode: list[bool] = []

    def __call__(self, batch: list[int]) -> list[int]:
        self.calls.append(len(batch))
        self.inference_mode.append(torch.is_inference_mode_enabled())
        if len(batch) > self.fits:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 588.00 MiB. GPU 0 has a total capacity of 23.68 GiB"
            )
        return [2 * x for x in batch]


def test_halves_the_batch_on_oom_and_retries_the_same_items_in_order() -> None:
    model, backoffs = OomAbove(fits=2), []
    governor = MemoryGovernor("cpu", max_batch_size=8, on_backoff=lambda a, b: backoffs.append((a, b)))
    assert governor.run(model, list(range(10))) == [2 * x for x in range(10)]
    assert model.calls[:3] == [8, 4, 2]  # 8 -> OOM, 4 -> OOM, 2 fits
    assert backoffs == [(8, 4), (4, 2)]
    assert governor.fitted_batch_size == 2


def test_remembers_the_size_that_fit() -> None:
    model = OomAbove(fits=2)
    governor = MemoryGovernor("cpu", max_batch_size=8)
    governor.run(model, list(range(4)))
    model.calls.clear()
    governor.run(model, list(range(6)))
    assert model.calls == [2, 2, 2]  # no new out-of-memory attempts


def test_probes_upward_after_a_run_of_successes() -> None:
    model = OomAbove(fits=4)
    governor = MemoryGovernor("cpu", max_batch_size=8, probe_up_after=3)
    governor.run(model, list(range(8)))  # 8 -> OOM -> 4, 4
    assert governor.fitted_batch_size == 4
    model.fits = 8  # memory was freed by a neighbour
    governor.run(model, list(range(4)))  # third success at 4 -> probe 8 next time
    assert governor.fitted_batch_size == 8
    model.calls.clear()
    assert governor.run(model, list(range(8))) == [2 * x for x in range(8)]
    assert model.calls == [8]


def test_at_batch_one_it_answers_resource_exhausted_with_free_and_needed_memory() -> None:
    governor = MemoryGovernor("cpu", max_batch_size=4)
    with pytest.raises(ResourceExhausted) as err:
        governor.run(OomAbove(fits=0), [1, 2, 3])
    message = err.value.message
    assert "even at batch 1" in message and "MiB free of" in message and "tried to allocate 588 MiB" in message


def test_inference_runs_under_inference_mode() -> None:
    model = OomAbove(fits=8)
    MemoryGovernor("cpu", max_batch_size=8).run(model, [1, 2])
    assert model.inference_mode == [True]


def test_an_adapter_that_runs_no_torch_skips_inference_mode() -> None:
    model = OomAbove(fits=8)
    MemoryGovernor("cpu", max_batch_size=8, in_inference_mode=False).run(model, [1, 2])
    assert model.inference_mode == [False]


def test_refuses_results_that_keep_tensors_on_a_device() -> None:
    meta = torch.empty(2, device="meta")  # any non-CPU device stands in for a GPU
    with pytest.raises(RuntimeError, match="device tensor"):
        MemoryGovernor("cpu", max_batch_size=2).run(lambda batch: [meta for _ in batch], [1])


def test_stops_between_chunks_when_the_caller_is_gone() -> None:
    model = OomAbove(fits=1)
    alive = iter([False])  # gone once the first chunk is done
    with pytest.raises(Cancelled):
        MemoryGovernor("cpu", max_batch_size=1).run(model, [1, 2, 3], alive=lambda: next(alive))
    assert model.calls == [1]


def test_a_corrupted_cuda_context_is_fatal() -> None:
    def broken(batch: list[int]) -> list[int]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(FatalModelError):
        MemoryGovernor("cpu", max_batch_size=1).run(broken, [1])


def test_reads_the_needed_size_from_torchs_message() -> None:
    assert needed_mb(RuntimeError("Tried to allocate 2.50 GiB")) == 2560
    assert needed_mb(RuntimeError("no size here")) is None

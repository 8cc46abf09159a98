"""Device choice: CPU fallback, explicit GPUs, and refusing to load onto a GPU that is already full."""

from __future__ import annotations

import pytest

from modelyard.runtime.devices import GpuSnapshot, GpuState, plan_device, read_gpus, select_device
from modelyard.runtime.errors import ConfigError

NO_NVML = GpuSnapshot(False, "NVML is not available (NVML Shared Library Not Found): no NVIDIA driver")


def gpu(index: int, used_mb: int, total_mb: int = 24576, util: int = 0) -> GpuState:
    return GpuState(index, "NVIDIA RTX 3090", f"GPU-{index}", total_mb, used_mb, util)


# The seed's day: GPU0 22/24 GB used at 99 %, GPU1 9.6 GB at 91 %, GPU2 empty, GPU3 4.4 GB.
SEED_GPUS = [gpu(0, 22331, util=99), gpu(1, 9683, util=91), gpu(2, 12), gpu(3, 4400)]
SEED = GpuSnapshot(True, "4 GPU(s)", SEED_GPUS)


def test_without_nvml_or_cuda_auto_means_cpu() -> None:
    assert plan_device("auto", 3000, NO_NVML, []) == "cpu"


def test_reading_gpus_without_a_driver_reports_why_instead_of_crashing() -> None:
    snapshot = read_gpus()  # this machine has no GPU
    assert snapshot.available is False and snapshot.reason


def test_select_device_falls_back_to_cpu_on_this_machine() -> None:
    assert select_device("auto", 1000, None, "medsam") == "cpu"


def test_cuda_requested_without_a_gpu_says_why() -> None:
    with pytest.raises(ConfigError) as err:
        plan_device("cuda", 3000, NO_NVML, [])
    assert "torch sees no CUDA device" in err.value.message and "NVML Shared Library Not Found" in err.value.message


def test_refuses_to_load_on_a_full_gpu_with_free_and_needed_memory() -> None:
    with pytest.raises(ConfigError) as err:
        plan_device("cuda:0", 3000, SEED, SEED_GPUS, "biomedclip")
    message = err.value.message
    assert "refusing to load biomedclip on cuda:0" in message
    assert "2245 MiB free of 24576 MiB" in message and "needs 3000 MiB" in message and "99% busy" in message


def test_loads_when_the_need_fits() -> None:
    assert plan_device("cuda:2", 3000, SEED, SEED_GPUS) == "cuda:2"


def test_auto_picks_the_visible_gpu_with_the_most_free_memory() -> None:
    assert plan_device("auto", 3000, SEED, SEED_GPUS) == "cuda:2"


def test_a_gpu_index_that_does_not_exist_is_explained() -> None:
    with pytest.raises(ConfigError, match="torch sees 1 CUDA device"):
        plan_device("cuda:3", 100, SEED, [SEED_GPUS[2]])


def test_cpu_is_always_cpu() -> None:
    assert plan_device("cpu", 10**9, SEED, SEED_GPUS) == "cpu"

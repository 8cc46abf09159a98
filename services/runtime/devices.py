"""Device choice and the pre-load GPU memory check.

`plan_device` is a pure function over a snapshot of the GPUs, so every rule is tested without a GPU; NVML
(package nvidia-ml-py, imported as pynvml) supplies that snapshot on real machines, and its absence is reported
plainly instead of crashing.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from modelyard.runtime.errors import ConfigError

log = logging.getLogger("modelyard.runtime")
MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuState:
    index: int  # NVML index (physical order)
    name: str
    uuid: str
    total_mb: int
    used_mb: int
    utilization_pct: int = 0

    @property
    def free_mb(self) -> int:
        return self.total_mb - self.used_mb


@dataclass(frozen=True)
class GpuSnapshot:
    """What NVML saw. `available` False means no driver / no NVML / no GPU, with `reason` saying which."""

    available: bool
    reason: str
    gpus: list[GpuState] = field(default_factory=list)


def read_gpus() -> GpuSnapshot:
    """Read every GPU's memory and utilisation through NVML. Never raises."""
    try:
        import pynvml
    except ImportError:
        return GpuSnapshot(False, "nvidia-ml-py is not installed, so GPU memory cannot be read")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuSnapshot(False, f"NVML is not available ({exc}): no NVIDIA driver on this machine")
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                util = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                util = 0
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            gpus.append(
                GpuState(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    total_mb=int(mem.total) // MIB,
                    used_mb=int(mem.used) // MIB,
                    utilization_pct=util,
                )
            )
        if not gpus:
            return GpuSnapshot(False, "NVML found no GPU")
        return GpuSnapshot(True, f"{len(gpus)} GPU(s) visible to NVML", gpus)
    except pynvml.NVMLError as exc:
        return GpuSnapshot(False, f"NVML failed while reading GPUs: {exc}")
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def plan_device(
    spec: str,
    need_mb: int,
    snapshot: GpuSnapshot,
    cuda_gpus: list[GpuState | None],
    service: str = "model",
) -> str:
    """Pick the torch device for `spec` and check the memory need fits.

    `cuda_gpus[i]` is NVML's view of torch's cuda:i (None when it cannot be matched); an empty list means torch
    sees no CUDA device. Raises ConfigError with free vs needed memory when the model does not fit.
    """
    if spec == "cpu":
        return "cpu"
    if not cuda_gpus:
        if spec == "auto":
            log.info("device auto -> cpu: %s", snapshot.reason if not snapshot.available else "torch sees no CUDA")
            return "cpu"
        raise ConfigError(
            f"device '{spec}' was configured but torch sees no CUDA device ({snapshot.reason}). "
            "Set runtime.device to cpu or auto, or run where the GPU is visible (compose GPU overlay, "
            "--gpus, nvidia.com/gpu)."
        )
    if spec == "auto":
        # The visible GPU with the most free memory; inside a container only the pinned one is visible.
        known = [(g.free_mb if g else 0, i) for i, g in enumerate(cuda_gpus)]
        index = max(known)[1]
    else:
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= len(cuda_gpus):
            raise ConfigError(
                f"device '{spec}' does not exist: torch sees {len(cuda_gpus)} CUDA device(s) "
                f"(cuda:0..cuda:{len(cuda_gpus) - 1}); inside a container the pinned GPU is cuda:0"
            )
    gpu = cuda_gpus[index]
    if gpu is None:
        log.warning(
            "cannot read free memory of cuda:%d (%s); loading without the memory check",
            index,
            snapshot.reason,
        )
    elif gpu.free_mb < need_mb:
        raise ConfigError(
            f"refusing to load {service} on cuda:{index} ({gpu.name}, GPU {gpu.index}): "
            f"{gpu.free_mb} MiB free of {gpu.total_mb} MiB ({gpu.used_mb} MiB used by other processes, "
            f"{gpu.utilization_pct}% busy), but it needs {need_mb} MiB. Choose a GPU with room "
            "(`modelyard plan`), lower runtime.max_batch_size, or free that GPU."
        )
    return f"cuda:{index}"


def torch_visible_gpus(snapshot: GpuSnapshot) -> list[GpuState | None]:
    """NVML's state for each CUDA device torch sees, matched by UUID (CUDA_VISIBLE_DEVICES reorders them).
    Without torch installed (a service whose backend does not use it) there is none."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    by_uuid = {g.uuid.removeprefix("GPU-"): g for g in snapshot.gpus}
    visible: list[GpuState | None] = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        uuid = str(getattr(props, "uuid", "")).removeprefix("GPU-")
        gpu = by_uuid.get(uuid)
        if gpu is None:
            # No NVML match: measure through the CUDA runtime instead.
            free, total = torch.cuda.mem_get_info(i)
            gpu = GpuState(i, props.name, uuid, total // MIB, (total - free) // MIB)
        visible.append(gpu)
    return visible


def select_device(spec: str, need_mb: int, memory_fraction: float | None, service: str) -> str:
    """Choose the device for a service, refuse when it does not fit, and apply the memory cap."""
    snapshot = read_gpus()
    cuda_gpus = torch_visible_gpus(snapshot) if spec != "cpu" else []
    device = plan_device(spec, need_mb, snapshot, cuda_gpus, service)
    if device.startswith("cuda") and memory_fraction is not None:
        import torch

        torch.cuda.set_per_process_memory_fraction(memory_fraction, int(device.split(":")[1]))
    return device


def device_memory(device: str) -> dict[str, int]:
    """Bytes allocated and reserved by this process on `device` (zeros on the CPU)."""
    if not device.startswith("cuda"):
        return {"allocated": 0, "reserved": 0, "free": 0, "total": 0}
    import torch

    free, total = torch.cuda.mem_get_info(device)
    return {
        "allocated": int(torch.cuda.memory_allocated(device)),
        "reserved": int(torch.cuda.memory_reserved(device)),
        "free": int(free),
        "total": int(total),
    }

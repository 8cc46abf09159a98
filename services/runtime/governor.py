"""The memory governor: every model call runs through it.

Inference runs under torch.inference_mode (unless the adapter runs no torch). On CUDA out-of-memory the
governor frees the cache, halves the batch and retries the same items, remembers the size that fit, and probes
upward again after a run of successes. At batch 1 it gives up with RESOURCE_EXHAUSTED naming free and needed
memory. Without torch installed (a backend that does not use it) the governor only chunks, checks and orders
the results.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

try:  # optional: a service whose backend needs no torch (e.g. wilor's MediaPipe reference) runs without it
    import torch
except ImportError:
    torch = None  # type: ignore[assignment]

from modelyard.runtime.devices import MIB, device_memory
from modelyard.runtime.errors import Cancelled, FatalModelError, ResourceExhausted

log = logging.getLogger("modelyard.runtime")
_TRIED = re.compile(r"Tried to allocate ([\d.]+) ([KMG]i?B)")
_UNIT_MB = {"KiB": 1 / 1024, "KB": 1 / 1024, "MiB": 1, "MB": 1, "GiB": 1024, "GB": 1024}
# CUDA errors after which the context is unusable: the process must be restarted.
_FATAL_CUDA = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "CUDA error: an illegal",
)


class _NeverRaised(Exception):
    """Stands in for torch's out-of-memory error where torch is not installed (nothing can raise it)."""


_OUT_OF_MEMORY: type[BaseException] = torch.cuda.OutOfMemoryError if torch is not None else _NeverRaised
# torch.inference_mode() builds a Python decorator object around this C++ guard on each entry, three times the
# guard's own cost; a call needs only the guard (torch.inference_mode where a torch lacks it).
_INFERENCE_GUARD = getattr(torch._C, "_InferenceMode", None) if torch is not None else None


def inference_mode() -> contextlib.AbstractContextManager[Any]:
    """torch's inference mode for the current thread while the context lasts (nothing without torch)."""
    if _INFERENCE_GUARD is not None:
        return _INFERENCE_GUARD(True)  # type: ignore[no-any-return]
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()


def needed_mb(oom: BaseException) -> float | None:
    """The allocation size torch reported in its out-of-memory message, in MiB."""
    match = _TRIED.search(str(oom))
    return float(match.group(1)) * _UNIT_MB[match.group(2)] if match else None


class MemoryGovernor:
    def __init__(
        self,
        device: str,
        max_batch_size: int,
        probe_up_after: int = 100,
        on_backoff: Callable[[int, int], None] | None = None,
        in_inference_mode: bool = True,
    ) -> None:
        self.device = device
        self._mode = inference_mode if in_inference_mode else None
        self.max_batch_size = max_batch_size
        self.probe_up_after = probe_up_after
        self.fitted_batch_size = max_batch_size
        self._successes = 0
        self._on_backoff = on_backoff
        self._lock = threading.Lock()

    def run(
        self,
        infer: Callable[[list[Any]], Sequence[Any]],
        items: list[Any],
        alive: Callable[[], bool] = lambda: True,
    ) -> list[Any]:
        """Run `infer` over `items` in chunks that fit, returning one result per item in order."""
        results: list[Any] = []
        start = 0
        while start < len(items):
            # (between chunks: whoever hands the items over has just checked that the caller is still there)
            if start and not alive():
                raise Cancelled("the call was cancelled or its deadline passed; remaining work stopped")
            size = min(self.fitted_batch_size, len(items) - start)
            chunk = items[start : start + size]
            try:
                if self._mode is None:  # (a nullcontext would cost three calls per model call)
                    out = list(infer(chunk))
                else:
                    with self._mode():
                        out = list(infer(chunk))
            except _OUT_OF_MEMORY as oom:
                self._release()
                if size == 1:
                    raise ResourceExhausted(self._exhausted_message(oom)) from None
                self._back_off(size)
                continue  # the same items again, at the smaller size
            except RuntimeError as exc:
                if any(marker in str(exc) for marker in _FATAL_CUDA):
                    raise FatalModelError(f"the CUDA context is no longer usable: {exc}") from exc
                raise
            if len(out) != len(chunk):
                raise RuntimeError(f"adapter returned {len(out)} results for {len(chunk)} items")
            _check_on_host(out)
            results.extend(out)
            start += size
            self._succeeded()
        return results

    def _back_off(self, size: int) -> None:
        with self._lock:
            self.fitted_batch_size = max(1, size // 2)
            self._successes = 0
        log.warning("out of memory at batch %d on %s: retrying at %d", size, self.device, self.fitted_batch_size)
        if self._on_backoff:
            self._on_backoff(size, self.fitted_batch_size)

    def _succeeded(self) -> None:
        if self.fitted_batch_size >= self.max_batch_size:  # nothing to probe (a stale read only delays a probe)
            return
        with self._lock:
            if self.fitted_batch_size >= self.max_batch_size:
                return
            self._successes += 1
            if self._successes >= self.probe_up_after:
                self.fitted_batch_size = min(self.max_batch_size, self.fitted_batch_size * 2)
                self._successes = 0
                log.info("probing a larger batch on %s: %d", self.device, self.fitted_batch_size)

    def _release(self) -> None:
        gc.collect()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _exhausted_message(self, oom: BaseException) -> str:
        mem = device_memory(self.device)
        need = needed_mb(oom)
        need_text = f"it tried to allocate {need:.0f} MiB more" if need is not None else "the needed size is unknown"
        return (
            f"out of GPU memory on {self.device} even at batch 1: {mem['free'] // MIB} MiB free of "
            f"{mem['total'] // MIB} MiB, {need_text}. Send smaller inputs, retry when the GPU is less busy, "
            "or move this service to a GPU with room (`modelyard plan`)."
        )


def _check_on_host(results: list[Any]) -> None:
    """Results must not keep device tensors alive between requests (the creeping-memory seed)."""
    if torch is None:
        return
    for result in results:
        if type(result) not in _HOST_TYPES and _on_device(result):
            raise RuntimeError("adapter returned a device tensor; copy outputs to the host before returning")


# Results that cannot hold a tensor: the common ones are answered without looking further.
_HOST_ONLY = (np.ndarray, np.generic, str, bytes, int, float, type(None))
_HOST_TYPES = frozenset(_HOST_ONLY)  # a result of exactly one of these types needs no isinstance at all


def _on_device(value: Any, depth: int = 0) -> bool:
    """Whether `value`, or what it holds two levels down (sequences, mappings, attributes), is a device tensor."""
    if isinstance(value, _HOST_ONLY):
        return False
    if isinstance(value, torch.Tensor):
        return bool(value.device.type != "cpu")
    if depth > 1:
        return False
    if isinstance(value, (list, tuple)):
        return any(_on_device(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_on_device(v, depth + 1) for v in value.values())
    if hasattr(value, "__dict__"):
        return any(_on_device(v, depth + 1) for v in vars(value).values())
    return False

"""Client side of a service: the base of every service's Python client (retries from runtime.calls), readiness
waits, request ids, the local stack's addresses, shared memory. Channels come from runtime.channels."""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelyard.runtime.arrays import (
    SharedRegion,
    dtype_name,
    dtype_of,
    numpy_to_tensor,
    remove_orphaned_regions,
    tensor_to_numpy,
)
from modelyard.runtime.auth import read_token
from modelyard.runtime.calls import CallFailed, EndpointConfig, RetryPolicy, ServiceClient
from modelyard.runtime.channels import channel, token_from
from modelyard.runtime.metadata import REQUEST_ID
from modelyard.v1 import types_pb2

# Where `modelyard up` records what runs where, relative to the folder it ran in (modelyard.ops.local writes
# {"processes": {name: {"address": ...}}, ...}), and the token its services require.
LOCAL_STATE_DIR = Path(".modelyard")
LOCAL_STACK = LOCAL_STATE_DIR / "stack.json"
LOCAL_STACK_TOKEN = LOCAL_STATE_DIR / "service.token"


def local_stack_addresses(stack_file: Path = LOCAL_STACK) -> dict[str, str]:
    """Service name -> address of the local stack of `modelyard up` in this folder; empty when none is up."""
    try:
        processes = json.loads(stack_file.read_text()).get("processes") or {}
        return {name: str(entry["address"]) for name, entry in processes.items() if entry.get("address")}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def local_stack_token(address: str, stack_file: Path = LOCAL_STACK) -> str | None:
    """The local stack's service token when `address` is one of its services (never sent anywhere else)."""
    token_file = stack_file.parent / LOCAL_STACK_TOKEN.name
    if address not in local_stack_addresses(stack_file).values() or not token_file.exists():
        return None
    return read_token(token_file)


def wait_until_serving(chan: grpc.Channel, service: str = "", timeout: float = 120.0) -> None:
    """Block until grpc.health.v1 says SERVING, or raise TimeoutError with the last status seen."""
    stub = health_pb2_grpc.HealthStub(chan)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        except grpc.RpcError as exc:
            last = f"{exc.code().name}: {exc.details()}"
        time.sleep(0.1)
    raise TimeoutError(f"service '{service or 'server'}' not SERVING after {timeout:.0f}s (last: {last})")


def request_metadata(request_id: str | None = None) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID, request_id or uuid.uuid4().hex),)


class ModelClient:
    """Base of every service's Python client: its stub behind the runtime's retry policy (runtime.calls), with
    readiness and Info. Unary calls go through `call` (`self.call(lambda medsam: medsam.Segment, request)`);
    `stub` calls directly (server-streaming calls). By default a call is retried while it can succeed later
    (a restarting service, a full queue), at most three attempts within `timeout`; pass `retry` to change that
    (`RetryPolicy(max_attempts=1)`: no retries). Failures raise CallFailed, a grpc.RpcError."""

    service: ClassVar[str]  # the full gRPC service name, e.g. "modelyard.v1.MedSAM"
    stub_class: ClassVar[Callable[[grpc.Channel], Any]]
    default_timeout: ClassVar[float] = 300.0

    def __init__(
        self,
        address: str,
        timeout: float | None = None,
        max_message_mb: int = 64,
        token: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.timeout = timeout or self.default_timeout
        policy = retry or RetryPolicy(
            max_attempts=3, wait_for_ready=False, attempt_timeout_s=self.timeout, max_total_s=self.timeout
        )
        endpoint = EndpointConfig(
            addresses=[address], max_message_mb=max_message_mb, max_in_flight=None, **policy.model_dump()
        )
        # A service of the local stack (modelyard up) needs its token: found here unless one is given.
        self.calls = ServiceClient(
            self.service.rsplit(".", 1)[-1], type(self).stub_class, endpoint, token=token or local_stack_token(address)
        )
        self.channel = self.calls.channel
        self.stub = self.calls.stub

    def call(self, select: Callable[[Any], Any], request: Any, timeout: float | None = None) -> Any:
        """The RPC `select` picks from the stub, with retries; raises CallFailed (a grpc.RpcError)."""
        return self.calls.call(select, request, timeout=timeout)

    def wait_until_serving(self, timeout: float = 120.0) -> None:
        wait_until_serving(self.channel, self.service, timeout)

    def info(self) -> types_pb2.ModelInfo:
        return self.call(lambda stub: stub.Info, types_pb2.InfoRequest(), timeout=min(self.timeout, 60.0))

    def close(self) -> None:
        self.calls.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SharedMemoryClient:
    """Shared-memory fast path for one peer: probes once, then serves arrays from a pool of regions it created.

    As with Triton's registered regions, a region is created (and its pages touched) once and reused call after
    call; the peer keeps its mapping of it too. The regions of one call are those `array`, `tensor` and
    `output_region` handed out on a thread since its last `read`: once a result has been read, that thread's next
    `array`, `tensor` or `output_region` starts a new call and its earlier regions go back to the pool (`release`
    does so at once). To skip the copies, fill inputs where they will travel (`array`) and read results in place
    (`read(..., copy=False)`).
    Each region is only ever in one call, so concurrent threads and several arrays per request never share one.
    An input that many calls send unchanged is kept instead (`array(..., keep=True)`, Triton's registered input
    region, written once): its region stays out of the pool, and every call names it without a copy, until
    `discard`.
    The pool grows as needed (sizes rounded up to a power of two, at least 1 MiB) to at most `max_bytes`;
    beyond that, free regions are unlinked to make room, and when the regions in use alone would pass it the
    array travels inline instead. This client owns its regions: `close` (or the end of the process) unlinks
    them, and regions left by a killed process are removed by the next client of this host's namespace.

    Falls back to inline bytes when the peer cannot open this host's regions (another host, no shared volume).
    """

    MIN_REGION_BYTES = 1 << 20

    def __init__(
        self,
        info: Callable[[types_pb2.InfoRequest], types_pb2.ModelInfo],
        shm_dir: Path,
        max_bytes: int = 4 << 30,
    ) -> None:
        self._shm_dir = shm_dir
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._regions: dict[str, SharedRegion] = {}  # every region of the pool, by name
        self._addresses: dict[str, int] = {}  # where each is mapped here (to tell an `array` handed out)
        self._free: list[SharedRegion] = []
        self._calls: dict[int, _CallRegions] = {}  # thread id -> the regions of its current call
        self._kept: dict[str, SharedRegion] = {}  # regions of kept arrays, out of the pool until discarded
        # Unlinks what is left if close() is never called (the client is collected, or the process ends).
        self._finalizer = weakref.finalize(self, _close_regions, self._regions)
        if shm_dir.is_dir():
            remove_orphaned_regions(shm_dir)
        self.enabled = self._probe(info)

    def _probe(self, info: Callable[[types_pb2.InfoRequest], types_pb2.ModelInfo]) -> bool:
        if not self._shm_dir.is_dir():
            return False
        token = secrets.token_bytes(16)
        with SharedRegion.create(len(token), self._shm_dir) as probe:
            probe.write(0, np.frombuffer(token, dtype=np.uint8))
            try:
                return info(
                    types_pb2.InfoRequest(shared_memory_probe=probe.name, shared_memory_token=token)
                ).shared_memory_ok
            except grpc.RpcError:
                return False

    @property
    def regions(self) -> list[str]:
        """The names of the pool's regions (in use or free)."""
        with self._lock:
            return list(self._regions)

    def _lease(self, size: int, keep: bool = False) -> SharedRegion | None:
        """A region of at least `size` bytes for this thread's current call (or kept, with `keep`); None when the
        pool is full."""
        thread = threading.get_ident()
        with self._lock:
            call = self._calls.get(thread)
            if call is None:
                call = self._calls[thread] = _CallRegions()
            if call.read:  # the previous call's result was read: its regions are free again
                self._free.extend(call.regions)
                call.regions, call.read = [], False
            region = None  # the smallest free region that fits (a loop: a few regions, once per array per call)
            for free in self._free:
                if free.size >= size and (region is None or free.size < region.size):
                    region = free
            if region is not None:
                self._free.remove(region)
            else:
                wanted = max(self.MIN_REGION_BYTES, 1 << max(0, size - 1).bit_length())
                while self._free and sum(r.size for r in self._regions.values()) + wanted > self.max_bytes:
                    victim = self._free.pop(self._free.index(min(self._free, key=lambda r: r.size)))
                    del self._regions[victim.name], self._addresses[victim.name]
                    victim.close()
                if sum(r.size for r in self._regions.values()) + wanted > self.max_bytes:
                    return None
                region = SharedRegion.create(wanted, self._shm_dir)
                self._regions[region.name], self._addresses[region.name] = region, region.address
            if keep:
                self._kept[region.name] = region
            else:
                call.regions.append(region)
            return region

    def array(self, shape: int | tuple[int, ...], dtype: npt.DTypeLike = np.uint8, keep: bool = False) -> np.ndarray:
        """A writable array in a region of this thread's current call, to fill in place: `tensor` of it (or of a
        contiguous part of it) then names the region without copying, as Triton's clients build their inputs in
        registered regions. It holds its contents until this thread's next call begins (after the result was
        read). With `keep`, the array's region is its own instead, for an input that many calls send: it keeps
        its contents, and any thread's `tensor` of it names it, until `discard` (or `close`). An ordinary array
        when shared memory is off or the pool is full (`tensor` then copies it)."""
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        kind = np.dtype(dtype)
        region = self._lease(math.prod(dims) * kind.itemsize, keep) if self.enabled else None
        if region is None:
            return np.empty(dims, kind)
        return region.view(0, kind, dims)

    def discard(self, kept: np.ndarray) -> None:
        """Return the region of an array from `array(..., keep=True)` to the pool (its contents may then change at
        any call). Nothing happens for an array in no kept region."""
        start = kept.__array_interface__["data"][0]
        with self._lock:
            for name, region in self._kept.items():
                if self._addresses[name] <= start < self._addresses[name] + region.size:
                    del self._kept[name]
                    self._free.append(region)
                    return

    def tensor(self, array: np.ndarray) -> types_pb2.Tensor:
        """The array as a Tensor: in a region of the pool when enabled (named where it lies when it is in one
        from `array`, copied into one otherwise), inline when not."""
        if not self.enabled:
            return numpy_to_tensor(array)
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray alone would turn a 0-d array into shape (1,))
            array = np.ascontiguousarray(array)
        region, offset = self._placed(array)
        if region is None:
            region, offset = self._lease(array.nbytes), 0
            if region is None:
                return numpy_to_tensor(array)
            region.write(0, array)
        tensor = types_pb2.Tensor()  # (filled in place: nested constructors copy each level)
        shared = tensor.shared
        shared.region, shared.offset, shared.dtype = region.name, offset, dtype_name(array.dtype)
        shared.shape[:] = array.shape
        return tensor

    def _placed(self, array: np.ndarray) -> tuple[SharedRegion | None, int]:
        """The region of this thread's current call or the kept region the array lies in, and its offset there
        (None, 0 if none)."""
        with self._lock:
            call = self._calls.get(threading.get_ident())
            # (a finished call's regions may already be another call's; a call that holds none holds no array)
            held = call.regions if call is not None and not call.read else []
            if not held and not self._kept:
                return None, 0
            start = array.__array_interface__["data"][0]
            for region in (*held, *self._kept.values()):
                base = self._addresses[region.name]
                if base <= start and start + array.nbytes <= base + region.size:
                    return region, start - base
        return None, 0

    def output_region(self, capacity: int) -> types_pb2.OutputRegion:
        """A region of at least `capacity` bytes for the results (none when disabled or full: results come inline)."""
        region = self._lease(capacity) if self.enabled else None
        if region is None:
            return types_pb2.OutputRegion()
        return types_pb2.OutputRegion(region=region.name, offset=0, capacity=region.size)

    def read(self, msg: types_pb2.Tensor, copy: bool = True) -> np.ndarray:
        """A result Tensor as an array, copied out of its region. Marks this thread's call as done: its next
        `tensor` or `output_region` reuses the call's regions. With copy=False the array is a read-only view of
        the region, as Triton's shared-memory client returns results: no copy, but it holds the result only until
        this thread's next `tensor` or `output_region` (copy what must outlive that)."""
        call = self._calls.get(threading.get_ident())  # (only this thread adds or removes its own entry)
        if call is not None:
            call.read = True
        if not msg.HasField("shared"):
            return tensor_to_numpy(msg, self._shm_dir)
        shared = msg.shared  # (each read of a message field builds a wrapper: read once)
        name = shared.region
        region = self._regions.get(name)
        if region is None:
            raise ValueError(f"the result names region '{name}', which this client did not offer")
        view = region.view(shared.offset, dtype_of(shared.dtype), shared.shape[:])
        if copy:
            return view.copy()
        view.flags.writeable = False
        return view

    def release(self) -> None:
        """Return this thread's regions to the pool now (its call is over, whether or not a result was read)."""
        with self._lock:
            call = self._calls.pop(threading.get_ident(), None)
            if call is not None:
                self._free.extend(call.regions)

    def close(self) -> None:
        """Unlink every region of the pool."""
        with self._lock:
            self._free.clear()
            self._calls.clear()
            self._kept.clear()
            self._addresses.clear()
            _close_regions(self._regions)

    def __enter__(self) -> SharedMemoryClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _CallRegions:
    """The regions one thread's current call holds, and whether its result has been read."""

    def __init__(self) -> None:
        self.regions: list[SharedRegion] = []
        self.read = False


def _close_regions(regions: dict[str, SharedRegion]) -> None:
    for region in regions.values():
        region.close()
    regions.clear()


# The client API in one import: channels and call failures come from their own modules.
__all__ = [
    "LOCAL_STACK",
    "LOCAL_STACK_TOKEN",
    "LOCAL_STATE_DIR",
    "CallFailed",
    "ModelClient",
    "RetryPolicy",
    "SharedMemoryClient",
    "channel",
    "local_stack_addresses",
    "local_stack_token",
    "request_metadata",
    "token_from",
    "wait_until_serving",
]

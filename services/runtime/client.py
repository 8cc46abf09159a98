"""Client side of a service: channels with the right limits, readiness waits, request ids, shared memory."""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelyard.runtime.arrays import SharedRegion, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.auth import TokenCallInterceptor, read_token
from modelyard.runtime.devices import MIB
from modelyard.v1 import types_pb2

REQUEST_ID = "x-request-id"
TOKEN_FILE_ENV = "MODELYARD_SERVICE_TOKEN_FILE"
# A peer that went away (restarting, a new container) is reconnected to within about a second of its return.
# gRPC's defaults back off up to 120 s between connection attempts, so a service back after 30 s used to be
# reached only tens of seconds later. A short cap costs one refused connect per second while a peer is down.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.dns_min_time_between_resolutions_ms", 1000),  # a restarted container may come back at a new address
]


def channel(address: str, max_message_mb: int = 64, token: str | None = None) -> grpc.Channel:
    """A channel with room for `max_message_mb` messages that reconnects promptly; with `token`, every call on
    it carries `authorization: Bearer <token>`."""
    chan = grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_send_message_length", 2 * max_message_mb * MIB),
            ("grpc.max_receive_message_length", 2 * max_message_mb * MIB),
            *RECONNECT_OPTIONS,
        ],
    )
    return grpc.intercept_channel(chan, TokenCallInterceptor(token)) if token else chan


def token_from(path: str | None) -> str | None:
    """The token in `path`, else in the file named by $MODELYARD_SERVICE_TOKEN_FILE, else None (CLIs)."""
    path = path or os.environ.get(TOKEN_FILE_ENV) or None
    return read_token(Path(path)) if path else None


# Where `modelyard up` records what runs where, relative to the folder it ran in (modelyard.gateway.local writes
# {"processes": {name: {"address": ...}}, ...}), and the token its services require.
LOCAL_STACK = Path(".modelyard") / "stack.json"
LOCAL_STACK_TOKEN = Path(".modelyard") / "service.token"


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
    """Base of every service's Python client: a channel with the right limits, the stub, readiness, Info."""

    service: ClassVar[str]  # the full gRPC service name, e.g. "modelyard.v1.MedSAM"
    stub_class: ClassVar[Callable[[grpc.Channel], Any]]
    default_timeout: ClassVar[float] = 300.0

    def __init__(
        self, address: str, timeout: float | None = None, max_message_mb: int = 64, token: str | None = None
    ) -> None:
        # A service of the local stack (modelyard up) needs its token: found here unless one is given.
        self.channel = channel(address, max_message_mb, token or local_stack_token(address))
        self.stub = type(self).stub_class(self.channel)
        self.timeout = timeout or self.default_timeout

    def wait_until_serving(self, timeout: float = 120.0) -> None:
        wait_until_serving(self.channel, self.service, timeout)

    def info(self) -> types_pb2.ModelInfo:
        return self.stub.Info(types_pb2.InfoRequest(), timeout=min(self.timeout, 60.0))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SharedMemoryClient:
    """Shared-memory fast path for one peer: probes once, then reuses an input and an output region.

    Falls back to inline bytes when the peer cannot open this host's regions (another host, no shared volume).
    """

    def __init__(self, info: Callable[[types_pb2.InfoRequest], types_pb2.ModelInfo], shm_dir: Path) -> None:
        self._shm_dir = shm_dir
        self._input: SharedRegion | None = None
        self._output: SharedRegion | None = None
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

    def _region(self, current: SharedRegion | None, size: int) -> SharedRegion:
        if current is not None and current.size >= size:
            return current
        if current is not None:
            current.close()
        return SharedRegion.create(max(size, 1 << 20), self._shm_dir)

    def tensor(self, array: np.ndarray) -> types_pb2.Tensor:
        """The array as a Tensor: in the shared input region when enabled, inline otherwise."""
        if not self.enabled:
            return numpy_to_tensor(array)
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray alone would turn a 0-d array into shape (1,))
            array = np.ascontiguousarray(array)
        self._input = self._region(self._input, array.nbytes)
        self._input.write(0, array)
        return types_pb2.Tensor(
            shared=types_pb2.SharedArray(region=self._input.name, offset=0, dtype=array.dtype.name, shape=array.shape)
        )

    def output_region(self, capacity: int) -> types_pb2.OutputRegion:
        if not self.enabled:
            return types_pb2.OutputRegion()
        self._output = self._region(self._output, capacity)
        return types_pb2.OutputRegion(region=self._output.name, offset=0, capacity=self._output.size)

    def read(self, msg: types_pb2.Tensor) -> np.ndarray:
        """A result Tensor as an array (copied out of the output region, so the region can be reused)."""
        if msg.WhichOneof("payload") == "shared":
            assert self._output is not None and msg.shared.region == self._output.name
            return self._output.view(msg.shared.offset, np.dtype(msg.shared.dtype), tuple(msg.shared.shape)).copy()
        return tensor_to_numpy(msg, self._shm_dir)

    def close(self) -> None:
        for region in (self._input, self._output):
            if region is not None:
                region.close()
        self._input = self._output = None

    def __enter__(self) -> SharedMemoryClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

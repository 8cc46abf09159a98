"""Calls to model services, as the gateway and every service's Python client make them: deadlines, retries,
replica failover, one request id, typed RPCs.

Retries (tenacity) only for codes that can succeed later: UNAVAILABLE (restarting, draining), DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED (queue full, out of memory), ABORTED, and a CANCELLED the caller did not ask for: a replica that
shuts down (a rolling update) cancels calls its server had received but not yet started (grpc/grpc#41785); the
caller's own cancels (runtime.cancel) end a call with FutureCancelledError instead, and a closed client retries
nothing. Exponential backoff with jitter, bounded by total time (`max_total_s`; `max_attempts` only when set); each
attempt has its own deadline and goes to the next replica; every attempt carries the same x-request-id.
INVALID_ARGUMENT and other codes fail at once, with the service's message.

A service that is down (killed, restarting) is waited for within each attempt's deadline (`wait_for_ready`) rather
than failed fast, and the channels reconnect within a second of its return (RECONNECT_OPTIONS). With several
replicas an attempt goes to a connected one, and waits at most `connect_timeout_s` for one that is not.

An RPC is named by selecting it from the service's generated stub, `client.call(lambda medsam: medsam.Segment,
request)`, never by a string: a misspelt method fails type checking and at the first call, not in production.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Generic, TypeVar

import grpc
from pydantic import Field
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential
from tenacity.stop import stop_base

from modelyard.runtime import cancel
from modelyard.runtime.channels import channel, token_from
from modelyard.runtime.config import ExistingFile, Strict
from modelyard.runtime.metadata import REQUEST_ID

log = logging.getLogger("modelyard.gateway")

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,  # only as a status from the other side (see above and ServiceClient._retryable)
    }
)
StubT = TypeVar("StubT")


class RetryPolicy(Strict):
    """How long a call may take and what is retried (see the module's docstring)."""

    attempt_timeout_s: float = Field(
        300.0, gt=0, description="deadline of each attempt, waiting for a service that is down included"
    )
    max_attempts: int | None = Field(None, ge=1, description="optional cap on attempts; max_total_s bounds retries")
    max_total_s: float = Field(900.0, gt=0, description="give up retrying after this long (a restart reloads weights)")
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(5.0, gt=0, description="longest pause between attempts (jittered)")
    wait_for_ready: bool = Field(
        True, description="an attempt waits for a service that is down (within its deadline) instead of failing"
    )


class EndpointConfig(RetryPolicy):
    """How the gateway reaches one service. `addresses`: host:port replicas, or one `dns:///name:port`."""

    addresses: list[str] = Field(min_length=1)
    connect_timeout_s: float = Field(
        5.0, gt=0, description="with several addresses: how long an attempt waits for its replica to connect"
    )
    token_file: ExistingFile | None = Field(
        None, description="send `authorization: Bearer <token>` to the service (default: $MODELYARD_SERVICE_TOKEN_FILE)"
    )
    max_in_flight: int | None = Field(
        4, ge=1, description="concurrent calls to this service from this client (none: no limit)"
    )
    max_message_mb: int = Field(64, ge=1)


class NotConnected(grpc.RpcError):
    """An attempt that found its replica unconnected (several replicas): retried on the next one."""

    def __init__(self, address: str, waited_s: float) -> None:
        super().__init__(f"{address}: not connected after {waited_s:.1f}s")
        self._details = f"{address}: not connected after {waited_s:.1f}s"

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


class CallFailed(grpc.RpcError):
    """A call that will not succeed by retrying, with the service's own status and message (`code()` and
    `details()`, as any grpc.RpcError)."""

    def __init__(self, service: str, code: grpc.StatusCode, message: str, attempts: int) -> None:
        super().__init__(f"{service}: {code.name}: {message}")
        self.service = service
        self.status = code
        self.message = message
        self.attempts = attempts

    def code(self) -> grpc.StatusCode:
        return self.status

    def details(self) -> str:
        return self.message

    def __str__(self) -> str:
        return f"{self.service}: {self.status.name}: {self.message}"


class ServiceClient(Generic[StubT]):
    """A service's replicas behind one `call(select, request)` with retries and failover; `select` picks the RPC
    from the service's stub (`lambda medsam: medsam.Segment`)."""

    def __init__(
        self,
        name: str,
        stub_class: Callable[[grpc.Channel], StubT],
        config: EndpointConfig,
        on_retry: Callable[[str, grpc.StatusCode], None] | None = None,
        on_call: Callable[[str, str, float, bool], None] | None = None,
        token: str | None = None,
    ) -> None:
        self.name = name
        self.config = config
        # The token given, else the service's own token file, else $MODELYARD_SERVICE_TOKEN_FILE (one secret
        # mounted for every service); every call on these channels carries it.
        token = token or token_from(str(config.token_file) if config.token_file else None)
        self._channels = [channel(address, config.max_message_mb, token) for address in config.addresses]
        self._stubs = [stub_class(chan) for chan in self._channels]
        # Each stub's RPCs by name (a generated stub holds one multi-callable per method), for logs and metrics.
        self._rpc_names = {id(method): rpc for stub in self._stubs for rpc, method in vars(stub).items()}
        # Connectivity of each replica's channel, kept current by gRPC (used only with several replicas).
        self._states = [grpc.ChannelConnectivity.IDLE] * len(self._channels)
        self._watchers: list[Callable[[grpc.ChannelConnectivity], None]] = []
        if len(self._channels) > 1:
            for index, chan in enumerate(self._channels):
                watcher = self._watch(index)
                chan.subscribe(watcher, try_to_connect=True)
                self._watchers.append(watcher)
        self._next = itertools.count()
        self._on_retry = on_retry
        self._on_call = on_call
        self.in_flight: AbstractContextManager[Any] = (
            nullcontext() if config.max_in_flight is None else threading.BoundedSemaphore(config.max_in_flight)
        )
        self._closed = False

    @property
    def stub(self) -> StubT:
        """The first replica's stub, for calls made directly (server-streaming ones), without retries."""
        return self._stubs[0]

    @property
    def channel(self) -> grpc.Channel:
        return self._channels[0]

    def rpc_name(self, select: Callable[[StubT], Any]) -> str:
        """The method `select` picks, e.g. "Segment"."""
        name = self._rpc_names.get(id(select(self._stubs[0])))
        if name is None:
            raise TypeError(f"{select!r} does not pick an RPC of the {self.name} stub")
        return name

    def call(
        self,
        select: Callable[[StubT], Any],
        request: Any,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Call the RPC `select` picks until it succeeds or cannot (at most `timeout` seconds in all when given,
        else the policy's max_total_s); raises CallFailed."""
        rpc = self.rpc_name(select)
        request_id = request_id or uuid.uuid4().hex
        metadata = ((REQUEST_ID, request_id),)
        start = next(self._next)
        cfg = self.config
        total = cfg.max_total_s if timeout is None else min(timeout, cfg.max_total_s)
        attempts = 0
        stop: stop_base = stop_after_delay(total)
        if cfg.max_attempts is not None:
            stop = stop | stop_after_attempt(cfg.max_attempts)
        retrying = Retrying(
            retry=retry_if_exception(self._retryable),
            stop=stop,
            wait=wait_random_exponential(multiplier=cfg.backoff_initial_s, max=cfg.backoff_max_s),
            before_sleep=lambda state: self._retrying(
                rpc, request_id, state.outcome.exception() if state.outcome else None
            ),
            reraise=True,
            sleep=cancel.sleep,  # a cancelled job does not sit out its back-off
        )
        started = time.monotonic()
        try:
            with self.in_flight:
                for attempt in retrying:
                    with attempt:
                        attempts += 1
                        # No attempt outlives the call's total time: it is what bounds the call, waits included.
                        left = max(total - (time.monotonic() - started), 0.1)
                        stub = self._stubs[self._replica(start + attempts - 1)]  # failover: the next replica
                        call = select(stub).future(
                            request,
                            timeout=min(cfg.attempt_timeout_s, left),
                            metadata=metadata,
                            wait_for_ready=cfg.wait_for_ready,
                        )
                        with cancel.tracking(call):  # `jobs cancel` and shutdown cancel it in flight
                            response = call.result()
            if self._on_call:
                self._on_call(self.name, rpc, time.monotonic() - started, True)
            return response
        except grpc.RpcError as exc:
            if self._on_call:
                self._on_call(self.name, rpc, time.monotonic() - started, False)
            raise CallFailed(self.name, exc.code(), exc.details() or "", attempts) from None

    def _retryable(self, exc: BaseException) -> bool:
        # A CANCELLED RpcError is never the gateway's own cancel (that raises grpc.FutureCancelledError), except
        # for calls on channels this client closed.
        return isinstance(exc, grpc.RpcError) and exc.code() in RETRYABLE and not self._closed

    def _watch(self, index: int) -> Callable[[grpc.ChannelConnectivity], None]:
        def update(state: grpc.ChannelConnectivity) -> None:
            self._states[index] = state

        return update

    def _replica(self, turn: int) -> int:
        """The replica for this attempt: the one in turn, or the next one whose connection is not failing (gRPC
        keeps reconnecting failing ones in the background); one that is not connected yet gets connect_timeout_s
        to connect (else NotConnected, retried on the next)."""
        count = len(self._channels)
        if count == 1:
            return 0  # the call itself waits for the connection (wait_for_ready), within its deadline
        order = [(turn + offset) % count for offset in range(count)]
        usable = [i for i in order if self._states[i] != grpc.ChannelConnectivity.TRANSIENT_FAILURE]
        index = (usable or order)[0]
        if self._states[index] != grpc.ChannelConnectivity.READY:
            try:  # also asks an idle channel to connect
                grpc.channel_ready_future(self._channels[index]).result(timeout=self.config.connect_timeout_s)
            except grpc.FutureTimeoutError:
                raise NotConnected(self.config.addresses[index], self.config.connect_timeout_s) from None
        return index

    def _retrying(self, rpc: str, request_id: str, exc: BaseException | None) -> None:
        if isinstance(exc, grpc.RpcError):
            log.warning(
                "retrying",
                extra={"fields": {"service": self.name, "rpc": rpc, "request_id": request_id, "code": exc.code().name}},
            )
            if self._on_retry:
                self._on_retry(self.name, exc.code())

    def close(self) -> None:
        self._closed = True
        for chan, watcher in zip(self._channels, self._watchers, strict=False):  # none for one replica
            chan.unsubscribe(watcher)
        for chan in self._channels:
            chan.close()

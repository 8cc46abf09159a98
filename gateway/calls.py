"""Calls from the gateway to model services: deadlines, retries, replica failover, one request id.

Retries (tenacity) only for codes that can succeed later: UNAVAILABLE (restarting, draining), DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED (queue full, out of memory), ABORTED. Exponential backoff with jitter, bounded by attempts
and total time; each attempt has its own deadline and goes to the next replica; every attempt carries the same
x-request-id. INVALID_ARGUMENT and other codes fail at once: the item fails with the service's message.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from pydantic import Field
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_random_exponential

from modelyard.gateway import cancel
from modelyard.runtime.client import REQUEST_ID
from modelyard.runtime.config import Strict
from modelyard.runtime.devices import MIB

log = logging.getLogger("modelyard.gateway")

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


class EndpointConfig(Strict):
    """How the gateway reaches one service. `addresses`: host:port replicas, or one `dns:///name:port`."""

    addresses: list[str] = Field(min_length=1)
    attempt_timeout_s: float = Field(300.0, gt=0, description="deadline of each attempt")
    max_attempts: int = Field(10, ge=1, description="a model restart (reloading weights) may take a minute")
    max_total_s: float = Field(900.0, gt=0, description="give up retrying after this long")
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(20.0, gt=0)
    max_in_flight: int = Field(4, ge=1, description="concurrent calls to this service from the gateway")
    max_message_mb: int = Field(64, ge=1)


class CallFailed(Exception):
    """A call that will not succeed by retrying: the item fails with the service's own message."""

    def __init__(self, service: str, code: grpc.StatusCode, message: str, attempts: int) -> None:
        super().__init__(f"{service}: {code.name}: {message}")
        self.service = service
        self.code = code
        self.message = message
        self.attempts = attempts


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() in RETRYABLE


class ServiceClient:
    """A service's replicas behind one `call(rpc, request)` with retries and failover."""

    def __init__(
        self,
        name: str,
        stub_class: Callable[[grpc.Channel], Any],
        config: EndpointConfig,
        on_retry: Callable[[str, grpc.StatusCode], None] | None = None,
        on_call: Callable[[str, str, float, bool], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        options = [
            ("grpc.max_send_message_length", config.max_message_mb * MIB),
            ("grpc.max_receive_message_length", config.max_message_mb * MIB),
            ("grpc.lb_policy_name", "round_robin"),  # spreads over every address a DNS name resolves to
        ]
        self._channels = [grpc.insecure_channel(address, options=options) for address in config.addresses]
        self._stubs = [stub_class(channel) for channel in self._channels]
        self._next = itertools.count()
        self._on_retry = on_retry
        self._on_call = on_call
        self.in_flight = threading.BoundedSemaphore(config.max_in_flight)

    def call(self, rpc: str, request: Any, request_id: str | None = None) -> Any:
        """Call `rpc` until it succeeds or cannot; raises CallFailed."""
        request_id = request_id or uuid.uuid4().hex
        metadata = ((REQUEST_ID, request_id),)
        start = next(self._next)
        cfg = self.config
        attempts = 0
        retrying = Retrying(
            retry=retry_if_exception(is_retryable),
            stop=stop_after_attempt(cfg.max_attempts) | stop_after_delay(cfg.max_total_s),
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
                        stub = self._stubs[(start + attempts) % len(self._stubs)]  # failover: next replica
                        attempts += 1
                        call = getattr(stub, rpc).future(request, timeout=cfg.attempt_timeout_s, metadata=metadata)
                        with cancel.tracking(call):  # `jobs cancel` and shutdown cancel it in flight
                            response = call.result()
            if self._on_call:
                self._on_call(self.name, rpc, time.monotonic() - started, True)
            return response
        except grpc.RpcError as exc:
            if self._on_call:
                self._on_call(self.name, rpc, time.monotonic() - started, False)
            raise CallFailed(self.name, exc.code(), exc.details() or "", attempts) from None

    def _retrying(self, rpc: str, request_id: str, exc: BaseException | None) -> None:
        if isinstance(exc, grpc.RpcError):
            log.warning(
                "retrying",
                extra={"fields": {"service": self.name, "rpc": rpc, "request_id": request_id, "code": exc.code().name}},
            )
            if self._on_retry:
                self._on_retry(self.name, exc.code())

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

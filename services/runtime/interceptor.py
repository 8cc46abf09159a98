"""What every modelyard RPC passes through on the server: request id, size limit, one log line, latency metric,
and errors mapped to gRPC status, in one place."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from modelyard.runtime.devices import MIB
from modelyard.runtime.errors import InvalidInput, ModelyardError, status_of
from modelyard.runtime.logs import RequestLog
from modelyard.runtime.metadata import REQUEST_ID
from modelyard.runtime.metrics import ServiceMetrics

log = logging.getLogger("modelyard.runtime")


class RequestInterceptor:
    """For every call of the services it wraps: request id, size limit, one log line, latency metric, errors
    mapped to status.

    It wraps a service's handlers where the service is added (`wrap`, which `GrpcServer.add` applies), not as a
    grpc.ServerInterceptor: gRPC runs its interceptor pipeline on every call, a few percent of a small call's
    server time. A method's wrapped handler is built once and reused: the call's own details (its request id)
    are read from its context, so nothing but the call itself is built per call."""

    def __init__(self, service: str, metrics: ServiceMetrics, max_message_bytes: int) -> None:
        self._service = service
        self._metrics = metrics
        self._limit = max_message_bytes

    def wrap(self, handlers: grpc.GenericRpcHandler) -> grpc.GenericRpcHandler:
        """`handlers` (a service's, as its generated add_*_to_server registers them) with each method's handler
        wrapped."""
        return _WrappedHandlers(handlers, self.wrap_method)

    def wrap_method(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """One method's handler (`method` is its short name, as in the log line), wrapped."""
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            def unary(sized: _Sized, context: grpc.ServicerContext) -> Any:
                call = _Call(self._service, self._metrics, method, context)
                try:
                    return behavior(self._checked(sized), context)
                except Exception as exc:
                    call.failed(exc)
                finally:
                    call.record()
                context.abort(call.code, call.message)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=self._sized(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            streaming = handler.unary_stream

            def stream(sized: _Sized, context: grpc.ServicerContext) -> Iterator[Any]:
                # The same for a server-streaming call: errors raised while streaming end it with their status.
                call = _Call(self._service, self._metrics, method, context)
                call.streaming = True  # timed apart: a stream lasts as long as its work, not one request
                try:
                    yield from streaming(self._checked(sized), context)
                except GeneratorExit:  # the client went away mid-stream
                    call.code, call.message = grpc.StatusCode.CANCELLED, "the client cancelled the stream"
                    raise
                except Exception as exc:
                    call.failed(exc)
                finally:
                    call.record()
                if call.code != grpc.StatusCode.OK:
                    context.abort(call.code, call.message)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=self._sized(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    def _sized(self, deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], _Sized]:
        """The method's deserializer, keeping the size on the wire (a message over the limit is not parsed)."""

        def parse(data: bytes) -> _Sized:
            if len(data) > self._limit or deserialize is None:
                return len(data), data if deserialize is None else None
            return len(data), deserialize(data)

        return parse

    def _checked(self, sized: _Sized) -> Any:
        size, request = sized
        if size > self._limit:
            raise InvalidInput(
                f"request is {size / MIB:.1f} MiB, over this service's {self._limit / MIB:.0f} MiB message limit: "
                "send large arrays through shared memory (Tensor.shared, same host) or as a data reference "
                "(DataRef, a file on the data volume), split the request, or raise runtime.max_message_mb"
            )
        return request


class _WrappedHandlers(grpc.GenericRpcHandler):
    def __init__(
        self, inner: grpc.GenericRpcHandler, wrap: Callable[[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler]
    ) -> None:
        self._inner = inner
        self._wrap = wrap
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        wrapped = self._handlers.get(details.method)  # type: ignore[attr-defined]
        if wrapped is not None:
            return wrapped
        method: str = details.method  # type: ignore[attr-defined]
        handler = self._inner.service(details)
        if handler is None:
            return None
        wrapped = self._handlers[method] = self._wrap(handler, method.rsplit("/", 1)[-1])
        return wrapped


# A request as parsed, and its size on the wire (a plain tuple: a NamedTuple is built by a Python call).
_Sized = tuple[int, Any]


REQUEST_LOG = RequestLog(log)
_CODE_NAMES = {code: code.name for code in grpc.StatusCode}  # (an enum's .name is two Python calls)


# Ids for calls that bring none: this process's random prefix and a counter (unique without a getrandom call
# per request; an id only has to tell calls apart, not be unguessable).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


def request_id_of(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id, or a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID and value:
            return str(value)
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


class _Call:
    """One call's request id, status and timing, recorded once as a log line and a latency sample."""

    __slots__ = ("code", "message", "method", "metrics", "request_id", "service", "started", "streaming")

    def __init__(self, service: str, metrics: ServiceMetrics, method: str, context: grpc.ServicerContext) -> None:
        self.service, self.metrics, self.method = service, metrics, method
        self.request_id = request_id_of(context)
        context.set_trailing_metadata(((REQUEST_ID, self.request_id),))
        self.started = time.perf_counter()
        self.code, self.message = grpc.StatusCode.OK, ""
        self.streaming = False

    def failed(self, exc: Exception) -> None:
        self.code, self.message = status_of(exc)
        if not isinstance(exc, ModelyardError):
            log.exception("unexpected error in %s", self.method)

    def record(self) -> None:
        duration = time.perf_counter() - self.started
        status = _CODE_NAMES[self.code]
        self.metrics.observe_call(self.method, status, duration, self.streaming)
        fields = {
            "service": self.service,
            "method": self.method,
            "request_id": self.request_id,
            "duration_ms": round(duration * 1000, 3),
            "status": status,
        }
        if self.message:
            fields["error"] = self.message
        REQUEST_LOG.write(fields)

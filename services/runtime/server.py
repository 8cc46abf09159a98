"""Server bootstrap: config → gRPC server (health, reflection, interceptor) → load → SERVING → drain on SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelyard.runtime import logs
from modelyard.runtime.adapter import ServiceSpec
from modelyard.runtime.auth import TokenInterceptor, read_token
from modelyard.runtime.config import load_config
from modelyard.runtime.devices import MIB
from modelyard.runtime.errors import ConfigError, InvalidInput, ModelyardError, status_of
from modelyard.runtime.host import ModelHost
from modelyard.runtime.logs import RequestLog
from modelyard.runtime.metadata import REQUEST_ID
from modelyard.runtime.metrics import ServiceMetrics
from modelyard.runtime.reflection import enable_reflection

log = logging.getLogger("modelyard.runtime")
# The process can no longer serve (a corrupted CUDA context): it exits once in-flight calls end, so a restart
# policy that acts on exits (compose's `restart:`, the local stack's supervisor) brings it back.
EXIT_BROKEN = 3
# Callers (the gateway) send keepalive pings to notice a dead peer quickly; accept them every 10 s, with or
# without calls in flight (gRPC's default answers pings more frequent than every 5 min with GOAWAY).
KEEPALIVE_POLICY = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
]


class RequestInterceptor(grpc.ServerInterceptor):
    """For every modelyard RPC: request id, size limit, one log line, latency metric, errors → status.

    A method's wrapped handler is built once and reused: the call's own details (its request id) are read from
    its context, so nothing but the call itself is built per call."""

    def __init__(self, service: str, metrics: ServiceMetrics, max_message_bytes: int) -> None:
        self._service = service
        self._metrics = metrics
        self._limit = max_message_bytes
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: Any
    ) -> grpc.RpcMethodHandler | None:
        wrapped = self._handlers.get(details.method)
        if wrapped is not None:
            return wrapped
        handler = continuation(details)
        if handler is None or not details.method.startswith("/modelyard."):
            return handler
        wrapped = self._wrap(handler, details.method.rsplit("/", 1)[-1])
        self._handlers[details.method] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
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
                return _Sized(len(data), data if deserialize is None else None)
            return _Sized(len(data), deserialize(data))

        return parse

    def _checked(self, sized: _Sized) -> Any:
        size = sized.size
        if size > self._limit:
            raise InvalidInput(
                f"request is {size / MIB:.1f} MiB, over this service's {self._limit / MIB:.0f} MiB message limit: "
                "send large arrays through shared memory (Tensor.shared, same host) or as a data reference "
                "(DataRef, a file on the data volume), split the request, or raise runtime.max_message_mb"
            )
        return sized.request


class _Sized(NamedTuple):
    """A request as parsed, and its size on the wire."""

    size: int
    request: Any


REQUEST_LOG = RequestLog(log)


def request_id_of(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id, or a new random one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID and value:
            return str(value)
    return os.urandom(16).hex()


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
        self.metrics.observe_call(self.method, self.code.name, duration, self.streaming)
        fields = {
            "service": self.service,
            "method": self.method,
            "request_id": self.request_id,
            "duration_ms": round(duration * 1000, 3),
            "status": self.code.name,
        }
        if self.message:
            fields["error"] = self.message
        REQUEST_LOG.write(fields)


def build_server(host: ModelHost, address: str) -> tuple[grpc.Server, int]:
    """A started-ready gRPC server with the service, health and reflection; returns it and the bound port."""
    runtime = host.runtime
    limit = runtime.max_message_mb * MIB
    options = [
        # Core accepts up to twice the limit so the interceptor can answer with a message that says what to do.
        ("grpc.max_receive_message_length", 2 * limit + MIB),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
        *KEEPALIVE_POLICY,
    ]
    interceptors: list[grpc.ServerInterceptor] = []
    if runtime.token_file is not None:
        interceptors.append(TokenInterceptor(read_token(runtime.token_file)))
    interceptors.append(RequestInterceptor(host.spec.name, host.metrics, limit))
    server = grpc.server(
        ThreadPoolExecutor(max_workers=runtime.grpc_threads, thread_name_prefix="grpc"),
        interceptors=interceptors,
        options=options,
    )
    host.spec.add_to_server(host.spec.make_servicer(host), server)
    health_pb2_grpc.add_HealthServicer_to_server(host.health, server)
    enable_reflection((host.spec.proto_service, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise ConfigError(f"cannot listen on {address}: the port is taken or the address is not local")
    return server, port


def serve(spec: ServiceSpec, config_path: str | None, port: int, metrics_port: int | None, bind: str) -> int:
    """Run a service until SIGTERM/SIGINT, or until it can no longer serve. Returns the process exit code
    (2 = configuration problem, 1 = loading failed, EXIT_BROKEN = broken while serving)."""
    logs.configure()
    try:
        config = load_config(config_path, spec.config_schema)
    except ModelyardError as exc:
        log.error(exc.message, extra={"fields": {"service": spec.name}})
        return 2
    metrics = ServiceMetrics(spec.name)
    host = ModelHost(spec, config, metrics)
    try:
        server, bound = build_server(host, f"{bind}:{port}")
    except ModelyardError as exc:
        log.error(exc.message, extra={"fields": {"service": spec.name}})
        return 2
    server.start()
    if metrics_port is not None:
        metrics.serve(metrics_port)
    log.info("listening", extra={"fields": {"service": spec.name, "port": bound, "metrics_port": metrics_port}})

    stop = threading.Event()
    exit_code = [0]

    def broken() -> None:
        exit_code[0] = EXIT_BROKEN
        stop.set()

    host.on_broken = broken

    def load() -> None:
        try:
            host.load()
        except ModelyardError as exc:
            log.error(exc.message, extra={"fields": {"service": spec.name, "phase": "load"}})
            exit_code[0] = 2
            stop.set()
        except Exception as exc:
            log.exception("loading failed: %s", exc, extra={"fields": {"service": spec.name, "phase": "load"}})
            exit_code[0] = 1
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=load, name="load", daemon=True).start()
    stop.wait()
    host.drain()
    log.info("draining", extra={"fields": {"service": spec.name, "grace_s": config.runtime.drain_seconds}})
    server.stop(config.runtime.drain_seconds).wait()
    host.close()
    REQUEST_LOG.flush()
    log.info("stopped", extra={"fields": {"service": spec.name}})
    return exit_code[0]

"""Server bootstrap: config → gRPC server (health, reflection, interceptor) → load → SERVING → drain on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from modelyard.runtime import logs
from modelyard.runtime.adapter import ServiceSpec
from modelyard.runtime.config import load_config
from modelyard.runtime.devices import MIB
from modelyard.runtime.errors import ConfigError, InvalidInput, ModelyardError, status_of
from modelyard.runtime.host import ModelHost
from modelyard.runtime.metrics import ServiceMetrics

log = logging.getLogger("modelyard.runtime")
REQUEST_ID = "x-request-id"


class RequestInterceptor(grpc.ServerInterceptor):
    """For every modelyard RPC: request id, size limit, one log line, latency metric, errors → status."""

    def __init__(self, service: str, metrics: ServiceMetrics, max_message_bytes: int) -> None:
        self._service = service
        self._metrics = metrics
        self._limit = max_message_bytes

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: Any
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or not details.method.startswith("/modelyard.") or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        metadata = dict(details.invocation_metadata or ())
        behavior = handler.unary_unary

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            request_id = str(metadata.get(REQUEST_ID) or uuid.uuid4().hex)
            context.set_trailing_metadata(((REQUEST_ID, request_id),))
            started = time.perf_counter()
            code, message = grpc.StatusCode.OK, ""
            try:
                self._check_size(request)
                return behavior(request, context)
            except Exception as exc:
                code, message = status_of(exc)
                if not isinstance(exc, ModelyardError):
                    log.exception("unexpected error in %s", method)
            finally:
                duration = time.perf_counter() - started
                self._metrics.latency.labels(self._service, method, code.name).observe(duration)
                fields = {
                    "service": self._service,
                    "method": method,
                    "request_id": request_id,
                    "duration_ms": round(duration * 1000, 3),
                    "status": code.name,
                }
                if message:
                    fields["error"] = message
                log.info("request", extra={"fields": fields})
            context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _check_size(self, request: Any) -> None:
        size = request.ByteSize()
        if size > self._limit:
            raise InvalidInput(
                f"request is {size / MIB:.1f} MiB, over this service's {self._limit / MIB:.0f} MiB message limit: "
                "send large arrays through shared memory (Tensor.shared, same host) or as a data reference "
                "(DataRef, a file on the data volume), split the request, or raise runtime.max_message_mb"
            )


def build_server(host: ModelHost, address: str) -> tuple[grpc.Server, int]:
    """A started-ready gRPC server with the service, health and reflection; returns it and the bound port."""
    runtime = host.runtime
    limit = runtime.max_message_mb * MIB
    options = [
        # Core accepts up to twice the limit so the interceptor can answer with a message that says what to do.
        ("grpc.max_receive_message_length", 2 * limit + MIB),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=runtime.grpc_threads, thread_name_prefix="grpc"),
        interceptors=[RequestInterceptor(host.spec.name, host.metrics, limit)],
        options=options,
    )
    host.spec.add_to_server(host.spec.make_servicer(host), server)
    health_pb2_grpc.add_HealthServicer_to_server(host.health, server)
    reflection.enable_server_reflection(
        (
            host.spec.proto_service,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise ConfigError(f"cannot listen on {address}: the port is taken or the address is not local")
    return server, port


def serve(spec: ServiceSpec, config_path: str | None, port: int, metrics_port: int | None, bind: str) -> int:
    """Run a service until SIGTERM/SIGINT. Returns the process exit code (2 = configuration problem)."""
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
    log.info("stopped", extra={"fields": {"service": spec.name}})
    return exit_code[0]

"""The server bootstrap every modelyard process shares (model services and the gateway): one gRPC server with
the token check, the request interceptor, health, reflection, message limits and keepalive policy, bound to its
address, stopped by SIGTERM/SIGINT and drained. `serve` runs a model service on it: config → load → SERVING →
drain on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelyard.runtime import logs
from modelyard.runtime.adapter import ServiceSpec
from modelyard.runtime.auth import TokenInterceptor, read_token
from modelyard.runtime.config import load_config
from modelyard.runtime.devices import MIB
from modelyard.runtime.errors import ConfigError, ModelyardError
from modelyard.runtime.host import ModelHost
from modelyard.runtime.interceptor import REQUEST_LOG, RequestInterceptor
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
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class GrpcServer:
    """One process's gRPC server, built the same way for every modelyard server.

    Calls pass the token check (when `token_file` is set) and the request interceptor; health and reflection
    cover the services added with `add`. Core accepts messages up to twice `max_message_mb`, so the
    interceptor can answer an oversized one with what to do instead of gRPC's bare RESOURCE_EXHAUSTED.
    Beyond `max_concurrent_rpcs` calls get RESOURCE_EXHAUSTED rather than an unbounded queue.
    """

    def __init__(
        self,
        name: str,
        metrics: ServiceMetrics,
        *,
        max_message_mb: int,
        grpc_threads: int,
        token_file: Path | None = None,
        max_concurrent_rpcs: int | None = None,
        health_servicer: health.HealthServicer | None = None,
    ) -> None:
        limit = max_message_mb * MIB
        interceptors: list[grpc.ServerInterceptor] = []
        if token_file is not None:
            interceptors.append(TokenInterceptor(read_token(token_file)))
        self.requests = RequestInterceptor(name, metrics, limit)
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=grpc_threads, thread_name_prefix="grpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", 2 * limit + MIB),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a second server on a taken port fails instead of sharing it
                *KEEPALIVE_POLICY,
            ],
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        self.health = health_servicer or health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.services: list[str] = []
        self.stopping = threading.Event()  # set by SIGTERM/SIGINT (after `stop_on_signals`) or by the process

    def add(self, proto_service: str, servicer: object, add_to_server: Callable[[Any, grpc.Server], None]) -> None:
        """Serve `servicer` as `proto_service`; `add_to_server` is its generated add_*Servicer_to_server. Its
        handlers are registered wrapped by the request interceptor."""
        add_to_server(servicer, _Registrar(self.server, self.requests))
        self.services.append(proto_service)

    def bind(self, address: str, tls: tuple[bytes, bytes] | None = None) -> int:
        """Listen on `address` (with `tls` = (private key, certificate chain) in PEM); returns the bound port."""
        try:
            if tls is None:
                port = self.server.add_insecure_port(address)
            else:
                port = self.server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
        except RuntimeError:  # grpcio raises "Failed to bind" where older releases returned 0
            port = 0
        if port == 0:
            raise ConfigError(f"cannot listen on {address}: the port is taken or the address is not local")
        return port

    def start(self) -> None:
        enable_reflection((*self.services, HEALTH_SERVICE), self.server)
        self.server.start()

    def set_serving(self, serving: bool) -> None:
        """Health for the whole server and for each of its services."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.services):
            self.health.set(name, status)

    def stop_on_signals(self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> None:
        for sig in signals:
            signal.signal(sig, lambda *_: self.stopping.set())

    def drain(self, grace_s: float) -> threading.Event:
        """NOT_SERVING, refuse new calls, give running ones `grace_s`; the event is set once all have ended."""
        self.set_serving(False)
        return self.server.stop(grace_s)


class _Registrar:
    """The server as a generated add_*Servicer_to_server sees it: what it registers is wrapped first."""

    def __init__(self, server: grpc.Server, requests: RequestInterceptor) -> None:
        self._server = server
        self._requests = requests

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([self._requests.wrap(handler) for handler in handlers])

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        # (grpcio-tools >= 1.62 registers each method by name as well, for a faster lookup)
        wrapped = {name: self._requests.wrap_method(handler, name) for name, handler in handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]


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
    runtime = config.runtime
    try:
        server = GrpcServer(
            spec.name,
            metrics,
            max_message_mb=runtime.max_message_mb,
            grpc_threads=runtime.grpc_threads,
            token_file=runtime.token_file,
            health_servicer=host.health,  # the host reports SERVING once the model is loaded
        )
        server.add(spec.proto_service, spec.make_servicer(host), spec.add_to_server)
        bound = server.bind(f"{bind}:{port}")
    except ModelyardError as exc:
        log.error(exc.message, extra={"fields": {"service": spec.name}})
        return 2
    server.start()
    if metrics_port is not None:
        metrics.serve(metrics_port)
    log.info("listening", extra={"fields": {"service": spec.name, "port": bound, "metrics_port": metrics_port}})

    stop = server.stopping
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

    server.stop_on_signals()
    threading.Thread(target=load, name="load", daemon=True).start()
    stop.wait()
    host.drain()
    log.info("draining", extra={"fields": {"service": spec.name, "grace_s": config.runtime.drain_seconds}})
    server.drain(config.runtime.drain_seconds).wait()
    host.close()
    REQUEST_LOG.flush()
    log.info("stopped", extra={"fields": {"service": spec.name}})
    return exit_code[0]

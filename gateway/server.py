"""modelyard.v1.Gateway over gRPC, and its bootstrap (`modelyard gateway serve`)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.registry import Collector

from modelyard.gateway.config import GatewayConfig, load_gateway_config
from modelyard.gateway.engine import Engine, Event, parse_config_text
from modelyard.gateway.jobs import ItemState, JobStore
from modelyard.gateway.metrics import GatewayMetrics
from modelyard.gateway.pipelines import PIPELINES, STUBS
from modelyard.runtime import logs
from modelyard.runtime.calls import ServiceClient
from modelyard.runtime.errors import ConfigError, ModelyardError
from modelyard.runtime.metrics import ServiceMetrics
from modelyard.runtime.server import GrpcServer
from modelyard.v1 import gateway_pb2, gateway_pb2_grpc

log = logging.getLogger("modelyard.gateway")
SERVICE_NAME = "modelyard.v1.Gateway"
EXIT_MARGIN_S = 4.0  # past drain_seconds: the engine gives up on stuck workers before this


class _Forward(Collector):
    """Serves the request metrics (latency per RPC) from the gateway's registry too."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self._registry.collect()


def job_message(event: Event) -> gateway_pb2.Job:
    job = event.job
    counts = job.counts
    return gateway_pb2.Job(
        id=job.id,
        pipeline=job.pipeline,
        state=job.state.value,
        total=job.total,
        done=counts.get(ItemState.DONE.value, 0),
        failed=counts.get(ItemState.FAILED.value, 0),
        pending=counts.get(ItemState.PENDING.value, 0),
        running=counts.get(ItemState.RUNNING.value, 0),
        resumed=event.resumed,
        output=str(job.request.get("output", "")),
        error=job.error,
        created=job.created,
        updated=job.updated,
        summary=job.summary,
    )


def event_message(event: Event) -> gateway_pb2.JobEvent:
    message = gateway_pb2.JobEvent(job=job_message(event))
    if event.item is not None:
        item = event.item
        message.item.CopyFrom(
            gateway_pb2.ItemEvent(
                key=item.key,
                position=item.position,
                state=item.state.value,
                error=item.error,
                attempts=item.attempts,
                outputs={k: str(v) for k, v in item.outputs.items() if isinstance(v, (str, int, float))},
            )
        )
    return message


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ListPipelines(self, request: Any, context: grpc.ServicerContext) -> gateway_pb2.ListPipelinesResponse:
        infos = []
        for name, pipeline in sorted(self.engine.pipelines.items()):
            options = [
                gateway_pb2.PipelineOption(
                    name=field_name,
                    type=getattr(field.annotation, "__name__", str(field.annotation)),
                    default="" if field.default is None else str(field.default),
                    help=field.description or "",
                )
                for field_name, field in pipeline.options_schema.model_fields.items()
            ]
            infos.append(
                gateway_pb2.PipelineInfo(
                    name=name, description=pipeline.description, services=list(pipeline.services), options=options
                )
            )
        return gateway_pb2.ListPipelinesResponse(pipelines=infos)

    def _submit(self, request: gateway_pb2.JobRequest) -> Event:
        options = {**parse_config_text(request.config_text), **dict(request.options)}
        return self.engine.submit(request.pipeline, request.input, request.output, options)

    def SubmitJob(self, request: gateway_pb2.JobRequest, context: grpc.ServicerContext) -> gateway_pb2.Job:
        return job_message(self._submit(request))

    def RunPipeline(self, request: gateway_pb2.JobRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        first = self._submit(request)
        yield event_message(first)
        stop = threading.Event()
        context.add_callback(stop.set)  # the caller went away: stop streaming (the job goes on)
        for event in self.engine.watch(first.job.id, stop):
            yield event_message(event)

    def GetJob(self, request: gateway_pb2.GetJobRequest, context: grpc.ServicerContext) -> gateway_pb2.Job:
        return job_message(Event(self.engine.get(request.id)))

    def WatchJob(self, request: gateway_pb2.GetJobRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        stop = threading.Event()
        context.add_callback(stop.set)
        for event in self.engine.watch(request.id, stop):
            yield event_message(event)

    def ListJobs(self, request: gateway_pb2.ListJobsRequest, context: grpc.ServicerContext) -> Any:
        jobs = self.engine.store.list_jobs(request.limit or 100)
        return gateway_pb2.ListJobsResponse(jobs=[job_message(Event(j)) for j in jobs])

    def CancelJob(self, request: gateway_pb2.GetJobRequest, context: grpc.ServicerContext) -> gateway_pb2.Job:
        return job_message(Event(self.engine.cancel(request.id)))


def build_engine(config: GatewayConfig, metrics: GatewayMetrics | None = None) -> Engine:
    clients = {
        name: ServiceClient(
            name,
            STUBS[name],
            endpoint,
            on_retry=metrics.on_retry if metrics else None,
            on_call=metrics.on_call if metrics else None,
        )
        for name, endpoint in config.services.items()
        if name in STUBS
    }
    unknown = sorted(set(config.services) - set(STUBS))
    if unknown:
        raise ConfigError(f"unknown services in the gateway config: {', '.join(unknown)}; known: {', '.join(STUBS)}")
    store = JobStore(config.store_path)
    return Engine(
        store,
        dict(PIPELINES),
        clients,
        config.data_root,
        config.workers,
        config.max_running_jobs,
        config.max_item_attempts,
    )


def serve_gateway(config_path: str, port: int, bind: str, metrics_port: int | None) -> int:
    """Serve until SIGTERM or SIGINT, then drain (`drain_seconds`) and leave the process."""
    logs.configure()
    try:
        config = load_gateway_config(config_path)
        gateway_metrics = GatewayMetrics(config.store_path, services=tuple(config.services))
        engine = build_engine(config, gateway_metrics)
    except ModelyardError as exc:
        log.error(exc.message, extra={"fields": {"service": "gateway"}})
        return 2
    metrics = ServiceMetrics("gateway")
    gateway_metrics.registry.register(_Forward(metrics.registry))
    tls = None if config.tls is None else (config.tls.key.read_bytes(), config.tls.cert.read_bytes())
    try:
        server = GrpcServer(
            "gateway",
            metrics,
            max_message_mb=config.max_message_mb,
            grpc_threads=config.grpc_threads,
            token_file=config.token_file,
            max_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        server.add(SERVICE_NAME, GatewayServicer(engine), gateway_pb2_grpc.add_GatewayServicer_to_server)
        bound = server.bind(f"{bind}:{port}", tls)
    except ModelyardError as exc:
        log.error(exc.message, extra={"fields": {"service": "gateway"}})
        return 2
    server.start()
    if metrics_port is not None:
        start_http_server(metrics_port, registry=gateway_metrics.registry)
    server.set_serving(True)
    log.info("listening", extra={"fields": {"service": "gateway", "port": bound, "data_root": str(config.data_root)}})
    if config.resume_on_start:
        resumed = engine.resume_unfinished()  # items that keep wedging the gateway are failed, not resumed
        if resumed:
            log.info("resumed jobs", extra={"fields": {"service": "gateway", "jobs": resumed}})
    server.stop_on_signals()
    server.stopping.wait()
    _exit_after(config.drain_seconds + EXIT_MARGIN_S)  # whatever an item is doing, the gateway ends
    stopped = server.drain(config.drain_seconds)  # new calls refused; streams end when their jobs' runs do
    if not engine.shutdown(config.drain_seconds):
        log.warning("items still running after the drain; they count as interrupted when their jobs resume",
                    extra={"fields": {"service": "gateway"}})  # fmt: skip
    stopped.wait(1.0)
    engine.store.close()
    # Leave now: the interpreter's own teardown (gRPC's core, worker threads) took 7-10 s here, eating into the
    # bound an orchestrator relies on; every record is committed, nothing is left to flush but the logs.
    logging.shutdown()
    os._exit(0)


def _exit_after(seconds: float) -> None:
    """A worker stuck where no cancel reaches (a read the OS never ends) must not keep the process alive."""

    def leave() -> None:
        log.warning("drain exceeded; exiting", extra={"fields": {"service": "gateway"}})
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    timer.start()

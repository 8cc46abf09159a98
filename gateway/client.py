"""The Python client of the gateway (`modelyard.v1.Gateway`): submit, follow, list and cancel pipeline jobs.

    from modelyard.gateway.client import GatewayClient, JobFailed

    with GatewayClient("127.0.0.1:50050") as gateway:
        job = gateway.run_to_end("medvqa", "my-study/questions.csv", "runs/seg")
        print(job.summary["manifest"])

Paths are relative to the gateway's data root. Jobs are the gateway's: they go on when the client leaves, and
submitting the same (pipeline, input, output, options) again resumes the same job. Every failed call raises a
`GatewayError` (a `grpc.RpcError`, so `.code()` and `.details()` work as with any gRPC stub); results are the
messages of protos/modelyard/v1/gateway.proto (`Job`, `JobEvent`, `PipelineInfo`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import grpc

from modelyard.runtime.auth import bearer_metadata
from modelyard.runtime.client import channel
from modelyard.v1 import gateway_pb2, gateway_pb2_grpc

T = TypeVar("T")


class GatewayError(grpc.RpcError):
    """A call to the gateway failed; `code()` and `details()` say how (the gateway's message says what to fix)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class GatewayUnavailable(GatewayError):
    """No gateway answered at the address (not started, wrong address, or a network in between)."""


class InvalidRequest(GatewayError):
    """The gateway refused the request as given (unknown pipeline or option, a path outside the data root, ...)."""


class JobNotFound(GatewayError):
    """No job with that id on this gateway."""


class Unauthenticated(GatewayError):
    """The gateway needs a bearer token (`token=`) and got none, or a wrong one."""


class JobFailed(Exception):
    """`run_to_end`: the job ended in a state other than done; `job` is its final record."""

    def __init__(self, job: gateway_pb2.Job) -> None:
        super().__init__(
            f"job {job.id} {job.state}: {job.done} done, {job.failed} failed, {job.pending} not run"
            + (f" ({job.error})" if job.error else "")
        )
        self.job = job


_ERRORS: dict[grpc.StatusCode, type[GatewayError]] = {
    grpc.StatusCode.UNAVAILABLE: GatewayUnavailable,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: JobNotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def _typed(exc: grpc.RpcError) -> GatewayError:
    code, details = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    return _ERRORS.get(code, GatewayError)(code, details)


def _call(function: Callable[[], T]) -> T:
    try:
        return function()
    except GatewayError:
        raise
    except grpc.RpcError as exc:
        raise _typed(exc) from None


class GatewayClient:
    """A connection to one gateway. Use it as a context manager (or call `close`).

    `address` is host:port (or `dns:///name:port`); `token` is the bearer token of a gateway with `token_file`;
    `root_certificate` (PEM bytes) makes the channel TLS, for a gateway with `tls`.
    """

    def __init__(self, address: str, token: str | None = None, root_certificate: bytes | None = None) -> None:
        self.address = address
        if root_certificate is not None:
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificate))
        else:
            self.channel = channel(address)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.metadata = bearer_metadata(token)

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @staticmethod
    def _request(
        pipeline: str, input: str, output: str, options: dict[str, str] | None, config_text: str
    ) -> gateway_pb2.JobRequest:
        return gateway_pb2.JobRequest(
            pipeline=pipeline, input=input, output=output, options=options or {}, config_text=config_text
        )

    def run(
        self, pipeline: str, input: str, output: str, options: dict[str, str] | None = None, config_text: str = ""
    ) -> Iterator[gateway_pb2.JobEvent]:
        """Submit (or resume) a job and yield its progress events until it ends.

        `options` are the pipeline's (`modelyard pipelines` lists them), as strings; `config_text` is the text of
        an options file (a `.conf` of KEY=VALUE lines, or YAML); `options` win over it. Leaving the loop early
        leaves the job running on the gateway (`watch` follows it again, `cancel` stops it).
        """
        request = self._request(pipeline, input, output, options, config_text)
        yield from _follow(self.stub.RunPipeline(request, metadata=self.metadata))

    def run_to_end(
        self, pipeline: str, input: str, output: str, options: dict[str, str] | None = None, config_text: str = ""
    ) -> gateway_pb2.Job:
        """`run`, waiting for the end: the final job when it is done, else JobFailed (with that job)."""
        last: gateway_pb2.Job | None = None
        for event in self.run(pipeline, input, output, options, config_text):
            last = event.job
        assert last is not None  # the gateway always sends the job's final state
        if last.state != "done":
            raise JobFailed(last)
        return last

    def submit(
        self, pipeline: str, input: str, output: str, options: dict[str, str] | None = None, config_text: str = ""
    ) -> gateway_pb2.Job:
        """Submit (or resume) a job and return at once, with the same arguments as `run`."""
        request = self._request(pipeline, input, output, options, config_text)
        return _call(lambda: self.stub.SubmitJob(request, metadata=self.metadata))

    def get(self, job_id: str) -> gateway_pb2.Job:
        """The job's current record (JobNotFound for an unknown id)."""
        return _call(lambda: self.stub.GetJob(gateway_pb2.GetJobRequest(id=job_id), metadata=self.metadata))

    def watch(self, job_id: str) -> Iterator[gateway_pb2.JobEvent]:
        """Follow a job (submitted from anywhere) until it ends."""
        yield from _follow(self.stub.WatchJob(gateway_pb2.GetJobRequest(id=job_id), metadata=self.metadata))

    def jobs(self, limit: int = 50) -> list[gateway_pb2.Job]:
        """The newest jobs, newest first."""
        request = gateway_pb2.ListJobsRequest(limit=limit)
        return list(_call(lambda: self.stub.ListJobs(request, metadata=self.metadata)).jobs)

    def cancel(self, job_id: str) -> gateway_pb2.Job:
        """Stop scheduling the job's items (those in flight finish); submitting it again resumes it."""
        return _call(lambda: self.stub.CancelJob(gateway_pb2.GetJobRequest(id=job_id), metadata=self.metadata))

    def pipelines(self) -> list[gateway_pb2.PipelineInfo]:
        """Every pipeline with its services, options and their defaults."""
        request = gateway_pb2.ListPipelinesRequest()
        return list(_call(lambda: self.stub.ListPipelines(request, metadata=self.metadata)).pipelines)

    def close(self) -> None:
        self.channel.close()


__all__ = [
    "GatewayClient",
    "GatewayError",
    "GatewayUnavailable",
    "InvalidRequest",
    "JobFailed",
    "JobNotFound",
    "Unauthenticated",
]


def _follow(stream: Any) -> Iterator[gateway_pb2.JobEvent]:
    """A progress stream's events with typed errors; leaving early cancels the stream, never the job."""
    try:
        yield from stream
    except grpc.RpcError as exc:
        raise _typed(exc) from None
    finally:
        stream.cancel()

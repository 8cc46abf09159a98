"""A small Python client for the gateway."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from modelyard.runtime.auth import bearer_metadata
from modelyard.runtime.client import channel
from modelyard.v1 import gateway_pb2, gateway_pb2_grpc


class GatewayClient:
    def __init__(self, address: str, token: str | None = None, root_certificate: bytes | None = None) -> None:
        if root_certificate is not None:
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificate))
        else:
            self.channel = channel(address)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.metadata = bearer_metadata(token)

    def run(
        self, pipeline: str, input: str, output: str, options: dict[str, str] | None = None, config_text: str = ""
    ) -> Iterator[gateway_pb2.JobEvent]:
        """Submit (or resume) a job and yield its progress events until it ends."""
        request = gateway_pb2.JobRequest(
            pipeline=pipeline, input=input, output=output, options=options or {}, config_text=config_text
        )
        yield from self.stub.RunPipeline(request, metadata=self.metadata)

    def submit(self, pipeline: str, input: str, output: str, options: dict[str, str] | None = None) -> gateway_pb2.Job:
        request = gateway_pb2.JobRequest(pipeline=pipeline, input=input, output=output, options=options or {})
        return self.stub.SubmitJob(request, metadata=self.metadata)

    def get(self, job_id: str) -> gateway_pb2.Job:
        return self.stub.GetJob(gateway_pb2.GetJobRequest(id=job_id), metadata=self.metadata)

    def watch(self, job_id: str) -> Iterator[gateway_pb2.JobEvent]:
        yield from self.stub.WatchJob(gateway_pb2.GetJobRequest(id=job_id), metadata=self.metadata)

    def jobs(self, limit: int = 50) -> list[gateway_pb2.Job]:
        return list(self.stub.ListJobs(gateway_pb2.ListJobsRequest(limit=limit), metadata=self.metadata).jobs)

    def cancel(self, job_id: str) -> gateway_pb2.Job:
        return self.stub.CancelJob(gateway_pb2.GetJobRequest(id=job_id), metadata=self.metadata)

    def pipelines(self) -> list[gateway_pb2.PipelineInfo]:
        return list(self.stub.ListPipelines(gateway_pb2.ListPipelinesRequest(), metadata=self.metadata).pipelines)

    def close(self) -> None:
        self.channel.close()

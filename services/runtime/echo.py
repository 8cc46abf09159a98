"""Echo: the runtime's reference service, a no-op model that returns its input after an optional delay.

It measures what serving itself costs (bench/) and lets tests exercise queueing, cancellation and draining
without a real model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import torch
from pydantic import Field

from modelyard.runtime.adapter import ModelAdapter, ServiceSpec
from modelyard.runtime.arrays import OutputWriter, numpy_to_tensor, tensor_to_numpy
from modelyard.runtime.config import Strict
from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.host import ModelHost
from modelyard.v1 import echo_pb2, echo_pb2_grpc, types_pb2


class EchoConfig(Strict):
    max_delay_seconds: float = Field(10.0, ge=0, description="longest delay a request may ask for")
    load_delay_seconds: float = Field(0.0, ge=0, description="pretend loading takes this long")
    allow_faults: bool = Field(False, description="let requests ask for simulated failures (tests only)")


@dataclass
class EchoItem:
    array: np.ndarray
    delay_seconds: float
    fault: int = echo_pb2.ECHO_FAULT_NONE


class EchoAdapter(ModelAdapter[EchoConfig, EchoItem, np.ndarray]):
    inference_mode = False  # no torch runs (torch only names the simulated out-of-memory error)

    def load(self) -> None:
        time.sleep(self.config.load_delay_seconds)

    def infer(self, items: list[EchoItem]) -> list[np.ndarray | Exception]:
        # A no-op that measures serving: one pass over the items, and nothing else when none asks for more.
        delay, faults = 0.0, set()
        for item in items:
            if item.delay_seconds > delay:
                delay = item.delay_seconds
            if item.fault:
                faults.add(item.fault)
        if delay > 0:  # (sleep(0) still yields the GIL and the core: ~0.1 ms on a busy machine)
            time.sleep(delay)
        if not faults:
            return [item.array for item in items]
        if echo_pb2.ECHO_FAULT_FATAL in faults:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")
        if echo_pb2.ECHO_FAULT_OUT_OF_MEMORY in faults:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 588.00 MiB (simulated)")
        if echo_pb2.ECHO_FAULT_RAISE in faults:
            raise ValueError("the model failed on this batch (simulated)")
        invalid = echo_pb2.ECHO_FAULT_INVALID_ITEM  # in its item's slot: the other items keep their results
        return [InvalidInput("this item is invalid (simulated)") if i.fault == invalid else i.array for i in items]

    def info(self) -> dict[str, Any]:
        return {"model": "echo (no-op)", "backend": "modelyard.runtime"}


class EchoServicer(echo_pb2_grpc.EchoServicer):
    def __init__(self, host: ModelHost) -> None:
        self.host = host

    def Echo(self, request: echo_pb2.EchoRequest, context: grpc.ServicerContext) -> echo_pb2.EchoResponse:
        limit = self.host.config.model.max_delay_seconds
        if not 0 <= request.delay_seconds <= limit:
            raise InvalidInput(f"delay_seconds must be within [0, {limit}], got {request.delay_seconds}")
        if request.fault and not self.host.config.model.allow_faults:
            raise InvalidInput("simulated faults are off; set model.allow_faults: true in the echo config")
        shm = self.host.runtime.shared_memory_dir
        array = tensor_to_numpy(request.array, shm)
        (result,) = self.host.run([EchoItem(array, request.delay_seconds, request.fault)], context)
        out = OutputWriter.optional(request.output_region, shm)
        try:
            response = echo_pb2.EchoResponse()
            numpy_to_tensor(result, out, into=response.array)
            return response
        finally:
            if out is not None:
                out.close()

    def Info(self, request: types_pb2.InfoRequest, context: grpc.ServicerContext) -> types_pb2.ModelInfo:
        return self.host.info(request)


SERVICE = ServiceSpec(
    name="echo",
    proto_service="modelyard.v1.Echo",
    config_schema=EchoConfig,
    adapter=EchoAdapter,
    make_servicer=EchoServicer,
    add_to_server=echo_pb2_grpc.add_EchoServicer_to_server,
    summary="reference service: returns what it is sent (tests and benchmarks of the runtime)",
)

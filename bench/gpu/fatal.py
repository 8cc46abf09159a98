"""Check 7: a device-side assert breaks the CUDA context; health must turn NOT_SERVING and the process must exit
(non-zero) so that an orchestrator restarts it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.gpu.stack import Row, judge, write_config
from modelyard.runtime.launch import LocalService

ROOT = Path(__file__).resolve().parents[2]


class FaultService(LocalService):
    """bench.gpu.fault_service as a child process (the runtime's serve() around a CUDA-breaking echo model)."""

    def start(self) -> FaultService:
        assert self.log_path is not None
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.gpu.fault_service", "--config", str(self.config), "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )
        return self


def fault_service(folder: Path, logs: Path, device: str) -> FaultService:
    config = write_config(folder, "cuda-fault", {"allow_faults": True}, {"device": device, "drain_seconds": 2})
    return FaultService("cuda-fault", config, log_path=logs / "cuda-fault.log")


def echo(service: LocalService, fault: int = 0) -> tuple[str, str]:
    import grpc
    import numpy as np

    from modelyard.runtime.arrays import numpy_to_tensor
    from modelyard.v1 import echo_pb2, echo_pb2_grpc

    with grpc.insecure_channel(service.address) as chan:
        request = echo_pb2.EchoRequest(array=numpy_to_tensor(np.arange(16, dtype=np.float32)), fault=fault)
        try:
            echo_pb2_grpc.EchoStub(chan).Echo(request, timeout=60)
            return "OK", ""
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""


def health(service: LocalService) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(service.address) as chan:
        try:
            status = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=2).status
            return health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        except grpc.RpcError as exc:
            return exc.code().name


def corrupted_context(service: FaultService, wait_s: float = 30.0) -> list[Row]:
    from modelyard.v1 import echo_pb2

    assert service.process is not None
    code, details = echo(service, echo_pb2.ECHO_FAULT_FATAL)
    seen: list[str] = []
    exit_code, deadline = None, time.monotonic() + wait_s
    while time.monotonic() < deadline:
        exit_code = service.process.poll()
        if exit_code is not None:
            break
        status = health(service)
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.2)
    row = Row(
        "7",
        "device-side assert: health NOT_SERVING, then the process exits non-zero (orchestrator restarts)",
        goal="NOT_SERVING, exit ≠ 0 within 30 s",
    )
    row.measured = f"the call: {code} “{details[:160]}”; health seen: {', '.join(seen) or 'none (already gone)'}; " + (
        f"exit code {exit_code}" if exit_code is not None else f"still running after {wait_s:.0f} s"
    )
    row.numbers = {"call": code, "details": details, "health_seen": seen, "exit_code": exit_code}
    not_serving = "NOT_SERVING" in seen or (exit_code is not None and "SERVING" not in seen)
    return [judge(row, not_serving and exit_code not in (None, 0))]

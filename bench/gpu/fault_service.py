"""A service whose model can break its CUDA context for real: the runtime's echo service, except that a request
asking for ECHO_FAULT_FATAL (with model.allow_faults: true) runs a kernel with an out-of-bounds index, a genuine
device-side assert, after which no CUDA call in the process can succeed.

    python -m bench.gpu.fault_service --config echo.yaml --port 50099

Everything else is the runtime's own: `modelyard.runtime.server.serve`, the scheduler, the memory governor, health.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from modelyard.runtime.echo import SERVICE as ECHO
from modelyard.runtime.echo import EchoAdapter, EchoItem
from modelyard.runtime.server import serve
from modelyard.v1 import echo_pb2


class CudaFaultAdapter(EchoAdapter):
    def load(self) -> None:
        self.scratch = torch.zeros(8, device=self.device)  # the context exists from here on

    def infer(self, items: list[EchoItem]) -> list[np.ndarray | Exception]:
        if any(item.fault == echo_pb2.ECHO_FAULT_FATAL for item in items):
            index = torch.tensor([1 << 20], device=self.device)
            self.scratch[index].cpu()  # raises: CUDA error: device-side assert triggered
        return [(torch.from_numpy(np.array(item.array)).to(self.device) + 0).cpu().numpy() for item in items]


SERVICE = replace(ECHO, name="cuda-fault", adapter=CudaFaultAdapter)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    return serve(SERVICE, args.config, args.port, None, "127.0.0.1")


if __name__ == "__main__":
    raise SystemExit(main())

"""Another process that takes GPU memory: the neighbour on a shared GPU that the seed pipelines met.

    python -m bench.gpu.filler        # then, on stdin, one command a line:
    leave MB                          # take or give back memory until the device has about MB MiB free
    exit                              # (or end of input) give everything back and stop

Each command is answered with one line `free MB held MB`. Allocations bypass torch's caching allocator, so
what is given back is back on the device at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("PYTORCH_NO_CUDA_MEMORY_CACHING", "1")
MIB = 1 << 20
CHUNKS_MB = (4096, 1024, 256, 64, 16)


def main() -> int:
    import torch

    torch.cuda.init()
    held: list[tuple[int, torch.Tensor]] = []

    def free_mb() -> int:
        return int(torch.cuda.mem_get_info(0)[0] // MIB)

    def leave(target: int) -> None:
        while held and free_mb() < target:
            held.pop()
        for chunk in CHUNKS_MB:
            while free_mb() - chunk >= target:
                try:
                    held.append((chunk, torch.empty(chunk * MIB, dtype=torch.uint8, device="cuda:0")))
                except torch.cuda.OutOfMemoryError:
                    break

    print(f"free {free_mb()} held 0", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "exit":
            break
        if words[0] == "leave":
            leave(int(words[1]))
        print(f"free {free_mb()} held {sum(mb for mb, _ in held)}", flush=True)
    return 0


class Filler:
    """The filler as a child process of the check."""

    def __init__(self, python: str = sys.executable) -> None:
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen(
            [python, "-m", "bench.gpu.filler"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root
        )
        self.free_mb, self.held_mb = self._answer()

    def _answer(self) -> tuple[int, int]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if len(line) != 4:
            raise RuntimeError(f"the filler process ended (exit code {self.process.poll()})")
        return int(line[1]), int(line[3])

    def leave(self, free_mb: int) -> tuple[int, int]:
        """Leave about `free_mb` MiB free on the GPU; returns (free, held) as the filler saw them."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"leave {max(0, int(free_mb))}\n")
        self.process.stdin.flush()
        self.free_mb, self.held_mb = self._answer()
        return self.free_mb, self.held_mb

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Filler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    raise SystemExit(main())

"""The server's work per echo call, in instructions, side by side with plain grpcio (issue 14).

python -m bench.instructions [--calls N]

Wall time on a machine with few shared cores moves by more than the request path's own cost, so this counts
what the server process executes instead: each server runs under valgrind's callgrind (`valgrind` must be
installed: `apt install valgrind`), this process sends `--warmup` calls, zeroes the counters
(`callgrind_control -z`), sends N calls one at a time and dumps the counters (`callgrind_control -d`). A count
covers every thread of the server (gRPC's, the request-line writer, the shared-memory sweep) and repeats within
about 1 % from run to run. Servers: bench.hops' plain grpcio echo, and the modelyard echo service with its
array inline and in shared memory (the result read in place). The count is instructions, not time: a system
call or a copy of many bytes costs more time per instruction than Python does.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import grpc
import numpy as np

from bench.hops import OPTIONS, Peer, add_compare_option, echo_config, plain_server_command
from bench.report import machine, table, write_section
from modelyard.runtime.arrays import numpy_to_tensor
from modelyard.runtime.client import wait_until_serving
from modelyard.runtime.launch import LocalService, free_port
from modelyard.v1 import echo_pb2

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD_BYTES = 1 << 10


class CountedServer:
    """A server process under callgrind, and the counters it dumps on demand."""

    def __init__(
        self, stack: contextlib.ExitStack, folder: Path, label: str, command: list[str], port: int, env: dict[str, str]
    ) -> None:
        self.folder, self.label = folder, label
        out = folder / f"{label}.%p.callgrind"
        log = stack.enter_context((folder / f"{label}.log").open("ab"))
        self.process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
            cwd=ROOT,
            stdout=log,
            stderr=log,
            env={**os.environ, **env},
        )
        stack.callback(self.process.wait, 60)
        stack.callback(self.process.terminate)
        self.address = f"127.0.0.1:{port}"

    def control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.process.pid)], check=True, capture_output=True)

    def count(self, call: Callable[[], object], calls: int, warmup: int) -> float:
        """Instructions the server ran per call, over `calls` calls after `warmup` uncounted ones."""
        for _ in range(warmup):
            call()
        dumped = set(glob.glob(str(self.folder / f"{self.label}.{self.process.pid}.callgrind.*")))
        self.control("-z")
        for _ in range(calls):
            call()
        self.control("-d")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for path in set(glob.glob(str(self.folder / f"{self.label}.{self.process.pid}.callgrind.*"))) - dumped:
                for line in Path(path).read_text().splitlines():
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1]) / calls
            time.sleep(0.2)
        raise TimeoutError(f"callgrind wrote no counters for {self.label} within 60 s")


def measure(folder: Path, calls: int, warmup: int, compare: tuple[str, str] | None = None) -> dict[str, float]:
    """Instructions per call of each path. With `compare` (a PYTHONPATH whose modelyard is another version, and
    its label), that version's echo service is counted too, with this client."""
    config = echo_config(folder)
    array = np.random.default_rng(0).integers(0, 255, PAYLOAD_BYTES, dtype=np.uint8)
    message = echo_pb2.EchoRequest(array=numpy_to_tensor(array))
    results: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        port = free_port()
        plain = CountedServer(stack, folder, "plain", plain_server_command(port), port, {})
        versions = {"modelyard": {}, **({compare[1]: {"PYTHONPATH": compare[0]}} if compare else {})}
        services = {}
        for index, (label, env) in enumerate(versions.items()):
            echo = LocalService("echo", config)  # (its command line, run here under valgrind)
            services[label] = CountedServer(stack, folder, f"echo-{index}", echo.command(), echo.port, env)
        for service in services.values():  # (under valgrind a server starts 20-50x slower: torch's import)
            with grpc.insecure_channel(service.address, options=OPTIONS) as channel:
                wait_until_serving(channel, timeout=1200)
        plain_peer = Peer(stack, plain.address, shared_memory=False)
        results["plain grpcio"] = plain.count(partial(plain_peer.inline, message), calls, warmup)
        for label, service in services.items():
            peer = Peer(stack, service.address, shared_memory=True)
            shown = label if label == "modelyard" else f"{label}:"
            results[f"{shown} inline"] = service.count(partial(peer.inline, message), calls, warmup)
            results[f"{shown} shared memory"] = service.count(partial(peer.shared, array, copy=False), calls, warmup)
    return results


def report(results: dict[str, float], calls: int, warmup: int, compared: str = "") -> str:
    base = results["plain grpcio"]
    rows: list[list[object]] = [
        [
            path,
            f"{count / 1000:.1f}k",
            "" if path == "plain grpcio" else f"+{(count - base) / 1000:.1f}k",
            f"{count / base:.2f}x",
        ]
        for path, count in results.items()
    ]
    return (
        f"Machine: {machine()}. Each server runs under callgrind; {warmup} calls uncounted, then {calls} calls "
        "of a 1 KB uint8 array, one at a time from this process (not counted), and the counters of every thread "
        "of the server divided by the calls. Shared memory: `SharedMemoryClient.tensor` + `output_region`, the "
        "result read in place. Instructions are not time (a system call or a copy of many bytes takes more time "
        "per instruction than Python does), but they repeat within about 1 % where wall time moves by tens of "
        "percent."
        + (
            f" `{compared}`: the echo service of that version of modelyard (`--compare`), counted in the same run "
            "with this client."
            if compared
            else ""
        )
        + "\n\n"
        + table(["server instructions per 1 KB echo call", "instructions", "over plain grpcio", "xplain"], rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300, help="calls counted per path")
    parser.add_argument("--warmup", type=int, default=100, help="calls before counting")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    add_compare_option(parser, "count")
    args = parser.parse_args()
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"{' and '.join(missing)} not found: install valgrind (apt install valgrind) to count instructions")
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(Path(tmp), args.calls, args.warmup, tuple(args.compare) if args.compare else None)
    body = "## One hop in instructions (issue 14)\n\n" + report(
        results, args.calls, args.warmup, args.compare[1] if args.compare else ""
    )
    if not args.no_write:
        write_section("instructions", body)
    print(body)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # (the servers inherit it: same hashing from run to run)
    main()

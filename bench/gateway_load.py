"""Load on the gateway (issue 6): many concurrent clients for a fixed time against the local stack (tiny MedSAM and
BiomedCLIP as processes, the gateway in front), only loopback.

python -m bench.gateway_load [--clients 64] [--seconds 60] [--quick]

Each client, on its own channel, loops until the time is up: it submits a small medvqa job (2 generated chest
X-rays, MODE=gold STAGE=segmentation, so 2 MedSAM calls), or asks for one of its jobs (GetJob), or lists jobs
(ListJobs). A RESOURCE_EXHAUSTED answer is back-pressure: the client waits 50-200 ms and goes on. Any other error
is a failure of the run. Reported: latency per RPC (p50/p99), throughput, answers by status, jobs and items done,
RSS and thread counts of every process before, at peak and after (once the jobs have drained).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.report import machine, table, write_section
from bench.tiny_stack import rss_mib, threads, tiny_stack
from modelyard.demo.samples import write_medvqa_inputs
from modelyard.runtime.client import channel
from modelyard.v1 import gateway_pb2, gateway_pb2_grpc

OPTIONS = {"MODE": "gold", "STAGE": "segmentation"}
MIX = {"SubmitJob": 0.2, "GetJob": 0.4, "ListJobs": 0.4}
# Lower than the default (64) so that back-pressure engages with jobs this short.
GATEWAY = {"max_running_jobs": 16}
CALL_TIMEOUT_S = 30.0


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, rpc: str, seconds: float, code: grpc.StatusCode, detail: str = "") -> None:
        with self.lock:
            self.codes[(rpc, code.name)] += 1
            if code == grpc.StatusCode.OK:
                self.latencies[rpc].append(seconds)
            elif code != grpc.StatusCode.RESOURCE_EXHAUSTED and len(self.errors) < 20:
                self.errors.append(f"{rpc}: {code.name}: {detail}")


def client(index: int, address: str, table_rel: str, until: float, tally: Tally) -> None:
    rng = random.Random(index)
    mine: list[str] = []
    submitted = 0
    with channel(address) as chan:
        stub = gateway_pb2_grpc.GatewayStub(chan)
        while time.monotonic() < until:
            rpc = rng.choices(list(MIX), weights=list(MIX.values()))[0]
            if rpc == "GetJob" and not mine:
                rpc = "ListJobs"
            started = time.perf_counter()
            try:
                if rpc == "SubmitJob":
                    output = f"load/c{index:02d}/j{submitted:04d}"
                    request = gateway_pb2.JobRequest(pipeline="medvqa", input=table_rel, output=output, options=OPTIONS)
                    job = stub.SubmitJob(request, timeout=CALL_TIMEOUT_S)
                    submitted += 1
                    mine.append(job.id)
                    with tally.lock:
                        tally.jobs.append(job.id)
                elif rpc == "GetJob":
                    stub.GetJob(gateway_pb2.GetJobRequest(id=rng.choice(mine)), timeout=CALL_TIMEOUT_S)
                else:
                    stub.ListJobs(gateway_pb2.ListJobsRequest(limit=20), timeout=CALL_TIMEOUT_S)
                tally.record(rpc, time.perf_counter() - started, grpc.StatusCode.OK)
            except grpc.RpcError as err:
                tally.record(rpc, time.perf_counter() - started, err.code(), err.details() or "")
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    time.sleep(rng.uniform(0.05, 0.2))  # back off, as a client of a loaded service should


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def sample_processes(pids: dict[str, int], peak: dict[str, tuple[float, int]], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        for name, pid in pids.items():
            rss, count = rss_mib(pid), threads(pid)
            old = peak.get(name, (0.0, 0))
            peak[name] = (max(old[0], rss), max(old[1], count))


def snapshot(pids: dict[str, int]) -> dict[str, tuple[float, int]]:
    return {name: (rss_mib(pid), threads(pid)) for name, pid in pids.items()}


def drain(stub: gateway_pb2_grpc.GatewayStub, timeout: float) -> tuple[float, dict[str, int], int, int]:
    """Wait until no job is queued or running; returns the wait, jobs by state, items done and failed."""
    started = time.monotonic()
    while True:
        jobs = stub.ListJobs(gateway_pb2.ListJobsRequest(limit=100_000), timeout=60).jobs
        states = Counter(j.state for j in jobs)
        if not states["queued"] + states["running"] or time.monotonic() - started > timeout:
            return time.monotonic() - started, dict(states), sum(j.done for j in jobs), sum(j.failed for j in jobs)
        time.sleep(1.0)


def run(clients: int, seconds: float, folder: Path) -> str:
    data = folder / "data"
    table_rel = str(write_medvqa_inputs(data / "medvqa", count=2, size=128).relative_to(data))
    load_before = os.getloadavg()[0]
    with tiny_stack(folder, data, gateway=GATEWAY) as stack:
        address = stack["gateway"].address
        pids = {name: p.pid for name, p in stack.items()}
        with channel(address) as chan:
            stub = gateway_pb2_grpc.GatewayStub(chan)
            warm = gateway_pb2.JobRequest(pipeline="medvqa", input=table_rel, output="load/warmup", options=OPTIONS)
            assert list(stub.RunPipeline(warm, timeout=120))[-1].job.state == "done"
            before = snapshot(pids)
            tally, peak, stop = Tally(), dict(before), threading.Event()
            sampler = threading.Thread(target=sample_processes, args=(pids, peak, stop), daemon=True)
            sampler.start()
            until = time.monotonic() + seconds
            started = time.monotonic()
            workers = [
                threading.Thread(target=client, args=(i, address, table_rel, until, tally)) for i in range(clients)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            elapsed = time.monotonic() - started
            waited, states, items_done, items_failed = drain(stub, timeout=600)
            stop.set()
            sampler.join()
            after = snapshot(pids)
    load_after = os.getloadavg()[0]

    rows = []
    for rpc in MIX:
        ok = tally.latencies[rpc]
        shed = tally.codes[(rpc, "RESOURCE_EXHAUSTED")]
        rows.append([
            rpc, len(ok), shed, f"{len(ok) / elapsed:.1f}",
            f"{statistics.median(ok) * 1000:.1f}" if ok else "-", f"{percentile(ok, 0.99):.1f}" if ok else "-",
        ])  # fmt: skip
    total_ok = sum(len(v) for v in tally.latencies.values())
    other = {k: v for k, v in tally.codes.items() if k[1] not in ("OK", "RESOURCE_EXHAUSTED")}
    latency = table(["RPC", "answered OK", "RESOURCE_EXHAUSTED", "OK per s", "p50 ms", "p99 ms"], rows)
    memory = table(
        ["process", "RSS before MiB", "peak MiB", "after MiB", "threads before", "peak", "after"],
        [
            [name, f"{before[name][0]:.0f}", f"{peak[name][0]:.0f}", f"{after[name][0]:.0f}",
             before[name][1], peak[name][1], after[name][1]]
            for name in pids
        ],
    )  # fmt: skip
    verdict = "only back-pressure (RESOURCE_EXHAUSTED)" if not other else f"OTHER ERRORS: {dict(other)}"
    errors = "".join(f"\n- `{e}`" for e in tally.errors)
    return (
        "## Gateway under load (issue 6)\n\n"
        f"Machine: {machine()}; load average (1 min) {load_before:.1f} before, {load_after:.1f} after. "
        f"{clients} concurrent clients (threads of one process, one channel each) for {seconds:.0f} s against the "
        "local stack (`modelyard.ops.local.up`: tiny random-weight MedSAM and BiomedCLIP, one intra-op thread "
        f"each, and the gateway with {', '.join(f'{k}: {v}' for k, v in GATEWAY.items())}), loopback only. "
        "Mix per call: "
        + ", ".join(f"{rpc} {share:.0%}" for rpc, share in MIX.items())
        + "; a submitted job is medvqa MODE=gold STAGE=segmentation on 2 generated 128x128 chest X-rays "
        "(2 MedSAM calls, masks and overlays written). After RESOURCE_EXHAUSTED a client waits 50-200 ms.\n\n"
        f"**{total_ok} calls answered in {elapsed:.1f} s ({total_ok / elapsed:.0f}/s); errors: {verdict}.**"
        f"{errors}\n\n"
        + latency
        + f"\n\nJobs accepted: {len(tally.jobs)}; after the run they drained in {waited:.1f} s: {states}; "
        f"items done {items_done} (incl. the warm-up job), failed {items_failed}; "
        f"{items_done / (elapsed + waited):.1f} items/s end to end.\n\n"
        "Memory and threads of each process (peak sampled every 0.5 s during the run and the drain; "
        "after = once every job had ended):\n\n" + memory
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="8 clients for 10 s (smoke run; not written)")
    args = parser.parse_args()
    clients, seconds = (8, 10.0) if args.quick else (args.clients, args.seconds)
    with tempfile.TemporaryDirectory(prefix="modelyard-load-") as tmp:
        body = run(clients, seconds, Path(tmp))
    print(body)
    if not args.quick:
        write_section("gateway_load", body)


if __name__ == "__main__":
    main()

"""Runtime and MedSAM benchmarks (issue 2): per-hop gRPC overhead, Segment via the service, memory flatness.

python -m bench.runtime [--quick]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
from pathlib import Path

import grpc
import numpy as np
import torch
import yaml
from PIL import Image

from bench.report import machine, table, timed, write_section
from modelyard.medsam.architecture import TINY, write_random_checkpoint
from modelyard.medsam.config import MedSAMConfig
from modelyard.medsam.model import MedSAMAdapter, SegmentItem
from modelyard.medsam.preprocess import resize_normalise, to_rgb_uint8
from modelyard.runtime.arrays import SHM_DIR, numpy_to_tensor
from modelyard.runtime.client import SharedMemoryClient
from modelyard.runtime.echo import EchoAdapter, EchoConfig, EchoItem
from modelyard.runtime.launch import LocalService
from modelyard.v1 import echo_pb2, echo_pb2_grpc, medsam_pb2, medsam_pb2_grpc, types_pb2

SIZES = {"1 KB": 1 << 10, "1 MB": 1 << 20, "10 MB": 10 << 20}
GOALS_MS = {"1 KB": 0.5, "1 MB": 1.5, "10 MB": 10.0}


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))]


def write_config(folder: Path, name: str, model: dict, runtime: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": model, "runtime": {"device": "cpu", **runtime}}))
    return path


def hop_overhead(folder: Path, n: int) -> str:
    config = write_config(folder, "echo", {}, {"max_message_mb": 64, "max_batch_size": 1})
    adapter = EchoAdapter(EchoConfig(), "cpu")
    rows = []
    with LocalService("echo", config, log_path=folder / "echo.log") as service:
        chan = grpc.insecure_channel(
            service.address,
            options=[("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)],
        )
        stub = echo_pb2_grpc.EchoStub(chan)
        with SharedMemoryClient(stub.Info, SHM_DIR) as shm:
            for label, nbytes in SIZES.items():
                array = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
                base_p50, _ = percentiles(timed(lambda a=array: adapter.infer([EchoItem(a, 0.0)]), n))
                count = n if nbytes < (5 << 20) else max(20, n // 5)
                inline_msg = echo_pb2.EchoRequest(array=numpy_to_tensor(array))
                inline = percentiles(timed(lambda m=inline_msg: stub.Echo(m), count))

                def shared(a: np.ndarray = array) -> np.ndarray:
                    request = echo_pb2.EchoRequest(array=shm.tensor(a), output_region=shm.output_region(a.nbytes))
                    return shm.read(stub.Echo(request).array)

                shared_p = percentiles(timed(shared, count))
                goal = GOALS_MS[label]
                for path, (p50, p99) in (("inline bytes", inline), ("shared memory", shared_p)):
                    added = p50 - base_p50
                    rows.append(
                        [
                            label,
                            path,
                            f"{p50:.2f}",
                            f"{p99:.2f}",
                            f"{added:.2f}",
                            f"≤ {goal}",
                            "yes" if added <= goal else "no",
                        ]
                    )
        chan.close()
    return table(["payload", "path", "p50 ms", "p99 ms", "added p50 ms (vs in-process)", "goal", "met"], rows)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def medsam(folder: Path, n: int, memory_calls: tuple[int, int]) -> str:
    ckpt = write_random_checkpoint(folder / "tiny.pth", TINY)
    model = {"checkpoint": str(ckpt), "architecture": TINY.model_dump(mode="json")}
    config = write_config(folder, "medsam", model, {"max_batch_size": 4})
    rng = np.random.default_rng(0)
    image = (rng.random((256, 256)) * 255).astype(np.uint8)
    boxes = [(40.0, 40.0, 160.0, 170.0)]
    adapter = MedSAMAdapter(MedSAMConfig.model_validate(model), "cpu")
    adapter.load()

    def in_process() -> object:
        item = SegmentItem(resize_normalise(to_rgb_uint8(image), TINY.image_size), np.array(boxes), 256, 256)
        with torch.inference_mode():
            return adapter.infer([item])

    rows = []
    with (
        LocalService("medsam", config, log_path=folder / "medsam.log") as service,
        grpc.insecure_channel(service.address) as chan,
    ):
        stub = medsam_pb2_grpc.MedSAMStub(chan)
        request = medsam_pb2.SegmentRequest(
            items=[
                medsam_pb2.SegmentItem(
                    image=types_pb2.Image(encoded=png(image)),
                    boxes=[types_pb2.BoxXYXY(x1=b[0], y1=b[1], x2=b[2], y2=b[3]) for b in boxes],
                )
            ]
        )
        local = percentiles(timed(in_process, n))
        remote = percentiles(timed(lambda: stub.Segment(request), n))
        rows.append(["in-process (preprocess + infer)", f"{local[0]:.2f}", f"{local[1]:.2f}"])
        rows.append(["through the service (PNG in, masks out)", f"{remote[0]:.2f}", f"{remote[1]:.2f}"])
        rss = []
        done = 0
        for target in memory_calls:
            while done < target:
                stub.Segment(request)
                done += 1
            rss.append(stub.Info(types_pb2.InfoRequest()).rss_bytes)
    latency = table(["Tiny-MedSAM Segment, 256x256 grey, 1 box", "p50 ms", "p99 ms"], rows)
    growth = (rss[1] - rss[0]) / rss[0] * 100
    memory = table(
        ["service RSS", f"after {memory_calls[0]} calls", f"after {memory_calls[1]} calls", "growth", "goal", "met"],
        [
            [
                "MiB",
                f"{rss[0] / 2**20:.1f}",
                f"{rss[1] / 2**20:.1f}",
                f"{growth:+.2f} %",
                "< 1 %",
                "yes" if growth < 1 else "no",
            ]
        ],
    )
    return latency + "\n\n" + memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke run)")
    args = parser.parse_args()
    n = 30 if args.quick else 300
    memory_calls = (20, 60) if args.quick else (100, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hops = hop_overhead(folder, n)
        segment = medsam(folder, max(10, n // 10), memory_calls)
    body = (
        "## Runtime and MedSAM (issue 2)\n\n"
        f"Machine: {machine()}. {'QUICK run. ' if args.quick else ''}Services run as separate processes on "
        'loopback; the client is this process. "In-process" is the same no-op model called directly.\n\n'
        "### Added latency per gRPC hop, no-op model (echo)\n\n" + hops + "\n\n### MedSAM\n\n" + segment
    )
    write_section("runtime", body)
    print(body)


if __name__ == "__main__":
    main()

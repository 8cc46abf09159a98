"""Real-size architectures on the CPU (issue 16): MedSAM vit_b at 1024² and BiomedCLIP's released configuration
(ViT-B/16 + PubMedBERT at 224), random weights, through the services vs in-process.

python -m bench.real_size [--n 3]

Per model: p50 latency of one call in-process and through `modelyard serve` on loopback (same request, the paths
taking turns), the peak RSS of each, and the adapter's `memory_need_mb` (a GPU estimate: weights + activations +
400 MiB of CUDA context) next to what loading and one call took on the CPU (peak RSS minus RSS before loading,
the proxy until a GPU measures it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch

from bench.gpu.stack import BOX, biomedclip_model, medsam_model, test_images, write_config
from bench.report import machine, table, write_section
from modelyard.runtime.launch import LocalService

THREADS = 2
CONTEXT_MB = 400  # the estimates' CUDA-context term, absent on the CPU


def status_kib(key: str, pid: str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


@contextmanager
def serving(name: str, config: Path, log: Path) -> Iterator[LocalService]:
    """The service as a child process; loading and warming a real-size model on a busy CPU takes minutes."""
    service = LocalService(name, config, log_path=log).start()
    try:
        service.wait_until_serving(timeout=1200)
        yield service
    finally:
        service.stop()


def p50(call: Callable[[], object], n: int) -> float:
    call()  # warm-up
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def medsam(folder: Path, n: int) -> list[object]:
    from modelyard.medsam.config import MedSAMConfig
    from modelyard.medsam.model import MedSAMAdapter, SegmentItem
    from modelyard.medsam.preprocess import resize_normalise, to_rgb_uint8
    from modelyard.runtime.arrays import numpy_to_tensor
    from modelyard.v1 import medsam_pb2, medsam_pb2_grpc, types_pb2

    model = medsam_model(folder)
    config = MedSAMConfig.model_validate(model)
    image = test_images(1)[0]
    estimate = MedSAMAdapter.memory_need_mb(config, 1)
    reset_peak()
    before = status_kib("VmRSS")
    adapter = MedSAMAdapter(config, "cpu")
    adapter.load()

    def local() -> object:
        item = SegmentItem(resize_normalise(to_rgb_uint8(image), 1024), np.array([BOX]), 512, 512)
        with torch.inference_mode():
            return adapter.infer([item])

    box = types_pb2.BoxXYXY(x1=BOX[0], y1=BOX[1], x2=BOX[2], y2=BOX[3])
    request = medsam_pb2.SegmentRequest(
        items=[medsam_pb2.SegmentItem(image=types_pb2.Image(array=numpy_to_tensor(image)), boxes=[box])]
    )
    runtime = {"device": "cpu", "max_batch_size": 1, "cpu_threads": THREADS}
    path = write_config(folder, "medsam", model, runtime)
    with serving("medsam", path, folder / "medsam.log") as service:
        stub = medsam_pb2_grpc.MedSAMStub(grpc.insecure_channel(service.address))
        mine = p50(local, n)
        peak_local = (status_kib("VmHWM") - before) / 1024
        theirs = p50(lambda: stub.Segment(request, timeout=600), n)
        assert service.process is not None
        peak_service = status_kib("VmHWM", str(service.process.pid)) / 1024
    adapter.close()
    return row("MedSAM vit_b, 1024² (Segment, 512² image, 1 box)", mine, theirs, peak_service, estimate, peak_local, n)


def biomedclip(folder: Path, n: int) -> list[object]:
    from bench.biomedclip import chest_xray
    from modelyard.biomedclip.config import BiomedCLIPConfig
    from modelyard.biomedclip.model import BiomedCLIPAdapter, HeatmapItem
    from modelyard.biomedclip.preprocess import to_frame
    from modelyard.runtime.arrays import decode_image
    from modelyard.runtime.render import as_rgb_uint8
    from modelyard.v1 import biomedclip_pb2, biomedclip_pb2_grpc, types_pb2

    top_k = 8  # one chunk of 8 masked images: the estimate below is taken at chunk_size 8 too
    model = {**biomedclip_model(folder, top_k=top_k)}
    model["cam"] = {**model["cam"], "chunk_size": top_k}
    config = BiomedCLIPConfig.model_validate(model)
    estimate = BiomedCLIPAdapter.memory_need_mb(config, 1)
    png, prompt = chest_xray(), "is there a nodule in the right lung"
    reset_peak()
    before = status_kib("VmRSS")
    adapter = BiomedCLIPAdapter(config, "cpu")
    adapter.load()

    def local() -> object:
        rgb = as_rgb_uint8(decode_image(types_pb2.Image(encoded=png), Path("/dev/shm"), None, 50_000_000))
        pixels, frame = to_frame(rgb, adapter.image_settings, adapter.config.cam.geometry)
        with torch.inference_mode():
            return adapter.infer([HeatmapItem(pixels, frame, prompt, "gscorecam", top_k)])

    item = biomedclip_pb2.PromptedImage(image=types_pb2.Image(encoded=png), prompt=prompt)
    cam = biomedclip_pb2.CamOptions(method=biomedclip_pb2.CAM_METHOD_GSCORECAM, top_k=top_k)
    runtime = {"device": "cpu", "max_batch_size": 1, "cpu_threads": THREADS}
    path = write_config(folder, "biomedclip", model, runtime)
    with serving("biomedclip", path, folder / "biomedclip.log") as service:
        stub = biomedclip_pb2_grpc.BiomedCLIPStub(grpc.insecure_channel(service.address))
        mine = p50(local, n)
        peak_local = (status_kib("VmHWM") - before) / 1024
        theirs = p50(lambda: stub.Heatmap(biomedclip_pb2.HeatmapRequest(items=[item], cam=cam), timeout=600), n)
        assert service.process is not None
        peak_service = status_kib("VmHWM", str(service.process.pid)) / 1024
    adapter.close()
    name = f"BiomedCLIP ViT-B/16 + PubMedBERT, 224 (Heatmap, gScoreCAM k={top_k})"
    return row(name, mine, theirs, peak_service, estimate, peak_local, n)


def row(name: str, mine: float, theirs: float, peak_service: float, estimate: int, used: float, n: int) -> list[Any]:
    off = (estimate - CONTEXT_MB - used) / used
    return [
        name,
        f"{mine:.2f} s",
        f"{theirs:.2f} s",
        f"{theirs / mine:.3f}x",
        f"{peak_service:.0f} MiB",
        f"{estimate} MiB ({estimate - CONTEXT_MB} without the context)",
        f"{used:.0f} MiB",
        f"{off:+.0%}",
        n,
    ]


HEADER = ["model (random weights)", "in-process p50", "service p50", "ratio (goal ≤ 1.05)", "service peak RSS",
          "memory_need_mb at batch 1", "measured: load + 1 call, CPU", "estimate off", "runs"]  # fmt: skip


MODELS: dict[str, Callable[[Path, int], list[object]]] = {"medsam": medsam, "biomedclip": biomedclip}


def measured_alone(name: str, n: int) -> list[object]:
    """One model's row from a fresh process: memory an earlier model freed would otherwise be reused without
    raising the RSS, and its load would look smaller than it is."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.real_size", "--n", str(n), "--only", name],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    row: list[object] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3, help="timed calls per path (after one warm-up)")
    parser.add_argument("--only", choices=sorted(MODELS), help="measure one model here and print its row as JSON")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.only:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(MODELS[args.only](Path(tmp), args.n)))
        return 0
    rows = [measured_alone(name, args.n) for name in MODELS]
    body = "\n".join(
        [
            "## Real-size architectures on the CPU (issue 16)",
            "",
            f"Machine: {machine()}, torch {torch.__version__}, {THREADS} intra-op threads in each process (the "
            "machine was shared with other jobs; the paths take turns). Random weights, real sizes, through the real "
            "loading path; each model measured in a fresh process. Measured = peak RSS while loading and calling "
            "minus RSS before loading (the GPU "
            "estimate's CUDA-context term left out), the proxy until a GPU measures it (bench/gpu/check.sh).",
            "",
            table(HEADER, rows),
        ]
    )
    write_section("real_size", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

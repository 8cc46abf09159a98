"""What the GPU checks share: real-size random-weight models, service configs, services with metrics, readings
of GPU memory (NVML, the service's own Info and Prometheus metrics), the test images, timing."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelyard.runtime.arrays import SHM_DIR
from modelyard.runtime.devices import read_gpus
from modelyard.runtime.launch import LocalService, free_port

# BiomedCLIP's released configuration (its open_clip_config.json): ViT-B/16 at 224 with a linear projection to 512,
# PubMedBERT (BERT-base, uncased vocabulary of 30522) with an MLP projection, CLS pooling, 256 tokens.
BIOMEDCLIP_REAL = {"timm_model": "vit_base_patch16_224", "image_size": 224, "embed_dim": 512, "context_length": 256}
PUBMEDBERT = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
}


@dataclass
class Row:
    """One line of the results table."""

    check: str
    promise: str
    measured: str = ""
    goal: str = ""
    status: str = "not run"  # pass | fail | measured | not run: <why> | error
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status in ("fail", "error")


def judge(row: Row, ok: bool) -> Row:
    row.status = "pass" if ok else "fail"
    return row


def medsam_model(folder: Path, architecture: str = "vit_b") -> dict[str, Any]:
    """The `model:` section of a MedSAM with random weights at real size (vit_b: 1024 px, 94 M parameters)."""
    from modelyard.medsam.architecture import write_random_checkpoint
    from modelyard.medsam.config import PRESETS

    path = folder / f"medsam_{architecture}_random.pth"
    if not path.exists():
        write_random_checkpoint(path, PRESETS[architecture], seed=0)
    return {"checkpoint": str(path), "architecture": architecture}


def tiny_medsam_model(folder: Path) -> dict[str, Any]:
    from modelyard.medsam.architecture import TINY, write_random_checkpoint

    path = write_random_checkpoint(folder / "medsam_tiny.pth", TINY, seed=0)
    return {"checkpoint": str(path), "architecture": TINY.model_dump(mode="json")}


def biomedclip_model(folder: Path, top_k: int = 300) -> dict[str, Any]:
    """The `model:` section of a BiomedCLIP in its real configuration with random weights (~196 M parameters)."""
    from modelyard.biomedclip.architecture import write_tiny_model

    files = write_tiny_model(folder / "biomedclip_real", seed=0, bert=PUBMEDBERT, **BIOMEDCLIP_REAL)  # type: ignore[arg-type]
    return {"model_dir": str(files["model_dir"]), "text_dir": str(files["text_dir"]), "cam": {"default_top_k": top_k}}


def write_config(folder: Path, name: str, model: dict[str, Any], runtime: dict[str, Any]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": model, "runtime": runtime}))
    return path


class Service(LocalService):
    """A `modelyard serve` process with its metrics port and log in the run's folder."""

    def __init__(self, service: str, label: str, config: Path, logs: Path) -> None:
        super().__init__(service, config, metrics_port=free_port(), log_path=logs / f"{label}.log")
        self.label = label

    def metric(self, name: str) -> float:
        """The sum of a Prometheus metric's samples (0 when absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", re.M)
        return sum(float(v) for v in pattern.findall(text))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def start_all(services: list[Service], timeout: float = 240.0) -> None:
    """Start every service at once (their imports and loads overlap), then wait for each."""
    for service in services:
        service.start()
    for service in services:
        service.wait_until_serving(timeout)


def nvml_used_mb(index: int = 0) -> int:
    snapshot = read_gpus()
    return snapshot.gpus[index].used_mb if snapshot.available else 0


def process_gpu_mb(pid: int) -> float | None:
    """GPU memory NVML accounts to one process (None where NVML cannot say, e.g. inside some sandboxes)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    return float(proc.usedGpuMemory) / 2**20
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None
    return None


def test_images(count: int, size: int = 512, seed: int = 0) -> list[np.ndarray]:
    """Grey scans with a bright blob each, different per image (so masks differ)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for _ in range(count):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.08, 0.2)
        image = np.full((size, size), 30.0, np.float32)
        image[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 200
        images.append(np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
    return images


BOX = (96.0, 96.0, 416.0, 416.0)  # on the 512-px test images


def rate(call: Callable[[], int], seconds: float, min_calls: int = 3) -> float:
    """Items per second of repeated `call()` (each returns how many items it did) for about `seconds`."""
    done, calls, started = 0, 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - started < seconds:
        done += call()
        calls += 1
    return done / (time.perf_counter() - started)


class MedSAMCaller:
    """Segment through the service with every image in shared memory and the masks coming back the same way
    (the same-host fast path), one box per image; inline bytes where the service cannot open this host's regions."""

    def __init__(self, address: str, max_images: int = 8, side: int = 512) -> None:
        import grpc

        from modelyard.runtime.arrays import SharedRegion
        from modelyard.runtime.client import SharedMemoryClient, channel
        from modelyard.v1 import medsam_pb2_grpc

        self.channel = channel(address)
        self.stub = medsam_pb2_grpc.MedSAMStub(self.channel)
        self.grpc = grpc
        probe = SharedMemoryClient(self.stub.Info, SHM_DIR)
        self.shared = probe.enabled
        probe.close()
        room = max_images * side * side + 64 * max_images
        self.inputs = SharedRegion.create(room, SHM_DIR) if self.shared else None
        self.outputs = SharedRegion.create(room, SHM_DIR) if self.shared else None

    def request(self, images: list[np.ndarray]) -> Any:
        from modelyard.runtime.arrays import numpy_to_tensor
        from modelyard.v1 import medsam_pb2, types_pb2

        items, offset = [], 0
        for image in images:
            if self.inputs is not None:
                self.inputs.write(offset, image)
                tensor = types_pb2.Tensor(
                    shared=types_pb2.SharedArray(
                        region=self.inputs.name, offset=offset, dtype=image.dtype.name, shape=image.shape
                    )
                )
                offset += (image.nbytes + 63) // 64 * 64
            else:
                tensor = numpy_to_tensor(image)
            box = types_pb2.BoxXYXY(x1=BOX[0], y1=BOX[1], x2=BOX[2], y2=BOX[3])
            items.append(medsam_pb2.SegmentItem(image=types_pb2.Image(array=tensor), boxes=[box]))
        out = types_pb2.OutputRegion(region=self.outputs.name, capacity=self.outputs.size) if self.outputs else None
        return medsam_pb2.SegmentRequest(items=items, output_region=out)

    def segment(self, images: list[np.ndarray], timeout: float = 120.0) -> list[np.ndarray]:
        """The (1, H, W) mask of each image, copied out of the output region."""
        from modelyard.runtime.arrays import tensor_to_numpy

        response = self.stub.Segment(self.request(images), timeout=timeout)
        masks = []
        for result in response.results:
            if result.masks.WhichOneof("payload") == "shared" and self.outputs is not None:
                msg = result.masks.shared
                masks.append(self.outputs.view(msg.offset, np.dtype(msg.dtype), tuple(msg.shape)).copy())
            else:
                masks.append(tensor_to_numpy(result.masks, SHM_DIR))
        return masks

    def info(self) -> Any:
        from modelyard.v1 import types_pb2

        return self.stub.Info(types_pb2.InfoRequest(), timeout=30)

    def close(self) -> None:
        for region in (self.inputs, self.outputs):
            if region is not None:
                region.close()
        self.channel.close()

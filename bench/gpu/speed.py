"""Check 6: MedSAM through the service (shared memory) vs in-process, dynamic batching, BiomedCLIP gScoreCAM."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.gpu.stack import BOX, MedSAMCaller, Row, Service, judge, rate, test_images

SEED_IMAGES_PER_S = 0.06  # the seed pipeline's gScoreCAM (k=300) on an RTX 3090


def load_in_process(model: dict[str, Any], device: str = "cuda:0") -> Any:
    from modelyard.medsam.config import MedSAMConfig
    from modelyard.medsam.model import MedSAMAdapter

    adapter = MedSAMAdapter(MedSAMConfig.model_validate(model), device)
    adapter.load()
    return adapter


def segment_items(images: list[np.ndarray], size: int = 1024) -> list[Any]:
    """What the servicer hands the model: MedSAM's preprocessing of each image, one box each."""
    from modelyard.medsam.model import SegmentItem
    from modelyard.medsam.preprocess import resize_normalise, to_rgb_uint8

    return [
        SegmentItem(resize_normalise(to_rgb_uint8(im), size), np.array([BOX]), im.shape[0], im.shape[1])
        for im in images
    ]


def service_vs_in_process(service: Service, adapter: Any, seconds: float = 3.0) -> Row:
    import torch

    images = test_images(8, seed=7)

    def local() -> int:
        with torch.inference_mode():
            return len(adapter.infer(segment_items(images)))

    caller = MedSAMCaller(service.address)
    try:
        ours, theirs = [], []
        for _ in range(2):  # taking turns, so both paths see the same machine
            theirs.append(rate(local, seconds))
            ours.append(rate(lambda: len(caller.segment(images)), seconds))
        shared = caller.shared
    finally:
        caller.close()
    remote, inproc = float(np.mean(ours)), float(np.mean(theirs))
    row = Row(
        "6", "MedSAM vit_b 1024² images/s through the service (shared memory) vs in-process, same GPU", goal="≥ 0.95x"
    )
    row.measured = (
        f"{remote:.1f} vs {inproc:.1f} images/s ({remote / inproc:.3f}x), batches of 8, "
        f"{'shared memory' if shared else 'inline bytes (shared memory refused!)'}"
    )
    row.numbers = {"service_images_per_s": remote, "in_process_images_per_s": inproc, "shared_memory": shared}
    return judge(row, shared and remote >= 0.95 * inproc)


def concurrent_rate(service: Service, clients: int = 8, seconds: float = 5.0) -> float:
    """Images/s of `clients` threads each sending one image per call."""
    images = test_images(clients, seed=8)
    callers = [MedSAMCaller(service.address) for _ in range(clients)]
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        callers[i].segment([images[i]])  # warm
        while time.perf_counter() < stop:
            callers[i].segment([images[i]])
            counts[i] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for caller in callers:
        caller.close()
    return sum(counts) / elapsed


def batching(batched: Service, unbatched: Service) -> Row:
    one = concurrent_rate(unbatched)
    items, batches = batched.metric("modelyard_batch_size_sum"), batched.metric("modelyard_batch_size_count")
    many = concurrent_rate(batched)
    items, batches = (
        batched.metric("modelyard_batch_size_sum") - items,
        batched.metric("modelyard_batch_size_count") - batches,
    )
    avg = items / max(1.0, batches)
    row = Row(
        "6",
        "dynamic batching: 8 concurrent clients, one image per call, max_batch 8 + 5 ms wait vs batch 1",
        goal="gain > 1x",
    )
    row.measured = f"{many:.1f} vs {one:.1f} images/s ({many / one:.2f}x), mean batch {avg:.1f}"
    row.numbers = {"batched_images_per_s": many, "unbatched_images_per_s": one, "mean_batch": avg}
    return judge(row, many > one)


def gscorecam(service: Service, images: int = 4) -> Row:
    import grpc

    from bench.biomedclip import chest_xray
    from modelyard.v1 import biomedclip_pb2, biomedclip_pb2_grpc, types_pb2

    with grpc.insecure_channel(service.address) as chan:
        stub = biomedclip_pb2_grpc.BiomedCLIPStub(chan)
        cam = biomedclip_pb2.CamOptions(method=biomedclip_pb2.CAM_METHOD_GSCORECAM, top_k=300)

        def call(seed: int) -> None:
            item = biomedclip_pb2.PromptedImage(
                image=types_pb2.Image(encoded=chest_xray(seed=seed)), prompt="is there a nodule in the right lung"
            )
            stub.Heatmap(biomedclip_pb2.HeatmapRequest(items=[item], cam=cam), timeout=300)

        call(0)  # warm
        started = time.perf_counter()
        for seed in range(1, images + 1):
            call(seed)
        per_image = (time.perf_counter() - started) / images
    row = Row(
        "6",
        "BiomedCLIP (ViT-B/16 + PubMedBERT, 224) gScoreCAM k=300 through the service, s/image",
        goal=f"seed: {SEED_IMAGES_PER_S} images/s on an RTX 3090",
    )
    row.measured = (
        f"{per_image:.2f} s/image = {1 / per_image:.2f} images/s ({(1 / per_image) / SEED_IMAGES_PER_S:.0f}x the seed)"
    )
    row.numbers = {"seconds_per_image": per_image, "images": images}
    row.status = "measured"
    return row


def speed(s8: Service, s1: Service, biomedclip: Service, adapter: Any) -> list[Row]:
    return [service_vs_in_process(s8, adapter), batching(s8, s1), gscorecam(biomedclip)]


__all__ = ["Path", "load_in_process", "segment_items", "speed"]

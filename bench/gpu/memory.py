"""Checks 3, 4 and 5: the memory governor against real out-of-memory, memory_fraction caps, memory flatness."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from bench.gpu.filler import Filler
from bench.gpu.stack import MedSAMCaller, Row, Service, judge, nvml_used_mb, process_gpu_mb, rate, test_images

BACKOFFS = "modelyard_oom_backoffs_total"
MIB = 2**20


def activation_mb(adapter: Any, images: list[np.ndarray]) -> float:
    """Peak memory one more image adds to a MedSAM call, measured in this process (batch 2 minus batch 1)."""
    import torch

    from bench.gpu.speed import segment_items

    peaks = []
    for count in (1, 2):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.inference_mode():
            adapter.infer(segment_items(images[:count]))
        peaks.append(torch.cuda.max_memory_allocated() - base)
    return (peaks[1] - peaks[0]) / MIB


def backoff(service: Service, reference: Service, adapter: Any) -> list[Row]:
    images = test_images(8, seed=3)
    per_image = activation_mb(adapter, images)
    caller = MedSAMCaller(service.address)
    rows = []
    try:
        unbatched = [caller.segment([image])[0] for image in images]
        before = service.metric(BACKOFFS)
        with Filler() as filler:
            # Room for about half an image's activations beyond what the service has cached from batch 1: a batch
            # of 8 cannot fit, and once the governor has emptied its cache and halved down, batch 1 does.
            free, held = filler.leave(int(per_image / 2))
            batched = caller.segment(images)
            after = service.metric(BACKOFFS)
            fitted = caller.info().fitted_batch_size
            caller.segment(images)  # the fitted size is remembered: no new halvings (20 successes before a probe)
            again = service.metric(BACKOFFS)
            differing = int(sum(np.count_nonzero(a != b) for a, b in zip(batched, unbatched, strict=True)))
            foreground = float(np.mean([m.mean() for m in unbatched]))
            row = Row(
                "3",
                "real OOM: a batch of 8 that does not fit is answered, masks = unbatched, backoff counted, "
                "fitted batch remembered",
                goal="identical masks, backoffs > 0, fitted < 8, no new backoffs",
            )
            row.measured = (
                f"{free} MiB free (one image needs ~{per_image:.0f} MiB more): {len(batched)} masks, "
                f"{differing} pixels differ from unbatched (masks {foreground:.1%} foreground), "
                f"{after - before:.0f} backoffs, fitted {fitted}, next call +{again - after:.0f} backoffs"
            )
            row.numbers = {
                "free_mb": free,
                "filler_mb": held,
                "per_image_mb": per_image,
                "differing_pixels": differing,
                "backoffs": after - before,
                "fitted": fitted,
                "backoffs_next_call": again - after,
            }
            rows.append(judge(row, differing == 0 and after > before and fitted < 8 and again == after))
            rows.append(exhausted(service, filler))
        rows.append(recovery(service, reference, caller))
    finally:
        caller.close()
    return rows


def exhausted(service: Service, filler: Filler) -> Row:
    """Nothing left even for batch 1: RESOURCE_EXHAUSTED with the numbers, and the service stays SERVING."""
    import grpc

    from modelyard.runtime.arrays import numpy_to_tensor
    from modelyard.runtime.client import channel, wait_until_serving
    from modelyard.v1 import medsam_pb2, medsam_pb2_grpc, types_pb2

    free, _ = filler.leave(0)
    # One 4096² image with 256 boxes: its masks alone are 256 x 4096² floats (16 GiB) on the device, far beyond
    # what the service keeps cached, so even batch 1 cannot fit.
    image = np.full((4096, 4096), 90, np.uint8)
    boxes = [types_pb2.BoxXYXY(x1=8.0 * i, y1=8.0 * i, x2=2048.0 + 8 * i, y2=2048.0 + 8 * i) for i in range(256)]
    request = medsam_pb2.SegmentRequest(
        items=[medsam_pb2.SegmentItem(image=types_pb2.Image(array=numpy_to_tensor(image)), boxes=boxes)]
    )
    row = Row(
        "3",
        "nothing left even for batch 1: RESOURCE_EXHAUSTED with free and needed MiB; service stays SERVING",
        goal="RESOURCE_EXHAUSTED, numbers, SERVING",
    )
    with channel(service.address) as chan:
        try:
            medsam_pb2_grpc.MedSAMStub(chan).Segment(request, timeout=120)
            code, details = "OK", "answered"
        except grpc.RpcError as exc:
            code, details = exc.code().name, exc.details() or ""
        try:
            wait_until_serving(chan, "", timeout=10)
            serving = True
        except TimeoutError:
            serving = False
    numbers = "MiB free of" in details and "tried to allocate" in details
    row.measured = f"{code} with {free} MiB free: “{details[:240]}”; health {'SERVING' if serving else 'not SERVING'}"
    row.numbers = {"code": code, "details": details, "free_mb": free, "serving": serving}
    return judge(row, code == "RESOURCE_EXHAUSTED" and numbers and serving)


def recovery(service: Service, reference: Service, caller: MedSAMCaller) -> Row:
    """Memory freed: the governor probes back up; 8-image calls reach ≥ 0.9x a service that never backed off."""
    images = test_images(8, seed=4)
    calls = 0
    # probe_up_after is 20 in this service's config: 1 -> 2 -> 4 -> 8 takes 60 chunks, about 18 calls of 8 images.
    while caller.info().fitted_batch_size < 8 and calls < 60:
        caller.segment(images)
        calls += 1
    fitted = caller.info().fitted_batch_size
    fresh = MedSAMCaller(reference.address)
    try:
        ours = rate(lambda: len(caller.segment(images)), 4.0)
        theirs = rate(lambda: len(fresh.segment(images)), 4.0)
    finally:
        fresh.close()
    row = Row(
        "3",
        "memory freed: throughput recovers to ≥ 0.9x a service started at the batch that now fits (8)",
        goal="≥ 0.9x",
    )
    row.measured = (
        f"fitted back to {fitted} after {calls} calls; {ours:.1f} vs {theirs:.1f} images/s ({ours / theirs:.2f}x)"
    )
    row.numbers = {"fitted": fitted, "probe_calls": calls, "images_per_s": ours, "reference_images_per_s": theirs}
    return judge(row, ours >= 0.9 * theirs)


def caps(services: list[tuple[Service, float]]) -> list[Row]:
    """Two services capped by memory_fraction on one GPU, each sent batches of 8 that need more than its cap."""
    import torch

    total = torch.cuda.mem_get_info(0)[1]
    images = test_images(8, seed=5)
    parts, ok, numbers = [], True, {}
    for service, fraction in services:
        caller = MedSAMCaller(service.address)
        try:
            for _ in range(3):
                caller.segment(images)
            info = caller.info()
        finally:
            caller.close()
        cap_mb = fraction * total / MIB
        reserved_mb = info.gpu_memory_reserved_bytes / MIB
        nvml_mb = process_gpu_mb(service.process.pid) if service.process else None
        ok &= reserved_mb <= cap_mb
        nvml = f", NVML {nvml_mb:.0f} MiB incl. CUDA context" if nvml_mb is not None else ""
        parts.append(
            f"{service.label}: cap {fraction:.0%} = {cap_mb:.0f} MiB, reserved {reserved_mb:.0f}{nvml}, "
            f"fitted batch {info.fitted_batch_size}"
        )
        numbers[service.label] = {
            "cap_mb": cap_mb,
            "reserved_mb": reserved_mb,
            "nvml_mb": nvml_mb,
            "fitted": info.fitted_batch_size,
        }
    row = Row(
        "4",
        "memory_fraction: two services on one GPU, each answers batches of 8 and stays under its cap",
        goal="reserved ≤ cap",
        measured="; ".join(parts),
        numbers=numbers,
    )
    return [judge(row, ok)]


def flat(service: Service, calls: int = 1000, warm: int = 100, clients: int = 8) -> list[Row]:
    """1000 Segment calls from 8 concurrent clients: allocated, reserved (torch) and NVML used grow < 1 %."""
    images = test_images(clients, seed=6)
    callers = [MedSAMCaller(service.address) for _ in range(clients)]
    snapshots = []

    def burst(count: int) -> None:
        shares = [count // clients + (i < count % clients) for i in range(clients)]

        def work(i: int) -> None:
            for _ in range(shares[i]):
                callers[i].segment([images[i]])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    try:
        for count in (warm, calls - warm):
            burst(count)
            info = callers[0].info()
            pid_mb = process_gpu_mb(service.process.pid) if service.process else None
            snapshots.append(
                {
                    "allocated": info.gpu_memory_allocated_bytes / MIB,
                    "reserved": info.gpu_memory_reserved_bytes / MIB,
                    "nvml_used": float(nvml_used_mb()),
                    "nvml_process": pid_mb,
                }
            )
    finally:
        for caller in callers:
            caller.close()
    first, last = snapshots
    growth = {k: (last[k] - first[k]) / first[k] for k in first if first[k]}
    row = Row(
        "5",
        f"memory flat over {calls} Segment calls ({clients} clients): torch allocated/reserved, NVML used",
        goal="each grows < 1 %",
        numbers={"after_warm": first, "after_all": last, "growth": growth},
    )
    row.measured = (
        "; ".join(f"{k} {first[k]:.0f} → {last[k]:.0f} MiB ({growth[k]:+.2%})" for k in growth)
        + f" (after {warm} → {calls} calls)"
    )
    return [judge(row, all(g < 0.01 for g in growth.values()))]

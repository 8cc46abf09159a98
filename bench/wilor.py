"""WiLoR's CPU reference backend (MediaPipe Hands): hands per second at 640x480, in-process and over gRPC.

Runs in wilor's own environment: `make bench-wilor` (= .venv-wilor/bin/python -m bench.wilor [--quick]).
Frames are cut from the hand photograph the tests use (ultralytics 8.1.34's zidane.jpg): one with the pointing
hand, and one composed of that hand and its mirror image (two hands).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from bench.report import machine, table, timed, write_section
from modelyard.demo.assets import HAND_PHOTO, fetch
from modelyard.runtime.launch import LocalService
from modelyard.wilor.client import WiLoRClient
from modelyard.wilor.config import WiLoRConfig
from modelyard.wilor.hands import Query
from modelyard.wilor.model import WiLoRAdapter


def frames() -> dict[str, np.ndarray]:
    photo = np.asarray(Image.open(fetch(HAND_PHOTO)).convert("RGB"))
    one = np.ascontiguousarray(photo[120:600, 640:1280])  # 640x480, the left hand at x 350-520
    two = one.copy()
    two[:, :320] = one[:, ::-1][:, :320]  # its mirror image on the left half: a right hand at x 120-290
    return {"1 hand": one, "2 hands": two}


def rate(call: object, n: int) -> tuple[float, float]:
    """Median and total seconds of `n` calls (after 3 warm-up calls)."""
    assert callable(call)
    samples = timed(call, n, warmup=3)
    return statistics.median(samples), sum(samples)


def row(frame: str, path: str, hands: int, seconds_per_frame: float, frames_per_s: float) -> list[object]:
    return [frame, path, hands, f"{seconds_per_frame * 1000:.1f}", f"{frames_per_s:.1f}", f"{hands * frames_per_s:.1f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    n = 15 if args.quick else 60
    load_before = os.getloadavg()[0]
    images = frames()
    adapter = WiLoRAdapter(WiLoRConfig(), "cpu")
    adapter.load()
    options = adapter.default_options()
    rows = []
    for label, image in images.items():
        hands = len(adapter.infer([Query(image, options)])[0])  # type: ignore[arg-type]
        p50, total = rate(lambda im=image: adapter.infer([Query(im, options)]), n)
        rows.append(row(label, "in-process", hands, p50, n / total))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "data").mkdir()
        batch = 16
        for label, image in images.items():
            np.save(folder / "data" / f"{label.replace(' ', '_')}.npy", np.stack([image] * batch))
        config = folder / "wilor.yaml"
        runtime = {"device": "cpu", "max_batch_size": batch, "data_root": str(folder / "data")}
        config.write_text(yaml.safe_dump({"model": {"backend": "mediapipe"}, "runtime": runtime}))
        with LocalService("wilor", config, log_path=folder / "wilor.log", python=sys.executable) as service:
            client = WiLoRClient(service.address)
            for label, image in images.items():
                hands = len(client.detect([image])[0])
                p50, total = rate(lambda im=image: client.detect([im]), n)
                rows.append(row(label, "gRPC, 1 frame per call (raw RGB)", hands, p50, n / total))
                ref = f"{label.replace(' ', '_')}.npy"
                calls = max(2, n // batch)
                p50, total = rate(lambda r=ref: client.detect_sequence(r), calls)
                path = f"gRPC, sequence of {batch} frames per call"
                rows.append(row(label, path, hands, p50 / batch, calls * batch / total))
            client.close()

    body = "\n".join(
        [
            "## WiLoR (issue 5): CPU reference backend",
            "",
            f"Machine: {machine()}. mediapipe {version('mediapipe')}, model_complexity 1 (full palm and landmark "
            f"models), static-image mode, one model thread. {'QUICK run. ' if args.quick else ''}Frames: 640x480 "
            "cut from ultralytics 8.1.34's zidane.jpg (the test photograph); `2 hands` adds the hand's mirror image.",
            "",
            table(["frame", "path", "hands found", "ms per frame (p50)", "frames/s", "hands/s"], rows),
            "",
            f"Load average (1 min) {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run: the "
            "machine's 2 cores are shared, so numbers move by tens of percent between runs.",
            "",
            "The upstream backend (WiLoR's ViT-H on a GPU) is not measured here: no GPU and no licensed MANO files "
            "on this machine; its maintainers report 15-20 frames/s on an RTX 4090 / A100.",
        ]
    )
    write_section("wilor", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

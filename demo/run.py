"""`make run`: the README's main job. Starts every service and the gateway as local processes (`modelyard up`),
runs both pipelines on generated sample inputs, and prints where everything went.

- medvqa: generated chest X-rays with questions -> BiomedCLIP boxes -> MedSAM masks -> vqa_manifest.csv
- hand3d: an RGB-D clip made from a real photograph with a hand -> TAPIP3D tracks + WiLoR hands -> one HDF5

Real checkpoints are used when present (models/medsam/medsam_vit_b.pth, models/biomedclip/); otherwise tiny
RANDOM-WEIGHT models in the real formats are generated, and the demo says so. TAPIP3D and WiLoR run their CPU
reference backends (lift2d; MediaPipe Hands, whose pretrained weights ship in its wheel).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from modelyard.demo.assets import HAND_PHOTO, fetch
from modelyard.demo.samples import planar_photo_video, write_medvqa_inputs
from modelyard.gateway.client import GatewayClient
from modelyard.ops.local import down, up

MODELS = Path(os.environ.get("MODELYARD_MODELS", "models"))


def _say(text: str) -> None:
    print(f"[modelyard demo] {text}", flush=True)


def _write(path: Path, model: dict[str, Any], runtime: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"model": model, "runtime": {"device": "auto", **runtime}}))
    return path


def medsam_config(config_dir: Path, models: Path) -> tuple[Path, str]:
    real = MODELS / "medsam" / "medsam_vit_b.pth"
    if real.is_file():
        return _write(config_dir / "medsam.yaml", {"checkpoint": str(real.resolve())}, {}), f"MedSAM: {real}"
    from modelyard.medsam.architecture import TINY, write_random_checkpoint

    ckpt = write_random_checkpoint(models / "medsam_tiny_random.pth", TINY)
    model = {"checkpoint": str(ckpt), "architecture": TINY.model_dump(mode="json")}
    return _write(config_dir / "medsam.yaml", model, {"max_batch_size": 2}), (
        f"MedSAM: no checkpoint at {real}, using a tiny RANDOM-WEIGHT model ({ckpt.name}): masks are not meaningful"
    )


def biomedclip_config(config_dir: Path, models: Path) -> tuple[Path, str]:
    real = MODELS / "biomedclip"
    if (real / "open_clip_config.json").is_file():
        return _write(config_dir / "biomedclip.yaml", {"model_dir": str(real.resolve())}, {}), f"BiomedCLIP: {real}"
    from modelyard.biomedclip.architecture import write_tiny_model

    files = write_tiny_model(models / "biomedclip_tiny_random")
    # The tiny model's target layer has 64 channels: gScoreCAM keeps 16 of them (BiomedCLIP's has 768, default 300).
    model = {"model_dir": str(files["model_dir"]), "text_dir": str(files["text_dir"]), "cam": {"default_top_k": 16}}
    return _write(config_dir / "biomedclip.yaml", model, {"max_batch_size": 4}), (
        f"BiomedCLIP: no model at {real}/, using a tiny RANDOM-WEIGHT model: boxes and maps are not meaningful"
    )


def hand_clip(path: Path) -> str:
    photo = np.asarray(Image.open(fetch(HAND_PHOTO)).convert("RGB"))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **planar_photo_video(photo))
    return f"hand3d input: a 12-frame RGB-D clip panning over {HAND_PHOTO.package}'s {Path(HAND_PHOTO.member).name}"


def run_pipeline(client: GatewayClient, pipeline: str, input_rel: str, output_rel: str, options: dict[str, str]) -> Any:
    started = time.monotonic()
    last = None
    for event in client.run(pipeline, input_rel, output_rel, options):
        last = event.job
        if event.HasField("item") and event.item.state in ("done", "failed"):
            detail = event.item.error if event.item.state == "failed" else ""
            _say(f"  {pipeline} item {event.item.position + 1}/{last.total} {event.item.state} {detail}".rstrip())
    assert last is not None
    _say(f"{pipeline}: job {last.id} {last.state} — {last.done} done, {last.failed} failed "
         f"in {time.monotonic() - started:.1f}s")  # fmt: skip
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo-output", help="folder for every output (default: demo-output)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    data, config_dir, state = out / "data", out / "config", out / ".stack"
    if (state / "stack.json").exists():
        down(state)  # a previous demo that was interrupted

    configs: dict[str, Path] = {}
    configs["medsam"], note = medsam_config(config_dir, out / "models")
    _say(note)
    configs["biomedclip"], note = biomedclip_config(config_dir, out / "models")
    _say(note)
    configs["tapip3d"] = _write(config_dir / "tapip3d.yaml", {"backend": "lift2d"}, {"data_root": str(data)})
    configs["wilor"] = _write(config_dir / "wilor.yaml", {"backend": "mediapipe"}, {"data_root": str(data)})
    _say("TAPIP3D: CPU reference backend lift2d (Lucas-Kanade + depth); WiLoR: MediaPipe Hands (no MANO fields)")
    table = write_medvqa_inputs(data / "medvqa", count=4)
    _say(f"medvqa input: {table.relative_to(out)} (4 generated chest X-rays with questions)")
    _say(hand_clip(data / "hand3d" / "clip.npz"))

    _say("starting the services and the gateway as local processes ...")
    started = time.monotonic()
    stack = up(configs, data, state)
    _say(f"stack up in {time.monotonic() - started:.1f}s (logs in {state / 'logs'})")
    try:
        client = GatewayClient(stack["gateway"].address)
        # The pipeline's defaults as a user gets them: TOPK 300 meets the tiny model's 64 channels and is
        # clamped to them, with a note in predictions.jsonl and report.txt.
        medvqa = run_pipeline(client, "medvqa", "medvqa/questions.csv", "out/medvqa", {})
        hand3d = run_pipeline(client, "hand3d", "hand3d/clip.npz", "out/hand3d", {"GRID_SIZE": "12"})
        client.close()
    finally:
        down(state)
    results = data / "out"
    _say("outputs:")
    for job in (medvqa, hand3d):
        for name, value in sorted(job.summary.items()):
            _say(f"  {job.pipeline} {name}: {data / value if '/' in value else value}")
    for h5 in sorted((results / "hand3d").glob("*.h5")):
        _say(f"  hdf5: {h5}")
    ok = medvqa.state == "done" and hand3d.state == "done"
    return 0 if ok else 1

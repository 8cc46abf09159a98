"""`make run`: the README's main job. Starts MedSAM as a local process and segments a sample image.

With a real MedSAM checkpoint (MODELYARD_MEDSAM_CHECKPOINT, or models/medsam/medsam_vit_b.pth) the mask is
meaningful; without one the demo generates a tiny random-weight checkpoint in MedSAM's format and says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from modelyard.gateway.samples import ct_slice
from modelyard.medsam.client import MedSAMClient
from modelyard.runtime.launch import LocalService
from modelyard.runtime.render import overlay_masks

DEFAULT_CHECKPOINT = Path("models/medsam/medsam_vit_b.pth")


def _medsam_config(out: Path) -> tuple[Path, str]:
    real = Path(os.environ.get("MODELYARD_MEDSAM_CHECKPOINT", DEFAULT_CHECKPOINT))
    if real.is_file():
        model = {"checkpoint": str(real.resolve()), "architecture": "vit_b"}
        note = f"real MedSAM checkpoint {real}"
    else:
        from modelyard.medsam.architecture import TINY, write_random_checkpoint

        ckpt = write_random_checkpoint(out / "models" / "medsam_tiny_random.pth", TINY)
        model = {"checkpoint": str(ckpt.relative_to(out)), "architecture": TINY.model_dump(mode="json")}
        note = (
            f"NO real MedSAM checkpoint at {real}: using a tiny RANDOM-WEIGHT MedSAM generated at {ckpt}. "
            "The mask shows the pipeline works, not what MedSAM would segment. Put medsam_vit_b.pth there "
            "(or set MODELYARD_MEDSAM_CHECKPOINT) for real masks."
        )
    config = out / "medsam.yaml"
    config.write_text(yaml.safe_dump({"model": model, "runtime": {"device": "auto", "max_batch_size": 2}}))
    return config, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-output", help="folder for every output (default: demo-output)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    config, note = _medsam_config(out)
    print(f"[modelyard demo] {note}")
    image, box = ct_slice()
    image_path = out / "sample_ct.png"
    Image.fromarray(image).save(image_path)

    started = time.monotonic()
    with LocalService("medsam", config, log_path=out / "logs" / "medsam.log") as service:
        print(f"[modelyard demo] medsam serving on {service.address} (log: {out / 'logs' / 'medsam.log'})")
        client = MedSAMClient(service.address)
        try:
            masks, scores = client.segment(image_path.read_bytes(), [box])
            info = client.info()
        finally:
            client.close()
    mask_path, overlay_path = out / "sample_ct_mask.png", out / "sample_ct_overlay.png"
    Image.fromarray(masks[0] * 255).save(mask_path)
    Image.fromarray(overlay_masks(image, masks, np.array([box]))).save(overlay_path)
    print(f"[modelyard demo] segmented box {box} on {info.device} in {time.monotonic() - started:.1f}s, "
          f"score {scores[0]:.3f}, {int(masks[0].sum())} mask pixels")  # fmt: skip
    print(f"[modelyard demo] input:   {image_path}")
    print(f"[modelyard demo] mask:    {mask_path}")
    print(f"[modelyard demo] overlay: {overlay_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

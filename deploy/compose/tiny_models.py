"""Write the tiny RANDOM-WEIGHT models that deploy/compose/tiny's configs name, inside the service's own image:

    docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/models:/models" -v "$PWD/deploy/compose:/compose:ro" \
        --entrypoint python modelyard/medsam /compose/tiny_models.py medsam      # likewise biomedclip

Paths come from /compose/tiny/<service>.yaml, so configs and files cannot drift apart. Files are written under
a temporary name and renamed, so an interrupted run never leaves a half-written model that looks complete.
Existing models are kept. Weights are random (seeded): the stack runs end to end, its outputs mean nothing.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parent / "tiny"


def _say(text: str) -> None:
    print(f"[modelyard tiny models] {text}", flush=True)


def medsam(model: dict) -> None:
    from modelyard.medsam.architecture import TINY, write_random_checkpoint

    target = Path(model["checkpoint"])
    if target.is_file():
        _say(f"MedSAM: {target} is there")
        return
    partial = target.with_name(target.name + ".partial")
    write_random_checkpoint(partial, TINY)
    partial.rename(target)
    _say(f"MedSAM: wrote a tiny RANDOM-WEIGHT checkpoint {target} (masks from it are not meaningful)")


def biomedclip(model: dict) -> None:
    from modelyard.biomedclip.architecture import write_tiny_model

    model_dir, text_dir = Path(model["model_dir"]), Path(model["text_dir"])
    if model_dir.is_dir() and text_dir.is_dir():
        _say(f"BiomedCLIP: {model_dir} is there")
        return
    partial = model_dir.parent / ".biomedclip.partial"
    shutil.rmtree(partial, ignore_errors=True)
    files = write_tiny_model(partial)
    for written, target in ((files["model_dir"], model_dir), (files["text_dir"], text_dir)):
        shutil.rmtree(target, ignore_errors=True)
        written.rename(target)
    partial.rmdir()
    _say(f"BiomedCLIP: wrote a tiny RANDOM-WEIGHT model {model_dir} (boxes and maps are not meaningful)")


WRITERS = {"medsam": medsam, "biomedclip": biomedclip}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in WRITERS:
        print(f"usage: tiny_models.py {{{'|'.join(WRITERS)}}}", file=sys.stderr)
        return 2
    service = argv[0]
    model = yaml.safe_load((CONFIGS / f"{service}.yaml").read_text())["model"]
    WRITERS[service](model)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

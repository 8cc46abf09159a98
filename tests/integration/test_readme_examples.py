"""Every Python example of the README's SDK section runs, as written, against a local tiny stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelyard.demo.assets import HAND_PHOTO, fetch
from modelyard.demo.run import _write, biomedclip_config, medsam_config
from modelyard.demo.samples import planar_photo_video, write_medvqa_inputs
from modelyard.ops.local import down, up

README = Path(__file__).resolve().parents[2] / "README.md"


def sdk_examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Python SDK", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


EXAMPLES = sdk_examples()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder where `modelyard up` runs the four tiny services and the gateway, with the examples' inputs."""
    here = tmp_path_factory.mktemp("readme")
    configs = here / "configs"
    table = write_medvqa_inputs(here / "my-study", count=2)
    first = next(p for p in sorted(table.parent.rglob("*.png")))
    Image.open(first).convert("RGB").resize((64, 64)).save(here / "scan.png")
    photo = Image.open(fetch(HAND_PHOTO)).convert("RGB")
    photo.save(here / "hand.jpg")
    np.savez(here / "clip.npz", **planar_photo_video(np.asarray(photo)))
    services = {
        "medsam": medsam_config(configs, here / "models")[0],
        "biomedclip": biomedclip_config(configs, here / "models")[0],
        "tapip3d": _write(configs / "tapip3d.yaml", {"backend": "lift2d"}, {"data_root": str(here)}),
        "wilor": _write(configs / "wilor.yaml", {"backend": "mediapipe"}, {"data_root": str(here)}),
    }
    up(services, here, here / ".modelyard")
    try:
        yield here
    finally:
        down(here / ".modelyard")


def test_the_readme_has_an_example_for_the_gateway_and_each_service_client() -> None:
    clients = ("GatewayClient", "MedSAMClient", "BiomedCLIPClient", "TAPIP3DClient", "WiLoRClient")
    assert all(any(name in example for example in EXAMPLES) for name in clients)


@pytest.mark.parametrize("example", EXAMPLES, ids=[re.search(r"import (\w+Client)", e).group(1) for e in EXAMPLES])  # type: ignore[union-attr]
def test_a_readme_example_runs_as_written(stack: Path, example: str) -> None:
    env = {**os.environ, "MODELYARD_MODELS": str(stack / "no-models")}
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=stack, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() and "Traceback" not in result.stderr
    assert "start the stack first" not in result.stdout and "items failed" not in result.stdout

"""`make run`'s demo runs in CI and its outputs are checked, not just produced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def test_the_demo_segments_the_sample_and_says_where_it_wrote(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "modelyard.gateway.demo", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "RANDOM-WEIGHT" in run.stdout  # without a real checkpoint it says so plainly
    mask = np.asarray(Image.open(tmp_path / "sample_ct_mask.png"))
    image = np.asarray(Image.open(tmp_path / "sample_ct.png"))
    overlay = np.asarray(Image.open(tmp_path / "sample_ct_overlay.png"))
    assert mask.shape == image.shape and set(np.unique(mask)) <= {0, 255}
    assert overlay.shape == (*image.shape, 3)
    for name in ("sample_ct_mask.png", "sample_ct_overlay.png"):
        assert str(tmp_path / name) in run.stdout

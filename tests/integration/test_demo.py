"""`make run`'s demo runs in CI and its outputs are checked, not just produced."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np


def test_the_demo_runs_both_pipelines_through_the_local_stack(tmp_path: Path) -> None:
    env = {**os.environ, "MODELYARD_MODELS": str(tmp_path / "no-models")}
    run = subprocess.run(
        [sys.executable, "-m", "modelyard.gateway.demo", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("RANDOM-WEIGHT") == 2  # without real checkpoints it says so plainly
    out = tmp_path / "data" / "out"

    manifest = out / "medvqa" / "vqa_manifest.csv"
    rows = list(csv.reader(manifest.open()))
    assert rows[0] == ["image_path", "question", "answer"] and len(rows) == 5
    assert all((out / "medvqa" / r[0]).is_file() for r in rows[1:])
    assert str(manifest) in run.stdout

    h5_path = out / "hand3d" / "clip.h5"
    assert f"hdf5: {h5_path}" in run.stdout
    with h5py.File(h5_path) as h5:
        assert h5["video"].shape == (12, 270, 480, 3)
        assert h5["hands/left/valid"][:].all()  # the photo's pointing hand is a left hand, in every frame
        assert not h5["hands/right/valid"][:].any()
        points, visible = h5["tracks/points"][:], h5["tracks/visibility"][:]
        # The scene is a photo on a static wall: in world coordinates visible tracks stay put (within 2 cm).
        drift = np.linalg.norm(points - points[:1], axis=-1)[visible & visible[:1]]
        assert visible.mean() > 0.8 and np.median(drift) < 0.02
        assert h5["tracks"].attrs["backend"] == "lift2d" and h5["hands"].attrs["backend"].startswith("mediapipe")
    assert not (tmp_path / ".stack" / "stack.json").exists()  # the stack was taken down

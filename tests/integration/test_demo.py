"""`make run`'s demo runs in CI and its outputs are checked, not just produced."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np


def test_the_demo_runs_both_pipelines_through_the_local_stack(tmp_path: Path) -> None:
    env = {**os.environ, "MODELYARD_MODELS": str(tmp_path / "no-models")}
    run = subprocess.run(
        [sys.executable, "-m", "modelyard.demo", "--out", str(tmp_path)],
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
    # The pipeline's defaults as the README's quick start uses them: TOPK 300 on the tiny model's 64 channels.
    predictions = [json.loads(line) for line in (out / "medvqa" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and {p["top_k"] for p in predictions} == {64}
    assert all("TOPK 300 exceeds the 64 channels" in " ".join(p["notes"]) for p in predictions)
    for record in predictions:  # which models made it, and that they are random
        assert set(record["models"]) == {"biomedclip", "medsam"}
        for info in record["models"].values():
            assert info["random_weights"] is True and len(info["checkpoint_sha256"]) == 64 and info["checkpoint"]
    report = (out / "medvqa" / "report.txt").read_text()
    assert report.count("RANDOM WEIGHTS") == 2 and "BiomedCLIP: " in report and "MedSAM: " in report
    assert "gScoreCAM top_k used: 64 (TOPK 300)" in report

    h5_path = out / "hand3d" / "clip.h5"
    assert f"hdf5: {h5_path}" in run.stdout
    with h5py.File(h5_path) as h5:
        assert h5["video"].shape == (12, 270, 480, 3)
        assert h5["hands/left/valid"][:].all()  # the photo's pointing hand is a left hand, in every frame
        assert not h5["hands/right/valid"][:].any()
        # One layout whatever was detected: the side never seen has every filled field, all NaN.
        filled = set(h5["hands"].attrs["filled_fields"].split(","))
        assert {"keypoints_2d", "keypoints_3d"} <= filled
        for side in ("left", "right"):
            assert {"valid", "box", "score", "focal_length", "keypoints_2d", "keypoints_3d"} <= set(h5[f"hands/{side}"])
        assert h5["hands/right/keypoints_3d"].shape == (12, 21, 3) and np.isnan(h5["hands/right/keypoints_3d"][:]).all()
        assert not np.isnan(h5["hands/left/keypoints_3d"][:]).any()
        points, visible = h5["tracks/points"][:], h5["tracks/visibility"][:]
        # The scene is a photo on a static wall: in world coordinates visible tracks stay put (within 2 cm).
        drift = np.linalg.norm(points - points[:1], axis=-1)[visible & visible[:1]]
        assert visible.mean() > 0.8 and np.median(drift) < 0.02
        assert h5["tracks"].attrs["backend"] == "lift2d" and h5["hands"].attrs["backend"].startswith("mediapipe")
    assert not (tmp_path / ".stack" / "stack.json").exists()  # the stack was taken down

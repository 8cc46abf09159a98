"""The commands the README promises: up, run (progress and summary), jobs, pipelines, down."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelyard.demo.samples import write_medvqa_inputs
from tests.conftest import write_config


def modelyard(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard.runtime.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_up_run_jobs_down(tmp_path: Path, tiny_model_section: dict) -> None:
    data = tmp_path / "data"
    write_medvqa_inputs(data / "vqa", count=3)
    write_config(tmp_path / "configs", tiny_model_section, {"max_batch_size": 2}, "medsam.yaml")
    up = modelyard("up", "--config-dir", "configs", "--data-root", "data", cwd=tmp_path)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "medsam" in up.stdout and "gateway" in up.stdout
    try:
        run = modelyard(
            "run", "medvqa", "--input", "data/vqa/questions.csv", "--out", "data/runs/seg",
            "--option", "MODE=gold", "--option", "STAGE=segmentation", cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert "done: 3 done, 0 failed, 0 not run; output: runs/seg" in run.stdout
        assert "manifest: runs/seg/vqa_manifest.csv" in run.stdout
        assert (data / "runs" / "seg" / "vqa_manifest.csv").is_file()
        again = modelyard("run", "medvqa", "--input", "data/vqa/questions.csv", "--out", "data/runs/seg",
                          "--option", "MODE=gold", "--option", "STAGE=segmentation", cwd=tmp_path)  # fmt: skip
        assert "resuming job" in again.stdout and "3 of 3 already done" in again.stdout
        jobs = modelyard("jobs", "list", cwd=tmp_path)
        assert jobs.returncode == 0 and "medvqa" in jobs.stdout and "3/3 done" in jobs.stdout
        outside = modelyard("run", "medvqa", "--input", str(tmp_path / "configs" / "medsam.yaml"), "--out", "x",
                            cwd=tmp_path)  # fmt: skip
        assert outside.returncode != 0 and "outside the stack's data root" in outside.stderr
        pipelines = modelyard("pipelines", cwd=tmp_path)
        assert "CAM_THRESHOLD = '0.45'" in pipelines.stdout and "hand3d" in pipelines.stdout
    finally:
        down = modelyard("down", cwd=tmp_path)
    assert down.returncode == 0 and "gateway" in down.stdout
    assert not (tmp_path / ".modelyard" / "stack.json").exists()

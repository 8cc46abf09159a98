"""Outputs the stack writes are readable by the host user: they follow the process umask (0644 under 022),
not mkstemp's 0600."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from modelyard.gateway import files
from tests.other_user import as_user

NOBODY = 65534


@pytest.fixture()
def shared_folder() -> Iterator[Path]:
    """A folder any user can enter (pytest's tmp_path is 0700), as a mounted data folder is."""
    folder = Path(tempfile.mkdtemp(prefix="modelyard-outputs-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def written(folder: Path) -> list[Path]:
    outputs = folder / "runs" / "seg"
    paths = [
        files.write_text(outputs / "report.txt", "medvqa job\n"),
        files.write_png(outputs / "masks" / "a_mask.png", np.zeros((4, 4), np.uint8)),
        files.write_jsonl(outputs / "predictions.jsonl", [{"a": 1}]),
    ]

    def h5(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f["x"] = np.arange(3)

    paths.append(files.write_atomic(outputs / "clip.h5", h5))
    return paths


def test_outputs_get_the_mode_the_umask_gives_new_files(shared_folder: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    for path in written(shared_folder):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
def test_another_user_can_read_every_output(shared_folder: Path) -> None:
    for path in written(shared_folder):
        result = subprocess.run(as_user(NOBODY, ["cat", str(path)]), capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == path.read_bytes()

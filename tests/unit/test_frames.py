"""Frame sequences behind data references: folders, arrays, videos; windows, limits and confinement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.frames import read_frames

FRAMES = np.stack([np.full((24, 32, 3), 10 * i, np.uint8) for i in range(12)])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(FRAMES):
        Image.fromarray(frame).save(folder / f"f_{i}.png")  # f_2 must come before f_10
    (folder / "notes.txt").write_text("not a frame")
    np.save(tmp_path / "clip.npy", FRAMES)
    np.savez(tmp_path / "clip.npz", video=FRAMES, depths=np.zeros(3))
    np.savez(tmp_path / "two.npz", a=FRAMES, b=FRAMES)
    (tmp_path / "outside.npy").write_bytes(b"")
    return tmp_path


def test_a_folder_of_images_in_natural_order(root: Path) -> None:
    got = read_frames(root, "frames")
    assert got.total == 12 and got.indices == list(range(12))
    assert [int(f[0, 0, 0]) for f in got.frames] == [10 * i for i in range(12)]


@pytest.mark.parametrize("ref", ["frames", "clip.npy", "clip.npz"])
def test_windows_select_start_count_and_step(root: Path, ref: str) -> None:
    got = read_frames(root, ref, start=2, count=3, step=3)
    assert got.indices == [2, 5, 8]
    assert [int(f[0, 0, 0]) for f in got.frames] == [20, 50, 80]
    assert got.frames[0].shape == (24, 32, 3)


def test_a_video_decodes_to_rgb_frames(root: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    path = root / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(6):
        frame = np.zeros((24, 32, 3), np.uint8)
        frame[:, :, 2] = 40 * i  # red in BGR
        writer.write(frame)
    writer.release()
    got = read_frames(root, "clip.avi", start=1, step=2)
    assert got.indices == [1, 3, 5] and got.total == 6
    red = [int(f[:, :, 0].mean()) for f in got.frames]
    assert all(abs(r - 40 * i) <= 6 for r, i in zip(red, (1, 3, 5), strict=True))
    assert all(int(f[:, :, 2].mean()) <= 6 for f in got.frames)
    with pytest.raises(InvalidInput, match="over the limit of 2"):
        read_frames(root, "clip.avi", limit=2)


@pytest.mark.parametrize(
    ("ref", "kwargs", "hint"),
    [
        ("frames", {"limit": 5}, "12 frames selected, over the limit of 5"),
        ("frames", {"start": 12}, "past the last frame"),
        ("clip.npy", {"step": 0}, "step must be 1 or more"),
        ("two.npz", {}, "put the frames under `video`"),
        ("../etc", {}, "escapes the data volume"),
        ("/etc/passwd", {}, "absolute"),
        ("missing", {}, "does not exist"),
        ("frames/notes.txt", {}, "not a frame sequence"),
        ("outside.npy", {}, "cannot be read"),
        ("clip.npy", {"max_pixels": 100}, "over the limit of 100 pixels"),
    ],
)
def test_bad_references_and_windows_say_what_to_fix(root: Path, ref: str, kwargs: dict, hint: str) -> None:
    with pytest.raises(InvalidInput) as err:
        read_frames(root, ref, **kwargs)
    assert hint in err.value.message


def test_without_a_data_volume_sequences_are_refused() -> None:
    with pytest.raises(InvalidInput, match="no data volume"):
        read_frames(None, "frames")

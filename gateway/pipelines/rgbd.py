"""hand3d inputs: TAPIP3D-format `.npz` files, or ViPE artifact folders converted to that format.

ViPE writes per video `rgb/<name>.mp4`, `pose/<name>.npz` (`data` (N,4,4) camera→world, `inds`),
`intrinsics/<name>.npz` (`data` (N,4+D): fx, fy, cx, cy[, distortion]) and `depth/<name>.zip` (one half-float EXR
per frame, metres). TAPIP3D wants `video` (T,H,W,3) uint8, `depths` (T,H,W), `intrinsics` (T,3,3) and
`extrinsics` (T,4,4) world→camera, so poses are inverted on the way.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.gateway.inputs import open_regular, plain, read_regular
from modelyard.runtime.errors import InvalidInput


@dataclass
class RGBD:
    video: np.ndarray  # (T,H,W,3) uint8
    depths: np.ndarray  # (T,H,W) float32 metres
    intrinsics: np.ndarray  # (T,3,3)
    extrinsics: np.ndarray  # (T,4,4) world→camera


def is_vipe_folder(path: Path) -> bool:
    return path.is_dir() and all((path / sub).is_dir() for sub in ("rgb", "pose", "intrinsics", "depth"))


def vipe_videos(folder: Path) -> list[str]:
    return sorted(p.stem for p in (folder / "rgb").glob("*.mp4"))


def _npz(path: Path, shown: str) -> Any:
    """An .npz read only if it is a regular file (a FIFO would block forever), pickles refused."""
    data = read_regular(path, shown)
    try:
        return np.load(io.BytesIO(data))
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"{shown} is not a readable .npz: {plain(str(exc))}") from None


def load_npz(path: Path) -> RGBD:
    data = _npz(path, path.name)
    missing = [k for k in ("video", "depths", "intrinsics") if k not in data]
    if missing:
        raise InvalidInput(f"{path.name} lacks {', '.join(missing)} (hand3d needs RGB-D with cameras)")
    video = np.asarray(data["video"])
    t = video.shape[0]
    intrinsics = np.asarray(data["intrinsics"], np.float32)
    extrinsics = np.asarray(data["extrinsics"], np.float32) if "extrinsics" in data else np.eye(4, dtype=np.float32)
    if intrinsics.shape == (3, 3):
        intrinsics = np.repeat(intrinsics[None], t, axis=0)
    if extrinsics.shape == (4, 4):
        extrinsics = np.repeat(extrinsics[None], t, axis=0)
    return RGBD(video, np.asarray(data["depths"], np.float32), intrinsics, extrinsics)


def _decode_exr(data: bytes, name: str) -> np.ndarray:
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # OpenCV reads EXR only when asked to
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InvalidInput(f"depth frame {name} is not a readable EXR")
    return np.asarray(image if image.ndim == 2 else image[..., 0], np.float32)


def load_vipe(folder: Path, name: str) -> RGBD:
    import cv2

    os.close(open_regular(folder / "rgb" / f"{name}.mp4", f"ViPE video rgb/{name}.mp4"))  # not a FIFO, a folder
    capture = cv2.VideoCapture(str(folder / "rgb" / f"{name}.mp4"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise InvalidInput(f"ViPE video rgb/{name}.mp4 has no readable frames")
    video = np.stack(frames)
    pose = _npz(folder / "pose" / f"{name}.npz", f"ViPE pose/{name}.npz")
    cam_to_world = np.asarray(pose["data"], np.float64)
    inds = np.asarray(pose["inds"]) if "inds" in pose else np.arange(len(cam_to_world))
    intr = np.asarray(_npz(folder / "intrinsics" / f"{name}.npz", f"ViPE intrinsics/{name}.npz")["data"], np.float64)
    depth_zip = read_regular(folder / "depth" / f"{name}.zip", f"ViPE depth/{name}.zip")
    with zipfile.ZipFile(io.BytesIO(depth_zip)) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith(".exr"))
        depths = np.stack([_decode_exr(archive.read(n), n) for n in names])
    t = min(len(video), len(inds), len(depths), len(intr))
    if t == 0:
        raise InvalidInput(f"ViPE artifacts of {name} hold no frame with pose, intrinsics and depth")
    frames_used = video[np.asarray(inds[:t], int)] if inds.max(initial=0) < len(video) else video[:t]
    K = np.zeros((t, 3, 3), np.float32)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2] = intr[:t, 0], intr[:t, 1], intr[:t, 2], intr[:t, 3]
    K[:, 2, 2] = 1
    world_to_cam = np.linalg.inv(cam_to_world[:t]).astype(np.float32)
    return RGBD(frames_used, depths[:t].astype(np.float32), K, world_to_cam)


def save_npz(rgbd: RGBD) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, video=rgbd.video, depths=rgbd.depths, intrinsics=rgbd.intrinsics, extrinsics=rgbd.extrinsics)
    return buffer.getvalue()

"""Frame sequences behind a data reference: a folder of images, a video file, or an array file.

- a folder: its image files (.png .jpg .jpeg .bmp .tif .tiff .webp) sorted by name, numbers in natural order
  (frame_2 before frame_10);
- a video (.mp4 .avi .mov .mkv .webm .m4v), decoded with OpenCV (imported only then), frames as RGB;
- .npy: an array (T,H,W), (T,H,W,3) or (T,H,W,4), memory-mapped so only the selected frames are read;
- .npz: the same array under the key `video` (TAPIP3D's input format) or as the file's only array; it is
  loaded whole, so all its frames count against the request's budget.

Every file is confined to the data volume (a frame that is a symlink out of it is refused, at any depth), must
be a regular file and is size-checked before it is read; array shapes come from the headers and are checked
before anything is allocated.

A window (start, count, step) selects frames; more than `limit` selected frames is refused with a message that
says how to take them in chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelyard.runtime.arrays import decode_image_bytes
from modelyard.runtime.budget import RequestBudget
from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.npyfiles import ArrayHeader, npy_header, npz_headers
from modelyard.runtime.paths import DEFAULT_MAX_FILE_BYTES, confined, read_confined

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
ARRAY_KEY = "video"


@dataclass
class Frames:
    frames: list[np.ndarray]  # as stored: (H,W), (H,W,3) RGB or (H,W,4)
    indices: list[int]  # each frame's index in the sequence
    total: int  # frames in the whole sequence (for videos, what the container declares)


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _window(total: int, start: int, count: int, step: int, limit: int, what: str) -> list[int]:
    if step < 1:
        raise InvalidInput(f"{what}: step must be 1 or more, got {step}")
    if start >= total:
        raise InvalidInput(f"{what}: start {start} is past the last frame (the sequence has {total} frames)")
    indices = list(range(start, total, step))
    if count:
        indices = indices[:count]
    if len(indices) > limit:
        raise InvalidInput(
            f"{what}: {len(indices)} frames selected, over the limit of {limit} per request: take them in chunks "
            f"(start/count, e.g. start={start} count={limit}) or with a larger step"
        )
    return indices


def read_frames(
    data_root: Path | None,
    ref: str,
    start: int = 0,
    count: int = 0,
    step: int = 1,
    limit: int = 512,
    max_pixels: int = 50_000_000,
    budget: RequestBudget | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> Frames:
    """The frames of the sequence at `ref` (relative to `data_root`) selected by start/count/step, each charged
    to `budget` before it is decoded."""
    what = f"sequence '{ref}'"
    if data_root is None:
        raise InvalidInput(f"{what}: this service has no data volume configured (runtime.data_root); send images")
    path = confined(data_root, ref)
    if path.is_dir():
        return _read_folder(data_root, ref, path, (start, count, step, limit), max_pixels, budget, max_file_bytes)
    if not path.is_file():  # a FIFO or a device: reading it could block forever
        raise InvalidInput(f"{what}: not a regular file or a folder")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return _read_video(path, start, count, step, limit, max_pixels, what, budget)
    if suffix in (".npy", ".npz"):
        return _read_array(path, (start, count, step, limit), max_pixels, what, budget, max_file_bytes)
    raise InvalidInput(
        f"{what}: not a frame sequence; give a folder of images, a video ({', '.join(VIDEO_SUFFIXES)}), "
        "a .npy array (T,H,W[,C]) or a .npz with a `video` array"
    )


def _read_folder(
    root: Path,
    ref: str,
    path: Path,
    window: tuple[int, int, int, int],
    max_pixels: int,
    budget: RequestBudget | None,
    max_file_bytes: int,
) -> Frames:
    what = f"sequence '{ref}'"
    names = sorted(
        # (links are kept, to be confined below; folders, FIFOs and the like are not frames)
        (p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_symlink() or p.is_file())),
        key=_natural_key,
    )
    if not names:
        raise InvalidInput(f"{what}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    indices = _window(len(names), *window, what)
    frames = []
    for i in indices:
        # Each frame is confined on its own: the folder being inside the data volume says nothing of its links.
        data = read_confined(root, f"{ref.rstrip('/')}/{names[i]}", max_file_bytes)
        frames.append(decode_image_bytes(data, max_pixels, f"{what} frame {i} ({names[i]})", budget))
    return Frames(frames, indices, len(names))


def _array_header(path: Path, max_member_bytes: int, what: str) -> ArrayHeader:
    if path.suffix.lower() == ".npy":
        return npy_header(path, what)
    headers = npz_headers(path, max_member_bytes, what)
    if ARRAY_KEY in headers:
        return headers[ARRAY_KEY]
    if len(headers) == 1:
        return next(iter(headers.values()))
    raise InvalidInput(f"{what}: the .npz holds {', '.join(headers) or 'nothing'}; put the frames under `{ARRAY_KEY}`")


def _read_array(
    path: Path,
    window: tuple[int, int, int, int],
    max_pixels: int,
    what: str,
    budget: RequestBudget | None,
    max_file_bytes: int,
) -> Frames:
    member_limit = max_file_bytes if budget is None else max(max_file_bytes, 8 * budget.max_pixels)
    header = _array_header(path, member_limit, what)
    shape = header.shape
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3, 4)):
        raise InvalidInput(f"{what}: array of shape {shape} is not (T,H,W), (T,H,W,3) or (T,H,W,4)")
    if header.dtype.kind not in "uifb":
        raise InvalidInput(f"{what}: array of {header.dtype} is not numbers")
    if shape[1] * shape[2] > max_pixels:
        raise InvalidInput(
            f"{what}: {shape[2]}x{shape[1]} frames are over the limit of {max_pixels} pixels (model.max_pixels)"
        )
    indices = _window(shape[0], *window, what)
    whole = path.suffix.lower() == ".npz"  # an .npz member cannot be memory-mapped: it is inflated whole
    if budget is not None:
        budget.charge(shape[1] * shape[2] * (shape[0] if whole else len(indices)), what)
    try:
        if not whole:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                array = archive[header.name]
    except Exception as exc:
        raise InvalidInput(f"{what}: cannot be read as a numpy array file: {exc}") from None
    if array.shape != shape:
        raise InvalidInput(f"{what}: changed while it was read; retry once it is complete")
    frames = []
    for i in indices:
        if budget is not None:
            budget.check()
        frames.append(np.array(array[i]))
    frames = [f[:, :, 0] if f.ndim == 3 and f.shape[2] == 1 else f for f in frames]
    return Frames(frames, indices, int(shape[0]))


def _read_video(
    path: Path,
    start: int,
    count: int,
    step: int,
    limit: int,
    max_pixels: int,
    what: str,
    budget: RequestBudget | None = None,
) -> Frames:
    try:
        import cv2
    except ImportError:
        raise InvalidInput(
            f"{what}: this service cannot decode video (OpenCV is not installed here); send the frames as a "
            "folder of images or a .npy array"
        ) from None
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InvalidInput(f"{what}: OpenCV cannot open this video (unknown codec or damaged file)")
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if step < 1:
            raise InvalidInput(f"{what}: step must be 1 or more, got {step}")
        frames: list[np.ndarray] = []
        indices: list[int] = []
        index = 0
        while not count or len(frames) < count:
            ok = capture.grab()
            if not ok:
                break
            if index >= start and (index - start) % step == 0:
                ok, bgr = capture.retrieve()
                if not ok:
                    raise InvalidInput(f"{what}: frame {index} cannot be decoded")
                if bgr.shape[0] * bgr.shape[1] > max_pixels:
                    raise InvalidInput(
                        f"{what}: {bgr.shape[1]}x{bgr.shape[0]} frames are over the limit of {max_pixels} pixels"
                    )
                if len(frames) == limit:
                    _window(max(declared, index + 1), start, count, step, limit, what)  # raises: too many frames
                if budget is not None:
                    budget.charge(bgr.shape[0] * bgr.shape[1], f"{what} frame {index}")
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                indices.append(index)
            index += 1
    finally:
        capture.release()
    if not frames:
        raise InvalidInput(f"{what}: start {start} is past the last frame (the video has {index} frames)")
    return Frames(frames, indices, max(declared, index))

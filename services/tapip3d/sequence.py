"""RGB-D sequences in TAPIP3D's formats: validated clips, queries resolved to world points, result files.

Input `.npz` (TAPIP3D's inference.py): `video` (T,H,W,3) uint8 RGB, `depths` (T,H,W) float, `intrinsics` (T,3,3)
pixel K, `extrinsics` (T,4,4) world→camera (identity when absent), optional `query_point` (N,4) rows
(t, X, Y, Z) in world. Result `.npz` (its `<name>.result.npz`): video (T,3,H,W) float in [0,1], depths,
intrinsics, extrinsics, coords (T,N,3) world, visibs (T,N) bool, query_points (N,4).

Everything wrong with an input raises InvalidInput saying what to change.
"""

from __future__ import annotations

import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelyard.runtime.errors import InvalidInput
from modelyard.runtime.npyfiles import npz_headers
from modelyard.tapip3d import geometry

_DEPTH_DTYPES = ("float16", "float32", "float64")
_QUERY_DTYPES = ("float16", "float32", "float64", "int32", "int64")


@dataclass(frozen=True)
class Limits:
    max_frames: int
    max_points: int
    max_pixels: int
    max_voxels: int = 0  # frames x H x W of one clip (model.max_request_pixels); 0 = max_frames x max_pixels

    @property
    def voxels(self) -> int:
        return self.max_voxels or self.max_frames * self.max_pixels


@dataclass(frozen=True)
class RGBDClip:
    video: np.ndarray  # (T,H,W,3) uint8 RGB
    depths: np.ndarray  # (T,H,W) float32 metres; ≤0 or non-finite means no depth there
    intrinsics: np.ndarray  # (T,3,3) float64 pixel K
    extrinsics: np.ndarray  # (T,4,4) float64 world→camera

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.video.shape[1]), int(self.video.shape[2])


def make_clip(
    video: np.ndarray,
    depths: np.ndarray | None,
    intrinsics: np.ndarray | None,
    extrinsics: np.ndarray | None,
    limits: Limits,
) -> RGBDClip:
    """Check the arrays against each other and the limits; (3,3)/(4,4) cameras are repeated over the frames."""
    check_video(tuple(video.shape), video.dtype, limits)
    t_count, height, width = video.shape[:3]
    if depths is None:
        raise InvalidInput(
            "no depths: this service tracks RGB-D video; estimate depth and cameras first (e.g. ViPE or MegaSaM) "
            "and send depths (T,H,W) with intrinsics"
        )
    if depths.dtype.name not in _DEPTH_DTYPES:
        raise InvalidInput(f"depths must be float metres ({', '.join(_DEPTH_DTYPES)}), got {depths.dtype}")
    if depths.shape != (t_count, height, width):
        raise InvalidInput(
            f"depths has shape {depths.shape} but the video is {t_count} frames of {height}x{width} (H x W): "
            f"depths must be (T,H,W) = {(t_count, height, width)}"
        )
    if intrinsics is None:
        raise InvalidInput("no intrinsics: send the pixel camera matrix K, (3,3) or one per frame (T,3,3)")
    return RGBDClip(
        video=video,
        depths=depths.astype(np.float32, copy=False),
        intrinsics=_intrinsics(intrinsics, t_count),
        extrinsics=_extrinsics(extrinsics, t_count),
    )


def check_video(shape: tuple[int, ...], dtype: np.dtype, limits: Limits) -> None:
    """A video's shape and dtype against the limits (from an .npz header, before it is loaded, or an array)."""
    if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8:
        raise InvalidInput(f"video must be (T,H,W,3) uint8 RGB, got shape {shape} of {dtype}")
    t_count, height, width = shape[:3]
    if t_count == 0 or height == 0 or width == 0:
        raise InvalidInput(f"video is empty: shape {shape}")
    if t_count > limits.max_frames:
        raise InvalidInput(
            f"the video has {t_count} frames, over this service's limit of {limits.max_frames} (model.max_frames): "
            "split it into shorter clips"
        )
    if height * width > limits.max_pixels:
        raise InvalidInput(
            f"frames of {width}x{height} are {height * width} pixels, over this service's limit of "
            f"{limits.max_pixels} (model.max_pixels): downscale the video, its depths and intrinsics"
        )
    if t_count * height * width > limits.voxels:
        raise InvalidInput(
            f"the clip is {t_count} frames of {width}x{height}, {t_count * height * width} voxels, over this "
            f"service's budget of {limits.voxels} per request (model.max_request_pixels): split it into shorter clips"
        )


def _per_frame(array: np.ndarray, t_count: int, size: int, what: str, hint: str) -> np.ndarray:
    if array.shape == (size, size):
        array = np.repeat(array[None], t_count, axis=0)
    if array.ndim != 3 or array.shape[1:] != (size, size):
        raise InvalidInput(
            f"{what} must be {size}x{size} matrices, ({size},{size}) or ({t_count},{size},{size}); got shape "
            f"{array.shape} ({hint})"
        )
    if array.shape[0] != t_count:
        raise InvalidInput(f"{what} has {array.shape[0]} matrices but the video has {t_count} frames: one per frame")
    if array.dtype.kind not in "fiu":
        raise InvalidInput(f"{what} must be numbers, got {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InvalidInput(
            f"{what} contains NaN or infinite values at frame {int(np.argwhere(~np.isfinite(array))[0, 0])}"
        )
    return array


def _intrinsics(k: np.ndarray, t_count: int) -> np.ndarray:
    k = _per_frame(k, t_count, 3, "intrinsics", "pixel K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
    bad = np.nonzero((k[:, 0, 0] <= 0) | (k[:, 1, 1] <= 0) | np.any(np.abs(k[:, 2] - [0, 0, 1]) > 1e-6, axis=-1))[0]
    if len(bad):
        raise InvalidInput(
            f"intrinsics of frame {bad[0]} are not a pixel camera matrix (fx, fy > 0, last row 0 0 1): "
            f"{k[bad[0]].round(4).tolist()}"
        )
    return k


def _extrinsics(e: np.ndarray | None, t_count: int) -> np.ndarray:
    if e is None:  # a static camera: world = camera (as inference.py)
        return np.repeat(np.eye(4)[None], t_count, axis=0)
    e = _per_frame(e, t_count, 4, "extrinsics", "world→camera [[R, t], [0, 0, 0, 1]]")
    bottom = np.any(np.abs(e[:, 3] - [0, 0, 0, 1]) > 1e-6, axis=-1)
    det = np.linalg.det(e[:, :3, :3])
    bad = np.nonzero(bottom | (np.abs(det) < 1e-6))[0]
    if len(bad):
        raise InvalidInput(
            f"extrinsics of frame {bad[0]} are singular or not a rigid transform (det of the rotation block "
            f"{det[bad[0]]:.3g}, last row {e[bad[0], 3].tolist()}): send world→camera [[R, t], [0, 0, 0, 1]] "
            "with R a rotation"
        )
    return e


def check_npz(path: Path, limits: Limits) -> None:
    """Refuse an input .npz from its headers alone, before anything is inflated: its video against the limits,
    and every array's declared size against what a clip within the budget needs (video, float64 depths,
    cameras and queries: 12 bytes a voxel at most)."""
    what = path.name
    budget = 12 * limits.voxels + 64 * (limits.max_frames + limits.max_points)
    headers = npz_headers(path, budget, what)
    if "video" in headers:
        check_video(headers["video"].shape, headers["video"].dtype, limits)
    total = sum(h.nbytes for h in headers.values())
    if total > budget:
        raise InvalidInput(
            f"{what}: its arrays declare {total} bytes, more than a clip within this service's budget of "
            f"{limits.voxels} voxels needs (model.max_request_pixels)"
        )


def read_npz(path: Path, limits: Limits | None = None) -> dict[str, np.ndarray]:
    """The arrays of an input .npz (no pickles), checked against `limits` from their headers before loading,
    or InvalidInput naming what is wrong with the file."""
    if limits is not None:
        check_npz(path, limits)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(f"{path.name} is not a readable .npz of plain arrays: {exc}") from None


def clip_from_npz(arrays: dict[str, np.ndarray], limits: Limits) -> RGBDClip:
    if "video" not in arrays:
        found = ", ".join(sorted(arrays)) or "nothing"
        raise InvalidInput(f"the .npz has no 'video' (it holds {found}); TAPIP3D's input has video, depths, intrinsics")
    return make_clip(arrays["video"], arrays.get("depths"), arrays.get("intrinsics"), arrays.get("extrinsics"), limits)


# -- queries ----------------------------------------------------------------------------------------------
def _frames(values: np.ndarray, t_count: int, what: str) -> np.ndarray:
    frames = np.round(values).astype(np.int64)
    bad = np.nonzero((np.abs(values - frames) > 1e-6) | (frames < 0) | (frames >= t_count))[0]
    if len(bad):
        raise InvalidInput(
            f"{what} {bad[0]}: frame t={values[bad[0]]:g} is not a frame index of this {t_count}-frame video "
            f"(integers 0..{t_count - 1})"
        )
    return frames


def _query_array(array: np.ndarray, columns: int, what: str, limits: Limits) -> np.ndarray:
    if array.dtype.name not in _QUERY_DTYPES:
        raise InvalidInput(f"{what} must be numbers, got {array.dtype}")
    if array.ndim != 2 or array.shape[1] != columns or array.shape[0] == 0:
        layout = "(t, x, y) pixels" if columns == 3 else "(t, X, Y, Z) world"
        raise InvalidInput(f"{what} must be (N,{columns}) rows {layout} with N ≥ 1, got shape {array.shape}")
    if array.shape[0] > limits.max_points:
        raise InvalidInput(
            f"{array.shape[0]} {what}, over this service's limit of {limits.max_points} points (model.max_points)"
        )
    array = array.astype(np.float64)
    bad = np.nonzero(~np.isfinite(array).all(axis=1))[0]
    if len(bad):
        raise InvalidInput(f"{what} {bad[0]} has NaN or infinite values: {array[bad[0]].tolist()}")
    return array


def pixel_queries(clip: RGBDClip, pixels: np.ndarray, limits: Limits) -> np.ndarray:
    """Queries (N,3) rows (t, x, y) in pixels → (N,4) rows (t, X, Y, Z) world, lifted with the depth under
    each pixel (the nearest one, as TAPIP3D lifts its grid)."""
    pixels = _query_array(pixels, 3, "pixel query", limits)
    frames = _frames(pixels[:, 0], clip.num_frames, "pixel query")
    height, width = clip.size_hw
    xy = pixels[:, 1:]
    outside = np.nonzero((xy[:, 0] < 0) | (xy[:, 0] > width - 1) | (xy[:, 1] < 0) | (xy[:, 1] > height - 1))[0]
    if len(outside):
        n = outside[0]
        raise InvalidInput(
            f"pixel query {n} (t={frames[n]}, x={xy[n, 0]:g}, y={xy[n, 1]:g}) lies outside the {width}x{height} "
            f"frames: x must be within [0, {width - 1}] and y within [0, {height - 1}]"
        )
    depth = np.array([geometry.sample_nearest(clip.depths[t], p[None])[0] for t, p in zip(frames, xy, strict=True)])
    with np.errstate(invalid="ignore"):
        invalid = np.nonzero(~(np.isfinite(depth) & (depth > 0)))[0]
    if len(invalid):
        n = invalid[0]
        raise InvalidInput(
            f"pixel query {n} (t={frames[n]}, x={xy[n, 0]:g}, y={xy[n, 1]:g}) has no valid depth there "
            f"(depth {depth[n]:g}): query pixels whose depth is finite and positive"
        )
    world = geometry.pixels_to_world(xy, depth, clip.intrinsics[frames], clip.extrinsics[frames])
    return np.concatenate([frames[:, None].astype(np.float64), world], axis=-1)


def world_queries(clip: RGBDClip, queries: np.ndarray, limits: Limits, what: str = "world query") -> np.ndarray:
    """Queries (N,4) rows (t, X, Y, Z) world, checked to be seen at their frame: in front of the camera and
    inside the image."""
    queries = _query_array(queries, 4, what, limits)
    frames = _frames(queries[:, 0], clip.num_frames, what)
    pixels, z = geometry.project_world(queries[:, 1:], clip.intrinsics[frames], clip.extrinsics[frames])
    height, width = clip.size_hw
    with np.errstate(invalid="ignore"):
        outside = ~(z > 0) | ~(
            (pixels[:, 0] >= -0.5)
            & (pixels[:, 0] <= width - 0.5)
            & (pixels[:, 1] >= -0.5)
            & (pixels[:, 1] <= height - 0.5)
        )
    bad = np.nonzero(outside)[0]
    if len(bad):
        n = bad[0]
        where = "behind the camera" if not z[n] > 0 else f"at pixel ({pixels[n, 0]:.1f}, {pixels[n, 1]:.1f})"
        raise InvalidInput(
            f"{what} {n} (t={frames[n]}, X={queries[n, 1]:g}, Y={queries[n, 2]:g}, Z={queries[n, 3]:g}) is "
            f"{where}, outside the {width}x{height} frame {frames[n]}: a query must be seen in its own frame "
            "(world coordinates, extrinsics world→camera)"
        )
    queries[:, 0] = frames
    return queries


def grid_queries(clip: RGBDClip, grid_size: int, frame: int, limits: Limits) -> np.ndarray:
    """A grid_size² pixel grid at `frame` lifted to world (TAPIP3D's default queries); grid points without a
    valid depth are left out, as TAPIP3D does."""
    if grid_size < 1 or grid_size**2 > limits.max_points:
        raise InvalidInput(
            f"grid_size {grid_size} gives {grid_size**2} points; it must be at least 1 and at most "
            f"{int(np.sqrt(limits.max_points))} (model.max_points = {limits.max_points})"
        )
    if not 0 <= frame < clip.num_frames:
        raise InvalidInput(f"grid_frame {frame} is not a frame of this {clip.num_frames}-frame video")
    height, width = clip.size_hw
    pixels = geometry.grid_pixels(grid_size, height, width)
    depth = geometry.sample_nearest(clip.depths[frame], pixels)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(depth) & (depth > 0)
    if not keep.any():
        raise InvalidInput(f"no point of the {grid_size}x{grid_size} grid has a valid depth at frame {frame}")
    world = geometry.pixels_to_world(
        pixels[keep], depth[keep], clip.intrinsics[frame][None], clip.extrinsics[frame][None]
    )
    return np.concatenate([np.full((len(world), 1), float(frame)), world], axis=-1)


# -- results ----------------------------------------------------------------------------------------------
def existing_output(reference: str) -> str:
    return f"output '{reference}' already exists: choose a new name, or set output.overwrite to replace it"


def write_result(
    path: Path,
    clip: RGBDClip,
    coords: np.ndarray,
    visibs: np.ndarray,
    query_points: np.ndarray,
    with_inputs: bool = True,
    extra: dict[str, np.ndarray] | None = None,
    overwrite: bool = True,
    reference: str = "",
) -> Path:
    """A `.result.npz` with the keys of TAPIP3D's result file, written atomically (temp file + rename) so a
    reader never sees half a file. Without inputs it leaves out video and depths (then visualize.py cannot open it).
    Without `overwrite`, an existing file is refused (InvalidInput naming `reference`) and left as it was."""
    arrays: dict[str, np.ndarray] = {}
    if with_inputs:
        arrays["depths"] = clip.depths.astype(np.float32, copy=False)
    arrays |= {
        "intrinsics": clip.intrinsics.astype(np.float32),
        "extrinsics": clip.extrinsics.astype(np.float32),
        "coords": coords.astype(np.float32),
        "visibs": visibs.astype(bool),
        "query_points": query_points.astype(np.float32),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:  # as np.savez does
            if with_inputs:
                _write_video(archive, clip.video)
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # atomic, and fails where a file already is (even one made meanwhile)
            except FileExistsError:
                raise InvalidInput(existing_output(reference or path.name)) from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _write_video(archive: zipfile.ZipFile, video: np.ndarray) -> None:
    """`video` as TAPIP3D writes it — (T,3,H,W) float32 in [0,1] — converted a frame at a time: a 1000-frame
    512x384 clip is 2.4 GB as floats, which should not sit in memory twice."""
    t_count, height, width = video.shape[:3]
    header = {"descr": np.dtype("<f4").str, "fortran_order": False, "shape": (t_count, 3, height, width)}
    with archive.open("video.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_2_0(member, header)
        for frame in video:
            member.write((frame.transpose(2, 0, 1).astype("<f4") / np.float32(255.0)).tobytes())

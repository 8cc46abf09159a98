"""Camera geometry in TAPIP3D's conventions, in numpy (no torch: the lift2d backend runs without it).

- Pixels: x to the right, y down, the centre of the top-left pixel is (0, 0).
- Intrinsics K: (3,3) pixel matrices, one per frame.
- Extrinsics E: (4,4) **world→camera** per frame (OpenCV camera: x right, y down, z forward); identity when a
  clip has none, so the world is then the camera frame.
- Points: (..., 3) metric coordinates; depth is the camera z coordinate (not the ray length).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def transform(points: np.ndarray, matrices: np.ndarray) -> Array:
    """Apply 4x4 transforms to points: (..., 3) with (..., 4, 4) broadcasting over the leading axes."""
    points = np.asarray(points, np.float64)
    matrices = np.asarray(matrices, np.float64)
    rotated = np.einsum("...ij,...j->...i", matrices[..., :3, :3], points)
    return rotated + matrices[..., :3, 3]


def invert(extrinsics: np.ndarray) -> Array:
    """Inverse of each 4x4 transform (world→camera becomes camera→world)."""
    return np.linalg.inv(np.asarray(extrinsics, np.float64))


def world_to_camera(tracks: np.ndarray, extrinsics: np.ndarray) -> Array:
    """Tracks (T,N,3) in world coordinates → each frame's camera coordinates, with extrinsics (T,4,4)."""
    return transform(tracks, np.asarray(extrinsics)[:, None])


def camera_to_world(tracks: np.ndarray, extrinsics: np.ndarray) -> Array:
    """Tracks (T,N,3) in each frame's camera coordinates → world coordinates (the inverse of world_to_camera)."""
    return transform(tracks, invert(extrinsics)[:, None])


def queries_to_camera(queries: np.ndarray, extrinsics: np.ndarray) -> Array:
    """Queries (N,4) rows (t, X, Y, Z) in world → (t, x, y, z) in the camera frame of their own frame t."""
    t = queries[:, 0].astype(np.int64)
    out = np.array(queries, np.float64)
    out[:, 1:] = transform(queries[:, 1:], np.asarray(extrinsics)[t])
    return out


def unproject(pixels: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray) -> Array:
    """Pixels (...,2) at depths (...) → camera points (...,3), with K (3,3) or (...,3,3)."""
    pixels = np.asarray(pixels, np.float64)
    homogeneous = np.concatenate([pixels, np.ones_like(pixels[..., :1])], axis=-1)
    rays = np.einsum("...ij,...j->...i", np.linalg.inv(np.asarray(intrinsics, np.float64)), homogeneous)
    return rays * np.asarray(depth, np.float64)[..., None]


def project(points: np.ndarray, intrinsics: np.ndarray) -> tuple[Array, Array]:
    """Camera points (...,3) → pixels (...,2) and depths (...). Points behind the camera get NaN pixels."""
    points = np.asarray(points, np.float64)
    image = np.einsum("...ij,...j->...i", np.asarray(intrinsics, np.float64), points)
    z = points[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = image[..., :2] / np.where(z > 0, image[..., 2], np.nan)[..., None]
    return pixels, z


def project_world(points: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> tuple[Array, Array]:
    """World points (...,3) → pixels (...,2) and camera depths (...) with K (...,3,3) and world→camera E."""
    return project(transform(points, extrinsics), intrinsics)


def sample_nearest(depth: np.ndarray, pixels: np.ndarray) -> Array:
    """Depth (H,W) at the nearest pixel of each (x, y); NaN outside the image."""
    h, w = depth.shape
    pixels = np.asarray(pixels, np.float64)
    out = np.full(pixels.shape[:-1], np.nan)
    with np.errstate(invalid="ignore"):
        j = np.round(pixels[..., 0])
        i = np.round(pixels[..., 1])
        inside = (j >= 0) & (j <= w - 1) & (i >= 0) & (i <= h - 1)
    out[inside] = depth[i[inside].astype(np.int64), j[inside].astype(np.int64)]
    return out


def sample_depth(depth: np.ndarray, pixels: np.ndarray, rtol: float) -> Array:
    """Depth (H,W) at sub-pixel (x, y): bilinear where the four neighbours are valid and agree within `rtol`
    (a smooth surface), else the nearest pixel's, so a point on a depth edge is never lifted into the gap between
    foreground and background. NaN outside the image; invalid depths (≤0, NaN) come back as they are."""
    h, w = depth.shape
    pixels = np.asarray(pixels, np.float64)
    nearest = sample_nearest(depth, pixels)
    x = np.clip(pixels[..., 0], 0, w - 1)
    y = np.clip(pixels[..., 1], 0, h - 1)
    x0 = np.clip(np.floor(np.nan_to_num(x)), 0, max(w - 2, 0)).astype(np.int64)
    y0 = np.clip(np.floor(np.nan_to_num(y)), 0, max(h - 2, 0)).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    corners = np.stack([depth[y0, x0], depth[y0, x1], depth[y1, x0], depth[y1, x1]], axis=-1).astype(np.float64)
    fx, fy = x - x0, y - y0
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=-1)
    with np.errstate(invalid="ignore"):
        smooth = np.isfinite(corners).all(-1) & (corners > 0).all(-1)
        smooth &= corners.max(-1) <= corners.min(-1) * (1 + rtol)
        bilinear = (corners * weights).sum(-1)
    return np.where(smooth & np.isfinite(nearest), bilinear, nearest)


def grid_pixels(grid_size: int, height: int, width: int) -> Array:
    """A grid_size² grid of pixels (x, y), row-major, with a margin of width/64 from the border: the layout of
    TAPIP3D's default queries (CoTracker's get_points_on_a_grid)."""
    if grid_size == 1:
        return np.array([[width / 2, height / 2]], np.float64)
    margin = width / 64
    ys = np.linspace(margin, height - margin, grid_size)
    xs = np.linspace(margin, width - margin, grid_size)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([grid_x, grid_y], axis=-1).reshape(-1, 2)


def pixels_to_world(pixels: np.ndarray, depths: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> Array:
    """Pixels (N,2) with their depths (N,) → world points (N,3), with K (N,3,3) and world→camera E (N,4,4)."""
    return transform(unproject(pixels, depths, intrinsics), invert(extrinsics))


def rescale_intrinsics(intrinsics: np.ndarray, source_hw: tuple[int, int], target_hw: tuple[int, int]) -> Array:
    """K for frames resized from source (H, W) to target (H', W'), the way TAPIP3D's inference.py rescales
    them: the x row by (W'-1)/(W-1) and the y row by (H'-1)/(H-1) (corner pixels stay corner pixels)."""
    out = np.array(intrinsics, np.float64)
    (h, w), (h2, w2) = source_hw, target_hw
    out[..., 0, :] *= (w2 - 1) / max(w - 1, 1)
    out[..., 1, :] *= (h2 - 1) / max(h - 1, 1)
    return out


def resize_pixels(pixels: np.ndarray, source_hw: tuple[int, int], target_hw: tuple[int, int]) -> Array:
    """Pixel coordinates in an image resized with cv2.resize (pixel centres scale about the half-pixel offset)."""
    pixels = np.asarray(pixels, np.float64)
    scale = np.array([target_hw[1] / source_hw[1], target_hw[0] / source_hw[0]])
    return (pixels + 0.5) * scale - 0.5


def resize_depth(depth: np.ndarray, target_hw: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Bilinear resize that ignores invalid (≤0) depths instead of averaging them in (TAPIP3D's
    resize_depth_bilinear): each output is the mean of the valid neighbours, 0 where none is valid."""
    import cv2

    size = (target_hw[1], target_hw[0])
    valid = (depth > 0).astype(np.float32)
    summed = cv2.resize(np.where(depth > 0, depth, 0).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    weight = cv2.resize(valid, size, interpolation=cv2.INTER_LINEAR)
    out = summed / (weight + 1e-6)
    out[weight <= 1e-6] = 0.0
    return out.astype(np.float32)

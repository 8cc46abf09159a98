"""Synthetic RGB-D clips with exact ground-truth 3D trajectories, for tests, benchmarks and the demo.

A scene is a handful of textured planar patches seen by a moving pinhole camera and ray-cast per pixel:
a static back wall, two patches moving (translating, rotating in and out of plane) in front of it, and a
narrow bar that sweeps across close to the camera and occludes the rest for a while. Colours are the texture
sampled where each pixel's ray hits (no shading, so brightness constancy holds), depth is that hit's camera z,
and every surface point's world position at every frame is known in closed form — so trajectories and
visibility are exact, not estimated.

    scene = make_scene(width=128, height=96, frames=24, seed=0)
    truth = scene.sample_queries(64, frame=0, rng=np.random.default_rng(0))
    truth.queries      # (N,4) (t, X, Y, Z) world — TAPIP3D's query_point
    truth.tracks       # (T,N,3) world trajectories
    truth.visible      # (T,N) bool
    scene.save_npz(path, truth.queries)   # TAPIP3D's input format
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from modelyard.tapip3d import geometry


@dataclass(frozen=True)
class Patch:
    """A textured rectangle in its local z=0 plane; `poses` (T,4,4) map local → world per frame."""

    name: str
    half_size: tuple[float, float]  # metres along local x and y
    texture: np.ndarray  # (S,S,3) uint8
    texels_per_metre: float
    poses: np.ndarray


@dataclass(frozen=True)
class GroundTruth:
    queries: np.ndarray  # (N,4) float64 rows (t, X, Y, Z) in world
    pixels: np.ndarray  # (N,3) float64 rows (t, x, y): where each query is seen at its frame
    tracks: np.ndarray  # (T,N,3) float64 world positions at every frame
    visible: np.ndarray  # (T,N) bool: inside the frame and not occluded
    patch: np.ndarray  # (N,) int: which patch each point lies on


def merge(*truths: GroundTruth) -> GroundTruth:
    """Several query sets (e.g. at different frames) as one."""
    return GroundTruth(
        queries=np.concatenate([g.queries for g in truths]),
        pixels=np.concatenate([g.pixels for g in truths]),
        tracks=np.concatenate([g.tracks for g in truths], axis=1),
        visible=np.concatenate([g.visible for g in truths], axis=1),
        patch=np.concatenate([g.patch for g in truths]),
    )


@dataclass(frozen=True)
class Scene:
    video: np.ndarray  # (T,H,W,3) uint8 RGB
    depths: np.ndarray  # (T,H,W) float32 metres (camera z)
    ids: np.ndarray  # (T,H,W) int16: the patch each pixel sees
    intrinsics: np.ndarray  # (T,3,3) float32
    extrinsics: np.ndarray  # (T,4,4) float32, world→camera
    patches: tuple[Patch, ...]

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    def trajectories(self, patch: np.ndarray, local: np.ndarray) -> np.ndarray:
        """World positions (T,N,3) of surface points given by patch index (N,) and local (u, v) (N,2)."""
        points = np.concatenate([local, np.zeros_like(local[:, :1])], axis=-1)
        poses = np.stack([self.patches[p].poses for p in patch], axis=1)  # (T,N,4,4)
        return geometry.transform(points[None], poses)

    def visibility(self, tracks: np.ndarray, patch: np.ndarray) -> np.ndarray:
        """(T,N) bool: the point projects inside the frame, in front of the camera, onto its own patch."""
        t_count, height, width = self.video.shape[:3]
        pixels, z = geometry.project_world(tracks, self.intrinsics[:, None], self.extrinsics[:, None])
        with np.errstate(invalid="ignore"):
            j, i = np.round(pixels[..., 0]), np.round(pixels[..., 1])
            inside = (z > 0) & (j >= 0) & (j <= width - 1) & (i >= 0) & (i <= height - 1)
        seen = np.zeros(inside.shape, bool)
        t_index = np.broadcast_to(np.arange(t_count)[:, None], inside.shape)
        ids = self.ids[t_index[inside], i[inside].astype(np.int64), j[inside].astype(np.int64)]
        seen[inside] = ids == np.broadcast_to(patch[None], inside.shape)[inside]
        return seen

    def sample_queries(
        self, count: int, frame: int, rng: np.random.Generator, patches: tuple[int, ...] | None = None, margin: int = 2
    ) -> GroundTruth:
        """`count` query points on visible surface pixels of `frame` (at least `margin` pixels from any depth edge),
        with their exact trajectories and visibility."""
        ids = self.ids[frame]
        allowed = patches if patches is not None else tuple(range(len(self.patches)))
        candidates = np.zeros(ids.shape, bool)
        kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
        for p in allowed:
            candidates |= cv2.erode((ids == p).astype(np.uint8), kernel).astype(bool)
        i, j = np.nonzero(candidates)
        if len(i) < count:
            raise ValueError(f"only {len(i)} pixels qualify as queries at frame {frame}, asked for {count}")
        pick = rng.choice(len(i), size=count, replace=False)
        i, j = i[pick], j[pick]
        pixels = np.stack([j, i], axis=-1).astype(np.float64)
        depth = self.depths[frame, i, j].astype(np.float64)
        world = geometry.pixels_to_world(
            pixels, depth, self.intrinsics[frame].astype(np.float64), self.extrinsics[frame].astype(np.float64)
        )
        patch = ids[i, j].astype(np.int64)
        local_to_world = np.stack([self.patches[p].poses[frame] for p in patch])
        local = geometry.transform(world, geometry.invert(local_to_world))[:, :2]
        tracks = self.trajectories(patch, local)
        times = np.full((count, 1), float(frame))
        return GroundTruth(
            queries=np.concatenate([times, tracks[frame]], axis=-1),
            pixels=np.concatenate([times, pixels], axis=-1),
            tracks=tracks,
            visible=self.visibility(tracks, patch),
            patch=patch,
        )

    def save_npz(self, path: Path, query_point: np.ndarray | None = None) -> Path:
        """The clip in TAPIP3D's input format (video, depths, intrinsics, extrinsics[, query_point])."""
        arrays = {
            "video": self.video,
            "depths": self.depths,
            "intrinsics": self.intrinsics,
            "extrinsics": self.extrinsics,
        }
        if query_point is not None:
            arrays["query_point"] = query_point.astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        return path


def score(truth: GroundTruth, coords: np.ndarray, visibs: np.ndarray) -> dict[str, float]:
    """Tracks against ground truth, over every (frame, point) except each point's own query frame:
    - epe_m / epe_median_m: 3D end-point error (metres) where the point is truly visible (TAPVid-3D's set);
    - within_5cm: the fraction of those within 5 cm;
    - visibility_accuracy: predicted visibility equals the truth;
    - occlusion_recall: truly hidden (occluded or out of frame) predicted invisible;
    - visible_recall: truly visible predicted visible."""
    t_count, n = truth.visible.shape
    judged = np.ones((t_count, n), bool)
    judged[truth.queries[:, 0].astype(np.int64), np.arange(n)] = False
    visible, hidden = truth.visible & judged, ~truth.visible & judged
    error = np.linalg.norm(coords - truth.tracks, axis=-1)
    return {
        "epe_m": float(error[visible].mean()),
        "epe_median_m": float(np.median(error[visible])),
        "within_5cm": float((error[visible] <= 0.05).mean()),
        "visibility_accuracy": float((visibs == truth.visible)[judged].mean()),
        "occlusion_recall": float((~visibs[hidden]).mean()) if hidden.any() else 1.0,
        "visible_recall": float(visibs[visible].mean()),
    }


def _texture(rng: np.random.Generator, size: int, blur: float) -> np.ndarray:
    """Band-limited colour noise: enough gradient everywhere for a tracker, smooth enough not to alias."""
    noise = rng.random((size, size, 3)).astype(np.float32)
    pad = int(4 * blur) + 1  # blurred with wrap-around, so the texture tiles seamlessly
    tiled = np.pad(noise, ((pad, pad), (pad, pad), (0, 0)), mode="wrap")
    smooth = cv2.GaussianBlur(tiled, (0, 0), blur)[pad:-pad, pad:-pad]
    lo, hi = smooth.min(axis=(0, 1)), smooth.max(axis=(0, 1))
    return (25 + (smooth - lo) / (hi - lo) * 205).astype(np.uint8)


def _rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation about y (yaw), then x (pitch), then z (roll), angles in radians."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def _pose(rotation: np.ndarray, translation: npt.ArrayLike) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, np.asarray(translation)
    return pose


def _poses(
    start: tuple[float, ...],
    end: tuple[float, ...],
    s: np.ndarray,
    rotation: Callable[[float], np.ndarray] = lambda _: np.eye(3),
) -> np.ndarray:
    """Poses (T,4,4) moving smoothly (ease-in-out) from start to end for s in [0, 1], turned by
    rotation(fraction of the way)."""
    ease = (1 - np.cos(np.pi * s)) / 2
    centres = np.asarray(start)[None] + ease[:, None] * (np.asarray(end) - np.asarray(start))[None]
    return np.stack([_pose(rotation(float(e)), c) for e, c in zip(ease, centres, strict=True)])


def make_scene(
    width: int = 128,
    height: int = 96,
    frames: int = 24,
    seed: int = 0,
    camera_motion: bool = True,
    occluder: bool = True,
) -> Scene:
    """Render a scene (see the module docstring). Deterministic for a given seed and size."""
    rng = np.random.default_rng(seed)
    s = np.linspace(0.0, 1.0, frames)
    focal = 0.9 * width
    k = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
    # The camera drifts right/up and turns a little; world = the first camera's frame.
    camera = (
        _poses((0.0, 0.0, 0.0), (0.30, -0.08, 0.15), s, lambda e: _rotation(np.radians(-4.0) * e, np.radians(2.0) * e))
        if camera_motion
        else _poses((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), s)
    )
    extrinsics = geometry.invert(camera)

    jitter = rng.uniform(-1, 1, size=8) * 0.05  # seed-dependent variation of the motions
    card_path = ((-0.75 + jitter[0], -0.25, 3.2), (0.35, 0.05 + jitter[1], 2.8))
    panel_path = ((0.75, 0.40 + jitter[2], 3.8), (0.10 + jitter[3], 0.25, 3.5))
    patches = [
        Patch("wall", (5.0, 4.0), _texture(rng, 192, 1.2), 20.0, _poses((0, 0, 6.0), (0, 0, 6.0), s)),
        # turning in its own plane, and out of it
        Patch("card", (0.36, 0.30), _texture(rng, 64, 1.0), 40.0,
              _poses(*card_path, s, lambda e: _rotation(roll=np.radians(25.0) * e))),
        Patch("panel", (0.40, 0.28), _texture(rng, 64, 1.0), 40.0,
              _poses(*panel_path, s, lambda e: _rotation(yaw=np.radians(20.0) * e))),
    ]  # fmt: skip
    if occluder:
        sweep = _poses((-1.1 + jitter[4], 0.0, 1.6), (1.3, 0.05, 1.6), s)
        patches.append(Patch("bar", (0.09, 1.5), _texture(rng, 64, 1.0), 60.0, sweep))

    video = np.zeros((frames, height, width, 3), np.uint8)
    depths = np.zeros((frames, height, width), np.float32)
    ids = np.full((frames, height, width), -1, np.int16)
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays_camera = geometry.unproject(np.stack([jj, ii], -1), np.ones((height, width)), k)  # z = 1
    for t in range(frames):
        to_world = geometry.invert(extrinsics[t])
        origin, rays = to_world[:3, 3], rays_camera @ to_world[:3, :3].T
        nearest = np.full((height, width), np.inf)
        for index, patch in enumerate(patches):
            pose = patch.poses[t]
            normal, centre = pose[:3, 2], pose[:3, 3]
            with np.errstate(divide="ignore", invalid="ignore"):
                # the camera z of the hit, since each ray has camera z = 1
                z = ((centre - origin) @ normal) / (rays @ normal)
            local = geometry.transform(origin + rays * z[..., None], geometry.invert(pose))
            hit = (z > 0.05) & (np.abs(local[..., 0]) <= patch.half_size[0])
            hit &= (np.abs(local[..., 1]) <= patch.half_size[1]) & (z < nearest)
            if not hit.any():
                continue
            size = patch.texture.shape[0]
            u = ((local[..., 0] + patch.half_size[0]) * patch.texels_per_metre) % size
            v = ((local[..., 1] + patch.half_size[1]) * patch.texels_per_metre) % size
            colour = cv2.remap(
                patch.texture, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
            )
            video[t][hit] = colour[hit]
            depths[t][hit] = z[hit]
            ids[t][hit] = index
            nearest = np.where(hit, z, nearest)
    return Scene(
        video=video,
        depths=depths,
        ids=ids,
        intrinsics=np.repeat(k[None], frames, axis=0).astype(np.float32),
        extrinsics=extrinsics.astype(np.float32),
        patches=tuple(patches),
    )

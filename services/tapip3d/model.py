"""The TAPIP3D adapter: one backend (lift2d or upstream) behind the runtime's load / warm up / infer contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelyard.runtime.adapter import ModelAdapter
from modelyard.runtime.errors import Cancelled, InvalidInput
from modelyard.runtime.progress import Progress
from modelyard.tapip3d import synthetic
from modelyard.tapip3d.backend import Backend, TrackOptions, Tracks
from modelyard.tapip3d.config import TAPIP3DConfig
from modelyard.tapip3d.lift2d import Lift2D
from modelyard.tapip3d.sequence import Limits, RGBDClip, grid_queries, make_clip
from modelyard.tapip3d.upstream import Upstream, inference_size


@dataclass
class TrackItem:
    """One validated sequence with its queries in world coordinates."""

    clip: RGBDClip
    queries: np.ndarray  # (N,4) float64 rows (t, X, Y, Z) world
    options: TrackOptions = field(default_factory=TrackOptions)
    progress: Progress = field(default_factory=Progress)


def limits_of(config: TAPIP3DConfig) -> Limits:
    return Limits(config.max_frames, config.max_points, config.max_pixels, config.max_request_pixels)


def make_backend(config: TAPIP3DConfig, device: str) -> Backend:
    if config.backend == "upstream":
        assert config.upstream is not None  # the schema requires the section for this backend
        return Upstream(config.upstream, device)
    return Lift2D(config.lift2d)


class TAPIP3DAdapter(ModelAdapter[TAPIP3DConfig, TrackItem, Tracks]):
    @classmethod
    def memory_need_mb(cls, config: TAPIP3DConfig, batch_size: int) -> int:
        """upstream: from a measurement of TAPIP3D at 72 frames and a 32x32 grid (4.1 GB reserved at 384x512,
        6.2 GB at 543x724), linear in pixels; it grows with the frames of a request, which are encoded at once.
        lift2d runs on the CPU."""
        if config.backend != "upstream" or config.upstream is None:
            return 0
        height, width = inference_size((384, 512), config.upstream.resolution_factor)
        return int(2000 + 2100 * height * width / (384 * 512))

    def load(self) -> None:
        self.backend = make_backend(self.config, self.device)
        self.backend.load()

    def warmup(self) -> None:
        scene = synthetic.make_scene(width=64, height=48, frames=4, seed=0, occluder=False)
        clip = make_clip(scene.video, scene.depths, scene.intrinsics, scene.extrinsics, limits_of(self.config))
        self.infer(
            [
                TrackItem(
                    clip,
                    grid_queries(clip, 4, 0, limits_of(self.config)),
                    TrackOptions(queries_are_grid=True, grid=(4, 0)),
                )
            ]
        )

    def infer(self, items: list[TrackItem]) -> list[Tracks | Exception]:
        # One sequence at a time (upstream supports batch 1 only); a failure stays in its item's slot.
        results: list[Tracks | Exception] = []
        for item in items:
            try:
                results.append(self.backend.track(item.clip, item.queries, item.options, item.progress))
            except (Cancelled, InvalidInput) as exc:
                results.append(exc)
        return results

    def info(self) -> dict[str, Any]:
        info = self.backend.info()
        cfg = self.config
        info["details"] = {
            **info.get("details", {}),
            "max_frames": cfg.max_frames,
            "max_points": cfg.max_points,
            "max_pixels": cfg.max_pixels,
            "default_grid_size": cfg.default_grid_size,
        }
        return info

    def close(self) -> None:
        self.backend.close()

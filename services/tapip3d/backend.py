"""What a tracking backend is: world queries in, world tracks and visibility out (TAPIP3D's own contract)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modelyard.runtime.progress import Progress
from modelyard.tapip3d.sequence import RGBDClip


@dataclass(frozen=True)
class TrackOptions:
    """Per-request settings; None means the backend's configured default."""

    visibility_threshold: float | None = None
    resolution_factor: float | None = None
    iterations: int | None = None
    # upstream: track its support grid alongside the queries, unless they are a grid already (as inference.py)
    queries_are_grid: bool = False
    # the grid (size, frame) the queries were lifted from: upstream lifts it again from its own prepared depth
    grid: tuple[int, int] | None = None


@dataclass(frozen=True)
class Tracks:
    coords: np.ndarray  # (T,N,3) float32, world coordinates
    visibs: np.ndarray  # (T,N) bool
    queries: np.ndarray | None = None  # (N,4) world, when the backend lifted its own (upstream's grids)


class Backend(Protocol):
    name: str

    def load(self) -> None:
        """Check and load what the backend needs; raise ConfigError with what to fix."""

    def track(self, clip: RGBDClip, queries: np.ndarray, options: TrackOptions, progress: Progress) -> Tracks:
        """Track queries (N,4) rows (t, X, Y, Z) world through the clip, reporting progress as it goes."""

    def info(self) -> dict[str, Any]:
        """Fields for ModelInfo (model, backend, checkpoint, architecture, details)."""

    def close(self) -> None:
        """Release what load() took."""

"""The `model:` section of /config/tapip3d.yaml.

model:
  backend: lift2d            # or upstream (a TAPIP3D checkout and its checkpoint; CUDA, or the CPU slowly)
  upstream:
    root: /models/TAPIP3D                   # the user's checkout (never shipped in our images)
    checkpoint: /models/tapip3d_final.pth
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from modelyard.runtime.config import ExistingDir, ExistingFile, Strict


class Lift2DConfig(Strict):
    """The CPU reference: pyramidal Lucas-Kanade in 2D, lifted to 3D with the depth maps and cameras."""

    window_px: int = Field(21, ge=5, le=101, description="Lucas-Kanade window (odd, pixels at the finest level)")
    pyramid_levels: int = Field(3, ge=0, le=8, description="coarser levels above the full image")
    iterations: int = Field(30, ge=1, le=1000, description="Lucas-Kanade iterations per level (request default)")
    epsilon: float = Field(0.01, gt=0, description="stop iterating when the update is below this (pixels)")
    fb_max_px: float = Field(
        1.0, gt=0, description="forward-backward error (pixels) at which a point counts as lost: tracking stops"
    )
    depth_rtol: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="relative disagreement between a point's expected depth and the depth map at which it is "
        "occluded (a nearer surface covers it)",
    )
    visibility_threshold: float = Field(
        0.5, ge=0, le=1, description="on the flow x depth agreement score in [0, 1] (request default)"
    )
    resolution_factor: float = Field(
        1.0, gt=0, le=4, description="track at the input size x sqrt(factor) (request default)"
    )
    reacquire: bool = Field(
        True,
        description="look for lost points again where they are predicted to be, and resume tracking when the "
        "depth and the appearance of the query frame match there",
    )
    reacquire_ncc: float = Field(
        0.8, gt=0, le=1, description="normalised cross-correlation with the query patch needed to reacquire"
    )

    @model_validator(mode="after")
    def _odd_window(self) -> Lift2DConfig:
        if self.window_px % 2 == 0:
            raise ValueError(f"lift2d.window_px must be odd, got {self.window_px}")
        return self


class UpstreamConfig(Strict):
    """The official TAPIP3D code, imported from the user's checkout in this process only."""

    root: ExistingDir = Field(description="a TAPIP3D checkout (github zbw001/TAPIP3D); pointops2 need not be built")
    checkpoint: ExistingFile = Field(description="tapip3d_final.pth (a dict with 'cfg' and 'weight')")
    resolution_factor: float = Field(
        2.0,
        gt=0,
        le=8,
        description="inference size = the checkpoint's image size x sqrt(factor), as inference.py (request default)",
    )
    num_iters: int = Field(6, ge=1, le=64, description="refinement iterations per window (request default)")
    support_grid_size: int = Field(
        16, ge=0, le=64, description="extra grid points tracked alongside explicit queries, as inference.py; 0 = off"
    )
    bidirectional: bool = Field(True, description="track backwards too for queries after frame 0")
    visibility_threshold: float = Field(
        0.9, gt=0, lt=1, description="on the sigmoid of the visibility logit (request default)"
    )
    torch_hub_dir: ExistingDir | None = Field(
        None,
        description="a torch hub cache, for checkouts whose model downloads from torch hub at construction (the "
        "CoTracker encoder's pretrained weights are never loaded: the checkpoint's weights replace them)",
    )
    trust_checkpoint_pickle: bool = Field(
        True,
        description="the checkpoint pickles its config (OmegaConf), so torch.load needs weights_only=False; "
        "set false to refuse such files",
    )


class TAPIP3DConfig(Strict):
    backend: Literal["lift2d", "upstream"] = Field(
        "lift2d", description="lift2d (CPU, anywhere) or upstream (the official code: CUDA, or the CPU slowly)"
    )
    lift2d: Lift2DConfig = Lift2DConfig()
    upstream: UpstreamConfig | None = None
    max_frames: int = Field(2000, ge=1, description="refuse sequences with more frames")
    max_points: int = Field(4096, ge=1, description="refuse more query points (a 64x64 grid)")
    max_pixels: int = Field(1_500_000, ge=1, description="refuse frames with more pixels (HxW)")
    max_request_pixels: int = Field(
        600_000_000,
        ge=1,
        description="voxels (frames x H x W) of a request's clip, checked from the .npz headers or the arrays' "
        "shapes before loading: a minute of 640x480 at 30 fps",
    )
    default_grid_size: int = Field(32, ge=1, description="queries when a request gives none: a GxG grid at frame 0")
    results_dir: str = Field(
        "tapip3d-results",
        description="folder under runtime.data_root for results too large for a message (when the caller named none)",
    )

    @field_validator("results_dir")
    @classmethod
    def _inside_the_data_volume(cls, value: str) -> str:
        if not value or PurePosixPath(value).is_absolute() or ".." in PurePosixPath(value).parts:
            raise ValueError(f"results_dir '{value}' must be a folder relative to runtime.data_root, without '..'")
        return value

    @model_validator(mode="after")
    def _backend_section(self) -> TAPIP3DConfig:
        if self.backend == "upstream" and self.upstream is None:
            raise ValueError(
                "backend 'upstream' needs an 'upstream:' section with root (your TAPIP3D checkout) and checkpoint"
            )
        if self.max_request_pixels < self.max_pixels:
            raise ValueError(f"max_request_pixels {self.max_request_pixels} is under max_pixels {self.max_pixels}")
        if self.default_grid_size**2 > self.max_points:
            raise ValueError(f"default_grid_size {self.default_grid_size}² is over max_points {self.max_points}")
        return self

"""Images in, the model's square input out, and maps back onto the image's own pixels.

The model's preprocessing is open_clip's (`image_transform_v2` of the config's `preprocess_cfg`: resize by the
shortest side + centre crop, or longest side + pad, or squash; bicubic; OpenAI mean/std), done with the same
torchvision calls on the same PIL image so embeddings match open_clip in-process. Every resize records its
`FrameGeometry`, so a map computed in the model's frame is resampled onto the original image exactly once, in the
same geometry the image went in with (the seed computed its map on the centre crop and stretched it over the whole
image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class ImageSettings:
    """open_clip's PreprocessCfg, as the model folder's config defines it."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    @classmethod
    def from_config(cls, model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any]) -> ImageSettings:
        """What open_clip's create_model derives: PreprocessCfg defaults, the file's preprocess_cfg, and the
        image tower's size."""
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        merged = merge_preprocess_dict(PreprocessCfg(), preprocess_cfg)
        size = model_cfg.get("vision_cfg", {}).get("image_size", merged["size"])
        if isinstance(size, (list, tuple)):
            if len(set(size)) != 1:
                raise ValueError(f"non-square image size {size} is not supported")
            size = size[0]
        return cls(
            size=int(size),
            mean=tuple(float(v) for v in merged["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in merged["std"]),  # type: ignore[arg-type]
            interpolation=str(merged["interpolation"]),
            resize_mode=str(merged["resize_mode"]),
            fill_color=int(merged["fill_color"]),
        )


@dataclass(frozen=True)
class FrameGeometry:
    """Where an H x W image lies in the model's size x size frame: resized to (resized_h, resized_w), its top-left
    corner at (top, left) — negative when cropped, positive when padded."""

    height: int
    width: int
    size: int
    resized_h: int
    resized_w: int
    top: int
    left: int


def _resize(img: Image.Image, size: list[int] | int, interpolation: str) -> Image.Image:
    return TF.resize(img, size, interpolation=_INTERPOLATION.get(interpolation, InterpolationMode.BICUBIC))


def to_frame(rgb: np.ndarray, settings: ImageSettings, mode: str | None = None) -> tuple[np.ndarray, FrameGeometry]:
    """(H,W,3) uint8 -> (3,S,S) float32 normalised, as open_clip's eval transform, and its geometry.

    mode: shortest (centre crop) | longest (letterbox) | squash; None = the model's own resize_mode.
    """
    mode = mode or settings.resize_mode
    size = settings.size
    height, width = rgb.shape[:2]
    img = Image.fromarray(rgb)
    if mode == "shortest":
        img = _resize(img, size, settings.interpolation)  # torchvision: shortest side -> size
    elif mode == "longest":
        ratio = max(height / size, width / size)  # open_clip's ResizeKeepRatio(longest=1)
        img = _resize(img, [round(height / ratio), round(width / ratio)], settings.interpolation)
    elif mode == "squash":
        img = _resize(img, [size, size], settings.interpolation)
    else:
        raise ValueError(f"unknown resize mode '{mode}'")
    resized_w, resized_h = img.size
    top = left = 0
    if resized_w < size or resized_h < size:  # open_clip's CenterCropOrPad: pad (left/top get the floor)
        pad_l = (size - resized_w) // 2 if size > resized_w else 0
        pad_t = (size - resized_h) // 2 if size > resized_h else 0
        pad_r = (size - resized_w + 1) // 2 if size > resized_w else 0
        pad_b = (size - resized_h + 1) // 2 if size > resized_h else 0
        img = TF.pad(img, [pad_l, pad_t, pad_r, pad_b], fill=settings.fill_color)
        top, left = pad_t, pad_l
    if img.size != (size, size):  # torchvision's centre crop
        crop_top = round((img.size[1] - size) / 2.0)
        crop_left = round((img.size[0] - size) / 2.0)
        img = TF.crop(img, crop_top, crop_left, size, size)
        top, left = top - crop_top, left - crop_left
    scaled = np.asarray(img, dtype=np.float32) / np.float32(255.0)  # ToTensor, then Normalize, in float32
    pixels = (scaled - np.asarray(settings.mean, np.float32)) / np.asarray(settings.std, np.float32)
    geometry = FrameGeometry(height, width, size, resized_h, resized_w, top, left)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)), geometry


def _axis_weights(count: int, resized: int, offset: int, size: int, cells: int) -> np.ndarray:
    """(count, cells) bilinear weights taking a grid of `cells` spanning the frame to `count` original pixels.

    Pixel centres are matched (align_corners=False); pixels the frame does not cover (cropped away) get zero rows.
    """
    centres = (np.arange(count, dtype=np.float64) + 0.5) * (resized / count) + offset  # in frame pixels
    inside = (centres >= 0) & (centres <= size)
    pos = np.clip(centres * (cells / size) - 0.5, 0, cells - 1)  # in grid cells, clamped at the border
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, cells - 1)
    frac = pos - lo
    weights = np.zeros((count, cells), np.float64)
    rows = np.arange(count)
    np.add.at(weights, (rows, lo), 1 - frac)
    np.add.at(weights, (rows, hi), frac)
    weights[~inside] = 0
    return weights


def to_original(grid: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """A (h,w) map over the model's frame -> (H,W) float32 over the original image, bilinear, in one resample."""
    cells_h, cells_w = grid.shape
    wy = _axis_weights(geometry.height, geometry.resized_h, geometry.top, geometry.size, cells_h)
    wx = _axis_weights(geometry.width, geometry.resized_w, geometry.left, geometry.size, cells_w)
    return (wy @ grid.astype(np.float64) @ wx.T).astype(np.float32)


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale to [0,1]; a flat map becomes all zeros (nothing stands out)."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)

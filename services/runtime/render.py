"""Pictures of results people look at: mask overlays (later heatmaps and tracks), as RGB arrays / PNGs."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

GREEN = (0, 255, 0)
CYAN = (0, 255, 255)


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any (H,W) / (H,W,3|4) image as (H,W,3) uint8 for display (min-max for non-uint8)."""
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = ((image.astype(np.float64) - lo) / (hi - lo if hi > lo else 1.0) * 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=-1)
    return image


def overlay_masks(
    image: np.ndarray,
    masks: np.ndarray,
    boxes: np.ndarray | None = None,
    color: tuple[int, int, int] = GREEN,
    alpha: float = 0.5,
    box_color: tuple[int, int, int] = CYAN,
) -> np.ndarray:
    """Masks (N,H,W) blended over the image, with their boxes drawn (the seed pipeline's overlay look)."""
    rgb = as_rgb_uint8(image).astype(np.float32)
    union = masks.any(axis=0) if masks.ndim == 3 else masks.astype(bool)
    rgb[union] = (1 - alpha) * rgb[union] + alpha * np.array(color, np.float32)
    picture = Image.fromarray(rgb.astype(np.uint8))
    if boxes is not None:
        draw = ImageDraw.Draw(picture)
        for x1, y1, x2, y2 in boxes:
            draw.rectangle([float(x1), float(y1), float(x2), float(y2)], outline=box_color, width=2)
    return np.asarray(picture)

"""MedSAM's own preprocessing (MedSAM_Inference.py), not SamPredictor's.

grey/RGBA -> 3-channel uint8 -> stretched (not letter-boxed) bicubic anti-aliased resize to image_size ->
min-max to [0,1] (no mean/std). Masks: sigmoid of the low-res logits, bilinear resize to the original H x W,
> threshold. Optional intensity rules from MedSAM's training data: CT window, MR percentile clip.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from skimage import transform

Intensity = Literal["auto", "ct", "mr"]
CT_LEVEL, CT_WIDTH = 40.0, 400.0


def _to_range_uint8(values: np.ndarray, lower: float, upper: float) -> np.ndarray:
    scaled = (np.clip(values.astype(np.float64), lower, upper) - lower) / max(upper - lower, 1e-8) * 255.0
    return scaled.astype(np.uint8)


def ct_window(image: np.ndarray, level: float = CT_LEVEL, width: float = CT_WIDTH) -> np.ndarray:
    """Hounsfield units -> 0..255 through a window (MedSAM's CT rule: level 40, width 400)."""
    return _to_range_uint8(image, level - width / 2, level + width / 2)


def mr_percentile(image: np.ndarray) -> np.ndarray:
    """Clip to the 0.5-99.5 percentiles of the non-zero voxels -> 0..255; zero stays zero (MedSAM's MR rule)."""
    nonzero = image[image > 0]
    if nonzero.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    lower, upper = np.percentile(nonzero, 0.5), np.percentile(nonzero, 99.5)
    out = _to_range_uint8(image, float(lower), float(upper))
    out[image == 0] = 0
    return out


def to_rgb_uint8(
    image: np.ndarray, intensity: Intensity = "auto", ct_level: float = CT_LEVEL, ct_width: float = CT_WIDTH
) -> np.ndarray:
    """Any accepted image (H,W) / (H,W,3) / (H,W,4) of uint8, uint16, int16 or float -> (H,W,3) uint8."""
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]  # RGBA: alpha is not an intensity (it crashed upstream)
    if intensity == "ct":
        image = ct_window(image, ct_level, ct_width)
    elif intensity == "mr":
        image = mr_percentile(image)
    elif image.dtype != np.uint8:
        # Wider ranges are min-max scaled to 0..255, which is what MedSAM's uint8 resize step expects.
        lo, hi = float(image.min()), float(image.max())
        image = _to_range_uint8(image, lo, hi if hi > lo else lo + 1)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=-1)
    return image


def resize_normalise(image_rgb: np.ndarray, size: int) -> np.ndarray:
    """(H,W,3) uint8 -> (3,size,size) float32 in [0,1], exactly as MedSAM's inference script does it."""
    resized = transform.resize(image_rgb, (size, size), order=3, preserve_range=True, anti_aliasing=True).astype(
        np.uint8
    )
    lo, hi = resized.min(), resized.max()
    normalised = (resized - lo) / np.clip(hi - lo, a_min=1e-8, a_max=None)
    return normalised.transpose(2, 0, 1).astype(np.float32)


def scale_boxes(boxes: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """Boxes (N,4) xyxy in original pixels -> the stretched size x size frame."""
    return boxes.astype(np.float64) / np.array([width, height, width, height]) * size


def masks_from_logits(logits: torch.Tensor, height: int, width: int, threshold: float = 0.5) -> np.ndarray:
    """Low-res logits (N,1,h,w) -> uint8 masks (N,H,W) of 0/1, on the host."""
    probs = F.interpolate(torch.sigmoid(logits.float()), size=(height, width), mode="bilinear", align_corners=False)
    return (probs[:, 0] > threshold).to(torch.uint8).cpu().numpy()

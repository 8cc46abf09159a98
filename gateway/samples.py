"""Sample inputs generated on the fly, so the demo needs no download: a CT-like slice with known organs."""

from __future__ import annotations

import numpy as np


def ct_slice(size: int = 384, seed: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A grey axial "CT" slice (uint8) with a body, two lungs and a bright lesion; returns it and the
    lesion's bounding box (x1, y1, x2, y2) padded by a few pixels, as a user would draw it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    image = np.full((size, size), 10.0, np.float32)
    body = ((xx - c) / (0.42 * size)) ** 2 + ((yy - c) / (0.34 * size)) ** 2 <= 1
    image[body] = 110
    for side in (-1, 1):
        lung = ((xx - c - side * 0.17 * size) / (0.12 * size)) ** 2 + ((yy - c) / (0.22 * size)) ** 2 <= 1
        image[lung] = 35
    lx, ly, r = c + 0.17 * size, c - 0.05 * size, 0.05 * size
    lesion = (xx - lx) ** 2 + (yy - ly) ** 2 <= r**2
    image[lesion] = 200
    image += rng.normal(0, 6, image.shape)
    pad = 6
    box = (int(lx - r - pad), int(ly - r - pad), int(lx + r + pad), int(ly + r + pad))
    return np.clip(image, 0, 255).astype(np.uint8), box

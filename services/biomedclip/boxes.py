"""Heatmap -> boxes in original pixels: the seed pipeline's bbox stage, with its options, done as documented.

Order: (body mask multiplied in, map re-normalised) -> threshold (fixed or Otsu) -> external contours, ranked by
area (or area x mean heat) -> min box area (the configured value, which the seed ignored) -> anatomical check on the
box's grey level (single-box mode keeps the largest when all fail) -> adaptive padding by box size, clamped to the
body's rectangle (smart padding) and the image. When nothing passes, the answer is an empty list and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from modelyard.biomedclip.config import LocalizeSettings
from modelyard.biomedclip.preprocess import min_max


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float
    score: float  # mean map value inside the detected region
    area_fraction: float  # of the unpadded box, relative to the image


@dataclass
class Localization:
    boxes: list[Box]
    reason: str = ""  # why `boxes` is empty
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Region:
    x1: int
    y1: int
    x2: int
    y2: int
    pixels: int
    heat: float

    @property
    def box_area(self) -> int:
        return (self.x2 - self.x1) * (self.y2 - self.y1)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (H,W) uint8 grey."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def body_mask(grey: np.ndarray) -> np.ndarray:
    """The seed's body mask: Otsu foreground, closed 5x5 x4, dilated 5x5 x2, minus glare (>245, dilated 3x3 x4)."""
    _, fg = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    kernel = np.ones((5, 5), np.uint8)
    body = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel, iterations=4)
    body = cv2.dilate(body, kernel, iterations=2)
    glare = cv2.dilate((grey > 245).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=4)
    return (body > 0) & (glare == 0)


def pad_fraction(area_fraction: float, opts: LocalizeSettings) -> float:
    """pad_max up to pad_small_area of the image, pad_min from pad_large_area, linear in between."""
    if area_fraction <= opts.pad_small_area:
        return opts.pad_max
    if area_fraction >= opts.pad_large_area:
        return opts.pad_min
    t = (area_fraction - opts.pad_small_area) / (opts.pad_large_area - opts.pad_small_area)
    return opts.pad_max + t * (opts.pad_min - opts.pad_max)


def _regions(heat: np.ndarray, binary: np.ndarray) -> list[_Region]:
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    regions = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        filled = np.zeros((h, w), np.uint8)
        cv2.drawContours(filled, [contour], -1, 1, thickness=cv2.FILLED, offset=(-x, -y))
        inside = filled.astype(bool)
        regions.append(_Region(x, y, x + w, y + h, int(inside.sum()), float(heat[y : y + h, x : x + w][inside].mean())))
    return regions


def localize(heat: np.ndarray, grey: np.ndarray, opts: LocalizeSettings) -> Localization:
    """Boxes (x1,y1,x2,y2 in pixels, x2/y2 exclusive) for a map in [0,1] over a grey uint8 image of the same size."""
    if heat.shape != grey.shape:
        raise ValueError(f"heatmap {heat.shape} and image {grey.shape} differ in size")
    height, width = heat.shape
    notes: list[str] = []
    heat = min_max(heat.astype(np.float32))
    if heat.max() <= 0:
        return Localization([], "the heatmap is flat: no region stands out for this prompt", notes)
    body = None
    if opts.body_mask or opts.smart_padding:
        body = body_mask(grey)
        if not body.any():
            notes.append("the body mask is empty (dark or uniform image), so it was not applied")
            body = None
    if opts.body_mask and body is not None:
        heat = min_max(heat * body)
        if heat.max() <= 0:
            return Localization([], "no part of the heatmap lies inside the body mask", notes)
    if opts.threshold_mode == "otsu":
        level, binary = cv2.threshold((heat * 255).astype(np.uint8), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        threshold = float(level) / 255.0  # pixels above Otsu's level, as OpenCV splits them
        notes.append(f"Otsu threshold {threshold:.3f}")
    else:
        threshold = opts.threshold
        binary = (heat >= threshold).astype(np.uint8) if threshold > 0 else (heat > 0).astype(np.uint8)
    regions = _regions(heat, binary)
    if not regions:
        return Localization([], f"no pixel of the heatmap reaches the threshold {threshold:.3f}", notes)
    if opts.ranking == "area_x_heat":
        regions.sort(key=lambda r: r.pixels * r.heat, reverse=True)
    else:
        regions.sort(key=lambda r: r.pixels, reverse=True)
    candidates = regions if opts.multi_box else regions[: opts.max_candidates]

    image_area = float(height * width)
    sized = [r for r in candidates if r.box_area / image_area >= opts.min_box_area]
    if not sized:
        largest = max(r.box_area for r in candidates) / image_area
        return Localization(
            [],
            f"all {len(candidates)} region(s) are smaller than min_box_area {opts.min_box_area:g} of the image "
            f"(largest {largest:.4f})",
            notes,
        )
    kept = sized
    if opts.anatomical_check:
        kept = [r for r in sized if float(grey[r.y1 : r.y2, r.x1 : r.x2].mean()) >= opts.min_mean_intensity]
        if not kept:
            if opts.multi_box:
                return Localization(
                    [],
                    f"all {len(sized)} box(es) failed the anatomical check (mean intensity below "
                    f"{opts.min_mean_intensity:g})",
                    notes,
                )
            kept = [max(sized, key=lambda r: r.box_area)]
            notes.append("every box failed the anatomical check; the largest was kept (single-box mode)")
        elif len(kept) < len(sized):
            notes.append(f"{len(sized) - len(kept)} box(es) failed the anatomical check")
    chosen = kept if opts.multi_box else kept[:1]
    bounds = None
    if opts.smart_padding and body is not None:
        ys, xs = np.nonzero(body)
        bounds = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Localization([_pad(r, width, height, image_area, opts, bounds) for r in chosen], "", notes)


def _pad(
    region: _Region,
    width: int,
    height: int,
    image_area: float,
    opts: LocalizeSettings,
    bounds: tuple[int, int, int, int] | None,
) -> Box:
    fraction = region.box_area / image_area
    pad = pad_fraction(fraction, opts)
    px, py = pad * (region.x2 - region.x1), pad * (region.y2 - region.y1)
    x1, y1, x2, y2 = region.x1 - px, region.y1 - py, region.x2 + px, region.y2 + py
    if bounds is not None:  # padding may not reach past the body, but never cuts into the detected region
        bx1, by1, bx2, by2 = bounds
        x1, y1 = max(x1, min(region.x1, bx1)), max(y1, min(region.y1, by1))
        x2, y2 = min(x2, max(region.x2, bx2)), min(y2, max(region.y2, by2))
    x1, y1 = max(0.0, x1), max(0.0, y1)
    x2, y2 = min(float(width), x2), min(float(height), y2)
    return Box(float(x1), float(y1), float(x2), float(y2), region.heat, fraction)

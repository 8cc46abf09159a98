"""Pictures of results people look at: mask overlays (later heatmaps and tracks), as RGB arrays / PNGs."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


def draw_skeletons(
    image: np.ndarray,
    keypoints: list[np.ndarray],
    bones: tuple[tuple[int, int], ...],
    boxes: list[np.ndarray] | None = None,
    colors: list[tuple[int, int, int]] | None = None,
    radius: int = 3,
) -> np.ndarray:
    """Keypoint sets (each (K,2) pixels) joined by `bones` (index pairs), with optional boxes, over the image."""
    picture = Image.fromarray(as_rgb_uint8(image))
    draw = ImageDraw.Draw(picture)
    for i, points in enumerate(keypoints):
        color = colors[i] if colors else GREEN
        for a, b in bones:
            draw.line([tuple(map(float, points[a])), tuple(map(float, points[b]))], fill=color, width=2)
        for x, y in points:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
        if boxes is not None:
            draw.rectangle([float(v) for v in boxes[i]], outline=color, width=2)
    return np.asarray(picture)


RED = (255, 0, 0)
# OpenCV's colour maps (the seed pipeline's look), by name.
COLORMAPS = {"jet": 2, "hot": 11, "inferno": 14, "turbo": 20}


def colorize(heat: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A map in [0,1] (H,W) as (H,W,3) uint8 RGB through an OpenCV colour map (needs opencv-python-headless)."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap '{colormap}'; use one of {', '.join(sorted(COLORMAPS))}")
    import cv2

    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), COLORMAPS[colormap])[:, 0, ::-1]
    return lut[(np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8)]


def burn_label(picture: np.ndarray, text: str) -> np.ndarray:
    """`text` in white on a dark band in the top-left corner, sized to the image."""
    image = Image.fromarray(as_rgb_uint8(picture))
    size = max(10, min(image.size) // 25)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(2, size // 4)
    draw.rectangle([0, 0, right - left + 2 * margin, bottom - top + 2 * margin], fill=(0, 0, 0))
    draw.text((margin - left, margin - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def heatmap_overlay(
    image: np.ndarray, heat: np.ndarray, colormap: str = "jet", alpha: float = 0.5, label: str | None = None
) -> np.ndarray:
    """A map in [0,1] (H,W) coloured and blended over the image: alpha * colour + (1 - alpha) * image."""
    rgb = as_rgb_uint8(image)
    if rgb.shape[:2] != heat.shape:
        raise ValueError(f"heatmap {heat.shape} and image {rgb.shape[:2]} differ in size")
    blended = alpha * colorize(heat, colormap).astype(np.float32) + (1 - alpha) * rgb.astype(np.float32)
    picture = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return burn_label(picture, label) if label else picture


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray | list[tuple[float, float, float, float]],
    color: tuple[int, int, int] = RED,
    width: int = 2,
    labels: list[str] | None = None,
) -> np.ndarray:
    """Boxes (x1, y1, x2, y2 in pixels) outlined over the image, with optional text at their top-left corners."""
    picture = Image.fromarray(as_rgb_uint8(image))
    draw = ImageDraw.Draw(picture)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        draw.rectangle([float(x1), float(y1), float(x2) - 1, float(y2) - 1], outline=color, width=width)
        if labels:
            draw.text((float(x1) + width + 1, float(y1) + width + 1), labels[i], fill=color)
    return np.asarray(picture)


def track_colours(count: int) -> list[tuple[int, int, int]]:
    """One colour per track, a rainbow over the tracks' order (neighbouring queries get neighbouring hues)."""
    colours = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb(i / max(count, 1) * 0.85, 0.9, 1.0)
        colours.append((int(255 * r), int(255 * g), int(255 * b)))
    return colours


def draw_tracks(
    image: np.ndarray, tracks_xy: np.ndarray, visible: np.ndarray, tail: int | None = None, radius: float = 2.0
) -> np.ndarray:
    """Point tracks (T,N,2) in pixels drawn on an image: each point's path through the frames where it is visible
    (the last `tail` frames, or all), and a dot where it is in the last frame if visible there."""
    picture = Image.fromarray(as_rgb_uint8(image))
    draw = ImageDraw.Draw(picture)
    frames = tracks_xy[-tail:] if tail else tracks_xy
    seen = visible[-tail:] if tail else visible
    for n, colour in enumerate(track_colours(tracks_xy.shape[1])):
        path = frames[:, n]
        for t in range(1, len(path)):
            if seen[t - 1, n] and seen[t, n] and np.isfinite(path[t - 1 : t + 1]).all():
                draw.line([tuple(path[t - 1]), tuple(path[t])], fill=colour, width=1)
        if seen[-1, n] and np.isfinite(path[-1]).all():
            x, y = path[-1]
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    return np.asarray(picture)

"""Sample inputs generated on the fly, so the demo needs no download: chest X-rays with an opacity, a planar clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def chest_xray(size: int = 256, seed: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A grey frontal "chest X-ray": dark lungs in a bright body, with one brighter opacity; returns the image
    and the opacity's box (x1, y1, x2, y2)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    image = np.full((size, size), 20.0, np.float32)
    body = ((xx - c) / (0.45 * size)) ** 2 + ((yy - 0.55 * size) / (0.5 * size)) ** 2 <= 1
    image[body] = 170
    for side in (-1, 1):
        lung = ((xx - c - side * 0.2 * size) / (0.14 * size)) ** 2 + ((yy - 0.5 * size) / (0.28 * size)) ** 2 <= 1
        image[lung] = 60
    side = 1 if seed % 2 else -1
    ox, oy, r = c + side * 0.2 * size, (0.4 + 0.05 * (seed % 3)) * size, (0.05 + 0.01 * (seed % 2)) * size
    image[(xx - ox) ** 2 + (yy - oy) ** 2 <= r**2] = 140
    image += rng.normal(0, 5, image.shape)
    box = (int(ox - r), int(oy - r), int(ox + r), int(oy + r))
    return np.clip(image, 0, 255).astype(np.uint8), box


def write_medvqa_inputs(folder: Path, count: int = 4, size: int = 256) -> Path:
    """Images and a CSV table in the seed pipeline's layout (gold boxes in 224 space); returns the table."""
    import csv
    import json

    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        image, (x1, y1, x2, y2) = chest_xray(size, seed=i)
        name = f"images/cxr_{i:03d}.png"
        Image.fromarray(image).save(folder / name)
        s = 224 / size
        gold = [[round(x1 * s, 1), round(y1 * s, 1), round(x2 * s, 1), round(y2 * s, 1)]]
        side = "right" if i % 2 else "left"
        rows.append(
            {
                "image_path": name,
                "question": f"Is there an opacity in the {side} lung?",
                "visual_locations": json.dumps(gold),
                "visual_regions": json.dumps([f"{side} lung"]),
                "answer_text": "yes",
            }
        )
    table = folder / "questions.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def planar_photo_video(
    photo: np.ndarray, frames: int = 12, size: tuple[int, int] = (480, 270), depth_m: float = 2.0, pan_m: float = 0.2
) -> dict[str, np.ndarray]:
    """An RGB-D clip in TAPIP3D's .npz layout: a camera sliding sideways in front of a photo printed on a wall.

    The photo lies on the plane Z = depth_m in world coordinates; the camera moves along +X by pan_m over the clip
    without rotating, so every pixel's depth is depth_m and the image shifts by fx * dx / depth_m. Returns
    video (T,H,W,3) uint8, depths (T,H,W), intrinsics (T,3,3) and extrinsics (T,4,4) world→camera.
    """
    from PIL import Image

    w, h = size
    scale = w / (photo.shape[1] * 0.8)  # the view spans 80 % of the photo's width, leaving room to pan
    fx = fy = 0.9 * w
    cx, cy = w / 2, h / 2
    big = np.asarray(Image.fromarray(photo).resize((round(photo.shape[1] * scale), round(photo.shape[0] * scale))))
    video, extrinsics = [], []
    for t in range(frames):
        tx = pan_m * t / max(frames - 1, 1)
        shift = fx * tx / depth_m  # pixels the wall moves left in the image
        x0 = (big.shape[1] - w) / 2 - fx * pan_m / depth_m / 2 + shift
        y0 = (big.shape[0] - h) / 2
        crop = Image.fromarray(big).transform(
            (w, h), Image.Transform.AFFINE, (1, 0, x0, 0, 1, y0), Image.Resampling.BILINEAR
        )
        video.append(np.asarray(crop))
        pose = np.eye(4)
        pose[0, 3] = -tx  # world→camera: the camera sits at +tx
        extrinsics.append(pose)
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32)
    return {
        "video": np.stack(video).astype(np.uint8),
        "depths": np.full((frames, h, w), depth_m, np.float32),
        "intrinsics": np.repeat(k[None], frames, axis=0),
        "extrinsics": np.stack(extrinsics).astype(np.float32),
    }

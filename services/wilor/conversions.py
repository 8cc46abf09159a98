"""The conversions between what the models produce and what the service returns. numpy only, unit-tested.

WiLoR reconstructs right hands: a left hand's crop is mirrored before the network sees it, so its outputs are
a mirrored right hand. Here they become the left hand in the image as given — joints and vertices x -> -x,
MANO rotations conjugated by the mirror (axis-angle (x, y, z) -> (x, -y, -z), the MANO left-hand model's
parameters), the crop camera's x translation negated — and crop coordinates become full-image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelyard.runtime.errors import InvalidInput
from modelyard.wilor.hands import Hand

# WiLoR's camera: focal length EXTRA.FOCAL_LENGTH px on its MODEL.IMAGE_SIZE px crop; on the full image its demo
# scales it to FOCAL_LENGTH / IMAGE_SIZE * max(W, H) with the principal point at the image centre. The upstream
# backend reads both from the model's config; these are the published config's values, the camera the
# mediapipe backend places its hands in.
WILOR_FOCAL_LENGTH = 5000.0
WILOR_IMAGE_SIZE = 256
CROP_ASPECT = (192, 256)  # MODEL.BBOX_SHAPE (w, h): the ViT sees 256x192 of the square crop
MIRROR_X = np.diag([-1.0, 1.0, 1.0])


def default_focal_length(
    width: int, height: int, crop_focal_length: float = WILOR_FOCAL_LENGTH, crop_size: int = WILOR_IMAGE_SIZE
) -> float:
    """The full image's focal length in pixels for WiLoR's crop camera (`crop_focal_length` on `crop_size`)."""
    return crop_focal_length / crop_size * max(width, height)


# -- images ----------------------------------------------------------------------------------------------
def to_rgb_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """An 8-bit grey, RGB or RGBA image as (H, W, 3) uint8 RGB."""
    if image.dtype != np.uint8:
        raise InvalidInput(f"{what}: hands need an 8-bit image (uint8), got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise InvalidInput(f"{what}: shape {image.shape} is not (H,W), (H,W,3) or (H,W,4)")


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """WiLoR's detector and crop code read images the way cv2.imread returns them: BGR."""
    return np.ascontiguousarray(image[:, :, ::-1])


# -- rotations -------------------------------------------------------------------------------------------
def axis_angle_to_rotmat(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices (Rodrigues)."""
    aa = np.asarray(axis_angle, np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.where(angle > 1e-12, angle, 1.0)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*aa.shape[:-1], 3, 3)
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def rotmat_to_axis_angle(rotmats: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle with angle in [0, pi], stable near 0 and pi."""
    r = np.asarray(rotmats, np.float64)
    batch = r.shape[:-2]
    m = r.reshape(-1, 3, 3)
    m00, m01, m02 = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    m10, m11, m12 = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    m20, m21, m22 = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    # Shepperd's method: derive the quaternion from its largest component.
    t = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=1)
    big = np.argmax(t, axis=1)
    root = np.sqrt(np.maximum(t[np.arange(len(m)), big], 1e-300))
    candidates = np.stack(
        [
            np.stack([root, (m21 - m12) / root, (m02 - m20) / root, (m10 - m01) / root], axis=1),
            np.stack([(m21 - m12) / root, root, (m01 + m10) / root, (m02 + m20) / root], axis=1),
            np.stack([(m02 - m20) / root, (m01 + m10) / root, root, (m12 + m21) / root], axis=1),
            np.stack([(m10 - m01) / root, (m02 + m20) / root, (m12 + m21) / root, root], axis=1),
        ],
        axis=1,
    )
    q = candidates[np.arange(len(m)), big]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)  # w >= 0: angle in [0, pi]
    vec = q[:, 1:]
    norm = np.linalg.norm(vec, axis=1)
    angle = 2 * np.arctan2(norm, q[:, 0])
    scale = np.where(norm > 1e-12, angle / np.maximum(norm, 1e-12), 2.0)  # small angles: 2 * vec
    return (vec * scale[:, None]).reshape(*batch, 3)


def mirror_rotmats(rotmats: np.ndarray) -> np.ndarray:
    """Rotations of a mirrored (x -> -x) body: M R M with M = diag(-1, 1, 1)."""
    return MIRROR_X @ np.asarray(rotmats, np.float64) @ MIRROR_X


def mirror_axis_angle(axis_angle: np.ndarray) -> np.ndarray:
    """The same mirror on axis-angle vectors: (x, y, z) -> (x, -y, -z)."""
    return np.asarray(axis_angle) * np.array([1.0, -1.0, -1.0])


def mirror_points(points: np.ndarray) -> np.ndarray:
    return np.asarray(points) * np.array([-1.0, 1.0, 1.0])


def hand_pose_from_mean(hand_pose: np.ndarray, is_right: bool, right_hands_mean: np.ndarray) -> np.ndarray:
    """WiLoR's hand pose (15, 3) — the articulation from the flat hand, as its MANO layer (no hands_mean) takes
    it — as the pose for a MANO that adds hands_mean itself (smplx's MANO with flat_hand_mean=False, the MANO
    paper's convention): the same hand, minus the mean pose. Left hands use the left model's mean, the right
    one's mirrored."""
    mean = np.asarray(right_hands_mean, np.float64).reshape(15, 3)
    return np.asarray(hand_pose, np.float64) - (mean if is_right else mirror_axis_angle(mean))


# -- WiLoR's crop and camera -----------------------------------------------------------------------------
def crop_geometry(boxes: np.ndarray, rescale_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres (N, 2) and square crop sizes (N,) in pixels, as WiLoR's ViTDetDataset derives them from boxes:
    the box scaled by `rescale_factor`, widened to the 192:256 aspect, its longer side."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    w = rescale_factor * (boxes[:, 2] - boxes[:, 0])
    h = rescale_factor * (boxes[:, 3] - boxes[:, 1])
    w_t, h_t = CROP_ASPECT
    taller = h / np.maximum(w, 1e-12) >= h_t / w_t
    w_new = np.where(taller, np.maximum(h * w_t / h_t, w), w)
    h_new = np.where(taller, h, np.maximum(w * h_t / w_t, h))
    return centres, np.maximum(w_new, h_new)


def crop_keypoints_to_image(
    keypoints: np.ndarray, centres: np.ndarray, sizes: np.ndarray, is_right: np.ndarray
) -> np.ndarray:
    """WiLoR's `pred_keypoints_2d` — normalised crop coordinates in [-0.5, 0.5], of the mirrored crop for left
    hands — as full-image pixels (N, 21, 2)."""
    kp = np.asarray(keypoints, np.float64).copy()
    kp[..., 0] *= np.where(np.asarray(is_right, bool), 1.0, -1.0)[:, None]
    return centres[:, None, :] + kp * np.asarray(sizes, np.float64)[:, None, None]


def camera_crop_to_full(
    pred_cam: np.ndarray,
    centres: np.ndarray,
    sizes: np.ndarray,
    is_right: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
    focal_length: np.ndarray,
) -> np.ndarray:
    """WiLoR's weak-perspective crop camera (s, tx, ty) -> a translation (N, 3) in the full image's camera
    (principal point at the centre): tz = 2f / (s * crop size), tx/ty shifted by the crop's offset. The crop
    x translation of a left hand is negated first (its crop was mirrored)."""
    cam = np.asarray(pred_cam, np.float64)
    s = cam[:, 0] * sizes + 1e-9
    tx = cam[:, 1] * np.where(np.asarray(is_right, bool), 1.0, -1.0)
    tz = 2 * focal_length / s
    return np.stack(
        [
            2 * (centres[:, 0] - width / 2.0) / s + tx,
            2 * (centres[:, 1] - height / 2.0) / s + cam[:, 2],
            tz,
        ],
        axis=-1,
    )


def project(points: np.ndarray, focal_length: float, principal_point: Sequence[float]) -> np.ndarray:
    """Pinhole projection of camera-frame points (..., 3) to pixels (..., 2)."""
    p = np.asarray(points, np.float64)
    return p[..., :2] / p[..., 2:3] * focal_length + np.asarray(principal_point, np.float64)


def fit_translation(
    local: np.ndarray, keypoints_2d: np.ndarray, focal_length: float, principal_point: Sequence[float]
) -> np.ndarray:
    """The translation t (3,) that best places metric points `local` (K, 3) so that they project onto
    `keypoints_2d` (K, 2): linear least squares of the pinhole equations f (X + t) = (u - c) (Z + t_z)."""
    p = np.asarray(local, np.float64)
    uv = np.asarray(keypoints_2d, np.float64) - np.asarray(principal_point, np.float64)
    k = len(p)
    a = np.zeros((2 * k, 3))
    a[:k, 0] = focal_length
    a[k:, 1] = focal_length
    a[:k, 2] = -uv[:, 0]
    a[k:, 2] = -uv[:, 1]
    b = np.concatenate([uv[:, 0] * p[:, 2] - focal_length * p[:, 0], uv[:, 1] * p[:, 2] - focal_length * p[:, 1]])
    t, *_ = np.linalg.lstsq(a, b, rcond=None)
    return t


def box_of_points(points: np.ndarray, margin: float, width: int, height: int) -> np.ndarray:
    """The bounding box (4,) of 2D points widened by `margin` of its size on each side, clipped to the image."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = (hi - lo) * margin
    lo, hi = lo - pad, hi + pad
    return np.array([max(lo[0], 0.0), max(lo[1], 0.0), min(hi[0], float(width)), min(hi[1], float(height))])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# -- WiLoR's outputs -> hands ----------------------------------------------------------------------------
def wilor_hands(
    outputs: dict[str, np.ndarray],
    boxes: np.ndarray,
    is_right: np.ndarray,
    centres: np.ndarray,
    sizes: np.ndarray,
    image_sizes: np.ndarray,
    focal_lengths: np.ndarray,
    scores: Sequence[float | None],
    given_index: Sequence[int | None],
    skip_vertices: Sequence[bool],
) -> list[Hand]:
    """Hands from one batch of WiLoR outputs (host arrays, first axis = hand).

    `outputs`: pred_cam (N,3); pred_keypoints_3d (N,21,3) and pred_vertices (N,778,3), MANO-frame metres of a
    right hand; pred_keypoints_2d (N,21,2) normalised crop coordinates; global_orient (N,[1,]3,3) and
    hand_pose (N,15,3,3) rotation matrices; betas (N,10). Per hand: its box, side, crop centre and size (as
    WiLoR's dataset computed them), image (W, H), focal length of the full-image camera, detector score,
    index of the given box, whether to leave the vertices out.
    """
    n = len(boxes)
    right = np.asarray(is_right, bool)
    sign = np.where(right, 1.0, -1.0)
    joints = (
        np.asarray(outputs["pred_keypoints_3d"], np.float64).reshape(n, -1, 3)
        * np.stack([sign, np.ones(n), np.ones(n)], axis=1)[:, None, :]
    )
    vertices = (
        np.asarray(outputs["pred_vertices"], np.float64).reshape(n, -1, 3)
        * np.stack([sign, np.ones(n), np.ones(n)], axis=1)[:, None, :]
    )
    orient = np.asarray(outputs["global_orient"], np.float64).reshape(n, 3, 3)
    pose = np.asarray(outputs["hand_pose"], np.float64).reshape(n, -1, 3, 3)
    orient = np.where(right[:, None, None], orient, mirror_rotmats(orient))
    pose = np.where(right[:, None, None, None], pose, mirror_rotmats(pose))
    sizes_wh = np.asarray(image_sizes, np.float64).reshape(n, 2)
    focal = np.asarray(focal_lengths, np.float64).reshape(n)
    translation = camera_crop_to_full(
        np.asarray(outputs["pred_cam"], np.float64).reshape(n, 3),
        centres, sizes, right, sizes_wh[:, 0], sizes_wh[:, 1], focal,
    )  # fmt: skip
    keypoints_2d = crop_keypoints_to_image(outputs["pred_keypoints_2d"], centres, sizes, right)
    orient_aa = rotmat_to_axis_angle(orient)
    pose_aa = rotmat_to_axis_angle(pose)
    betas = np.asarray(outputs["betas"], np.float64).reshape(n, -1)
    hands = []
    for i in range(n):
        t = translation[i]
        hands.append(
            Hand(
                box=np.asarray(boxes[i], np.float32),
                is_right=bool(right[i]),
                keypoints_2d=keypoints_2d[i].astype(np.float32),
                keypoints_3d=(joints[i] + t).astype(np.float32),
                camera_translation=t.astype(np.float32),
                focal_length=float(focal[i]),
                score=None if scores[i] is None else float(scores[i]),  # type: ignore[arg-type]
                global_orient=orient_aa[i].astype(np.float32),
                hand_pose=pose_aa[i].astype(np.float32),
                betas=betas[i].astype(np.float32),
                vertices=None if skip_vertices[i] else (vertices[i] + t).astype(np.float32),
                given_index=given_index[i],
            )
        )
    return hands


def mediapipe_is_right(label: str) -> bool:
    """MediaPipe Hands labels handedness as if the image were a mirrored selfie ("Note that handedness is
    determined assuming the input image is mirrored"): on an image as taken, its "Left" is a right hand."""
    if label not in ("Left", "Right"):
        raise ValueError(f"unexpected MediaPipe handedness label {label!r}")
    return label == "Left"

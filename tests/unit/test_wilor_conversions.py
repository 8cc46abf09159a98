"""wilor's conversions: rotations and mirroring, WiLoR's crop and camera, left hands, MediaPipe's sides."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.runtime.errors import InvalidInput
from modelyard.wilor import conversions as cv
from modelyard.wilor.hands import BONES, JOINT_NAMES

RNG = np.random.default_rng(7)


def random_axis_angle(shape: tuple[int, ...], max_angle: float = np.pi * 0.95) -> np.ndarray:
    axis = RNG.normal(size=(*shape, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    return axis * RNG.uniform(0.0, max_angle, size=(*shape, 1))


def test_axis_angle_round_trips_through_rotation_matrices() -> None:
    aa = random_axis_angle((50,))
    rotmats = cv.axis_angle_to_rotmat(aa)
    assert np.allclose(rotmats @ np.swapaxes(rotmats, -1, -2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(rotmats), 1.0)
    assert np.allclose(cv.rotmat_to_axis_angle(rotmats), aa, atol=1e-9)


@pytest.mark.parametrize("angle", [0.0, 1e-9, np.pi - 1e-6, np.pi])
def test_rotation_matrix_to_axis_angle_is_stable_at_the_ends(angle: float) -> None:
    aa = np.array([0.0, 0.6, 0.8]) * angle
    back = cv.rotmat_to_axis_angle(cv.axis_angle_to_rotmat(aa))
    # at pi, the axis and its opposite are the same rotation
    assert np.allclose(cv.axis_angle_to_rotmat(back), cv.axis_angle_to_rotmat(aa), atol=1e-9)
    assert np.isclose(np.linalg.norm(back), angle, atol=1e-6)


def test_mirroring_rotation_matrices_is_the_axis_angle_rule() -> None:
    """M R M with M = diag(-1,1,1) is (x, y, z) -> (x, -y, -z) in axis-angle (WiLoR-mini's rule for left hands)."""
    aa = random_axis_angle((16,))
    mirrored = cv.rotmat_to_axis_angle(cv.mirror_rotmats(cv.axis_angle_to_rotmat(aa)))
    assert np.allclose(mirrored, cv.mirror_axis_angle(aa), atol=1e-9)
    # and it is what mirroring the rotated points means
    points = RNG.normal(size=(10, 3))
    rot = cv.axis_angle_to_rotmat(aa[0])
    assert np.allclose(cv.mirror_points(points @ rot.T), cv.mirror_points(points) @ cv.mirror_rotmats(rot).T)


def test_crop_geometry_widens_boxes_to_wilors_aspect_like_its_dataset() -> None:
    # tall box 40x100, rescale 2: 80x200 is taller than 192:256 -> width 150, height 200 -> size 200
    # wide box 100x40, rescale 2: 200x80 is wider -> height 200*256/192 -> size 266.67
    centres, sizes = cv.crop_geometry(np.array([[10, 20, 50, 120], [0, 0, 100, 40]]), 2.0)
    assert np.allclose(centres, [[30, 70], [50, 20]])
    assert np.allclose(sizes, [200.0, 200 * 256 / 192])


def test_the_full_image_camera_scales_the_crop_camera_of_the_models_config() -> None:
    assert cv.default_focal_length(640, 480) == pytest.approx(5000 / 256 * 640)  # the published config's
    assert cv.default_focal_length(300, 400, crop_focal_length=4000.0, crop_size=224) == pytest.approx(4000 / 224 * 400)


def test_hand_pose_from_the_mean_is_what_a_mano_adding_hands_mean_needs_for_the_same_hand() -> None:
    """smplx's MANO (flat_hand_mean=False) poses the hand with hand_pose + hands_mean; WiLoR's layer with its
    hand_pose alone. MANO's left model is the mirrored right one, hands_mean included."""
    mean = random_axis_angle((15,), 0.5)
    pose = random_axis_angle((15,), 1.0)
    right = cv.hand_pose_from_mean(pose, True, mean)
    assert np.allclose(right + mean, pose)
    left = cv.hand_pose_from_mean(pose, False, mean)
    assert np.allclose(left + cv.mirror_axis_angle(mean), pose)
    # a left hand's answer is the mirror of the right hand's answer for the mirrored pose
    assert np.allclose(cv.mirror_axis_angle(left), cv.hand_pose_from_mean(cv.mirror_axis_angle(pose), True, mean))


def _synthetic_hand(is_right: bool, width: int = 640, height: int = 480) -> dict[str, np.ndarray | float]:
    """A hand in a full-image camera and what WiLoR would output for it (its left crops are mirrored)."""
    local = RNG.normal(scale=0.03, size=(21, 3))  # joints in the MANO frame, metres
    vertices = RNG.normal(scale=0.03, size=(778, 3))
    focal = cv.default_focal_length(width, height)
    translation = np.array([0.08, -0.05, focal * 0.12 / 150])  # a 12 cm hand about 150 px wide
    camera = local + translation
    pixels = cv.project(camera, focal, (width / 2, height / 2))
    box = np.concatenate([pixels.min(axis=0) - 5, pixels.max(axis=0) + 5])
    centres, sizes = cv.crop_geometry(box[None], 2.0)
    # WiLoR's crop camera for this translation: tz = 2f/(s b), t_xy shifted by the crop offset
    s = 2 * focal / (sizes[0] * translation[2])
    crop_t = translation[:2] - 2 * (centres[0] - [width / 2, height / 2]) / (s * sizes[0])
    normalised = (pixels - centres[0]) / sizes[0]
    orient, pose = random_axis_angle((3,))[0], random_axis_angle((15,))  # the true (side's own) MANO pose
    orient_m, pose_m = cv.axis_angle_to_rotmat(orient)[None], cv.axis_angle_to_rotmat(pose)
    sign = 1.0 if is_right else -1.0
    if not is_right:  # the network sees the mirrored crop and predicts a mirrored (right) hand
        local, vertices = cv.mirror_points(local), cv.mirror_points(vertices)
        normalised = normalised * [-1, 1]
        orient_m, pose_m = cv.mirror_rotmats(orient_m), cv.mirror_rotmats(pose_m)
    outputs = {
        "pred_cam": np.array([[s, sign * crop_t[0], crop_t[1]]]),
        "pred_keypoints_3d": local[None],
        "pred_keypoints_2d": normalised[None],
        "pred_vertices": vertices[None],
        "global_orient": orient_m[None],
        "hand_pose": pose_m[None],
        "betas": np.arange(10.0)[None],
    }
    return {
        "outputs": outputs, "box": box, "centres": centres, "sizes": sizes, "focal": focal, "pixels": pixels,
        "camera": camera, "translation": translation, "orient": orient, "pose": pose,
        "vertices": (cv.mirror_points(vertices) if not is_right else vertices) + translation,
    }  # fmt: skip


@pytest.mark.parametrize("is_right", [True, False], ids=["right", "left"])
def test_wilor_outputs_become_the_hand_in_the_full_image(is_right: bool) -> None:
    hand = _synthetic_hand(is_right)
    (out,) = cv.wilor_hands(
        hand["outputs"],  # type: ignore[arg-type]
        boxes=hand["box"][None],  # type: ignore[index]
        is_right=np.array([is_right]),
        centres=hand["centres"],  # type: ignore[arg-type]
        sizes=hand["sizes"],  # type: ignore[arg-type]
        image_sizes=np.array([[640.0, 480.0]]),
        focal_lengths=np.array([hand["focal"]]),
        scores=[0.9],
        given_index=[None],
        skip_vertices=[False],
    )
    assert out.is_right is is_right and out.score == pytest.approx(0.9)
    assert np.allclose(out.keypoints_2d, hand["pixels"], atol=1e-3)  # full-image pixels, un-mirrored
    assert np.allclose(out.camera_translation, hand["translation"], rtol=1e-5)
    assert np.allclose(out.keypoints_3d, hand["camera"], atol=1e-5)
    assert np.allclose(out.vertices, hand["vertices"], atol=1e-5)  # type: ignore[arg-type]
    assert np.allclose(out.global_orient, hand["orient"], atol=1e-5)  # type: ignore[arg-type]
    assert np.allclose(out.hand_pose, hand["pose"], atol=1e-5)  # type: ignore[arg-type]
    assert np.allclose(out.betas, np.arange(10.0))  # type: ignore[arg-type]
    # the 3D joints project onto the 2D ones through the reported camera
    assert np.allclose(cv.project(out.keypoints_3d, out.focal_length, (320, 240)), out.keypoints_2d, atol=0.05)
    assert {a.dtype for a in (out.keypoints_2d, out.keypoints_3d, out.camera_translation)} == {np.dtype("float32")}


def test_vertices_can_be_left_out() -> None:
    hand = _synthetic_hand(True)
    (out,) = cv.wilor_hands(
        hand["outputs"], hand["box"][None], np.array([True]), hand["centres"], hand["sizes"],  # type: ignore[arg-type,index]
        np.array([[640.0, 480.0]]), np.array([hand["focal"]]), [None], [3], [True],
    )  # fmt: skip
    assert out.vertices is None and out.score is None and out.given_index == 3
    assert out.hand_pose is not None


def test_fit_translation_recovers_the_camera_placement() -> None:
    local = RNG.normal(scale=0.04, size=(21, 3))
    translation = np.array([-0.1, 0.05, 0.7])
    pixels = cv.project(local + translation, 600.0, (320, 240))
    assert np.allclose(cv.fit_translation(local, pixels, 600.0, (320, 240)), translation, atol=1e-9)


def test_mediapipe_labels_are_for_mirrored_images() -> None:
    assert cv.mediapipe_is_right("Left") is True
    assert cv.mediapipe_is_right("Right") is False
    with pytest.raises(ValueError):
        cv.mediapipe_is_right("left")


def test_images_become_rgb_uint8_and_bgr_for_wilor() -> None:
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert cv.to_rgb_uint8(grey).shape == (2, 3, 3)
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = 255
    assert cv.to_rgb_uint8(rgba).shape == (2, 3, 3) and cv.to_rgb_uint8(rgba).max() == 0
    with pytest.raises(InvalidInput, match="8-bit"):
        cv.to_rgb_uint8(np.zeros((2, 3, 3), np.float32))
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[0, 0] = (255, 10, 0)
    assert cv.rgb_to_bgr(rgb)[0, 0].tolist() == [0, 10, 255]


def test_boxes_of_points_and_overlap() -> None:
    points = np.array([[10.0, 20.0], [30.0, 60.0]])
    assert cv.box_of_points(points, 0.1, 100, 100).tolist() == pytest.approx([8, 16, 32, 64])
    assert cv.box_of_points(points, 1.0, 35, 70).tolist() == pytest.approx([0, 0, 35, 70])  # clipped
    assert cv.box_iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10])) == pytest.approx(1 / 3)


def test_the_joint_order_and_bones() -> None:
    assert len(JOINT_NAMES) == 21 and JOINT_NAMES[0] == "wrist" and JOINT_NAMES[8] == "index_tip"
    assert len(BONES) == 20
    assert {child for _, child in BONES} == set(range(1, 21))
    assert all(parent == 0 for parent, child in BONES if JOINT_NAMES[child].endswith(("_cmc", "_mcp")) and child != 2)

"""wilor's CPU reference backend (MediaPipe Hands, real pretrained weights) on a real photograph.

The photograph comes from a PyPI package: ultralytics==8.1.34, file ultralytics/assets/zidane.jpg (tests/assets.py).
The backend runs in-process in wilor's own environment (tests/wilor_env.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelyard.wilor.conversions import box_iou, default_focal_length, project
from modelyard.wilor.hands import JOINT_NAMES
from tests.assets import HAND_PHOTO, HAND_PHOTO_INDEX_TIP, HAND_PHOTO_LEFT_HAND_BOX, fetch
from tests.wilor_env import run_backend

pytestmark = pytest.mark.integration
INDEX_TIP = JOINT_NAMES.index("index_tip")
MIDDLE_MCP = JOINT_NAMES.index("middle_mcp")
EMPTY_REGION_BOX = [80.0, 60.0, 280.0, 260.0]  # crowd, no hand


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(fetch(HAND_PHOTO)).convert("RGB"))


@pytest.fixture(scope="module")
def results(photo: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("wilor-mediapipe")
    images = {
        "photo": photo,
        "mirrored": np.ascontiguousarray(photo[:, ::-1]),
        "no_hand": np.ascontiguousarray(photo[:, :640]),  # Zidane's head and torso: no hand in view
        "grey": np.full((480, 640, 3), 128, np.uint8),
    }
    for name, image in images.items():
        np.save(folder / f"{name}.npy", image)
    queries: list[dict[str, Any]] = [{"image": str(folder / f"{name}.npy")} for name in images]
    queries.append(
        {
            "image": str(folder / "photo.npy"),
            "given": [[list(HAND_PHOTO_LEFT_HAND_BOX), False], [EMPTY_REGION_BOX, True]],
        }
    )
    out = run_backend({"model": {"backend": "mediapipe"}, "queries": queries}, folder)
    named = dict(zip([*images, "given"], out["results"], strict=True))
    return {"filled": out["filled_fields"], "info": out["info"], **named}


def _points(hand: dict[str, Any], name: str) -> np.ndarray:
    return np.asarray(hand[name], np.float64)


def test_finds_the_pointing_hand_as_a_left_hand_with_its_keypoints_inside_it(results: dict[str, Any]) -> None:
    (hand,) = results["photo"]
    assert hand["side"] == "left"  # MediaPipe says "Right": it assumes a mirrored selfie
    assert hand["side_score"] > 0.9
    assert 0.3 <= hand["score"] <= 1.0  # passed the default detection_confidence
    truth = np.array(HAND_PHOTO_LEFT_HAND_BOX)
    assert box_iou(np.asarray(hand["box"]), truth) > 0.5
    keypoints = _points(hand, "keypoints_2d")
    assert keypoints.shape == (21, 2)
    x1, y1, x2, y2 = truth
    assert ((keypoints >= [x1, y1]) & (keypoints <= [x2, y2])).all(), "keypoints outside the hand in the photo"
    bx1, by1, bx2, by2 = hand["box"]
    assert ((keypoints >= [bx1, by1]) & (keypoints <= [bx2, by2])).all(), "keypoints outside the returned box"
    # Joint order: the stretched index finger's tip is the hand's rightmost point, where the photo shows it.
    assert keypoints[:, 0].argmax() == INDEX_TIP
    assert np.linalg.norm(keypoints[INDEX_TIP] - HAND_PHOTO_INDEX_TIP) < 12


def test_a_mirrored_copy_swaps_the_side_and_mirrors_the_keypoints(results: dict[str, Any], photo: np.ndarray) -> None:
    (hand,) = results["mirrored"]
    (original,) = results["photo"]
    assert hand["side"] == "right"
    width = photo.shape[1]
    mirrored_back = _points(hand, "keypoints_2d") * [-1, 1] + [width, 0]
    error = np.linalg.norm(mirrored_back - _points(original, "keypoints_2d"), axis=1)
    assert error.mean() < 6 and error.max() < 15  # the same hand (MediaPipe is not exactly mirror-symmetric)


def test_an_image_without_a_hand_gives_an_empty_list(results: dict[str, Any]) -> None:
    assert results["no_hand"] == []
    assert results["grey"] == []


def test_3d_keypoints_are_metric_in_the_camera_and_project_onto_the_2d_ones(
    results: dict[str, Any], photo: np.ndarray
) -> None:
    (hand,) = results["photo"]
    height, width = photo.shape[:2]
    assert hand["focal_length"] == pytest.approx(default_focal_length(width, height))
    points = _points(hand, "keypoints_3d")
    assert (points[:, 2] > 0).all()
    palm = np.linalg.norm(points[0] - points[MIDDLE_MCP])
    assert 0.06 < palm < 0.14, f"wrist to middle-finger base is {palm:.3f} m, not a hand"
    reprojected = project(points, hand["focal_length"], (width / 2, height / 2))
    error = np.linalg.norm(reprojected - _points(hand, "keypoints_2d"), axis=1)
    assert error.mean() < 5 and error.max() < 12  # two predictions of one network, fitted to each other
    local = points - _points(hand, "camera_translation")
    assert np.linalg.norm(local.mean(axis=0)) < 0.05  # MediaPipe's world landmarks sit around the hand's centre


def test_mano_fields_are_absent_and_info_says_which_fields_are_filled(results: dict[str, Any]) -> None:
    for hand in results["photo"] + results["mirrored"]:
        assert not {"global_orient", "hand_pose", "betas", "vertices", "given_index"} & set(hand)
    filled = set(results["filled"])
    assert {"box", "side", "score", "keypoints_2d", "keypoints_3d"} <= filled
    assert not {"global_orient", "hand_pose", "betas", "vertices"} & filled
    assert results["info"]["details"]["filled_fields"] == ",".join(results["filled"])
    assert results["info"]["details"]["joint_order"].split(",") == list(JOINT_NAMES)


def test_given_boxes_keep_their_box_and_side_and_a_box_without_a_hand_gives_none(results: dict[str, Any]) -> None:
    (hand,) = results["given"]
    assert hand["given_index"] == 0
    assert hand["side"] == "left"
    assert hand["box"] == pytest.approx(list(HAND_PHOTO_LEFT_HAND_BOX))
    assert hand["side_score"] > 0.9  # MediaPipe agrees with the side given
    detected = _points(results["photo"][0], "keypoints_2d")
    assert np.abs(_points(hand, "keypoints_2d") - detected).max() < 15  # the same hand, found in the crop

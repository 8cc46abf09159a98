"""wilor's request parsing, its answer messages, and its config (all without a model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelyard.runtime.config import load_config, parse_config
from modelyard.runtime.errors import ConfigError, InvalidInput
from modelyard.v1 import types_pb2, wilor_pb2
from modelyard.wilor.backends import create_backend
from modelyard.wilor.client import hand_from_message, hand_to_json, options_message
from modelyard.wilor.config import WiLoRConfig
from modelyard.wilor.hands import Hand
from modelyard.wilor.model import WiLoRAdapter
from modelyard.wilor.servicer import hand_message, parse_given_hands, parse_options

CONFIG = WiLoRConfig(detection_confidence=0.4, max_hands=3, max_hands_limit=5, rescale_factor=2.5)


def test_unset_options_take_the_config_defaults() -> None:
    options = parse_options(wilor_pb2.DetectOptions(), CONFIG)
    assert (options.detection_confidence, options.max_hands, options.rescale_factor) == (0.4, 3, 2.5)
    assert options.focal_length is None and options.skip_vertices is False
    given = parse_options(options_message(0.7, 5, 1.5, 900.0, True), CONFIG)
    assert given.detection_confidence == pytest.approx(0.7) and given.max_hands == 5
    assert given.rescale_factor == 1.5 and given.focal_length == 900.0 and given.skip_vertices


def test_the_hand_pose_convention_is_the_configs_unless_the_request_chooses() -> None:
    assert parse_options(wilor_pb2.DetectOptions(), CONFIG).flat_hand_mean is True  # WiLoR's own
    from_mean = WiLoRConfig(flat_hand_mean=False)
    assert parse_options(wilor_pb2.DetectOptions(), from_mean).flat_hand_mean is False
    assert parse_options(options_message(flat_hand_mean=True), from_mean).flat_hand_mean is True
    assert parse_options(options_message(flat_hand_mean=False), CONFIG).flat_hand_mean is False


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        ({"detection_confidence": 0.0}, "detection_confidence must be within (0, 1]"),
        ({"detection_confidence": float("inf")}, "detection_confidence"),
        ({"max_hands": 6}, "max_hands must be within [1, 5]"),
        ({"rescale_factor": 0.5}, "rescale_factor must be within [1, 10]"),
        ({"focal_length": -1.0}, "focal_length"),
    ],
)
def test_bad_options_name_the_option_and_its_range(options: dict, hint: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_options(options_message(**options), CONFIG)
    assert hint in err.value.message


def _given(*boxes: tuple[float, float, float, float], side: int = wilor_pb2.HAND_SIDE_RIGHT) -> list:
    return [wilor_pb2.GivenHand(box=types_pb2.BoxXYXY(x1=b[0], y1=b[1], x2=b[2], y2=b[3]), side=side) for b in boxes]


def test_given_hands_become_boxes_and_sides() -> None:
    msgs = _given((1, 2, 30, 40)) + _given((0, 0, 60, 50), side=wilor_pb2.HAND_SIDE_LEFT)
    boxes, right = parse_given_hands(msgs, 50, 60, 4, "image 0")  # type: ignore[misc]
    assert boxes.tolist() == [[1, 2, 30, 40], [0, 0, 60, 50]] and right.tolist() == [True, False]
    assert parse_given_hands([], 50, 60, 4, "image 0") is None


@pytest.mark.parametrize(
    ("msgs", "hint"),
    [
        (_given((1, 2, 61, 40)), "outside the 60x50 image"),
        (_given((-1, 2, 30, 40)), "outside"),
        (_given((30, 2, 30, 40)), "x2 > x1"),
        (_given((1, float("nan"), 30, 40)), "finite"),
        (_given((1, 2, 30, 40), side=wilor_pb2.HAND_SIDE_UNSPECIFIED), "side is unspecified"),
        ([wilor_pb2.GivenHand(side=wilor_pb2.HAND_SIDE_LEFT)], "no box"),
        (_given(*[(1, 2, 30, 40)] * 5), "5 given hands, over the limit of 4"),
    ],
)
def test_bad_given_hands_say_which_and_what_to_fix(msgs: list, hint: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_given_hands(msgs, 50, 60, 4, "image 2")
    assert hint in err.value.message and "image 2" in err.value.message


def _hand(**extra: object) -> Hand:
    return Hand(
        box=np.array([1, 2, 3, 4], np.float32),
        is_right=False,
        keypoints_2d=np.ones((21, 2), np.float32),
        keypoints_3d=np.ones((21, 3), np.float32),
        camera_translation=np.array([0, 0, 1], np.float32),
        focal_length=500.0,
        **extra,  # type: ignore[arg-type]
    )


def test_fields_a_backend_does_not_fill_are_absent_on_the_wire_never_zeros() -> None:
    msg = hand_message(_hand())
    for name in ("score", "side_score", "global_orient", "hand_pose", "betas", "vertices", "given_index"):
        assert not msg.HasField(name), name
    assert msg.side == wilor_pb2.HAND_SIDE_LEFT
    back = hand_from_message(wilor_pb2.Hand.FromString(msg.SerializeToString()))
    assert back.score is None and back.vertices is None and back.given_index is None
    assert "vertices" not in hand_to_json(back) and hand_to_json(back)["side"] == "left"


def test_filled_fields_round_trip_exactly() -> None:
    hand = _hand(
        score=0.5, side_score=0.25, given_index=0, global_orient=np.arange(3, dtype=np.float32),
        hand_pose=np.ones((15, 3), np.float32), betas=np.zeros(10, np.float32), vertices=np.ones((778, 3), np.float32),
    )  # fmt: skip
    back = hand_from_message(wilor_pb2.Hand.FromString(hand_message(hand).SerializeToString()))
    assert back.given_index == 0 and back.score == 0.5 and back.side_score == 0.25
    assert back.betas is not None and back.betas.shape == (10,)  # zeros that ARE data stay
    assert back.vertices is not None and np.array_equal(back.vertices, hand.vertices)  # type: ignore[arg-type]
    assert back.hand_pose is not None and back.hand_pose.shape == (15, 3)


def test_config_rejects_unknown_keys_and_needs_the_upstream_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'model\.backnd'"):
        parse_config({"model": {"backnd": "mediapipe"}}, WiLoRConfig, tmp_path, "wilor.yaml")
    with pytest.raises(ConfigError, match="needs the 'upstream:' section"):
        parse_config({"model": {"backend": "upstream"}}, WiLoRConfig, tmp_path, "wilor.yaml")
    with pytest.raises(ConfigError, match="checkpoint"):
        parse_config(
            {"model": {"backend": "upstream", "upstream": {"checkout": ".", "checkpoint": "nope.ckpt",
                                                            "config": "x.yaml", "detector": "d.pt", "mano_dir": "."}}},
            WiLoRConfig, tmp_path, "wilor.yaml",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="max_hands 9 is over max_hands_limit"):
        parse_config({"model": {"max_hands": 9, "max_hands_limit": 8}}, WiLoRConfig, tmp_path, "wilor.yaml")


def test_the_mediapipe_backend_refuses_a_gpu_and_needs_no_gpu_memory() -> None:
    with pytest.raises(ConfigError, match="runs on the CPU"):
        create_backend(WiLoRConfig(), "cuda:0")
    assert WiLoRAdapter.memory_need_mb(WiLoRConfig(), 8) == 0


def test_the_upstream_memory_estimate_grows_with_the_checkpoint_and_the_batch(tmp_path: Path) -> None:
    for name in ("wilor_final.ckpt", "model_config.yaml", "detector.pt"):
        (tmp_path / name).write_bytes(b"\0" * (1 << 20))
    (tmp_path / "wilor").mkdir()
    config = parse_config(
        {"model": {"backend": "upstream", "upstream": {"checkout": ".", "checkpoint": "wilor_final.ckpt",
                                                        "config": "model_config.yaml", "detector": "detector.pt",
                                                        "mano_dir": "."}}},
        WiLoRConfig, tmp_path, "wilor.yaml",
    ).model  # fmt: skip
    assert WiLoRAdapter.memory_need_mb(config, 8) > WiLoRAdapter.memory_need_mb(config, 1) > 900


def test_the_shipped_config_loads() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "deploy" / "config" / "wilor.yaml", WiLoRConfig)
    assert config.model.backend == "mediapipe" and config.runtime.data_root == Path("/data")

"""The upstream backend's glue around the official WiLoR code, run against a stand-in checkout.

The stand-in (written below, not WiLoR's code) has WiLoR's interfaces — wilor.configs.get_config,
wilor.datasets.vitdet_dataset.ViTDetDataset, wilor.models.WiLoR and ultralytics.YOLO — and records how they are
called, so these tests check what the backend owes them: BGR images, one detector call for the frames of a batch,
crops of several frames in one forward pass, MANO files from the configured folder, checkpoint checks, left
hands un-mirrored and keypoints in full-image pixels. The real model runs where a checkout and its weights exist.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelyard.runtime.config import parse_config
from modelyard.runtime.errors import ConfigError
from modelyard.wilor.config import WiLoRConfig
from modelyard.wilor.conversions import crop_geometry, mirror_axis_angle
from modelyard.wilor.hands import Options, Query
from modelyard.wilor.model import WiLoRAdapter

FAKE_CONFIGS = """
class Node(dict):
    __getattr__ = dict.__getitem__
    def __setattr__(self, key, value):
        if self.get("_frozen"):
            raise AttributeError("frozen")
        self[key] = value
    def defrost(self):
        dict.__setitem__(self, "_frozen", False)
        for v in self.values():
            if isinstance(v, Node):
                v.defrost()
    def freeze(self):
        dict.__setitem__(self, "_frozen", True)

def get_config(path, merge=True, update_cachedir=False):
    cfg = Node(
        MODEL=Node(IMAGE_SIZE=256, BACKBONE=Node(TYPE="vit", PRETRAINED_WEIGHTS="training_data/vitpose.pth")),
        MANO=Node(DATA_DIR="mano_data", MODEL_PATH="mano_data", MEAN_PARAMS="mano_data/mano_mean_params.npz"),
        EXTRA=Node(FOCAL_LENGTH=5000),
    )
    cfg.freeze()
    return cfg
"""

FAKE_DATASET = """
import numpy as np
import torch
CALLS = []

class ViTDetDataset(torch.utils.data.Dataset):
    def __init__(self, cfg, img_cv2, boxes, right, rescale_factor=2.5, train=False):
        CALLS.append({"image": img_cv2.copy(), "boxes": boxes.copy(), "right": right.copy(), "rescale": rescale_factor})
        self.img = img_cv2
        self.center = (boxes[:, 2:4] + boxes[:, 0:2]) / 2.0
        self.scale = rescale_factor * (boxes[:, 2:4] - boxes[:, 0:2]) / 200.0
        self.right = right.astype(np.float32)
    def __len__(self):
        return len(self.center)
    def __getitem__(self, i):
        w, h = self.scale[i] * 200  # expand_to_aspect_ratio(scale * 200, [192, 256]).max()
        if h / w < 256 / 192:
            w_new, h_new = w, max(w * 256 / 192, h)
        else:
            w_new, h_new = max(h * 192 / 256, w), h
        return {"img": torch.zeros(3, 256, 256), "personid": i, "box_center": self.center[i].copy(),
                "box_size": float(max(w_new, h_new)),
                "img_size": 1.0 * np.array([self.img.shape[1], self.img.shape[0]]), "right": self.right[i].copy()}
"""

FAKE_MODELS = """
import torch
CALLS = []

def rot_y(a):
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)

class WiLoR(torch.nn.Module):
    def __init__(self, cfg, init_renderer=True):
        super().__init__()
        assert not init_renderer, "the backend must not build WiLoR's renderers"
        CALLS.append({"cfg": cfg})
        self.backbone = torch.nn.Linear(2, 2)
        self.refine_net = torch.nn.Linear(2, 2)
    def forward(self, batch):
        b = batch["img"].shape[0]
        CALLS.append({"batch": b, "right": batch["right"].tolist(), "box_center": batch["box_center"].tolist()})
        j = torch.arange(21, dtype=torch.float32)
        keypoints_2d = torch.stack([j / 50 - 0.2, j / 100 - 0.1], -1)  # normalised crop coordinates
        joints = torch.stack([0.01 * j, -0.005 * j, 0.002 * j], -1)  # a right hand, MANO frame
        return {
            "pred_cam": torch.tensor([[1.2, 0.05, -0.02]]).repeat(b, 1),
            "pred_mano_params": {
                "global_orient": rot_y(torch.full((b, 1), 0.4)),
                "hand_pose": rot_y(torch.linspace(0.1, 0.5, 15).repeat(b, 1)),
                "betas": torch.arange(10.0).repeat(b, 1),
            },
            "pred_cam_t": torch.zeros(b, 3),
            "focal_length": torch.full((b, 2), 5000.0),
            "pred_keypoints_3d": joints.repeat(b, 1, 1),
            "pred_vertices": torch.ones(b, 778, 3) * torch.tensor([0.02, 0.0, 0.0]),
            "pred_keypoints_2d": keypoints_2d.repeat(b, 1, 1),
        }
"""

FAKE_ULTRALYTICS = """
import torch
CALLS = []
# detections by image width: x1, y1, x2, y2, confidence, class (0 left, 1 right)
DETECTIONS = {
    300: [[10, 20, 60, 80, 0.9, 0], [100, 20, 150, 90, 0.8, 1], [5, 5, 20, 20, 0.2, 1]],
    240: [[30, 30, 90, 100, 0.7, 1]],
}

class _Boxes:
    def __init__(self, data):
        self.data = data

class _Result:
    def __init__(self, data):
        self.boxes = _Boxes(data)

class YOLO:
    def __init__(self, path):
        self.path = path
    def __call__(self, images, conf=0.25, verbose=True, device=None):
        CALLS.append({"images": [im.copy() for im in images], "conf": conf})
        out = []
        for im in images:
            rows = [r for r in DETECTIONS.get(im.shape[1], []) if r[4] >= conf]
            out.append(_Result(torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)))
        return out
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "WiLoR"
    files = {
        "wilor/__init__.py": "",
        "wilor/configs/__init__.py": FAKE_CONFIGS,
        "wilor/datasets/__init__.py": "",
        "wilor/datasets/vitdet_dataset.py": FAKE_DATASET,
        "wilor/models/__init__.py": FAKE_MODELS,
        "ultralytics/__init__.py": FAKE_ULTRALYTICS,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    yield root
    for name in list(sys.modules):
        if name.split(".")[0] in ("wilor", "ultralytics"):
            del sys.modules[name]
    if str(root) in sys.path:
        sys.path.remove(str(root))


def _state(missing_backbone: bool = False) -> dict[str, torch.Tensor]:
    state = {"refine_net.weight": torch.ones(2, 2), "refine_net.bias": torch.zeros(2)}
    if not missing_backbone:
        state |= {"backbone.weight": torch.ones(2, 2), "backbone.bias": torch.zeros(2)}
    return state


def _config(checkout: Path, trust: bool = True, **upstream: Any) -> WiLoRConfig:
    folder = checkout.parent
    (folder / "mano").mkdir(exist_ok=True)
    for name in ("MANO_RIGHT.pkl", "mano_mean_params.npz"):
        (folder / "mano" / name).write_bytes(b"x")
    (folder / "model_config.yaml").write_text("MODEL: {}\n")
    (folder / "detector.pt").write_bytes(b"x")
    if not (folder / "wilor_final.ckpt").exists():
        torch.save(
            {"state_dict": _state(), "hyper_parameters": {"cfg": Path("not a tensor")}}, folder / "wilor_final.ckpt"
        )
    section = {"checkout": "WiLoR", "checkpoint": "wilor_final.ckpt", "config": "model_config.yaml",
               "detector": "detector.pt", "mano_dir": "mano", "trust_checkpoint_pickle": trust, **upstream}  # fmt: skip
    return parse_config({"model": {"backend": "upstream", "upstream": section}}, WiLoRConfig, folder, "w.yaml").model


def _fakes() -> tuple[Any, Any, Any]:
    return (
        sys.modules["ultralytics"].CALLS,
        sys.modules["wilor.datasets.vitdet_dataset"].CALLS,
        sys.modules["wilor.models"].CALLS,
    )


def test_runs_wilor_as_its_demo_does_batched_across_frames(checkout: Path) -> None:
    adapter = WiLoRAdapter(_config(checkout, hands_per_batch=2), "cpu")
    adapter.load()
    detector_calls, dataset_calls, model_calls = _fakes()
    cfg = model_calls[0]["cfg"]
    mano = str(checkout.parent / "mano")
    assert mano == cfg.MANO.MODEL_PATH and f"{mano}/mano_mean_params.npz" == cfg.MANO.MEAN_PARAMS
    assert cfg.MODEL.BBOX_SHAPE == [192, 256] and "PRETRAINED_WEIGHTS" not in cfg.MODEL.BACKBONE

    rng = np.random.default_rng(0)
    frame_a = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)  # detector: left .9, right .8, right .2
    frame_b = rng.integers(0, 255, (160, 240, 3), dtype=np.uint8)  # detector: right .7
    frame_c = rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)  # given: one left hand
    options = Options(detection_confidence=0.3, max_hands=2, rescale_factor=2.0)
    queries = [
        Query(frame_a, options),
        Query(frame_b, options),
        Query(frame_c, options, boxes=np.array([[10.0, 10.0, 50.0, 60.0]]), is_right=np.array([False])),
    ]
    results = adapter.infer(queries)

    # one detector call for the frames that need it, in BGR, at the requested threshold; none for given boxes
    assert len(detector_calls) == 1 and detector_calls[0]["conf"] == pytest.approx(0.3)
    assert [im.shape for im in detector_calls[0]["images"]] == [frame_a.shape, frame_b.shape]
    assert np.array_equal(detector_calls[0]["images"][0], frame_a[:, :, ::-1])
    # WiLoR's crop code gets BGR too, with the boxes, sides and rescale factor
    assert all(np.array_equal(c["image"], q.image[:, :, ::-1]) for c, q in zip(dataset_calls, queries, strict=True))
    assert dataset_calls[0]["right"].tolist() == [0.0, 1.0] and dataset_calls[2]["right"].tolist() == [0.0]
    # four hands, two per forward pass: frames mix within a batch
    assert [c["batch"] for c in model_calls[1:]] == [2, 2]
    assert model_calls[2]["right"] == [1.0, 0.0]  # frame B's right hand with frame C's given left hand

    hands_a, hands_b, hands_c = results
    assert isinstance(hands_a, list) and isinstance(hands_b, list) and isinstance(hands_c, list)
    assert [(h.is_right, h.score) for h in hands_a] == [(False, pytest.approx(0.9)), (True, pytest.approx(0.8))]
    assert [(h.is_right, h.given_index) for h in hands_b] == [(True, None)]
    assert [(h.is_right, h.score, h.given_index) for h in hands_c] == [(False, None, 0)]
    left, right = hands_a
    assert left.box.tolist() == [10, 20, 60, 80] and right.box.tolist() == [100, 20, 150, 90]

    # 2D keypoints: full-image pixels around each crop's centre; the left crop was mirrored
    for hand in (left, right):
        (centre,), (size,) = crop_geometry(hand.box[None], 2.0)
        j = np.arange(21)
        x = (j / 50 - 0.2) * (1 if hand.is_right else -1)
        assert np.allclose(hand.keypoints_2d, centre + np.stack([x, j / 100 - 0.1], -1) * size, atol=1e-3)
    # 3D: the left hand's joints are the right-hand prediction mirrored, in the camera frame
    local_left = left.keypoints_3d - left.camera_translation
    local_right = right.keypoints_3d - right.camera_translation
    assert np.allclose(local_left, local_right * [-1, 1, 1], atol=1e-4)  # float32 at ~80 m depth
    assert left.camera_translation[2] > 0 and left.focal_length == pytest.approx(5000 / 256 * 300)
    # MANO: axis-angle, the left hand's un-mirrored
    assert right.global_orient is not None and left.global_orient is not None
    assert np.allclose(right.global_orient, [0, 0.4, 0], atol=1e-6)
    assert np.allclose(left.global_orient, mirror_axis_angle(right.global_orient), atol=1e-6)
    assert left.hand_pose is not None and left.hand_pose.shape == (15, 3)
    assert left.betas is not None and left.betas.tolist() == list(range(10))
    assert left.vertices is not None and np.allclose(left.vertices - left.camera_translation, [-0.02, 0, 0], atol=1e-4)
    info = adapter.info()
    assert info["details"]["filled_fields"].split(",")[-4:] == ["global_orient", "hand_pose", "betas", "vertices"]


def test_warm_up_runs_detector_and_network_and_options_are_per_frame(checkout: Path) -> None:
    adapter = WiLoRAdapter(_config(checkout), "cpu")
    adapter.load()
    adapter.warmup()
    detector_calls, _, model_calls = _fakes()
    assert len(detector_calls) == 1 and [c.get("batch") for c in model_calls[1:]] == [1]
    frame = np.zeros((200, 300, 3), np.uint8)
    strict, loose = Options(0.85, 2, 2.0), Options(0.1, 1, 2.0)
    first, second = adapter.infer([Query(frame, strict), Query(frame, loose)])
    assert [h.score for h in first] == [pytest.approx(0.9)]  # type: ignore[union-attr]
    assert [h.score for h in second] == [pytest.approx(0.9)]  # type: ignore[union-attr]  # best one only
    assert _fakes()[0][-1]["conf"] == pytest.approx(0.1)  # one call at the lowest threshold asked for


def test_a_checkpoint_with_python_objects_needs_explicit_trust(checkout: Path) -> None:
    adapter = WiLoRAdapter(_config(checkout, trust=False), "cpu")
    with pytest.raises(ConfigError, match="trust_checkpoint_pickle"):
        adapter.load()


def test_a_checkpoint_without_the_network_weights_is_refused(checkout: Path) -> None:
    torch.save({"state_dict": _state(missing_backbone=True)}, checkout.parent / "wilor_final.ckpt")
    with pytest.raises(ConfigError, match=r"lacks 2 weights of the network \(e\.g\. backbone\."):
        WiLoRAdapter(_config(checkout, trust=False), "cpu").load()


def test_missing_mano_files_and_a_folder_that_is_no_checkout_say_what_to_do(checkout: Path) -> None:
    config = _config(checkout)
    (checkout.parent / "mano" / "MANO_RIGHT.pkl").unlink()
    with pytest.raises(ConfigError, match=r"MANO_RIGHT\.pkl comes from the MANO website"):
        WiLoRAdapter(config, "cpu").load()
    (checkout / "wilor" / "models" / "__init__.py").unlink()
    (checkout / "wilor" / "models").rmdir()
    with pytest.raises(ConfigError, match="not a WiLoR checkout"):
        WiLoRAdapter(config, "cpu").load()

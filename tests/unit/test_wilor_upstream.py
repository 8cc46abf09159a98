"""The upstream backend's glue around the official WiLoR code, run against a stand-in checkout.

The stand-in (written below, not WiLoR's code) is laid out as the official repository is — `wilor/` and
`wilor/datasets/` without __init__.py, wilor.models importing wilor.utils whose renderers import pyrender at
module level, WiLoR building its MANO layer from `cfg.MANO` by unpickling MANO_RIGHT.pkl as smplx does, the
config read from model_config.yaml over get_config's defaults — with the same signatures, and an `ultralytics`
whose YOLO loads detector.pt with a bare `torch.load(file)` as Ultralytics 8.1.34 (WiLoR's pin) does. It records
how it is called, so these tests check what the backend owes the real code: BGR images, one detector call for
the frames of a batch, crops of several frames in one forward pass, MANO files from the configured folder and
without chumpy, the camera from the config, checkpoint checks, left hands un-mirrored, and a ConfigError naming
the file and the fix for every failure on the load path. The real code ran by hand (services/wilor/README.md).
"""

from __future__ import annotations

import os
import pickle
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
from tests.wilor_upstream_assets import mano_arrays, write_mano

FAKE_CONFIGS = """
import os
import yaml

class CfgNode(dict):  # the parts of yacs' CfgNode that WiLoR and the backend use
    def __init__(self, init=None):
        super().__init__()
        dict.__setattr__(self, "_frozen", False)
        for k, v in (init or {}).items():
            self[k] = CfgNode(v) if isinstance(v, dict) else v
    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None
    def __setattr__(self, key, value):
        if self._frozen:
            raise AttributeError("Attempted to set {} to {}, but CfgNode is immutable".format(key, value))
        self[key] = value
    def defrost(self):
        dict.__setattr__(self, "_frozen", False)
        for v in self.values():
            if isinstance(v, CfgNode):
                v.defrost()
    def freeze(self):
        dict.__setattr__(self, "_frozen", True)
        for v in self.values():
            if isinstance(v, CfgNode):
                v.freeze()
    def merge(self, other):
        for k, v in other.items():
            if isinstance(v, dict) and isinstance(self.get(k), CfgNode):
                self[k].merge(v)
            else:
                self[k] = CfgNode(v) if isinstance(v, dict) else v

CACHE_DIR_PRETRAINED = "./pretrained_models/"

def default_config():
    return CfgNode({"MODEL": {"IMAGE_SIZE": 224}, "EXTRA": {"FOCAL_LENGTH": 5000}})

def get_config(config_file: str, merge: bool = True, update_cachedir: bool = False):
    cfg = default_config() if merge else CfgNode()
    with open(config_file) as f:
        cfg.merge(yaml.safe_load(f))
    if update_cachedir:
        cfg.MANO.MODEL_PATH = os.path.join(CACHE_DIR_PRETRAINED, cfg.MANO.MODEL_PATH)
    cfg.freeze()
    return cfg
"""

FAKE_DATASET = """
import numpy as np
import torch
CALLS = []

class ViTDetDataset(torch.utils.data.Dataset):
    def __init__(self, cfg, img_cv2, boxes, right, rescale_factor=2.5, train=False, **kwargs):
        CALLS.append({"image": img_cv2.copy(), "boxes": boxes.copy(), "right": right.copy(), "rescale": rescale_factor})
        self.img = img_cv2
        self.img_size = cfg.MODEL.IMAGE_SIZE
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
        return {"img": torch.zeros(3, self.img_size, self.img_size), "personid": i,
                "box_center": self.center[i].copy(), "box_size": float(max(w_new, h_new)),
                "img_size": 1.0 * np.array([self.img.shape[1], self.img.shape[0]]), "right": self.right[i].copy()}
"""

FAKE_MODELS_INIT = """
from .mano_wrapper import MANO
from .wilor import WiLoR

def load_wilor(checkpoint_path, cfg_path):
    raise AssertionError("the backend loads the network itself")
"""

FAKE_MANO_WRAPPER = """
import os
import pickle
import torch
LOADED = []

class MANO(torch.nn.Module):  # smplx.MANOLayer's construction: model_path is a folder holding MANO_RIGHT.pkl
    def __init__(self, model_path, gender="neutral", num_hand_joints=15, create_body_pose=False, **kwargs):
        super().__init__()
        with open(os.path.join(model_path, "MANO_RIGHT.pkl"), "rb") as f:
            data = pickle.load(f, encoding="latin1")
        LOADED.append({"model_path": model_path, "data": data, "kwargs": kwargs})
        self.faces = data["f"]
        self.register_buffer("v_template", torch.tensor(data["v_template"], dtype=torch.float32))
"""

FAKE_WILOR = """
import torch
from ..utils import SkeletonRenderer, MeshRenderer
from . import MANO
CALLS = []

def rot_y(a):
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)

class WiLoR(torch.nn.Module):
    def __init__(self, cfg, init_renderer: bool = True):
        super().__init__()
        CALLS.append({"cfg": cfg})
        self.cfg = cfg
        width = cfg.MODEL.get("WIDTH", 2)
        self.backbone = torch.nn.Linear(width, 2)
        self.refine_net = torch.nn.Linear(2, 2)
        if self.cfg.LOSS_WEIGHTS.ADVERSARIAL > 0:
            self.discriminator = torch.nn.Linear(3, 3)
        self.mano = MANO(**{k.lower(): v for k, v in dict(cfg.MANO).items()})
        if init_renderer:
            self.renderer = SkeletonRenderer(self.cfg)
            self.mesh_renderer = MeshRenderer(self.cfg, faces=self.mano.faces)
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
            "focal_length": torch.full((b, 2), float(self.cfg.EXTRA.FOCAL_LENGTH)),
            "pred_keypoints_3d": joints.repeat(b, 1, 1),
            "pred_vertices": torch.ones(b, 778, 3) * torch.tensor([0.02, 0.0, 0.0]),
            "pred_keypoints_2d": keypoints_2d.repeat(b, 1, 1),
        }
"""

FAKE_UTILS = {
    "wilor/utils/__init__.py": """
        from .renderer import Renderer
        from .mesh_renderer import MeshRenderer
        from .skeleton_renderer import SkeletonRenderer
    """,
    "wilor/utils/renderer.py": """
        from typing import List
        import pyrender

        def create_raymond_lights() -> List[pyrender.Node]:
            return [pyrender.Node(light=pyrender.DirectionalLight(intensity=1.0))]

        class Renderer:
            def __init__(self, cfg, faces):
                self.lights = create_raymond_lights()
    """,
    "wilor/utils/mesh_renderer.py": """
        import os
        if 'PYOPENGL_PLATFORM' not in os.environ:
            os.environ['PYOPENGL_PLATFORM'] = 'egl'
        import pyrender

        class MeshRenderer:
            def __init__(self, cfg, faces=None):
                self.renderer = pyrender.OffscreenRenderer(viewport_width=256, viewport_height=256)
    """,
    "wilor/utils/skeleton_renderer.py": """
        class SkeletonRenderer:
            def __init__(self, cfg):
                self.cfg = cfg
    """,
}

FAKE_ULTRALYTICS = {
    "ultralytics/__init__.py": """
        __version__ = "8.1.34"
        from ultralytics.models import YOLO
    """,
    "ultralytics/nn/__init__.py": "",
    "ultralytics/nn/tasks.py": """
        import torch

        class DetectionModel(torch.nn.Module):
            def __init__(self, nc=2):
                super().__init__()
                self.names = {i: str(i) for i in range(nc)}
                self.conv = torch.nn.Conv2d(3, nc, 1)

        def torch_safe_load(weight):
            return torch.load(weight, map_location="cpu"), weight  # as in 8.1.34: no weights_only
    """,
    "ultralytics/models.py": """
        import torch
        from ultralytics.nn.tasks import torch_safe_load
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
            def __init__(self, model="yolov8n.pt", task=None, verbose=False):
                ckpt, _ = torch_safe_load(model)
                self.model = ckpt["model"]
                self.names = self.model.names
            def __call__(self, images, conf=0.25, verbose=True, device=None):
                CALLS.append({"images": [im.copy() for im in images], "conf": conf})
                out = []
                for im in images:
                    rows = [r for r in DETECTIONS.get(im.shape[1], []) if r[4] >= conf]
                    out.append(_Result(torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)))
                return out
    """,
}

MODEL_CONFIG = """
MANO:
  DATA_DIR: mano_data
  MODEL_PATH: ${MANO.DATA_DIR}
  GENDER: neutral
  NUM_HAND_JOINTS: 15
  MEAN_PARAMS: ${MANO.DATA_DIR}/mano_mean_params.npz
  CREATE_BODY_POSE: false
EXTRA:
  FOCAL_LENGTH: 5000
MODEL:
  IMAGE_SIZE: 256
  BACKBONE:
    TYPE: vit
    PRETRAINED_WEIGHTS: training_data/vitpose_backbone.pth
LOSS_WEIGHTS:
  ADVERSARIAL: 0.0005
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


def _forget_imports(root: Path) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("wilor", "ultralytics"):
            del sys.modules[name]
    while str(root) in sys.path:
        sys.path.remove(str(root))


def _write_detector(root: Path, path: Path, classes: int = 2) -> None:
    """detector.pt as Ultralytics saves it: the pickled model object under 'model'."""
    sys.path.insert(0, str(root))
    try:
        from ultralytics.nn.tasks import DetectionModel

        torch.save({"model": DetectionModel(classes), "train_args": {}, "epoch": -1}, path)
    finally:
        _forget_imports(root)


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "WiLoR"
    _write(
        root,
        {
            "wilor/configs/__init__.py": FAKE_CONFIGS,
            "wilor/datasets/vitdet_dataset.py": FAKE_DATASET,
            "wilor/models/__init__.py": FAKE_MODELS_INIT,
            "wilor/models/mano_wrapper.py": FAKE_MANO_WRAPPER,
            "wilor/models/wilor.py": FAKE_WILOR,
            **FAKE_UTILS,
            **FAKE_ULTRALYTICS,
            "pretrained_models/model_config.yaml": MODEL_CONFIG,
        },
    )
    _write_detector(root, tmp_path / "detector.pt")
    write_mano(tmp_path / "mano")
    torch.save(
        {"state_dict": _state(), "hyper_parameters": {"cfg": Path("not a tensor")}}, tmp_path / "wilor_final.ckpt"
    )
    (tmp_path / "model_config.yaml").write_text(MODEL_CONFIG)
    assert "pyrender" not in sys.modules and "chumpy" not in sys.modules
    yield root
    _forget_imports(root)


def _state(missing_backbone: bool = False, width: int = 2) -> dict[str, torch.Tensor]:
    state = {"refine_net.weight": torch.ones(2, 2), "refine_net.bias": torch.zeros(2)}
    if not missing_backbone:
        state |= {"backbone.weight": torch.ones(2, width), "backbone.bias": torch.zeros(2)}
    return state


def _config(checkout: Path, trust: bool = True, **model: Any) -> WiLoRConfig:
    section = {"checkout": "WiLoR", "checkpoint": "wilor_final.ckpt", "config": "model_config.yaml",
               "detector": "detector.pt", "mano_dir": "mano", "trust_checkpoint_pickle": trust}  # fmt: skip
    section |= model.pop("upstream", {})
    document = {"model": {"backend": "upstream", "upstream": section, **model}}
    return parse_config(document, WiLoRConfig, checkout.parent, "w.yaml").model


def _fakes() -> tuple[Any, Any, Any]:
    return (
        sys.modules["ultralytics.models"].CALLS,
        sys.modules["wilor.datasets.vitdet_dataset"].CALLS,
        sys.modules["wilor.models.wilor"].CALLS,
    )


def _load(config: WiLoRConfig) -> WiLoRAdapter:
    adapter = WiLoRAdapter(config, "cpu")
    adapter.load()
    return adapter


def test_runs_wilor_as_its_demo_does_batched_across_frames(checkout: Path) -> None:
    adapter = _load(_config(checkout, upstream={"hands_per_batch": 2}))
    detector_calls, dataset_calls, model_calls = _fakes()
    cfg = model_calls[0]["cfg"]
    assert str(checkout.parent / "mano" / "mano_mean_params.npz") == cfg.MANO.MEAN_PARAMS
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
    # MANO: axis-angle, the left hand's un-mirrored; hand_pose from the flat hand, as WiLoR gives it
    assert right.global_orient is not None and left.global_orient is not None
    assert np.allclose(right.global_orient, [0, 0.4, 0], atol=1e-6)
    assert np.allclose(left.global_orient, mirror_axis_angle(right.global_orient), atol=1e-6)
    assert right.hand_pose is not None and np.allclose(right.hand_pose[:, 1], np.linspace(0.1, 0.5, 15), atol=1e-6)
    assert left.hand_pose is not None and left.hand_pose.shape == (15, 3)
    assert left.betas is not None and left.betas.tolist() == list(range(10))
    assert left.vertices is not None and np.allclose(left.vertices - left.camera_translation, [-0.02, 0, 0], atol=1e-4)
    info = adapter.info()
    assert info["details"]["filled_fields"].split(",")[-4:] == ["global_orient", "hand_pose", "betas", "vertices"]
    assert info["details"]["ultralytics"] == "8.1.34"


def test_warm_up_runs_detector_and_network_and_options_are_per_frame(checkout: Path) -> None:
    adapter = _load(_config(checkout))
    adapter.warmup()
    detector_calls, _, model_calls = _fakes()
    assert len(detector_calls) == 1 and [c.get("batch") for c in model_calls[1:]] == [1]
    frame = np.zeros((200, 300, 3), np.uint8)
    strict, loose = Options(0.85, 2, 2.0), Options(0.1, 1, 2.0)
    first, second = adapter.infer([Query(frame, strict), Query(frame, loose)])
    assert [h.score for h in first] == [pytest.approx(0.9)]  # type: ignore[union-attr]
    assert [h.score for h in second] == [pytest.approx(0.9)]  # type: ignore[union-attr]  # best one only
    assert _fakes()[0][-1]["conf"] == pytest.approx(0.1)  # one call at the lowest threshold asked for


def test_the_camera_comes_from_the_models_config(checkout: Path) -> None:
    text = MODEL_CONFIG.replace("FOCAL_LENGTH: 5000", "FOCAL_LENGTH: 4000").replace(
        "IMAGE_SIZE: 256", "IMAGE_SIZE: 200"
    )
    (checkout.parent / "model_config.yaml").write_text(text)
    adapter = _load(_config(checkout))
    (hands,) = adapter.infer([Query(np.zeros((200, 300, 3), np.uint8), Options(0.3, 1, 2.0))])
    assert isinstance(hands, list) and hands[0].focal_length == pytest.approx(4000 / 200 * 300)
    architecture = adapter.info()["architecture"]
    assert architecture["image_size"] == 200 and architecture["focal_length"] == 4000
    asked = adapter.infer([Query(np.zeros((200, 300, 3), np.uint8), Options(0.3, 1, 2.0, focal_length=900.0))])[0]
    assert isinstance(asked, list) and asked[0].focal_length == 900.0  # the request's wins


def test_mano_with_chumpy_objects_reaches_wilor_as_numpy_without_chumpy_or_pyrender(checkout: Path) -> None:
    write_mano(checkout.parent / "mano", views=True)
    _load(_config(checkout))
    loaded = sys.modules["wilor.models.mano_wrapper"].LOADED
    (mano,) = loaded
    expected = mano_arrays()
    for key in ("shapedirs", "posedirs", "weights", "v_template", "hands_mean"):
        assert type(mano["data"][key]) is np.ndarray and np.array_equal(mano["data"][key], expected[key]), key
    assert mano["kwargs"]["mean_params"] == str(checkout.parent / "mano" / "mano_mean_params.npz")
    assert not Path(mano["model_path"]).exists()  # the numpy copy lived while the network was built
    assert "chumpy" not in sys.modules and "pyrender" not in sys.modules
    # WiLoR's renderers got a placeholder that says what it is, should anything try to render
    renderer = sys.modules["wilor.utils.renderer"]
    with pytest.raises(RuntimeError, match="renders nothing and loads no pyrender"):
        renderer.Renderer(None, None)


def test_hand_pose_can_be_had_for_a_mano_that_adds_hands_mean(checkout: Path) -> None:
    adapter = _load(_config(checkout, flat_hand_mean=False))
    frame = np.zeros((200, 300, 3), np.uint8)  # detector: a left and a right hand
    (hands,) = adapter.infer([Query(frame, adapter.default_options())])
    (flat,) = adapter.infer([Query(frame, Options(0.3, 2, 2.0, flat_hand_mean=True))])
    assert isinstance(hands, list) and isinstance(flat, list)
    mean = mano_arrays()["hands_mean"].reshape(15, 3)
    for from_mean, from_flat in zip(hands, flat, strict=True):
        assert from_mean.hand_pose is not None and from_flat.hand_pose is not None
        hand_mean = mean if from_flat.is_right else mirror_axis_angle(mean)  # MANO's left model: mirrored
        assert np.allclose(from_mean.hand_pose + hand_mean, from_flat.hand_pose, atol=1e-6)
        assert np.array_equal(from_mean.global_orient, from_flat.global_orient)  # type: ignore[arg-type]


def test_the_detector_loads_on_current_torch_only_when_trusted(checkout: Path) -> None:
    """Ultralytics 8.1's bare torch.load(detector.pt) fails on torch >= 2.6 (weights only by default)."""
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(checkout.parent / "detector.pt")  # what WiLoR's own environment meets on current torch
    assert _load(_config(checkout)).backend.detector.names == {0: "0", 1: "1"}  # type: ignore[attr-defined]
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ  # for that load only

    torch.save({"state_dict": _state()}, checkout.parent / "wilor_final.ckpt")  # tensors only: loads untrusted
    with pytest.raises(ConfigError, match=r"detector .*detector\.pt is a pickled Ultralytics model.*trust_checkpoint"):
        _load(_config(checkout, trust=False))


def test_a_detector_that_is_no_yolo_checkpoint_or_not_wilors_is_refused(checkout: Path) -> None:
    detector = checkout.parent / "detector.pt"
    detector.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"detector .*detector\.pt cannot be loaded by Ultralytics 8\.1\.34"):
        _load(_config(checkout))
    _write_detector(checkout, detector, classes=80)
    with pytest.raises(ConfigError, match="WiLoR's hand detector has two, 0 = left hand, 1 = right hand"):
        _load(_config(checkout))


def test_a_checkpoint_with_python_objects_needs_explicit_trust(checkout: Path) -> None:
    with pytest.raises(ConfigError, match=r"wilor_final\.ckpt holds Python objects.*trust_checkpoint_pickle"):
        _load(_config(checkout, trust=False))


def test_a_checkpoint_without_the_network_weights_is_refused(checkout: Path) -> None:
    torch.save({"state_dict": _state(missing_backbone=True)}, checkout.parent / "wilor_final.ckpt")
    with pytest.raises(ConfigError, match=r"lacks 2 weights of the network \(e\.g\. backbone\."):
        _load(_config(checkout))


def test_a_checkpoint_of_another_architecture_names_the_weights_that_do_not_fit(checkout: Path) -> None:
    torch.save({"state_dict": _state(width=5)}, checkout.parent / "wilor_final.ckpt")
    with pytest.raises(
        ConfigError,
        match=r"wilor_final\.ckpt does not fit the network built from .*model_config\.yaml: 1 weights have other "
        r"shapes \(e\.g\. backbone\.weight: checkpoint \(2, 5\), network \(2, 2\)\)",
    ):
        _load(_config(checkout))
    torch.save({"weights": _state()}, checkout.parent / "wilor_final.ckpt")
    with pytest.raises(ConfigError, match="has no 'state_dict': not a WiLoR"):
        _load(_config(checkout))


def test_a_config_the_network_cannot_be_built_from_says_which_file(checkout: Path) -> None:
    config = checkout.parent / "model_config.yaml"
    config.write_text(MODEL_CONFIG.replace("LOSS_WEIGHTS:\n  ADVERSARIAL: 0.0005\n", ""))
    with pytest.raises(ConfigError, match=r"network cannot be built from .*model_config\.yaml .*LOSS_WEIGHTS"):
        _load(_config(checkout))
    config.write_text("MODEL: [unclosed")
    with pytest.raises(
        ConfigError,
        match=r"(?s)WiLoR config .*model_config\.yaml cannot be used \(ParserError.*give the checkout's pretrained_mo",
    ):
        _load(_config(checkout))


def test_a_package_the_wilor_code_imports_that_is_missing_is_named_with_the_extra(checkout: Path) -> None:
    wrapper = checkout / "wilor" / "models" / "mano_wrapper.py"
    wrapper.write_text("import smplx\n" + wrapper.read_text())  # as the real one starts
    with pytest.raises(ConfigError, match=r"imports smplx, which is not installed: .*modelyard\[wilor-upstream\]"):
        _load(_config(checkout))
    _forget_imports(checkout)
    wrapper.write_text("raise RuntimeError('EGL not found')\n")
    with pytest.raises(ConfigError, match=r"cannot be imported \(RuntimeError: EGL not found\)"):
        _load(_config(checkout))


def test_missing_or_broken_mano_files_and_a_folder_that_is_no_checkout_say_what_to_do(checkout: Path) -> None:
    config = _config(checkout)
    mano = checkout.parent / "mano" / "MANO_RIGHT.pkl"
    mano.write_bytes(b"<html>sign in</html>")
    with pytest.raises(ConfigError, match=r"MANO_RIGHT\.pkl is not a MANO model file .*from the MANO website"):
        _load(config)
    mano.unlink()
    with pytest.raises(ConfigError, match=r"MANO_RIGHT\.pkl comes from the MANO website"):
        _load(config)
    for name in ("mano_wrapper.py", "wilor.py", "__init__.py"):
        (checkout / "wilor" / "models" / name).unlink()
    (checkout / "wilor" / "models").rmdir()
    with pytest.raises(ConfigError, match="not a WiLoR checkout: it has no wilor/models folder"):
        _load(config)

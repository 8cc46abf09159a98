"""Loading the official WiLoR code, its config, checkpoint, detector and MANO file for the upstream backend.

Every failure on this path is a ConfigError that names the file and what to do, never a raw traceback from
the research code. What it takes care of beyond WiLoR's own `load_wilor`:
- pyrender: wilor.models imports wilor.utils, whose renderers import pyrender (and OpenGL) at module level,
  though nothing is rendered here. A placeholder stands in for it while WiLoR's modules are imported, so no
  OpenGL library is needed; anything that would render gets a clear error from the placeholder instead.
- MANO: MANO_RIGHT.pkl is read without chumpy (mano_file.py) and given to smplx as a numpy-only copy.
- the detector: Ultralytics pickles the whole network into detector.pt. Ultralytics 8.1.x (WiLoR's pin) calls
  `torch.load(file)`, which torch >= 2.6 refuses (weights-only by default); newer Ultralytics loads with
  weights_only=False itself. Either way the file runs code when loaded, so it is loaded only when
  `trust_checkpoint_pickle` is set, and then with torch's own switch for call sites that do not choose
  (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) set for that one load.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelyard.runtime.errors import ConfigError
from modelyard.wilor.config import UpstreamSettings
from modelyard.wilor.mano_file import hands_mean, read_mano, write_numpy_mano

MEAN_PARAMS = "mano_mean_params.npz"
# The packages WiLoR's inference path imports, by module name: what to install (the `wilor-upstream` extra).
PYPI_NAMES = {
    "cv2": "opencv-python-headless",
    "skimage": "scikit-image",
    "yacs": "yacs",
    "smplx": "smplx",
    "pytorch_lightning": "pytorch-lightning",
    "timm": "timm",
    "einops": "einops",
    "trimesh": "trimesh",
    "ultralytics": "ultralytics-opencv-headless",
    "torchvision": "torchvision",
}
WITH_THE_EXTRA = "pip install 'modelyard[wilor-upstream]' (the modelyard/wilor-upstream image has them)"


@dataclass(frozen=True)
class UpstreamCode:
    """What the backend uses of the checkout and of Ultralytics."""

    wilor: Any  # wilor.models.WiLoR
    get_config: Any  # wilor.configs.get_config
    dataset: Any  # wilor.datasets.vitdet_dataset.ViTDetDataset
    yolo: Any  # ultralytics.YOLO
    ultralytics_version: str


class _NotRendering(types.ModuleType):
    """Stands in for pyrender: WiLoR's renderer modules reference its classes at import (annotations), and
    only rendering would use them."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"pyrender.{name}: modelyard's WiLoR backend renders nothing and loads no pyrender")

        return type(name, (), {"__init__": refuse, "__module__": "pyrender"})


@contextmanager
def _pyrender_placeholder() -> Iterator[None]:
    if "pyrender" in sys.modules:  # imported by someone else already: use it as it is
        yield
        return
    placeholder = _NotRendering("pyrender")
    sys.modules["pyrender"] = placeholder
    try:
        yield
    finally:
        if sys.modules.get("pyrender") is placeholder:
            del sys.modules["pyrender"]


def import_upstream(checkout: Path) -> UpstreamCode:
    """WiLoR's model class, config reader and crop dataset from the checkout, and Ultralytics' YOLO."""
    if not (checkout / "wilor" / "models").is_dir():
        raise ConfigError(
            f"{checkout} is not a WiLoR checkout: it has no wilor/models folder (model.upstream.checkout is the "
            "folder holding wilor/, demo.py and pretrained_models/)"
        )
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        with _pyrender_placeholder():
            import ultralytics
            from ultralytics import YOLO

            from wilor.configs import get_config
            from wilor.datasets.vitdet_dataset import ViTDetDataset
            from wilor.models import WiLoR
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing == "wilor":
            raise ConfigError(f"{checkout} is not a complete WiLoR checkout ({exc})") from None
        package = PYPI_NAMES.get(missing, missing)
        raise ConfigError(
            f"the WiLoR code in {checkout} imports {missing}, which is not installed: {WITH_THE_EXTRA}, or "
            f"pip install {package}"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"the WiLoR code in {checkout} cannot be imported ({type(exc).__name__}: {exc}): use the checkout "
            f"at its published state with the packages of the wilor-upstream extra ({WITH_THE_EXTRA})"
        ) from None
    return UpstreamCode(WiLoR, get_config, ViTDetDataset, YOLO, str(getattr(ultralytics, "__version__", "?")))


def model_config(code: UpstreamCode, settings: UpstreamSettings, mano_folder: Path) -> Any:
    """WiLoR's config as its load_wilor prepares it, with MANO read from `mano_folder` (not ./mano_data)."""
    try:
        cfg = code.get_config(str(settings.config), update_cachedir=False)
        cfg.defrost()
        if "vit" in str(cfg.MODEL.BACKBONE.TYPE) and "BBOX_SHAPE" not in cfg.MODEL:
            cfg.MODEL.BBOX_SHAPE = [192, 256]
        if "PRETRAINED_WEIGHTS" in cfg.MODEL.BACKBONE:
            cfg.MODEL.BACKBONE.pop("PRETRAINED_WEIGHTS")  # training only; the checkpoint holds the backbone
        cfg.MANO.DATA_DIR = str(mano_folder)
        cfg.MANO.MODEL_PATH = str(mano_folder)
        cfg.MANO.MEAN_PARAMS = str(settings.mano_dir / MEAN_PARAMS)
        crop = (int(cfg.MODEL.IMAGE_SIZE), float(cfg.EXTRA.FOCAL_LENGTH))
        cfg.freeze()
    except Exception as exc:
        raise ConfigError(
            f"WiLoR config {settings.config} cannot be used ({type(exc).__name__}: {exc}): give the checkout's "
            "pretrained_models/model_config.yaml (it needs MODEL.IMAGE_SIZE, MODEL.BACKBONE.TYPE, EXTRA.FOCAL_LENGTH "
            "and the MANO section)"
        ) from None
    if crop[0] <= 0 or crop[1] <= 0:
        raise ConfigError(f"WiLoR config {settings.config}: MODEL.IMAGE_SIZE and EXTRA.FOCAL_LENGTH must be > 0")
    return cfg


@dataclass
class Network:
    model: Any
    cfg: Any
    hands_mean: np.ndarray  # (15, 3) axis-angle, right hand


def build_network(code: UpstreamCode, settings: UpstreamSettings) -> Network:
    """WiLoR's network built from its config, with MANO from the configured folder, the checkpoint's weights
    loaded, on the CPU."""
    missing = [name for name in ("MANO_RIGHT.pkl", MEAN_PARAMS) if not (settings.mano_dir / name).is_file()]
    if missing:
        raise ConfigError(
            f"{settings.mano_dir} lacks {', '.join(missing)}: MANO_RIGHT.pkl comes from the MANO website "
            "(registration), mano_mean_params.npz from the WiLoR checkout's mano_data/"
        )
    mano = read_mano(settings.mano_dir / "MANO_RIGHT.pkl")
    with tempfile.TemporaryDirectory(prefix="modelyard-mano-") as folder:
        write_numpy_mano(mano, Path(folder))  # smplx reads it while the network is built, and never after
        cfg = model_config(code, settings, Path(folder))
        try:
            model = code.wilor(cfg, init_renderer=False)
        except Exception as exc:
            raise ConfigError(
                f"WiLoR's network cannot be built from {settings.config} with MANO from {settings.mano_dir} "
                f"({type(exc).__name__}: {exc}): the config must be the checkout's own model_config.yaml"
            ) from None
    load_weights(model, read_state_dict(settings.checkpoint, settings.trust_checkpoint_pickle), settings)
    return Network(model, cfg, hands_mean(mano))


def read_state_dict(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    try:
        checkpoint: Any = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        if not trust_pickle and ("weights_only" in str(exc) or "Unpickl" in type(exc).__name__):
            raise ConfigError(
                f"checkpoint {path} holds Python objects besides tensors (WiLoR's Lightning checkpoints keep their "
                "config in it), which are not loaded by default; if you trust the file, set "
                "model.upstream.trust_checkpoint_pickle: true"
            ) from None
        raise ConfigError(f"checkpoint {path} cannot be read by torch.load: {exc}") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {path} has no 'state_dict': not a WiLoR (Lightning) checkpoint")
    return state


def load_weights(model: Any, state: dict[str, torch.Tensor], settings: UpstreamSettings) -> None:
    """The checkpoint's weights into the network, non-strictly as WiLoR loads them (its checkpoint also holds the
    training discriminator), but with every part that predicts present and every shape matching."""
    own = model.state_dict()
    wrong = [
        f"{key}: checkpoint {tuple(value.shape)}, network {tuple(own[key].shape)}"
        for key, value in state.items()
        if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape
    ]
    if wrong:
        raise ConfigError(
            f"checkpoint {settings.checkpoint} does not fit the network built from {settings.config}: "
            f"{len(wrong)} weights have other shapes (e.g. {'; '.join(wrong[:2])}); the checkpoint and the config "
            "must be the same WiLoR model's (wilor_final.ckpt with the checkout's pretrained_models/model_config.yaml)"
        )
    missing = [k for k in own if k not in state and k.startswith(("backbone.", "refine_net."))]
    if missing:
        raise ConfigError(
            f"checkpoint {settings.checkpoint} lacks {len(missing)} weights of the network "
            f"(e.g. {', '.join(missing[:3])}): not wilor_final.ckpt, or another WiLoR version than the checkout's"
        )
    try:
        model.load_state_dict(state, strict=False)
    except Exception as exc:
        raise ConfigError(f"checkpoint {settings.checkpoint} cannot be loaded into the network: {exc}") from None


@contextmanager
def _trusted_torch_load() -> Iterator[None]:
    """torch.load calls that pass no weights_only (Ultralytics 8.1's) load full pickles, for this block only."""
    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = before


def load_detector(code: UpstreamCode, settings: UpstreamSettings) -> Any:
    path = settings.detector
    if not settings.trust_checkpoint_pickle:
        raise ConfigError(
            f"detector {path} is a pickled Ultralytics model (the network object itself, not only tensors), so "
            "loading it runs code from the file; if you trust it, set model.upstream.trust_checkpoint_pickle: true"
        )
    try:
        with _trusted_torch_load():
            detector = code.yolo(str(path))
    except Exception as exc:
        raise ConfigError(
            f"detector {path} cannot be loaded by Ultralytics {code.ultralytics_version} ({type(exc).__name__}: "
            f"{exc}): it must be a YOLO detection checkpoint such as WiLoR's pretrained_models/detector.pt"
        ) from None
    names = getattr(detector, "names", None)
    if not isinstance(names, dict | list) or len(names) != 2:
        raise ConfigError(
            f"detector {path} has classes {names!r}: WiLoR's hand detector has two, 0 = left hand, 1 = right hand"
        )
    return detector

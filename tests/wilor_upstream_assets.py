"""Files in the formats the official WiLoR code reads, with random contents, for tests and hand checks.

- a MANO model file in MANO_RIGHT.pkl's layout (the keys, shapes and types of the file from the MANO website:
  a Python 2-style pickle, protocol 2, with `shapedirs` a `chumpy.ch.Ch` and, optionally, chumpy views of
  arrays), made with stand-in classes registered under chumpy's module names only while the bytes are written;
- an untrained YOLOv8n hand detector built from Ultralytics' own model yaml, saved the way Ultralytics saves
  checkpoints (needs ultralytics);
- WiLoR's Lightning checkpoint (`state_dict` + `hyper_parameters` with the yacs config) of a network built from
  a checkout's model_config.yaml with random weights (needs the checkout and the wilor-upstream packages).

    python -m tests.wilor_upstream_assets --checkout WiLoR --out assets/   # all of them, random weights

Nothing is downloaded. The MANO file is synthetic: vertices, blend shapes and regressors are random numbers
of MANO's shapes, good for running the code, not for looking at hands.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

NUM_VERTICES, NUM_FACES, NUM_JOINTS = 778, 1538, 16
# MANO's kinematic tree: the wrist, then five fingers of three joints each (index, middle, pinky, ring, thumb).
MANO_PARENTS = [2**32 - 1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]


def _chumpy_class(module: types.ModuleType, name: str) -> type:
    cls = type(name, (), {"__module__": module.__name__, "__qualname__": name})
    setattr(module, name, cls)
    return cls


@contextmanager
def chumpy_standins() -> Iterator[dict[str, type]]:
    """Classes named as chumpy's (chumpy.ch.Ch, chumpy.reordering.Select/Reshape/transpose), registered in
    sys.modules for the block only, so that pickle writes the references a chumpy-made file holds."""
    names = ("chumpy", "chumpy.ch", "chumpy.reordering")
    if any(n in sys.modules for n in names):
        raise RuntimeError("chumpy (or a stand-in) is already imported; the stand-ins would shadow it")
    modules = {n: types.ModuleType(n) for n in names}
    classes = {
        "Ch": _chumpy_class(modules["chumpy.ch"], "Ch"),
        "Select": _chumpy_class(modules["chumpy.reordering"], "Select"),
        "Reshape": _chumpy_class(modules["chumpy.reordering"], "Reshape"),
        "transpose": _chumpy_class(modules["chumpy.reordering"], "transpose"),
    }
    sys.modules.update(modules)
    try:
        yield classes
    finally:
        for n in names:
            del sys.modules[n]


def _chumpy_object(cls: type, **terms: Any) -> Any:
    """An object with the state chumpy pickles (`Ch.__getstate__`: its __dict__ without _parents and _cache)."""
    obj = cls.__new__(cls)
    obj.__dict__.update({"_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}, **terms})
    return obj


def mano_arrays(seed: int = 0) -> dict[str, Any]:
    """MANO_RIGHT.pkl's contents as numpy/scipy objects of the real shapes and dtypes, random values: a hand-sized
    point cloud, joints regressed from nearby vertices, skinning weights that sum to one."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    v_template = rng.uniform([-0.05, -0.02, -0.01], [0.05, 0.1, 0.01], (NUM_VERTICES, 3))
    regressor = np.zeros((NUM_JOINTS, NUM_VERTICES))
    for j in range(NUM_JOINTS):
        regressor[j, rng.choice(NUM_VERTICES, 8, replace=False)] = 1 / 8
    weights = rng.random((NUM_VERTICES, NUM_JOINTS)) ** 8
    return {
        "hands_components": np.linalg.qr(rng.normal(size=(45, 45)))[0],
        "f": rng.integers(0, NUM_VERTICES, (NUM_FACES, 3)).astype(np.uint32),
        "J_regressor": sparse.csc_matrix(regressor),
        "kintree_table": np.array([MANO_PARENTS, list(range(NUM_JOINTS))], np.int64),
        "J": regressor @ v_template,
        "bs_style": "lbs",
        "hands_coeffs": rng.normal(0, 0.5, (1554, 45)),
        "weights": weights / weights.sum(axis=1, keepdims=True),
        "posedirs": rng.normal(0, 1e-3, (NUM_VERTICES, 3, 135)),
        "hands_mean": rng.normal(0, 0.2, 45),
        "v_template": v_template,
        "shapedirs": rng.normal(0, 1e-3, (NUM_VERTICES, 3, 10)),
        "bs_type": "lrotmin",
    }


def mano_pickle_bytes(arrays: dict[str, Any], views: bool = False) -> bytes:
    """The MANO file's bytes as chumpy wrote them: shapedirs a chumpy Ch; with `views`, posedirs a Reshape of a
    Select of a Ch and weights a transpose of a Ch too (chumpy files hold such views)."""
    with chumpy_standins() as ch:
        content = dict(arrays)
        content["shapedirs"] = _chumpy_object(ch["Ch"], x=arrays["shapedirs"])
        if views:
            flat = arrays["posedirs"].ravel()
            order = np.random.default_rng(1).permutation(flat.size)
            base = np.empty_like(flat)
            base[order] = flat  # base.ravel()[order] == flat
            select = _chumpy_object(ch["Select"], a=_chumpy_object(ch["Ch"], x=base), idxs=order)
            content["posedirs"] = _chumpy_object(ch["Reshape"], a=select, newshape=arrays["posedirs"].shape)
            content["weights"] = _chumpy_object(
                ch["transpose"], a=_chumpy_object(ch["Ch"], x=arrays["weights"].T.copy()), axes=None
            )
        return pickle.dumps(content, protocol=2)


def write_mano(folder: Path, views: bool = False, mean_params: Path | None = None) -> Path:
    """folder/MANO_RIGHT.pkl (chumpy-shaped) and folder/mano_mean_params.npz (the checkout's, or random)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MANO_RIGHT.pkl").write_bytes(mano_pickle_bytes(mano_arrays(), views))
    if mean_params is not None:
        shutil.copy(mean_params, folder / "mano_mean_params.npz")
    else:  # the layout of WiLoR's mano_data/mano_mean_params.npz
        rng = np.random.default_rng(2)
        np.savez(folder / "mano_mean_params.npz", pose=rng.normal(0, 0.1, 96), shape=np.zeros(10), cam=[0.9, 0, 0])
    return folder


def write_detector(path: Path) -> Path:
    """An untrained YOLOv8n with WiLoR's two classes (0 left, 1 right), saved as Ultralytics saves a trained
    model (its trainer's `save_model`: the half-precision model object under 'model', train_args, metadata)."""
    import torch
    from ultralytics import __version__
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    model.names = {0: "left", 1: "right"}
    args = {**DEFAULT_CFG_DICT, "model": "yolov8n.yaml", "task": "detect", "imgsz": 640}
    model.args = args
    checkpoint = {
        "date": "2026-01-01T00:00:00",
        "version": __version__,
        "license": "AGPL-3.0 License",
        "epoch": -1,
        "best_fitness": None,
        "model": model.half(),
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": args,
        "train_metrics": None,
        "train_results": None,
    }
    torch.save(checkpoint, path)
    return path


def write_checkpoint(checkout: Path, config: Path, mano_dir: Path, path: Path) -> Path:
    """WiLoR's network from `config` with random weights, saved as Lightning saves it (state_dict and the
    hyper-parameters, the yacs config among them)."""
    import pytorch_lightning
    import torch

    from modelyard.wilor.backends.upstream_load import import_upstream, model_config
    from modelyard.wilor.config import UpstreamSettings
    from modelyard.wilor.mano_file import read_mano, write_numpy_mano

    code = import_upstream(checkout)
    settings = UpstreamSettings.model_construct(
        checkout=checkout, checkpoint=path, config=config, detector=path, mano_dir=mano_dir
    )
    folder = path.parent / ".mano-numpy"
    folder.mkdir(exist_ok=True)
    write_numpy_mano(read_mano(mano_dir / "MANO_RIGHT.pkl"), folder)
    cfg = model_config(code, settings, folder)
    torch.manual_seed(0)
    model = code.wilor(cfg, init_renderer=False)
    shutil.rmtree(folder)
    torch.save(
        {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": pytorch_lightning.__version__,
            "state_dict": model.state_dict(),
            "loops": {},
            "callbacks": {},
            "optimizer_states": [],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": {"cfg": cfg},
        },
        path,
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, required=True, help="the official WiLoR checkout (holds wilor/)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    config = out / "model_config.yaml"
    shutil.copy(args.checkout / "pretrained_models" / "model_config.yaml", config)
    mano = write_mano(out / "mano_data", mean_params=args.checkout / "mano_data" / "mano_mean_params.npz")
    write_detector(out / "detector.pt")
    write_checkpoint(args.checkout.resolve(), config, mano, out / "wilor_final.ckpt")
    for name in sorted(p.name for p in out.iterdir()):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

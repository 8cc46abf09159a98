"""A checkpoint in the format the official TAPIP3D code reads, with random weights, for tests and hand checks.

`tapip3d_random.pth` is `{"cfg", "weight"}` as TAPIP3D's training saves it and its `models.from_pretrained` reads
it: `cfg` an OmegaConf config with `model` (`point_tracker_3d`: 16-frame windows, the CoTracker CNN encoder, KNN
correlation over 16 neighbours at 4 levels, an EfficientUpdateFormer of 3 space + 3 time layers, isotropic
normalisation) and `train_dataset.resolution`; `weight` the state dict of a model the checkout's own
`models.from_config` built from it (26.4 M parameters). The file is then reloaded by `models.from_pretrained`,
which loads the weights strictly.

    python -m tests.tapip3d_upstream_assets --checkout TAPIP3D --out assets/   # needs the tapip3d-upstream packages

Nothing is downloaded. The cfg says `pretrained: true`, as released checkpoints do (the encoder would then
torch.hub.load CoTracker3); building and reloading force it off in a copy, and torch.hub.load raises meanwhile.
Where pointops2's CUDA kernels (imported with the models) are not built, the service's torch knnquery takes their
place, as in the service (modelyard.tapip3d.upstream); building and loading never call it.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_NAME = "tapip3d_random.pth"
CORR_LEVELS, TRANSFORMER_DIM = 4, 128
POSENC_DEGREES = 16  # TAPIP3D's posenc(min_deg=-2, max_deg=14): each value, then its sin and cos at 16 scales


def updater_input_dim(corr_levels: int, transformer_dim: int) -> int:
    """What PointTracker3D feeds its point updater: visibility, one correlation embedding per level and the
    posenc of the displacements to the previous and next frames (3 + 3 values)."""
    return 1 + corr_levels * transformer_dim + 6 * (1 + 2 * POSENC_DEGREES)


def checkpoint_config(height: int, width: int) -> Any:
    """The cfg a TAPIP3D checkpoint holds: `model` (what from_config takes) and `train_dataset.resolution`."""
    from omegaconf import OmegaConf

    encoder = {"name": "cotracker_cnn", "output_dim": 128, "stride": 4, "pretrained": True, "freeze_mode": "none"}
    corr_feature = {
        "name": "knn_corr_4d_optimized",
        "k_neighbors": 16,
        "posenc_mlp_dim": TRANSFORMER_DIM,
        "posenc_mlp_layers": 2,
        "transformer_dim": TRANSFORMER_DIM,
        "transformer_num_heads": 8,
        "transformer_head_dim": TRANSFORMER_DIM // 8,
        "transformer_mlp_ratio": 4.0,
        "better_depth_downsample": True,  # the only mode the code accepts
    }
    point_updater = {
        "name": "efficient_updateformer",
        "space_depth": 3,
        "time_depth": 3,
        "input_dim": updater_input_dim(CORR_LEVELS, TRANSFORMER_DIM),
        "hidden_size": 384,
        "num_heads": 8,
        "output_dim": 4,  # a 3D displacement and a visibility logit per point and frame
        "mlp_ratio": 4.0,
        "num_virtual_tracks": 64,
        "add_space_attn": True,
        "linear_layer_for_vis_conf": False,
    }
    model = {"name": "point_tracker_3d", "seq_len": 16, "corr_levels": CORR_LEVELS, "norm_mode": "isotropic"}
    model.update(use_local_pos_input=False, use_uv_input=False)  # as updater_input_dim counts
    model.update(encoder=encoder, corr_feature=corr_feature, point_updater=point_updater)
    return OmegaConf.create({"model": model, "train_dataset": {"resolution": [height, width]}})


def import_models(checkout: Path) -> types.ModuleType:
    """The checkout's `models` package, imported with the checkout first on sys.path (its top-level names, such
    as `datasets` and `utils`, are its own), and the service's torch knnquery where pointops2's kernels are not
    built, as the service puts it."""
    from modelyard.tapip3d.upstream import put_torch_knnquery_in_place

    sys.path.insert(0, str(checkout.resolve()))
    if importlib.util.find_spec("pointops2_cuda") is None:
        put_torch_knnquery_in_place(checkout)
    return importlib.import_module("models")


def _refuse_hub(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(f"torch.hub.load{args} was called: the encoder's pretrained flag was not forced off")


@contextmanager
def offline(models: types.ModuleType) -> Iterator[None]:
    """Within: `models.from_config` (which from_pretrained calls too) builds from a copy of the model cfg with
    the encoder's `pretrained` off, and torch.hub.load raises."""
    import torch

    build: Callable[..., Any] = models.from_config

    def from_config(cfg: Any, **kwargs: Any) -> Any:
        cfg = copy.deepcopy(cfg)
        cfg.encoder.pretrained = False
        return build(cfg, **kwargs)

    hub_load, torch.hub.load = torch.hub.load, _refuse_hub
    setattr(models, "from_config", from_config)  # noqa: B010 (a module attribute mypy cannot know)
    try:
        yield
    finally:
        setattr(models, "from_config", build)  # noqa: B010
        torch.hub.load = hub_load


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def write_checkpoint(models: types.ModuleType, cfg: Any, path: Path, seed: int = 0) -> int:
    """TAPIP3D's network from cfg.model with random weights, saved as its training saves it; its parameter count."""
    import torch

    torch.manual_seed(seed)
    with offline(models):
        model = models.from_config(cfg.model, image_size=cfg.train_dataset.resolution)
    torch.save({"cfg": cfg, "weight": model.state_dict()}, path)
    return parameter_count(model)


def verify(models: types.ModuleType, path: Path) -> int:
    """Reload with TAPIP3D's from_pretrained (a strict load of the weights); the loaded model's parameter count."""
    with offline(models):
        model, cfg = models.from_pretrained(path)
    assert cfg.model.encoder.pretrained, "the saved cfg must keep pretrained: true"
    return parameter_count(model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, required=True, help="the official TAPIP3D checkout (holds models/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--height", type=int, default=128, help="the training resolution the cfg records")
    parser.add_argument("--width", type=int, default=160)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILE_NAME
    models = import_models(args.checkout)
    built = write_checkpoint(models, checkpoint_config(args.height, args.width), path)
    print(f"built point_tracker_3d at {args.height}x{args.width}: {built:,} parameters")
    loaded = verify(models, path)
    assert loaded == built, f"{loaded} parameters loaded, {built} saved"
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, {loaded:,} parameters, loaded strictly by from_pretrained")
    return 0


if __name__ == "__main__":
    sys.exit(main())

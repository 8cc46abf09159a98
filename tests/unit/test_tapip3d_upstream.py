"""The upstream backend against a stand-in checkout shaped like TAPIP3D's (github zbw001/TAPIP3D at 9359ae2):
the same layout, module names, entry points and signatures — `models.from_config`, the checkpoint's
{"cfg", "weight"} dict, the CoTracker encoder's `pretrained` flag, pointops2 imported as
third_party.pointops2.functions.pointops over a CUDA extension this Python lacks — and a top-level `utils` that
clashes with another one. What is ours is tested for real: the import hygiene, our knnquery put in pointops2's
place, the load path's errors, the inputs prepared as inference.py prepares them, grids, padding, output shapes,
progress. The real model, verified by hand, is in services/tapip3d/README.md."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from modelyard.runtime.config import load_config
from modelyard.runtime.errors import ConfigError
from modelyard.runtime.progress import Progress
from modelyard.tapip3d import geometry, knn, synthetic
from modelyard.tapip3d.backend import TrackOptions
from modelyard.tapip3d.config import TAPIP3DConfig, UpstreamConfig
from modelyard.tapip3d.model import TAPIP3DAdapter, TrackItem
from modelyard.tapip3d.sequence import Limits, RGBDClip, make_clip
from modelyard.tapip3d.upstream import Upstream, inference_size, pad_frames, unpad
from tests.conftest import write_config

COMMIT = "9359ae2" + "0" * 33
OFFLINE = "It looks like there is no internet connection and the repo could not be found in the cache"

# The parts of TAPIP3D the backend touches. The model keeps points where they were queried (right for a static
# world), walks its windows the way PointTracker3D.streaming_forward does, once more backwards when a query is
# after frame 0 (as inference() does), and asks pointops2's knnquery for each query's neighbours.
FAKE_CHECKOUT = {
    "utils/__init__.py": 'WHO = "tapip3d"\n',
    "utils/late.py": 'WHO = "tapip3d"\n',
    "utils/inference_utils.py": """
        import torch

        from third_party.cotracker.model_utils import get_points_on_a_grid
        import models  # TAPIP3D's absolute imports resolve inside the checkout
        from models.corr_features.knn_feature_4d_optimized import pointops

        CALLS = []
        GRIDS = []

        def get_grid_queries(grid_size, depths, intrinsics, extrinsics):
            # (T,H,W) depths: a grid at the first frame lifted with its depth, K and world->camera E
            GRIDS.append({"grid_size": grid_size, "depths": depths.numpy(), "intrinsics": intrinsics.numpy()})
            xy = get_points_on_a_grid(grid_size, depths.shape[-2:])[0]
            ji = torch.round(xy).long()
            d = depths[0][ji[:, 1], ji[:, 0]]
            xy, d = xy[d > 0], d[d > 0]
            rays = torch.cat([xy, torch.ones_like(xy[:, :1])], -1) @ torch.linalg.inv(intrinsics[0]).T
            camera = torch.cat([rays * d[:, None], torch.ones_like(d[:, None])], -1)
            world = (camera @ torch.linalg.inv(extrinsics[0]).T)[:, :3]
            return torch.cat([torch.zeros_like(d[:, None]), world], -1)

        def load_model(checkpoint_path):
            raise AssertionError("the service builds the model itself")

        def _windows(model, t_count):
            for window_end in range(model.seq_len, t_count + 1, model.seq_len // 2):
                list(model._wrapped_forward_window(window_end=window_end))

        def inference(*, model, video, depths, intrinsics, extrinsics, query_point, num_iters=6, grid_size=8,
                      bidrectional=True, vis_threshold=0.9):
            import utils.late  # imported at call time, like TAPIP3D's lazy imports

            t_count = video.shape[0]
            model.set_image_size(tuple(video.shape[-2:]))
            _windows(model, t_count)
            if bidrectional and not model.bidirectional and (query_point[..., 0] > 0).any():
                _windows(model, t_count)
            points = query_point[:, 1:].contiguous()
            offsets = torch.tensor([len(points)], dtype=torch.int32)
            idx, dist = pointops.knnquery(1, points, points, offsets, offsets)
            CALLS.append({
                "video": video.cpu().numpy(), "depths": depths.cpu().numpy(),
                "intrinsics": intrinsics.cpu().numpy(), "extrinsics": extrinsics.cpu().numpy(),
                "query_point": query_point.cpu().numpy(), "num_iters": num_iters, "grid_size": grid_size,
                "bidrectional": bidrectional, "vis_threshold": vis_threshold, "late": utils.late.WHO,
                "knnquery": pointops.knnquery.__module__, "nearest": idx[:, 0].tolist(),
            })
            coords = query_point[None, :, 1:].expand(t_count, -1, -1)
            visibs = torch.ones(t_count, query_point.shape[0], dtype=torch.bool)
            return coords.squeeze(), visibs.squeeze()  # TAPIP3D squeezes: N=1 comes back as (T,3)
    """,
    "models/__init__.py": """
        import torch

        from .point_tracker_3d import PointTracker3D

        def from_config(cfg, **kwargs):
            kwargs.update(cfg)
            name = kwargs.pop("name")
            if name != "point_tracker_3d":
                raise ValueError(f"Model {name} not supported")
            return PointTracker3D(**kwargs)
    """,
    "models/point_tracker_3d.py": """
        import torch

        from .corr_features.knn_feature_4d_optimized import pointops  # noqa: F401 (imported at build, as TAPIP3D)
        from .encoders.cotracker_cnn import CoTrackerCNNEncoder

        class PointTracker3D(torch.nn.Module):
            bidirectional = False

            def __init__(self, image_size, seq_len, encoder, hidden=4, eval_mode="local"):
                super().__init__()
                self.image_size = tuple(image_size)
                self.seq_len = seq_len
                self.encoder = CoTrackerCNNEncoder(**encoder)
                self.head = torch.nn.Linear(hidden, hidden)
                self.eval_mode = eval_mode

            def set_eval_mode(self, eval_mode):
                self.eval_mode = eval_mode

            def set_image_size(self, image_size):
                self.image_size = image_size

            def _wrapped_forward_window(self, **kwargs):
                yield kwargs["window_end"]
    """,
    "models/encoders/__init__.py": "",
    "models/encoders/cotracker_cnn.py": f"""
        import torch

        class CoTrackerCNNEncoder(torch.nn.Module):
            def __init__(self, output_dim, pretrained, hub_model=None):
                super().__init__()
                self.pretrained = pretrained
                self.backbone = torch.nn.Linear(3, output_dim)
                if pretrained or hub_model:  # torch.hub.load in an offline container
                    raise RuntimeError("{OFFLINE} (~/.cache/torch/hub).")
    """,
    "models/corr_features/__init__.py": "",
    "models/corr_features/knn_feature_4d_optimized.py": "import third_party.pointops2.functions.pointops as pointops\n",
    "third_party/pointops2/__init__.py": "",
    "third_party/pointops2/functions/__init__.py": "from pointops2 import *\n",
    "third_party/pointops2/functions/pointops.py": """
        import pointops2_cuda as pointops_cuda  # the CUDA extension a user builds with setup.py

        def knnquery(nsample, xyz, new_xyz, offset, new_offset):
            raise AssertionError("pointops2's kernels are not built here")
    """,
    "third_party/cotracker/model_utils.py": """
        import torch

        def get_points_on_a_grid(size, extent):
            height, width = extent
            margin = width / 64
            ys = torch.linspace(margin, height - margin, size)
            xs = torch.linspace(margin, width - margin, size)
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            return torch.stack([grid_x, grid_y], dim=-1).reshape(1, -1, 2)
    """,
    "datasets/__init__.py": "",
    "datasets/data_ops.py": """
        FILTERED = []

        def _filter_one_depth(depth, depth_rtol, normal_tol, intrinsics):
            FILTERED.append((depth_rtol, normal_tol))
            out = depth.copy()
            out[:, :3] = 0  # an edge filtered away: grids are lifted after this
            return out
    """,
    "training/datatypes.py": "",
    "inference.py": "",
    ".git/HEAD": "ref: refs/heads/main\n",
    ".git/refs/heads/main": COMMIT + "\n",
}

# A checkpoint as TAPIP3D's training saves it: the cfg (an OmegaConf DictConfig there) and the state dict.
CFG = {
    "model": {"name": "point_tracker_3d", "seq_len": 8, "encoder": {"output_dim": 8, "pretrained": True}},
    "train_dataset": {"resolution": [48, 64]},
}


def weights(output_dim: int = 8, hidden: int = 4) -> dict[str, torch.Tensor]:
    return {
        "encoder.backbone.weight": torch.randn(output_dim, 3),
        "encoder.backbone.bias": torch.randn(output_dim),
        "head.weight": torch.randn(hidden, hidden),
        "head.bias": torch.randn(hidden),
    }


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "TAPIP3D"
    for name, text in FAKE_CHECKOUT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "tapip3d_final.pth"
    torch.save({"cfg": CFG, "weight": weights()}, path)
    return path


@pytest.fixture
def our_utils(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """Another top-level `utils`, already imported in this process (the clash upstream's own users hit)."""
    folder = tmp_path / "ours" / "utils"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text('WHO = "ours"\n')
    spec = importlib.util.spec_from_file_location("utils", folder / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "utils", module)
    return module


def upstream(checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, **settings: object) -> Upstream:
    """An upstream backend on the CPU."""
    config = UpstreamConfig.model_validate({"root": str(checkout), "checkpoint": str(checkpoint), **settings})
    backend = Upstream(config, "cpu")
    backend.load()
    return backend


def load_error(checkout: Path, checkpoint: Path) -> str:
    config = UpstreamConfig.model_validate({"root": str(checkout), "checkpoint": str(checkpoint)})
    with pytest.raises(ConfigError) as err:
        Upstream(config, "cpu").load()
    return err.value.message


@pytest.fixture(scope="module")
def scene() -> synthetic.Scene:
    return synthetic.make_scene(width=96, height=72, frames=5, seed=2)


def clip_of(scene: synthetic.Scene) -> RGBDClip:
    return make_clip(scene.video, scene.depths, scene.intrinsics, scene.extrinsics, Limits(100, 100, 10**6))


def calls(backend: Upstream) -> list[dict]:
    return backend.imports.import_module("utils.inference_utils").CALLS  # type: ignore[attr-defined, no-any-return]


# -- loading ----------------------------------------------------------------------------------------------
def test_a_missing_checkout_and_checkpoint_are_named_when_the_config_is_read(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, {"backend": "upstream", "upstream": {"root": "models/TAPIP3D", "checkpoint": "models/t.pth"}}
    )
    with pytest.raises(ConfigError) as err:
        load_config(config, TAPIP3DConfig)
    assert str(tmp_path / "models" / "TAPIP3D") in err.value.message
    assert str(tmp_path / "models" / "t.pth") in err.value.message


def test_the_upstream_backend_needs_its_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs an 'upstream:' section"):
        load_config(write_config(tmp_path, {"backend": "upstream"}), TAPIP3DConfig)


def test_on_the_cpu_the_model_runs_with_our_knnquery_in_place_of_pointops2(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, scene: synthetic.Scene
) -> None:
    backend = upstream(checkout, checkpoint, monkeypatch)
    queries = np.array([[0, 0.0, 0.0, 6.0], [0, 1.0, 0.0, 6.0], [0, 0.2, 0.0, 6.0]])
    backend.track(clip_of(scene), queries, TrackOptions(), Progress())
    call = calls(backend)[-1]
    assert call["knnquery"] == knn.__name__ and call["nearest"] == [0, 1, 2]  # each query is its own nearest
    assert backend.info()["details"]["knnquery"] == "torch"
    assert "pointops2" not in sys.modules  # ours stands in for it only inside the checkout's imports


def test_pointops2s_kernels_are_used_on_cuda_when_this_python_has_them(
    checkout: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = UpstreamConfig.model_validate({"root": str(checkout), "checkpoint": str(checkpoint)})
    assert Upstream(config, "cuda")._knn_choice() == "torch"  # not built
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "pointops2_cuda.py").write_text("")  # stands in for the built extension
    monkeypatch.syspath_prepend(str(tmp_path / "kernels"))
    monkeypatch.delitem(sys.modules, "pointops2_cuda", raising=False)
    assert Upstream(config, "cuda")._knn_choice() == "pointops2"
    assert Upstream(config, "cpu")._knn_choice() == "torch"  # the kernels are CUDA only


def test_a_folder_that_is_not_a_checkout_is_reported_together_with_an_untrusted_checkpoint(
    tmp_path: Path, checkpoint: Path
) -> None:
    config = UpstreamConfig.model_validate(
        {"root": str(tmp_path), "checkpoint": str(checkpoint), "trust_checkpoint_pickle": False}
    )
    with pytest.raises(ConfigError) as err:
        Upstream(config, "cpu").load()
    message = err.value.message
    assert "is not a TAPIP3D checkout (no utils/inference_utils.py" in message
    assert "trust_checkpoint_pickle: true" in message


def test_a_package_the_checkout_imports_but_the_image_lacks_is_named_with_the_image_to_use(
    checkout: Path, checkpoint: Path
) -> None:
    (checkout / "models" / "__init__.py").write_text("from hydra import initialize_config_dir, compose\n")
    message = load_error(checkout, checkpoint)
    assert "TAPIP3D's models/__init__.py" in message and "imports 'hydra'" in message
    assert "modelyard/tapip3d-upstream" in message


def test_a_module_of_the_checkout_that_fails_to_import_is_named(checkout: Path, checkpoint: Path) -> None:
    (checkout / "datasets" / "data_ops.py").write_text("raise OSError('libGL.so.1: cannot open shared object')\n")
    message = load_error(checkout, checkpoint)
    assert "TAPIP3D's datasets.data_ops" in message and "OSError: libGL.so.1" in message


def test_a_checkout_of_another_tapip3d_version_says_what_it_lacks(checkout: Path, checkpoint: Path) -> None:
    (checkout / "utils" / "inference_utils.py").write_text("def inference(**kwargs):\n    pass\n")
    message = load_error(checkout, checkpoint)
    assert "is not the TAPIP3D this service runs: its utils.inference_utils has no get_grid_queries" in message


def test_a_checkout_without_pointops2_says_it_is_incomplete(checkout: Path, checkpoint: Path) -> None:
    (checkout / "third_party" / "pointops2" / "functions" / "__init__.py").unlink()
    message = load_error(checkout, checkpoint)
    assert "is not a TAPIP3D checkout (no third_party/pointops2/functions/__init__.py)" in message


def test_a_file_that_is_no_checkpoint_is_named(checkout: Path, tmp_path: Path) -> None:
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    message = load_error(checkout, tmp_path / "garbage.pth")
    assert f"{tmp_path / 'garbage.pth'} could not be read" in message and "tapip3d_final.pth" in message


def test_a_checkpoint_without_cfg_and_weight_is_refused_with_what_it_holds(checkout: Path, tmp_path: Path) -> None:
    torch.save(weights(), tmp_path / "state_dict.pth")  # a bare state dict, as other trackers ship
    message = load_error(checkout, tmp_path / "state_dict.pth")
    assert "is not a TAPIP3D checkpoint: expected a dict with 'cfg' and 'weight'" in message
    assert "encoder.backbone.weight" in message


def test_a_cfg_the_checkout_cannot_build_is_reported_with_the_checkouts_error(checkout: Path, tmp_path: Path) -> None:
    cfg = {**CFG, "model": {**CFG["model"], "name": "spatracker"}}
    torch.save({"cfg": cfg, "weight": weights()}, tmp_path / "other.pth")
    message = load_error(checkout, tmp_path / "other.pth")
    assert "cannot build the model" in message and "ValueError: Model spatracker not supported" in message


def test_a_cfg_without_the_image_size_is_not_a_tapip3d_checkpoint(checkout: Path, tmp_path: Path) -> None:
    torch.save({"cfg": {"model": CFG["model"]}, "weight": weights()}, tmp_path / "partial.pth")
    message = load_error(checkout, tmp_path / "partial.pth")
    assert "cfg has no model / train_dataset.resolution" in message


def test_weights_of_other_shapes_are_reported_with_the_mismatch(checkout: Path, tmp_path: Path) -> None:
    torch.save({"cfg": CFG, "weight": weights(output_dim=16)}, tmp_path / "wider.pth")
    message = load_error(checkout, tmp_path / "wider.pth")
    assert f"{tmp_path / 'wider.pth'}'s weights do not fit the model its cfg describes" in message
    assert "size mismatch for encoder.backbone.weight" in message


def test_the_pretrained_encoder_is_built_without_a_hub_download(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CFG says encoder.pretrained: true, which offline would fail in torch.hub.load; the strict load of the
    # checkpoint's weights replaces those weights anyway.
    backend = upstream(checkout, checkpoint, monkeypatch)
    assert backend.model.encoder.pretrained is False and backend.model.eval_mode == "raw"
    saved = torch.load(checkpoint, weights_only=False)
    assert torch.equal(backend.model.encoder.backbone.weight, saved["weight"]["encoder.backbone.weight"])


def test_a_hub_download_while_building_names_the_hub_cache_setting(checkout: Path, tmp_path: Path) -> None:
    cfg = {**CFG, "model": {**CFG["model"], "encoder": {"output_dim": 8, "pretrained": False, "hub_model": "x"}}}
    torch.save({"cfg": cfg, "weight": weights()}, tmp_path / "hub.pth")
    message = load_error(checkout, tmp_path / "hub.pth")
    assert "no internet connection" in message and "model.upstream.torch_hub_dir" in message


# -- import hygiene ---------------------------------------------------------------------------------------
def test_the_checkout_is_imported_without_leaking_into_the_process(
    checkout: Path, checkpoint: Path, our_utils: object, monkeypatch: pytest.MonkeyPatch, scene: synthetic.Scene
) -> None:
    path_before, modules_before = list(sys.path), set(sys.modules)
    backend = upstream(checkout, checkpoint, monkeypatch)
    assert sys.modules["utils"] is our_utils and sys.path == path_before
    leaked = {m for m in set(sys.modules) - modules_before if m.partition(".")[0] in backend.imports.names}
    assert not leaked
    # While TAPIP3D runs, its own `utils` is the one it imports (here lazily, at call time) ...
    backend.track(clip_of(scene), np.array([[0, 0.0, 0.0, 6.0]]), TrackOptions(), Progress())
    assert calls(backend)[-1]["late"] == "tapip3d"
    # ... and afterwards everything else still sees ours.
    assert sys.modules["utils"] is our_utils and sys.modules["utils"].WHO == "ours"
    assert sys.path == path_before


# -- what goes in and comes out ---------------------------------------------------------------------------
def test_inputs_reach_tapip3d_as_its_inference_py_prepares_them(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, scene: synthetic.Scene
) -> None:
    backend = upstream(checkout, checkpoint, monkeypatch, resolution_factor=2.0)
    clip = clip_of(scene)
    queries = scene.sample_queries(6, 1, np.random.default_rng(0)).queries
    backend.track(clip, queries, TrackOptions(iterations=4, visibility_threshold=0.7), Progress())
    call = calls(backend)[-1]
    height, width = inference_size((48, 64), 2.0)
    assert (height, width) == (67, 90)  # the checkpoint's 48x64 x sqrt(2), truncated
    # 5 frames padded to one 8-frame window with the last frame; RGB in [0, 1], channels first
    assert call["video"].shape == (8, 3, height, width) and call["video"].min() >= 0 and call["video"].max() <= 1
    np.testing.assert_array_equal(call["video"][5:], np.repeat(call["video"][4:5], 3, axis=0))
    assert call["depths"].shape == (8, height, width)
    np.testing.assert_allclose(
        call["intrinsics"][0], geometry.rescale_intrinsics(clip.intrinsics[0], (72, 96), (67, 90)), rtol=1e-6
    )
    np.testing.assert_allclose(call["extrinsics"][:5], clip.extrinsics, atol=1e-6)
    np.testing.assert_allclose(call["query_point"], queries, rtol=1e-6)  # world queries, untouched
    assert call["num_iters"] == 4 and call["vis_threshold"] == 0.7
    assert call["grid_size"] == 16  # inference.py's support grid beside explicit queries
    filtered = backend.imports.import_module("datasets.data_ops").FILTERED  # type: ignore[attr-defined]
    assert filtered[-5:] == [(0.08, 15)] * 5  # inference.py's depth edge filter, once per real frame


def test_grid_queries_get_no_support_grid_and_defaults_come_from_the_config(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, scene: synthetic.Scene
) -> None:
    backend = upstream(checkout, checkpoint, monkeypatch, num_iters=3, visibility_threshold=0.8)
    backend.track(clip_of(scene), np.array([[0, 0.0, 0.0, 6.0]]), TrackOptions(queries_are_grid=True), Progress())
    call = calls(backend)[-1]
    assert call["grid_size"] == 0 and call["num_iters"] == 3 and call["vis_threshold"] == 0.8


@pytest.mark.parametrize("count", [1, 7])
def test_tracks_come_back_as_t_n_3_world_points_without_the_padding(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, scene: synthetic.Scene, count: int
) -> None:
    backend = upstream(checkout, checkpoint, monkeypatch)
    truth = scene.sample_queries(count, 0, np.random.default_rng(1), patches=(0,))  # the still wall
    tracks = backend.track(clip_of(scene), truth.queries, TrackOptions(), Progress())
    assert tracks.coords.shape == (5, count, 3) and tracks.visibs.shape == (5, count)
    np.testing.assert_allclose(tracks.coords, truth.tracks, atol=1e-5)


def test_progress_counts_preparation_then_the_models_windows(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, scene: synthetic.Scene
) -> None:
    backend = upstream(checkout, checkpoint, monkeypatch)
    reports: list[tuple[int, int, str]] = []

    class Recorder(Progress):
        def report(self, done: int, total: int, stage: str = "") -> None:
            reports.append((done, total, stage))

    backend.track(clip_of(scene), np.array([[0, 0.0, 0.0, 6.0]]), TrackOptions(), Recorder())
    # 5 frames prepared, then the one 8-frame window (the clip was padded to 8)
    assert reports == [(t, 13, "preparing frames") for t in range(1, 6)] + [(13, 13, "tracking")]
    assert "_wrapped_forward_window" not in vars(backend.model)  # the hook is gone afterwards


def test_progress_on_a_one_window_clip_counts_the_backward_pass_to_the_end(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, scene: synthetic.Scene
) -> None:
    backend = upstream(checkout, checkpoint, monkeypatch)
    reports: list[tuple[int, int, str]] = []

    class Recorder(Progress):
        def report(self, done: int, total: int, stage: str = "") -> None:
            reports.append((done, total, stage))

    # a query after frame 0: upstream tracks forwards, then backwards; 5 frames padded to one 8-frame window
    backend.track(clip_of(scene), np.array([[2, 0.0, 0.0, 6.0]]), TrackOptions(), Recorder())
    assert reports[5:] == [(13, 21, "tracking"), (21, 21, "tracking backward")]


def test_grids_are_lifted_by_tapip3d_from_the_resized_edge_filtered_depth(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, scene: synthetic.Scene
) -> None:
    backend = upstream(checkout, checkpoint, monkeypatch, resolution_factor=1.0)
    grids = backend.imports.import_module("utils.inference_utils").GRIDS  # type: ignore[attr-defined]
    clip = clip_of(scene)
    raw = np.array([[1, 0.0, 0.0, 6.0]])  # what the servicer lifted from the raw depth: replaced
    tracks = backend.track(clip, raw, TrackOptions(queries_are_grid=True, grid=(4, 1)), Progress())
    grid = grids[-1]
    assert grid["grid_size"] == 4 and grid["depths"].shape == (1, 48, 64)  # frame 1 at the model's size
    assert (grid["depths"][0, :, :3] == 0).all()  # after upstream's edge filter
    np.testing.assert_allclose(
        grid["intrinsics"][0], geometry.rescale_intrinsics(clip.intrinsics[1], (72, 96), (48, 64)), rtol=1e-6
    )
    call = calls(backend)[-1]
    assert tracks.queries is not None and (tracks.queries[:, 0] == 1).all()  # at the grid's frame
    np.testing.assert_allclose(call["query_point"], tracks.queries, rtol=1e-5)  # what was tracked
    assert tracks.coords.shape == (5, len(tracks.queries), 3) and len(tracks.queries) > 1


def test_info_names_the_checkpoint_and_the_checkouts_commit(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = upstream(checkout, checkpoint, monkeypatch).info()
    assert info["backend"] == "upstream" and info["checkpoint"] == str(checkpoint)
    assert info["details"]["commit"] == COMMIT and info["architecture"] == {"image_size": (48, 64), "seq_len": 8}
    assert info["details"]["knnquery"] == "torch"
    assert len(info["checkpoint_sha256"]) == 64


def test_the_adapter_loads_warms_up_and_tracks_with_upstream(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, scene: synthetic.Scene
) -> None:
    config = TAPIP3DConfig.model_validate(
        {"backend": "upstream", "upstream": {"root": str(checkout), "checkpoint": str(checkpoint)}}
    )
    adapter = TAPIP3DAdapter(config, "cpu")
    adapter.load()
    adapter.warmup()
    (result,) = adapter.infer([TrackItem(clip_of(scene), np.array([[0, 0.0, 0.0, 6.0]]))])
    assert not isinstance(result, Exception) and result.coords.shape == (5, 1, 3)
    assert TAPIP3DAdapter.memory_need_mb(config, 1) > 4000  # checked against free GPU memory before loading


# -- the conversions on their own -------------------------------------------------------------------------
def test_padding_repeats_the_last_frame_and_unpadding_restores_shapes() -> None:
    frames = np.arange(3)[:, None] * np.ones((3, 2))
    assert pad_frames(frames, 5).tolist() == [[0, 0], [1, 1], [2, 2], [2, 2], [2, 2]]
    assert pad_frames(frames, 2) is frames
    squeezed = np.zeros((8, 3))  # TAPIP3D's (T,N,3).squeeze() for N=1
    tracks = unpad(squeezed, np.ones(8), num_frames=5, num_points=1)
    assert tracks.coords.shape == (5, 1, 3) and tracks.visibs.shape == (5, 1) and tracks.visibs.dtype == bool

"""The upstream backend without a GPU: a fake TAPIP3D checkout with TAPIP3D's layout and entry points (and a
top-level `utils` that clashes with another one) stands in for the real code. What is ours is tested for real:
the import hygiene, the inputs prepared as inference.py prepares them, padding, output shapes, progress, errors.
The real model runs only where a checkout, its checkpoint and CUDA exist."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelyard.runtime.config import load_config
from modelyard.runtime.errors import ConfigError
from modelyard.runtime.progress import Progress
from modelyard.tapip3d import geometry, synthetic
from modelyard.tapip3d.backend import TrackOptions
from modelyard.tapip3d.config import TAPIP3DConfig, UpstreamConfig
from modelyard.tapip3d.model import TAPIP3DAdapter, TrackItem
from modelyard.tapip3d.sequence import Limits, RGBDClip, make_clip
from modelyard.tapip3d.upstream import Upstream, inference_size, pad_frames, unpad
from tests.conftest import write_config

COMMIT = "9359ae2" + "0" * 33

# The parts of TAPIP3D the backend touches, with its signatures; the model keeps points where they were queried
# (right for a static world) and walks its windows the way PointTracker3D.streaming_forward does.
FAKE_CHECKOUT = {
    "utils/__init__.py": 'WHO = "tapip3d"\n',
    "utils/late.py": 'WHO = "tapip3d"\n',
    "utils/inference_utils.py": """
        from pathlib import Path

        import torch

        import models  # TAPIP3D's absolute imports resolve inside the checkout

        CALLS = []

        def load_model(checkpoint_path):
            assert Path(checkpoint_path).is_file()
            return models.PointTracker3D()

        def inference(*, model, video, depths, intrinsics, extrinsics, query_point, num_iters=6, grid_size=8,
                      bidrectional=True, vis_threshold=0.9):
            import utils.late  # imported at call time, like TAPIP3D's lazy imports

            t_count = video.shape[0]
            model.set_image_size(tuple(video.shape[-2:]))
            for window_end in range(model.seq_len, t_count + 1, model.seq_len // 2):
                list(model._wrapped_forward_window(window_end=window_end))
            CALLS.append({
                "video": video.cpu().numpy(), "depths": depths.cpu().numpy(),
                "intrinsics": intrinsics.cpu().numpy(), "extrinsics": extrinsics.cpu().numpy(),
                "query_point": query_point.cpu().numpy(), "num_iters": num_iters, "grid_size": grid_size,
                "bidrectional": bidrectional, "vis_threshold": vis_threshold, "late": utils.late.WHO,
            })
            coords = query_point[None, :, 1:].expand(t_count, -1, -1)
            visibs = torch.ones(t_count, query_point.shape[0], dtype=torch.bool)
            return coords.squeeze(), visibs.squeeze()  # TAPIP3D squeezes: N=1 comes back as (T,3)
    """,
    "models/__init__.py": """
        import torch

        class PointTracker3D(torch.nn.Module):
            bidirectional = False

            def __init__(self):
                super().__init__()
                self.image_size = (48, 64)
                self.seq_len = 8

            def set_image_size(self, image_size):
                self.image_size = image_size

            def _wrapped_forward_window(self, **kwargs):
                yield kwargs["window_end"]
    """,
    "datasets/__init__.py": "",
    "datasets/data_ops.py": """
        FILTERED = []

        def _filter_one_depth(depth, depth_rtol, normal_tol, intrinsics):
            FILTERED.append((depth_rtol, normal_tol))
            return depth
    """,
    "third_party/cotracker/model_utils.py": "",
    "inference.py": "",
    ".git/HEAD": "ref: refs/heads/main\n",
    ".git/refs/heads/main": COMMIT + "\n",
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
    path.write_bytes(b"weights")
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
    """An upstream backend on the CPU (its CUDA requirement waived: the fake needs none)."""
    monkeypatch.setattr(Upstream, "problems", lambda self: [])
    config = UpstreamConfig.model_validate({"root": str(checkout), "checkpoint": str(checkpoint), **settings})
    backend = Upstream(config, "cpu")
    backend.load()
    return backend


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


def test_without_cuda_one_error_says_so_and_points_to_lift2d(checkout: Path, checkpoint: Path) -> None:
    config = UpstreamConfig.model_validate({"root": str(checkout), "checkpoint": str(checkpoint)})
    with pytest.raises(ConfigError) as err:
        Upstream(config, "cpu").load()
    assert "needs CUDA" in err.value.message and "backend: lift2d" in err.value.message


def test_a_folder_that_is_not_a_checkout_is_reported_together_with_the_missing_cuda(
    tmp_path: Path, checkpoint: Path
) -> None:
    config = UpstreamConfig.model_validate({"root": str(tmp_path), "checkpoint": str(checkpoint)})
    with pytest.raises(ConfigError) as err:
        Upstream(config, "cpu").load()
    message = err.value.message
    assert "is not a TAPIP3D checkout (no utils/inference_utils.py" in message and "needs CUDA" in message


def test_a_broken_checkout_says_what_to_install(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (checkout / "models" / "__init__.py").write_text("import xformers_that_is_not_installed\n")
    with pytest.raises(ConfigError, match=r"install its requirements\.txt"):
        upstream(checkout, checkpoint, monkeypatch)


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


def test_info_names_the_checkpoint_and_the_checkouts_commit(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = upstream(checkout, checkpoint, monkeypatch).info()
    assert info["backend"] == "upstream" and info["checkpoint"] == str(checkpoint)
    assert info["details"]["commit"] == COMMIT and info["architecture"] == {"image_size": (48, 64), "seq_len": 8}
    assert len(info["checkpoint_sha256"]) == 64


def test_the_adapter_loads_warms_up_and_tracks_with_upstream(
    checkout: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, scene: synthetic.Scene
) -> None:
    monkeypatch.setattr(Upstream, "problems", lambda self: [])
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

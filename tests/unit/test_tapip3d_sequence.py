"""Clips, queries and result files in TAPIP3D's formats (their rejections are tested on the service)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelyard.runtime.config import load_config
from modelyard.runtime.errors import InvalidInput
from modelyard.tapip3d import sequence
from modelyard.tapip3d.config import TAPIP3DConfig
from modelyard.tapip3d.synthetic import Scene, make_scene

LIMITS = sequence.Limits(max_frames=100, max_points=1024, max_pixels=200_000)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return make_scene(width=96, height=72, frames=8, seed=1)


@pytest.fixture(scope="module")
def clip(scene: Scene) -> sequence.RGBDClip:
    return sequence.make_clip(scene.video, scene.depths, scene.intrinsics, scene.extrinsics, LIMITS)


def test_pixel_queries_lift_to_the_true_world_points(scene: Scene, clip: sequence.RGBDClip) -> None:
    truth = scene.sample_queries(30, frame=5, rng=np.random.default_rng(0))
    world = sequence.pixel_queries(clip, truth.pixels, LIMITS)
    np.testing.assert_allclose(world, truth.queries, atol=1e-5)


def test_world_queries_pass_through_unchanged(scene: Scene, clip: sequence.RGBDClip) -> None:
    truth = scene.sample_queries(10, frame=2, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(sequence.world_queries(clip, truth.queries, LIMITS), truth.queries)


def test_grid_points_without_depth_are_left_out_as_tapip3d_does(scene: Scene) -> None:
    depths = scene.depths.copy()
    depths[:, :, :48] = 0  # no depth on the left half
    clip = sequence.make_clip(scene.video, depths, scene.intrinsics, scene.extrinsics, LIMITS)
    queries = sequence.grid_queries(clip, 4, frame=0, limits=LIMITS)
    assert len(queries) == 8  # the right two columns of the 4x4 grid
    assert (queries[:, 0] == 0).all()


def test_one_camera_matrix_serves_every_frame_and_no_extrinsics_means_identity(scene: Scene) -> None:
    clip = sequence.make_clip(scene.video, scene.depths.astype(np.float16), scene.intrinsics[0], None, LIMITS)
    assert clip.intrinsics.shape == (8, 3, 3) and np.array_equal(clip.intrinsics[5], scene.intrinsics[0])
    assert np.array_equal(clip.extrinsics, np.repeat(np.eye(4)[None], 8, axis=0))
    assert clip.depths.dtype == np.float32  # ViPE's float16 depths are accepted


def test_results_are_written_atomically_with_tapip3ds_result_keys(clip: sequence.RGBDClip, tmp_path: Path) -> None:
    coords = np.random.default_rng(0).normal(size=(8, 3, 3)).astype(np.float32)
    visibs = np.ones((8, 3), bool)
    queries = np.zeros((3, 4))
    path = sequence.write_result(tmp_path / "out" / "clip.result.npz", clip, coords, visibs, queries)
    assert [p.name for p in path.parent.iterdir()] == ["clip.result.npz"]  # no temporary file left behind
    with np.load(path) as data:
        keys = ["coords", "depths", "extrinsics", "intrinsics", "query_points", "video", "visibs"]
        assert sorted(data.files) == keys
        # visualize.py reads video as (T,3,H,W) floats in [0,1]
        assert data["video"].shape == (8, 3, 72, 96) and data["video"].min() >= 0 and data["video"].max() <= 1
        np.testing.assert_allclose(data["video"][2], clip.video[2].transpose(2, 0, 1) / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(data["coords"], coords)
    lean = sequence.write_result(tmp_path / "lean.npz", clip, coords, visibs, queries, with_inputs=False)
    with np.load(lean) as data:
        assert "video" not in data.files and "depths" not in data.files


def test_an_npz_holding_python_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    np.savez(path, video=np.array([{"not": "an array"}], dtype=object))
    with pytest.raises(InvalidInput, match=r"not a readable \.npz of plain arrays"):
        sequence.read_npz(path)


def test_the_shipped_config_is_valid() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "deploy" / "config" / "tapip3d.yaml", TAPIP3DConfig)
    assert config.model.backend == "lift2d" and config.runtime.data_root == Path("/data")

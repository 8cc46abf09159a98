"""The synthetic RGB-D scenes the tracking tests rely on: their ground truth is exact, not estimated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelyard.tapip3d import geometry
from modelyard.tapip3d.synthetic import Scene, make_scene


@pytest.fixture(scope="module")
def scene() -> Scene:
    return make_scene(width=128, height=96, frames=24, seed=0)


def test_the_truth_agrees_with_the_rendered_depth_wherever_a_point_is_visible(scene: Scene) -> None:
    truth = scene.sample_queries(64, frame=0, rng=np.random.default_rng(0))
    pixels, z = geometry.project_world(truth.tracks, scene.intrinsics[:, None], scene.extrinsics[:, None])
    t, n = np.nonzero(truth.visible)
    rendered = scene.depths[t, np.round(pixels[t, n, 1]).astype(int), np.round(pixels[t, n, 0]).astype(int)]
    # The nearest pixel centre is at most half a pixel away: on these surfaces that moves depth by well under 2%.
    np.testing.assert_allclose(rendered, z[t, n], rtol=0.02)
    # At the query frame the queries sit exactly on pixel centres.
    np.testing.assert_allclose(pixels[0], truth.pixels[:, 1:], atol=1e-6)


def test_the_wall_stays_put_in_the_world_while_the_camera_moves(scene: Scene) -> None:
    truth = scene.sample_queries(40, frame=0, rng=np.random.default_rng(1), patches=(0,))
    np.testing.assert_allclose(truth.tracks, np.broadcast_to(truth.tracks[:1], truth.tracks.shape), atol=1e-9)
    camera = geometry.world_to_camera(truth.tracks, scene.extrinsics)
    assert np.abs(camera[-1] - camera[0]).max() > 0.1  # seen from a camera that moved


def test_the_sweeping_bar_hides_points_that_are_inside_the_frame(scene: Scene) -> None:
    truth = scene.sample_queries(64, frame=0, rng=np.random.default_rng(2), patches=(0,))
    pixels, _ = geometry.project_world(truth.tracks, scene.intrinsics[:, None], scene.extrinsics[:, None])
    inside = (pixels[..., 0] >= 0) & (pixels[..., 0] <= 127) & (pixels[..., 1] >= 0) & (pixels[..., 1] <= 95)
    hidden_inside = inside & ~truth.visible
    assert hidden_inside.any()
    # ... and they come back once it has passed.
    covered_then_seen = [n for n in range(64) if hidden_inside[:, n].any() and truth.visible[-1, n]]
    assert covered_then_seen


def test_a_scene_saves_in_tapip3ds_input_format(scene: Scene, tmp_path: Path) -> None:
    queries = scene.sample_queries(5, frame=3, rng=np.random.default_rng(3)).queries
    with np.load(scene.save_npz(tmp_path / "clip.npz", queries)) as data:
        assert sorted(data.files) == ["depths", "extrinsics", "intrinsics", "query_point", "video"]
        assert data["video"].shape == (24, 96, 128, 3) and data["video"].dtype == np.uint8
        assert data["depths"].shape == (24, 96, 128) and data["depths"].dtype == np.float32
        assert data["intrinsics"].shape == (24, 3, 3) and data["extrinsics"].shape == (24, 4, 4)
        np.testing.assert_allclose(data["query_point"], queries, rtol=1e-6)


def test_scenes_are_deterministic() -> None:
    a, b = make_scene(64, 48, 6, seed=5), make_scene(64, 48, 6, seed=5)
    assert np.array_equal(a.video, b.video) and np.array_equal(a.depths, b.depths)
    assert not np.array_equal(a.video, make_scene(64, 48, 6, seed=6).video)

"""Camera conversions in TAPIP3D's conventions: world↔camera, pixels↔points, resizing, grids."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.tapip3d import geometry


def rigid(rng: np.random.Generator, count: int) -> np.ndarray:
    """Random world→camera transforms (rotation from a QR decomposition, translation up to 2 m)."""
    out = np.repeat(np.eye(4)[None], count, axis=0)
    for i in range(count):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.diag(r))
        if np.linalg.det(q) < 0:
            q[:, 0] *= -1
        out[i, :3, :3], out[i, :3, 3] = q, rng.uniform(-2, 2, 3)
    return out


K = np.array([[200.0, 0, 63.5], [0, 190.0, 47.5], [0, 0, 1]])


def test_world_to_camera_and_back_round_trips() -> None:
    rng = np.random.default_rng(0)
    extrinsics = rigid(rng, 5)
    tracks = rng.normal(size=(5, 7, 3))
    camera = geometry.world_to_camera(tracks, extrinsics)
    np.testing.assert_allclose(geometry.camera_to_world(camera, extrinsics), tracks, atol=1e-12)


def test_world_to_camera_applies_each_frames_own_extrinsics() -> None:
    rng = np.random.default_rng(1)
    extrinsics = rigid(rng, 3)
    point = np.array([0.3, -0.2, 4.0])
    camera = geometry.world_to_camera(np.broadcast_to(point, (3, 1, 3)), extrinsics)
    for t in range(3):
        np.testing.assert_allclose(camera[t, 0], extrinsics[t, :3, :3] @ point + extrinsics[t, :3, 3], atol=1e-12)


def test_queries_move_to_the_camera_of_their_own_frame() -> None:
    rng = np.random.default_rng(2)
    extrinsics = rigid(rng, 4)
    queries = np.array([[0, 1.0, 2.0, 3.0], [3, -1.0, 0.5, 2.0]])
    camera = geometry.queries_to_camera(queries, extrinsics)
    assert camera[:, 0].tolist() == [0, 3]
    np.testing.assert_allclose(camera[1, 1:], geometry.transform(queries[1, 1:], extrinsics[3]), atol=1e-12)


def test_a_lifted_pixel_projects_back_to_itself_at_its_depth() -> None:
    rng = np.random.default_rng(3)
    extrinsics = rigid(rng, 1)[0]
    pixels = rng.uniform([0, 0], [127, 95], size=(20, 2))
    depths = rng.uniform(0.5, 8.0, 20)
    world = geometry.pixels_to_world(pixels, depths, K, extrinsics)
    back, z = geometry.project_world(world, K, extrinsics)
    np.testing.assert_allclose(back, pixels, atol=1e-9)
    np.testing.assert_allclose(z, depths, atol=1e-9)


def test_points_behind_the_camera_do_not_project() -> None:
    pixels, z = geometry.project(np.array([[0.0, 0.0, -1.0]]), K)
    assert np.isnan(pixels).all() and z[0] == -1.0


def test_intrinsics_are_rescaled_the_way_tapip3d_inference_does() -> None:
    # inference.py: K[0] *= (W'-1)/(W-1), K[1] *= (H'-1)/(H-1). At 384x512 -> 543x724 (resolution_factor 2).
    scaled = geometry.rescale_intrinsics(K[None], (384, 512), (543, 724))[0]
    np.testing.assert_allclose(scaled[0], K[0] * 723 / 511)
    np.testing.assert_allclose(scaled[1], K[1] * 542 / 383)
    np.testing.assert_array_equal(scaled[2], [0, 0, 1])
    # Under that convention a ray through the last pixel still passes through the last pixel.
    corner = geometry.unproject(np.array([511.0, 383.0]), 1.0, np.array([[300, 0, 0], [0, 300, 0], [0, 0, 1.0]]))
    moved, _ = geometry.project(
        corner, geometry.rescale_intrinsics(np.array([[300, 0, 0], [0, 300, 0], [0, 0, 1.0]]), (384, 512), (543, 724))
    )
    np.testing.assert_allclose(moved, [723, 542])


def test_pixel_coordinates_follow_opencv_resizing() -> None:
    # cv2.resize maps pixel centres: x' = (x + 0.5) * W'/W - 0.5
    np.testing.assert_allclose(geometry.resize_pixels(np.array([[0.0, 0.0]]), (96, 128), (48, 64)), [[-0.25, -0.25]])
    np.testing.assert_allclose(geometry.resize_pixels(np.array([[127.0, 95.0]]), (96, 128), (48, 64)), [[63.25, 47.25]])


def test_the_grid_has_tapip3ds_layout() -> None:
    # CoTracker's get_points_on_a_grid: margin W/64 on every side, row-major (x varies fastest).
    grid = geometry.grid_pixels(3, height=96, width=128)
    assert grid.shape == (9, 2)
    np.testing.assert_allclose(grid[:3], [[2, 2], [64, 2], [126, 2]])
    np.testing.assert_allclose(grid[-1], [126, 94])
    np.testing.assert_allclose(geometry.grid_pixels(1, 96, 128), [[64, 48]])


def test_depth_resizing_never_mixes_in_invalid_pixels() -> None:
    depth = np.full((40, 60), 2.5, np.float32)
    depth[:, :30] = 0  # no depth on the left
    resized = geometry.resize_depth(depth, (20, 30))
    valid = resized > 0
    np.testing.assert_allclose(resized[valid], 2.5, rtol=1e-5)
    assert valid[:, -5:].all() and not valid[:, :5].any()


def test_depth_is_read_bilinearly_on_a_surface_and_nearest_across_an_edge() -> None:
    ramp = np.tile(np.linspace(2.0, 2.1, 10, dtype=np.float32), (10, 1))
    assert geometry.sample_depth(ramp, np.array([[4.5, 4.0]]), rtol=0.1)[0] == pytest.approx(
        (ramp[4, 4] + ramp[4, 5]) / 2
    )
    edge = np.full((10, 10), 5.0, np.float32)
    edge[:, 5:] = 1.0  # a near object's edge between x=4 and x=5
    assert geometry.sample_depth(edge, np.array([[4.4, 4.0]]), rtol=0.1)[0] == 5.0
    assert geometry.sample_depth(edge, np.array([[4.6, 4.0]]), rtol=0.1)[0] == 1.0
    assert np.isnan(geometry.sample_depth(edge, np.array([[-3.0, 4.0]]), rtol=0.1)[0])

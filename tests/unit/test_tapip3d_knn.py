"""Our knnquery against a brute-force reference written from pointops2's kernel: per offsets-batch, the nsample
nearest points, nearest first, unfilled slots at (the batch's first row, distance 1e5 = sqrt(1e10))."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelyard.tapip3d import knn

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def reference(
    nsample: int, xyz: np.ndarray, new_xyz: np.ndarray, offset: list[int], new_offset: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """One query at a time, in float32 like the kernel; equal distances ordered by index."""
    idx = np.zeros((len(new_xyz), nsample), np.int32)
    dist2 = np.full((len(new_xyz), nsample), 1e10, np.float32)
    start = query_start = 0
    for end, query_end in zip(offset, new_offset, strict=True):
        for q in range(query_start, query_end):
            found = []
            for i in range(start, end):
                d = new_xyz[q] - xyz[i]
                d2 = np.float32(d[0] * d[0] + d[1] * d[1]) + np.float32(d[2] * d[2])
                if d2 < 1e10:  # NaN compares false: never taken
                    found.append((d2, i))
            found.sort()
            idx[q] = start
            for slot, (d2, i) in enumerate(found[:nsample]):
                idx[q, slot], dist2[q, slot] = i, d2
        start, query_start = end, query_end
    return idx, np.sqrt(dist2)


def run(nsample: int, xyz: np.ndarray, new_xyz: np.ndarray, offset: list[int], new_offset: list[int], device: str):
    idx, dist = knn.knnquery(
        nsample,
        torch.from_numpy(xyz).to(device),
        torch.from_numpy(new_xyz).to(device),
        torch.tensor(offset, dtype=torch.int32, device=device),
        torch.tensor(new_offset, dtype=torch.int32, device=device),
    )
    assert idx.dtype == torch.int32 and dist.dtype == torch.float32 and idx.device.type == device
    return idx.cpu().numpy(), dist.cpu().numpy()


@pytest.mark.parametrize("device", DEVICES)
def test_knnquery_equals_brute_force_over_batches_of_every_size(device: str) -> None:
    rng = np.random.default_rng(0)
    # batches of 40, 0 (with queries), 3 (fewer than nsample) and 25 points; the second query batch is empty
    sizes, query_sizes = [40, 0, 3, 25], [7, 0, 4, 9]
    xyz = rng.normal(size=(sum(sizes), 3)).astype(np.float32)
    new_xyz = rng.normal(size=(sum(query_sizes), 3)).astype(np.float32)
    query_sizes[1], query_sizes[2] = 2, 2  # queries in the empty batch too
    offset, new_offset = np.cumsum(sizes).tolist(), np.cumsum(query_sizes).tolist()
    want_idx, want_dist = reference(8, xyz, new_xyz, offset, new_offset)
    idx, dist = run(8, xyz, new_xyz, offset, new_offset, device)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-6)
    # the empty batch: every slot at its first row, distance sqrt(1e10); the 3-point batch: 5 slots unfilled
    assert (idx[7:9] == 40).all() and np.allclose(dist[7:9], 1e5)
    assert (dist[9:11, 3:] == np.float32(1e5)).all() and (idx[9:11, 3:] == 40).all()


@pytest.mark.parametrize("device", DEVICES)
def test_equally_near_points_come_lowest_index_first_and_nan_points_are_never_taken(device: str) -> None:
    # a lattice: many points at equal distances from each query, duplicates, and points without depth (NaN)
    grid = np.stack(np.meshgrid(*[np.arange(3.0)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    xyz = np.concatenate([grid, grid[:5], np.full((4, 3), np.nan, np.float32)])
    new_xyz = np.array([[1, 1, 1], [0, 0, 0], [0.5, 0.5, 0.5], [np.nan, 0, 0]], np.float32)
    offset, new_offset = [len(xyz)], [len(new_xyz)]
    want_idx, want_dist = reference(10, xyz, new_xyz, offset, new_offset)
    idx, dist = run(10, xyz, new_xyz, offset, new_offset, device)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-6)
    assert idx[1, :2].tolist() == [0, 27]  # the origin and its duplicate, the lower index first
    assert not np.isin(idx, np.arange(32, 36)).any()  # NaN points never
    assert (dist[3] == np.float32(1e5)).all()  # a NaN query finds nothing


def test_chunking_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(300, 3)).astype(np.float32)
    new_xyz = rng.normal(size=(50, 3)).astype(np.float32)
    whole = run(16, xyz, new_xyz, [100, 300], [20, 50], "cpu")
    monkeypatch.setattr(knn, "CHUNK_ELEMENTS", 3 * 300 * 3)  # 3 queries per chunk
    chunked = run(16, xyz, new_xyz, [100, 300], [20, 50], "cpu")
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_array_equal(whole[0], reference(16, xyz, new_xyz, [100, 300], [20, 50])[0])


def test_without_queries_the_points_query_themselves() -> None:
    xyz = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0]])
    idx, dist = knn.knnquery(2, xyz, None, torch.tensor([3], dtype=torch.int32), torch.tensor([3], dtype=torch.int32))
    assert idx.tolist() == [[0, 1], [1, 0], [2, 1]] and dist.tolist() == [[0, 1], [0, 1], [0, 2]]

"""pointops2's `knnquery` in plain torch, for when its CUDA kernels are not built (or there is no GPU).

TAPIP3D uses one operation of pointops2 (a CUDA extension its users must compile into their own Python):
`knnquery(nsample, xyz, new_xyz, offset, new_offset) -> (idx, dist)`. Point sets are batched by offsets (the
cumulative end of each batch's rows); each query row of batch b gets the `nsample` nearest rows of `xyz` in
batch b, nearest first, as int32 indices into `xyz` and float32 Euclidean distances. Where a batch has fewer than
`nsample` points, the kernel leaves the rest at its initial values — index = the batch's first row, squared
distance 1e10 — and so does this, also for points never taken (NaN ones: TAPIP3D's invalid depths). Among equally
near points the lower index is taken (the kernel's heap takes one of them, in no documented order).
"""

from __future__ import annotations

import torch

# The kernel's initial squared distance for slots no point filled.
EMPTY_DIST2 = 1e10
# Bound on the (queries x points x 3) difference tensor of one chunk, in elements (256 MiB of float32).
CHUNK_ELEMENTS = 64 * 1024 * 1024


def knnquery(
    nsample: int,
    xyz: torch.Tensor,
    new_xyz: torch.Tensor | None,
    offset: torch.Tensor,
    new_offset: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """idx (m, nsample) int32 and dist (m, nsample) float32: pointops2's semantics, on xyz's device."""
    if new_xyz is None:
        new_xyz = xyz
    xyz, new_xyz = xyz.float(), new_xyz.float()
    m, device = new_xyz.shape[0], xyz.device
    idx = torch.zeros((m, nsample), dtype=torch.int32, device=device)
    dist2 = torch.full((m, nsample), EMPTY_DIST2, dtype=torch.float32, device=device)
    ends, query_ends = offset.tolist(), new_offset.tolist()
    start, query_start = 0, 0
    for end, query_end in zip(ends, query_ends, strict=True):
        if query_end > query_start:
            idx[query_start:query_end] = start  # slots no point fills keep the batch's first row
            if end > start:
                _nearest(xyz[start:end], new_xyz[query_start:query_end], nsample, start, idx, dist2, query_start)
        start, query_start = end, query_end
    return idx, torch.sqrt(dist2)


def _nearest(
    points: torch.Tensor,
    queries: torch.Tensor,
    nsample: int,
    first: int,
    idx: torch.Tensor,
    dist2: torch.Tensor,
    row: int,
) -> None:
    """Fill rows row.. of idx/dist2 with each query's nearest points, in chunks of queries to bound memory."""
    n = points.shape[0]
    k = min(nsample, n)
    chunk = max(1, CHUNK_ELEMENTS // (3 * n))
    local = torch.arange(n, device=points.device, dtype=torch.int64)
    for q0 in range(0, queries.shape[0], chunk):
        block = queries[q0 : q0 + chunk]
        diff = block[:, None, :] - points[None, :, :]
        # Summed in the kernel's order (x² + y²) + z², in float32, so distances match it bit for bit.
        d2 = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]
        # The kernel takes a point only when nearer than 1e10: NaN points (TAPIP3D's invalid depths) never.
        d2 = torch.where(d2 < EMPTY_DIST2, d2, torch.inf)
        # One int64 key per pair — the distance's bits (monotonic for non-negative floats) above the index — makes
        # topk exact and ties deterministic: equal distances order by index.
        key = (d2.contiguous().view(torch.int32).to(torch.int64) << 32) | local
        best = torch.topk(key, k, dim=1, largest=False, sorted=True).values
        rows = slice(row + q0, row + q0 + block.shape[0])
        found = (best >> 32).to(torch.int32).view(torch.float32)
        taken = found < torch.inf
        idx[rows, :k] = torch.where(taken, (best & 0xFFFFFFFF).to(torch.int32) + first, first)
        dist2[rows, :k] = torch.where(taken, found, EMPTY_DIST2)

"""The "banded" formulation of LPA: plain tensor ops in fixed query blocks, for exported graphs.

Input queries are pre-scaled by ``clip * head_scale / sqrt(d)``, so ``q . k`` is already the
exact logit of every key at ``D = clip``.  The query rows are cut into blocks ``[s, e)`` of
a size that does not depend on the batch (an exported graph keeps the batch dynamic); the
keys of a block split into the band ``[a, b)`` that holds all its rows' neighbours and the
far ranges outside it.  Per block, three matmuls give the left, band and right logits; only
the band's are multiplied by the block's (rows, band) factor table (``D / clip``: 1 except at
the neighbours); the parts are concatenated, soft-maxed and multiplied by the values.

Everything is a matmul, a multiplication by a constant table, a concat or a softmax, so
``torch.onnx.export`` turns it into standard ONNX operators with the grid and the block
bounds fixed.  A block holds ``rows * N`` logits per (sample, head); the factor tables hold
``N * (rows + 2 * band)`` values per grid -- nothing of size (N, N).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from epng.model.lpa.geometry import GridGeometry

_active = False


@contextmanager
def banded_lpa() -> Iterator[None]:
    """Inside the block every LPA forward takes the banded formulation (whatever the route setting)."""
    global _active
    previous, _active = _active, True
    try:
        yield
    finally:
        _active = previous


def banded_active() -> bool:
    """Whether a `banded_lpa` block is open."""
    return _active


def block_rows(n: int, heads: int, budget: int) -> int:
    """Query rows per block so that one sample's block holds at most ``budget`` logits (>= 1 row)."""
    return max(1, min(n, budget // max(1, heads * n)))


def band_factors(geom: GridGeometry, s: int, e: int, a: int, b: int, dtype: torch.dtype) -> Tensor:
    """(e - s, b - a) table of ``D / clip`` for query rows [s, e) against band keys [a, b)."""
    index = geom.nb_index[s:e] - a  # (c, K), all inside [0, b - a)
    table = torch.ones(e - s, b - a, dtype=torch.float64, device=index.device)
    # Out-of-grid slots repeat the row's own index with factor 0, like its real self slot.
    table.scatter_(1, index, geom.nb_factor[s:e])
    return table.to(dtype)


def banded_attention(q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry, rows: int) -> Tensor:
    """q (B, H, N, d) pre-scaled by ``clip * head_scale / sqrt(d)``; k, v (B, H, N, d) -> (B, H, N, d)."""
    n = q.shape[2]

    def scores(qb: Tensor, lo: int, hi: int) -> Tensor:  # (B, H, c, hi - lo); key rows sliced, then transposed
        return torch.matmul(qb, k[:, :, lo:hi].transpose(-2, -1))

    outs = []
    for s in range(0, n, rows):
        e = min(n, s + rows)
        a, b = max(0, s - geom.band), min(n, e + geom.band)
        qb = q[:, :, s:e]  # (B, H, c, d)
        band = scores(qb, a, b) * band_factors(geom, s, e, a, b, q.dtype)  # (B, H, c, L)
        parts = [scores(qb, 0, a)] if a > 0 else []
        parts.append(band)
        if b < n:
            parts.append(scores(qb, b, n))
        logits = torch.cat(parts, dim=-1) if len(parts) > 1 else band  # (B, H, c, N)
        outs.append(torch.matmul(torch.softmax(logits, dim=-1), v))  # (B, H, c, d)
    return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]

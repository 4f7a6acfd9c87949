"""Grid geometry of LPA: the clipped distance, its per-grid tables and their cache.

``D[m, n] = min(dist(m, n), clip)`` over the ``h x w`` grid (token index ``y * w + x``),
with ``dist`` the Euclidean distance (``"euclidean"``, paper) or its square
(``"squared"``, official code).  Only the few offsets closer than ``clip`` have
``D < clip``; every other pair is exactly at ``D = clip``.  So a grid is described by

* a neighbour table (N, K): the K offsets closer than ``clip`` with ``D / clip`` for each
  (the eager and CPU flash routes rescale those K logits of each query row), and
* per-token coordinates (N,), from which the FlexAttention ``score_mod`` computes ``D``.

Both are O(N * K); nothing here holds an (N, N) table.  A module keeps its tables per
(grid, device) in a :class:`GeometryCache` (least recently used grids dropped first).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

LPADistance = Literal["euclidean", "squared"]
LPA_DISTANCES: tuple[str, ...] = get_args(LPADistance)


def _offset_distance(dy: int, dx: int, distance: str) -> float:
    """Unclipped distance of a grid offset under ``distance``."""
    d2 = float(dx * dx + dy * dy)
    return math.sqrt(d2) if distance == "euclidean" else d2


@dataclass(frozen=True)
class GridGeometry:
    """Per-(grid, device) tables; built once by :func:`build_grid_geometry`.

    ``nb_index[m]`` lists the K tokens whose distance to token m is below ``clip``
    (slots falling outside the grid point at m itself, with factor 0 like m's own slot);
    ``nb_factor[m]`` holds ``D / clip`` for them.  Every other token is at ``D = clip``.
    """

    grid_size: tuple[int, int]
    xs: Tensor  # (N,) float32 column of each token
    ys: Tensor  # (N,) float32 row of each token
    nb_index: Tensor  # (N, K) int64
    nb_factor: Tensor  # (N, K) float64, D / clip
    band: int  # every neighbour n of token m has |n - m| <= band
    score_mod: Callable[..., Tensor]  # FlexAttention score_mod: score * D[q_idx, kv_idx]


def _make_score_mod(xs: Tensor, ys: Tensor, distance: str, clip: float) -> Callable[..., Tensor]:
    """FlexAttention ``score_mod`` multiplying a score by the clipped grid distance."""
    if distance == "euclidean":
        clip_sq = clip * clip

        def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            dx = xs[q_idx] - xs[kv_idx]
            dy = ys[q_idx] - ys[kv_idx]
            return score * torch.sqrt(torch.clamp(dx * dx + dy * dy, max=clip_sq))

    else:

        def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            dx = xs[q_idx] - xs[kv_idx]
            dy = ys[q_idx] - ys[kv_idx]
            return score * torch.clamp(dx * dx + dy * dy, max=clip)

    return score_mod


def build_grid_geometry(
    grid_size: tuple[int, int], distance: str, clip: float, device: torch.device | str = "cpu"
) -> GridGeometry:
    """Coordinate and neighbour tables of an (h, w) grid (O(N * K) memory)."""
    h, w = (int(s) for s in grid_size)
    device = torch.device(device)
    n = h * w
    # Offsets closer than ``clip``; anything farther is exactly at D = clip.
    reach = math.ceil(max(clip, math.sqrt(clip)))
    offsets = [
        (dy, dx, _offset_distance(dy, dx, distance))
        for dy in range(-reach, reach + 1)
        for dx in range(-reach, reach + 1)
        if _offset_distance(dy, dx, distance) < clip
    ]
    idx = torch.arange(n, dtype=torch.int64)
    y, x = idx // w, idx % w  # (N,)
    nb_index = torch.empty(n, len(offsets), dtype=torch.int64)
    nb_factor = torch.empty(n, len(offsets), dtype=torch.float64)
    for j, (dy, dx, d) in enumerate(offsets):
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        nb_index[:, j] = torch.where(inside, ny * w + nx, idx)
        nb_factor[:, j] = inside.to(torch.float64) * (d / clip)
    xs = x.to(device=device, dtype=torch.float32)
    ys = y.to(device=device, dtype=torch.float32)
    return GridGeometry(
        grid_size=(h, w),
        xs=xs,
        ys=ys,
        nb_index=nb_index.to(device),
        nb_factor=nb_factor.to(device),
        band=max(abs(dy * w + dx) for dy, dx, _ in offsets),
        score_mod=_make_score_mod(xs, ys, distance, clip),
    )


def rescale_neighbours(t: Tensor, index: Tensor, factor: Tensor) -> Tensor:
    """In place: t[..., r, index[r, j]] *= factor[r, j].  t (B, H, c, L) contiguous; index, factor (c, K).

    Out-of-grid slots repeat the row's own index with factor 0, like its real self slot, so
    duplicate writes agree.  This is both the logit rescaling and its own derivative.
    """
    keys = t.shape[-1]
    index = index.expand(*t.shape[:2], *index.shape)  # (B, H, c, K)
    acc = torch.promote_types(t.dtype, torch.float32)  # bf16 logits: scaled in fp32, rounded once
    scaled = (t.gather(-1, index).to(acc) * factor.to(acc)).to(t.dtype)  # (B, H, c, K)
    # Written through flat positions: on CPU, scatter_ into a bf16 block copies the whole block.
    rows = torch.arange(t.numel() // keys, device=t.device).view(*t.shape[:-1], 1)  # (B, H, c, 1)
    t.view(-1).index_put_(((rows * keys + index).reshape(-1),), scaled.reshape(-1))
    return t


class GeometryCache:
    """A module's :class:`GridGeometry` tables keyed by (grid, device, distance, clip).

    Holds at most ``max_grids`` entries, dropping the least recently used.  Per instance
    (not process-wide): tables live and die with the module that owns the cache.
    """

    def __init__(self, max_grids: int = 16) -> None:
        self.max_grids = max_grids
        self._tables: OrderedDict[tuple, GridGeometry] = OrderedDict()

    def get(self, grid_size: tuple[int, int], device: torch.device | str, distance: str, clip: float) -> GridGeometry:
        """The tables of ``grid_size`` on ``device``, built on first use."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = (int(grid_size[0]), int(grid_size[1]), device, distance, clip)
        geom = self._tables.get(key)
        if geom is None:
            geom = build_grid_geometry(key[:2], distance, clip, device)
            self._tables[key] = geom
            while len(self._tables) > self.max_grids:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(key)
        return geom

"""LPA's formula materialised: the (B, H, N, N) attention with the full distance matrix.

For tests and the LPA benchmark only; the layer never calls these.  O(N^2) memory.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from epng.model.lpa.module import LocalityPerceptiveAttention


def lpa_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    head_scale: Tensor,
    grid_size: tuple[int, int],
    distance: str = "euclidean",
    clip: float = 2.0,
) -> Tensor:
    """The formula, materialised: q, k, v (B, H, N, d), head_scale (H,) -> (B, H, N, d)."""
    h, w = grid_size
    idx = torch.arange(h * w, device=q.device)
    y, x = (idx // w).to(q.dtype), (idx % w).to(q.dtype)  # (N,)
    d2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2  # (N, N)
    dist = torch.sqrt(d2) if distance == "euclidean" else d2
    dist = torch.clamp(dist, max=clip)  # (N, N)
    r = head_scale.view(-1, 1, 1) * dist  # (H, N, N)
    logits = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1]) * r  # (B, H, N, N)
    return torch.matmul(torch.softmax(logits, dim=-1), v)  # (B, H, N, d)


def lpa_layer_reference(module: LocalityPerceptiveAttention, x: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """The whole layer with ``module``'s weights through :func:`lpa_reference` (no dropout)."""
    b, n, c = x.shape
    heads, d = module.num_heads, module.head_dim

    def split(t: Tensor) -> Tensor:
        return t.view(b, n, heads, d).transpose(1, 2)  # (B, H, N, d)

    q = split(F.linear(x, module.q_proj.weight, module.q_proj.bias))
    k = split(F.linear(x, module.k_proj.weight, module.k_proj.bias))
    v = split(F.linear(x, module.v_proj.weight, module.v_proj.bias))
    out = lpa_reference(q, k, v, module.head_scale, grid_size, module.distance, module.clip)
    out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
    return F.linear(out, module.out_proj.weight, module.out_proj.bias)

"""The LPA layer: projections, per-head distance scale, route dispatch, dropout, output.

``LocalityPerceptiveAttention(x, grid_size)`` projects ``x`` to per-head q, k, v, runs the
attention core on the route :mod:`epng.model.lpa.policy` resolves, and projects back.
During training ``dropout`` drops the concatenated head outputs (``A V``, before
``out_proj``) on every route, not the attention weights (see the package docstring).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from torch import Tensor, nn

from epng.errors import ConfigError
from epng.model.lpa.band_flash import band_flash_attention
from epng.model.lpa.banded import banded_active, banded_attention, block_rows
from epng.model.lpa.eager import eager_attention
from epng.model.lpa.flex import flex_lpa_attention
from epng.model.lpa.geometry import LPA_DISTANCES, GeometryCache, GridGeometry, LPADistance
from epng.model.lpa.policy import LPARoute, Route, check_route, get_lpa_route, resolve_route


class LocalityPerceptiveAttention(nn.Module):
    """Multi-head self-attention with logits scaled by a learnable clipped grid distance.

    Args:
        d_model: channels C of the tokens.
        num_heads: heads; ``d_model`` must be divisible by it.
        dropout: dropout on the concatenated head outputs (before ``out_proj``) in training.
        distance: ``"euclidean"`` (paper) or ``"squared"`` (official code: squared distance).
        clip: upper clip of the distance (paper: 2).
        backend: ``None`` (default) follows the process-wide route setting
            (:func:`epng.model.lpa.set_lpa_route`); one of ``"auto"`` | ``"flex"`` |
            ``"flash"`` | ``"eager"`` overrides it for this module.
        max_block_elements: "flash"/"eager" routes: the most logits one block of query rows
            holds (B * heads * rows * keys); default 2**23 on CPU (32 MiB of fp32), 2**26 on
            CUDA (fewer kernel launches).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        distance: LPADistance = "euclidean",
        clip: float = 2.0,
        *,
        backend: LPARoute | None = None,
        max_block_elements: int | None = None,
    ) -> None:
        super().__init__()
        if num_heads <= 0 or d_model % num_heads != 0:
            raise ConfigError(f"LPA: d_model={d_model} must be a positive multiple of num_heads={num_heads}")
        if distance not in LPA_DISTANCES:
            raise ConfigError(f"LPA: distance must be one of {LPA_DISTANCES}, got {distance!r}")
        if not clip > 0:
            raise ConfigError(f"LPA: clip must be > 0, got {clip}")
        if backend is not None:
            check_route(backend)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"LPA: dropout must be in [0, 1), got {dropout}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.distance = distance
        self.clip = float(clip)
        self.backend = backend
        self.max_block_elements = max_block_elements
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.head_scale = nn.Parameter(torch.ones(num_heads))  # W^j, one scalar per head
        self.dropout = nn.Dropout(dropout)
        # Per-instance caches (not state): grid tables; whether the flex route failed here.
        self._geometry = GeometryCache()
        self._flex_failed = False

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_heads={self.num_heads}, distance={self.distance!r}, "
            f"clip={self.clip}, backend={self.backend!r}"
        )

    def geometry(self, grid_size: tuple[int, int], device: torch.device | str) -> GridGeometry:
        """Cached :class:`GridGeometry` of ``grid_size`` on ``device`` (built on first use)."""
        return self._geometry.get(grid_size, device, self.distance, self.clip)

    def route(self, device: torch.device, needs_grad: bool = False, dtype: torch.dtype = torch.float32) -> Route:
        """The route a forward takes here: ``"flex"``, ``"flash"`` or ``"eager"``."""
        setting = self.backend if self.backend is not None else get_lpa_route()
        return resolve_route(setting, device, needs_grad, dtype, flex_failed=self._flex_failed)

    def forward(self, x: Tensor, grid_size: tuple[int, int]) -> Tensor:
        """x (B, N = h * w, C) with token index y * w + x -> (B, N, C)."""
        b, n, c = x.shape
        h, w = grid_size
        if h * w != n or c != self.d_model:
            raise ValueError(f"LPA: x has shape {tuple(x.shape)}, expected (B, {h}*{w}, {self.d_model})")
        heads, d = self.num_heads, self.head_dim
        q = self.q_proj(x).view(b, n, heads, d).transpose(1, 2)  # (B, H, N, d)
        k = self.k_proj(x).view(b, n, heads, d).transpose(1, 2)  # (B, H, N, d)
        v = self.v_proj(x).view(b, n, heads, d).transpose(1, 2)  # (B, H, N, d)
        out = self.attend(q, k, v, self.geometry((h, w), x.device))  # (B, H, N, d)
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.out_proj(self.dropout(out))

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry, route: Route | Literal["banded"] | None = None
    ) -> Tensor:
        """The attention core: q, k, v (B, H, N, d) -> (B, H, N, d), on ``route`` (default: ``"banded"``
        inside a `banded_lpa` block, else :meth:`route`)."""
        needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        if route is None and banded_active():
            route = "banded"
        elif route is None:
            route = self.route(q.device, needs_grad, q.dtype)
        if route == "flex":
            out = self._try_flex(q, k, v, geom)
            if out is not None:
                return out
            route = self.route(q.device, needs_grad, q.dtype)  # flex failed (warned once): never again here
        # Pre-scaled queries: q . k is then the exact logit wherever D = clip.
        pre = (self.head_scale * (self.clip / math.sqrt(self.head_dim))).view(1, -1, 1, 1)
        q = (q * pre).to(k.dtype)  # (B, H, N, d)
        budget = self.max_block_elements or (1 << 26 if q.device.type == "cuda" else 1 << 23)
        if route == "flash":
            return band_flash_attention(q, k, v, geom, budget)
        if route == "banded":
            return banded_attention(q, k, v, geom, block_rows(q.shape[2], self.num_heads, budget))
        return eager_attention(q, k, v, geom, budget)

    def _try_flex(self, q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry) -> Tensor | None:
        """The flex route; None (after one warning) when it cannot run here."""
        try:
            return flex_lpa_attention(q, k, v, self.head_scale, geom)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # compiler/Triton missing or failing: go on with the exact route
            self._flex_failed = True
            warnings.warn(
                f"LPA: FlexAttention route unavailable ({type(err).__name__}: {err}); using the exact fallback",
                stacklevel=2,
            )
            return None

"""Locality-Perceptive Attention (LPA), the self-attention of EPNG's communicator.

Multi-head self-attention over the ``h x w`` visual tokens (token index ``y * w + x``)
whose logits are multiplied element-wise, before the softmax, by a learnable per-head
scale of the clipped grid distance::

    D[m, n]  = min(dist((x_m, y_m), (x_n, y_n)), clip)       # "euclidean" (paper) or "squared" (official code)
    R_j      = head_scale[j] * D
    A_j      = softmax((Q_j K_j^T / sqrt(d_k)) * R_j)
    LPA(x)   = concat_j(A_j V_j) W_O

``D`` equals ``clip`` everywhere except in a small neighbourhood of each token (with the
default ``clip = 2``: 0 on the token itself, 1 at its 4-neighbours, sqrt(2) at its
diagonals, or 2 there with ``"squared"``).  The routes below use that fact; none holds an
(N, N) distance table: per-grid coordinate and neighbour tables are built once per
(grid, device) and cached on the module instance.

Routes (``backend``); all exact, none holds an O(N^2) tensor outside a fused kernel:

* ``"flex"`` -- ``torch.compile``-d FlexAttention; a ``score_mod`` multiplies each score
  by ``D[q_idx, kv_idx]``, computed from cached per-grid coordinate tables.  Forward and
  backward are fused kernels.  ``head_scale`` is folded into the queries
  (``q_j * head_scale[j]``), so its gradient flows through the ordinary autograd graph and
  the ``score_mod`` captures only constants.
* ``"flash"`` (CPU) -- :class:`_FarBandAttention`, an autograd Function.  Queries are
  pre-scaled by ``clip * head_scale / sqrt(d_k)``, which makes ``q . k`` the exact logit of
  every key at ``D = clip``.  Per block of query rows, the keys split into a band holding
  all the rows' neighbours (|n - m| <= w + 1 for clip 2) and the far ranges outside it.
  PyTorch's fused CPU flash-attention kernel handles the far ranges and returns their
  log-sum-exp; the band's logits are computed and rescaled at the neighbours explicitly;
  the parts are merged through their log-sum-exps (a softmax over disjoint key sets:
  nothing is subtracted, so no cancellation however large the self-similarity).  The
  backward calls the flash backward kernel with the merged output and log-sum-exp (which
  makes it exact for each part) and differentiates the band by hand.
* ``"eager"`` (any device; the fallback) -- query-chunked attention: per block of query
  rows one matmul with the pre-scaled queries, the few neighbour logits rescaled in place
  through a cached (N, K) neighbour table, a plain softmax and the value matmul.  Under
  autograd each block is checkpointed (recomputed in backward).
* ``"auto"`` (default) -- ``"flex"`` on CUDA (with Triton) when the attention runs in
  bf16/fp16 (autocast); on CPU ``"flash"``, except a bf16 forward without autograd, which
  takes ``"eager"``; ``"eager"`` otherwise (CUDA float32).  On CPU in bf16 the eager
  route's matmuls run on the CPU's bf16 units while the flash kernel's bf16 path is no
  faster than its fp32 one (the eager route's logits are bf16; its softmax accumulates in
  fp32).
  Measured (2 Zen 4 cores, C 768, 8 heads, attention alone, eager / flash): bf16
  33 / 65 ms at 40x40, 129 / 240 ms at 56x56, 518 / 1007 ms at 76x76, 1.4 / 2.6 s at
  100x100; fp32 109 / 77 ms at 40x40 and 1114 / 1017 ms at 76x76 (flash stays there).

Blocks hold at most ``max_block_elements`` logits (B * heads * rows * keys).  Measured
(76x76 grid, C=768, 8 heads, batch 1, attention forward): on an H100 (torch 2.11) bf16
flex 0.8 ms vs bf16 eager 5.4 ms, but fp32 flex 45 ms vs fp32 eager 7.4 ms (the fp32
FlexAttention kernel does not use the tensor cores); on the 2-core CPU here, one thread,
"flash" ~1.4 s vs "eager" ~2.8 s vs compiled FlexAttention (forward only) ~2x slower than
"eager" plus ~25 s of C++ compile.  ``"flex"`` forces the fused kernel (a CPU forward that
needs gradients still takes "flash": FlexAttention has no CPU backward).  If compiling or
running it fails (no compiler, no Triton, ...), the module warns once and goes on with
the exact route of the device.

Dropout: FlexAttention cannot drop attention weights inside the kernel.  So that every
route computes the same function, ``dropout`` is applied to the concatenated head
outputs (``A V``, before ``W_O``) during training, on all routes -- not to the attention
weights.  Both have the same expectation; this is a deliberate, documented deviation
from dropping attention weights.

The flex route is compiled once per process (``torch.compile(flex_attention,
dynamic=False)``, created lazily); every new (batch, grid) shape, dtype and grad mode
compiles once (5-20 s on an H100).  Past dynamo's recompile limit
(``torch._dynamo.config.cache_size_limit``) dynamo would run FlexAttention un-fused, so
raise that limit when many shapes are used.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from epng.errors import ConfigError

__all__ = [
    "LocalityPerceptiveAttention",
    "GridGeometry",
    "build_grid_geometry",
    "lpa_reference",
    "lpa_layer_reference",
]

_DISTANCES = ("euclidean", "squared")
_BACKENDS = ("auto", "flex", "flash", "eager")


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


@lru_cache(maxsize=1)
def _compiled_flex_attention() -> Callable[..., Tensor]:
    """``torch.compile``-d FlexAttention, created on first use (compiling is lazy)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        from torch.utils._triton import has_triton

        return bool(has_triton())
    except Exception:  # pragma: no cover - very old/odd builds
        return False


def _flash_available(device: torch.device) -> bool:
    """PyTorch's fused CPU flash-attention kernels (forward returning the log-sum-exp, backward)."""
    ops = torch.ops.aten
    return device.type == "cpu" and all(
        hasattr(ops, name)
        for name in (
            "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_flash_attention_for_cpu_backward",
        )
    )


def _rescale_neighbours(t: Tensor, index: Tensor, factor: Tensor) -> Tensor:
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


def _attend_block(q_blk: Tensor, k_t: Tensor, v: Tensor, nb_index: Tensor, nb_factor: Tensor) -> Tensor:
    """One block of query rows of the eager route.

    q_blk (B, H, c, d) queries pre-scaled by ``clip * head_scale / sqrt(d)``; k_t (B, H, d, N);
    v (B, H, N, d); nb_index (c, K); nb_factor (c, K) = D / clip.  Returns (B, H, c, d).
    """
    logits = torch.matmul(q_blk, k_t)  # (B, H, c, N) in q's dtype: correct wherever D = clip
    _rescale_neighbours(logits, nb_index, nb_factor)
    # bf16/fp16 logits: PyTorch's softmax accumulates in fp32 and rounds only its output
    # (bit-identical to an fp32 softmax rounded to bf16, without an fp32 copy of the block).
    attn = torch.softmax(logits, dim=-1)  # (B, H, c, N)
    return torch.matmul(attn.to(v.dtype), v)  # (B, H, c, d)


def _blocks(n: int, rows: int, band: int):
    """Query blocks [s, e) with their key band [a, b) (all neighbours) and far key ranges."""
    for s in range(0, n, rows):
        e = min(n, s + rows)
        a, b = max(0, s - band), min(n, e + band)
        yield s, e, a, b, [(lo, hi) for lo, hi in ((0, a), (b, n)) if hi > lo]


class _FarBandAttention(torch.autograd.Function):
    """The CPU "flash" route: exact LPA attention on pre-scaled queries.

    Per block of query rows, keys split into the band [a, b) that holds every neighbour
    and the far ranges outside it.  Far keys are all at D = clip, so their logits are just
    the pre-scaled q . k: PyTorch's fused CPU flash-attention kernel handles them and returns
    its log-sum-exp.  The band is computed explicitly (logits rescaled at the neighbours).
    The parts are merged through their log-sum-exps (a softmax over disjoint key sets,
    nothing subtracted).  Backward: the flash backward kernel, given the merged output and
    log-sum-exp, yields the exact gradients of each far part; the band is differentiated
    by hand.  Saved: q, k, v, output, log-sum-exp -- O(N d), no O(N^2) tensor.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry, rows: int) -> Tensor:
        # q (B, H, N, d) pre-scaled by clip * head_scale / sqrt(d); k, v (B, H, N, d); same dtype.
        with torch.autocast("cpu", enabled=False):
            return _FarBandAttention._forward(ctx, q, k, v, geom, rows)

    @staticmethod
    def _forward(ctx, q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry, rows: int) -> Tensor:
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        n = q.shape[2]
        acc = torch.promote_types(q.dtype, torch.float32)
        out = torch.empty_like(q)  # (B, H, N, d)
        lse = q.new_empty(q.shape[:3], dtype=acc)  # (B, H, N)
        for s, e, a, b, far in _blocks(n, rows, geom.band):
            qb = q[:, :, s:e]  # (B, H, c, d)
            logits = torch.matmul(qb, k[:, :, a:b].transpose(-2, -1)).to(acc)  # (B, H, c, L)
            _rescale_neighbours(logits, geom.nb_index[s:e] - a, geom.nb_factor[s:e])
            peak = logits.amax(dim=-1, keepdim=True)  # (B, H, c, 1)
            weights = logits.sub_(peak).exp_()  # in place: one exp pass gives softmax and lse
            norm = weights.sum(dim=-1, keepdim=True)  # (B, H, c, 1)
            lse_parts = [(peak + norm.log()).squeeze(-1)]  # each (B, H, c)
            out_parts = [torch.matmul(weights.to(v.dtype), v[:, :, a:b]) / norm]
            del logits, weights
            for lo, hi in far:
                o, l = flash(qb, k[:, :, lo:hi], v[:, :, lo:hi], 0.0, False, scale=1.0)
                out_parts.append(o)
                lse_parts.append(l.to(acc))
            total = torch.logsumexp(torch.stack(lse_parts), dim=0)  # (B, H, c)
            blk = sum(torch.exp(l - total).unsqueeze(-1) * o.to(acc) for l, o in zip(lse_parts, out_parts))
            out[:, :, s:e] = blk
            lse[:, :, s:e] = total
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.geom, ctx.rows = geom, rows
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        with torch.autocast("cpu", enabled=False):
            return _FarBandAttention._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad: Tensor):
        flash_bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
        q, k, v, out, lse = ctx.saved_tensors
        geom = ctx.geom
        n = q.shape[2]
        acc = lse.dtype
        grad = grad.to(q.dtype)
        delta = (grad.to(acc) * out.to(acc)).sum(-1)  # (B, H, N): rowsum(dO * O)
        dq = torch.zeros_like(q, dtype=acc)
        dk = torch.zeros_like(k, dtype=acc)
        dv = torch.zeros_like(v, dtype=acc)
        for s, e, a, b, far in _blocks(n, ctx.rows, geom.band):
            qb, gb, ob, lb = q[:, :, s:e], grad[:, :, s:e], out[:, :, s:e], lse[:, :, s:e]
            for lo, hi in far:  # merged O and lse make the kernel's softmax the true one
                g_q, g_k, g_v = flash_bwd(gb, qb, k[:, :, lo:hi], v[:, :, lo:hi], ob, lb, 0.0, False, scale=1.0)
                dq[:, :, s:e] += g_q
                dk[:, :, lo:hi] += g_k
                dv[:, :, lo:hi] += g_v
            kb, vb = k[:, :, a:b], v[:, :, a:b]
            logits = torch.matmul(qb, kb.transpose(-2, -1)).to(acc)  # (B, H, c, L)
            idx, fac = geom.nb_index[s:e] - a, geom.nb_factor[s:e]
            _rescale_neighbours(logits, idx, fac)
            p = torch.exp(logits - lb.unsqueeze(-1))  # (B, H, c, L) true probabilities
            del logits
            dv[:, :, a:b] += torch.matmul(p.transpose(-2, -1), gb.to(acc))
            dp = torch.matmul(gb, vb.transpose(-2, -1)).to(acc)  # (B, H, c, L)
            ds = _rescale_neighbours(p.mul_(dp.sub_(delta[:, :, s:e].unsqueeze(-1))), idx, fac)
            dq[:, :, s:e] += torch.matmul(ds, kb.to(acc))
            dk[:, :, a:b] += torch.matmul(ds.transpose(-2, -1), qb.to(acc))
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


class LocalityPerceptiveAttention(nn.Module):
    """Multi-head self-attention with logits scaled by a learnable clipped grid distance.

    Args:
        d_model: channels C of the tokens.
        num_heads: heads; ``d_model`` must be divisible by it.
        dropout: dropout on the concatenated head outputs (before ``out_proj``) in training;
            see the module docstring for why not on the attention weights.
        distance: ``"euclidean"`` (paper) or ``"squared"`` (official code: squared distance).
        clip: upper clip of the distance (paper: 2).
        backend: ``"auto"`` | ``"flex"`` | ``"flash"`` | ``"eager"`` (see the module docstring).
        max_block_elements: "flash"/"eager" routes: the most logits one block of query rows
            holds (B * heads * rows * keys); default 2**23 on CPU (32 MiB of fp32), 2**26 on
            CUDA (fewer kernel launches).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        distance: str = "euclidean",
        clip: float = 2.0,
        *,
        backend: str = "auto",
        max_block_elements: int | None = None,
    ) -> None:
        super().__init__()
        if num_heads <= 0 or d_model % num_heads != 0:
            raise ConfigError(f"LPA: d_model={d_model} must be a positive multiple of num_heads={num_heads}")
        if distance not in _DISTANCES:
            raise ConfigError(f"LPA: distance must be one of {_DISTANCES}, got {distance!r}")
        if not clip > 0:
            raise ConfigError(f"LPA: clip must be > 0, got {clip}")
        if backend not in _BACKENDS:
            raise ConfigError(f"LPA: backend must be one of {_BACKENDS}, got {backend!r}")
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
        # Per-instance caches (not state): geometry per (h, w, device); flex failure flag.
        self._geometry: OrderedDict[tuple[int, int, torch.device], GridGeometry] = OrderedDict()
        self._max_cached_grids = 16
        self._flex_failed = False

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_heads={self.num_heads}, distance={self.distance!r}, "
            f"clip={self.clip}, backend={self.backend!r}"
        )

    def geometry(self, grid_size: tuple[int, int], device: torch.device | str) -> GridGeometry:
        """Cached :class:`GridGeometry` of ``grid_size`` on ``device`` (built on first use)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = (int(grid_size[0]), int(grid_size[1]), device)
        geom = self._geometry.get(key)
        if geom is None:
            geom = build_grid_geometry(key[:2], self.distance, self.clip, device)
            self._geometry[key] = geom
            while len(self._geometry) > self._max_cached_grids:
                self._geometry.popitem(last=False)
        else:
            self._geometry.move_to_end(key)
        return geom

    def route(self, device: torch.device, needs_grad: bool = False, dtype: torch.dtype = torch.float32) -> str:
        """The route a forward takes: ``"flex"``, ``"flash"`` or ``"eager"`` (see the module docstring)."""
        flash = "flash" if _flash_available(device) else "eager"
        if self.backend == "eager":
            return "eager"
        if self.backend == "flash":
            return flash
        if self.backend == "flex" and not self._flex_failed:
            return flash if device.type == "cpu" and needs_grad else "flex"  # no FlexAttention CPU backward
        if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and not self._flex_failed:
            return "flex" if _flex_available(device) else "eager"
        if device.type == "cpu" and dtype == torch.bfloat16 and not needs_grad:
            return "eager"  # its bf16 GEMMs beat the CPU flash kernel's bf16 path (~2x)
        return flash

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
        geom = self.geometry((h, w), x.device)
        needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        route = self.route(x.device, needs_grad, q.dtype)
        if route == "flex":
            out = self._flex(q, k, v, geom)
            if out is None:  # flex failed (warned once): the device's exact route from now on
                route = self.route(x.device, needs_grad, q.dtype)
        if route == "flash":
            out = self._flash(q, k, v, geom)
        elif route == "eager":
            out = self._eager(q, k, v, geom)
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.out_proj(self.dropout(out))

    def _flex(self, q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry) -> Tensor | None:
        """Fused route; None (after one warning) when it cannot run here."""
        q = (q * self.head_scale.view(1, -1, 1, 1)).to(k.dtype)  # (B, H, N, d): head_scale folded in
        try:
            return _compiled_flex_attention()(q, k, v, score_mod=geom.score_mod, scale=1.0 / math.sqrt(self.head_dim))
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # compiler/Triton missing or failing: go on with the exact eager route
            self._flex_failed = True
            warnings.warn(
                f"LPA: FlexAttention route unavailable ({type(err).__name__}: {err}); using the exact fallback"
            )
            return None

    def _prescaled_queries(self, q: Tensor, k: Tensor) -> Tensor:
        """q (B, H, N, d) times clip * head_scale / sqrt(d): then q . k is the logit wherever D = clip."""
        pre = (self.head_scale * (self.clip / math.sqrt(self.head_dim))).view(1, -1, 1, 1)
        return (q * pre).to(k.dtype)

    def _block_budget(self, device: torch.device) -> int:
        return self.max_block_elements or (1 << 26 if device.type == "cuda" else 1 << 23)

    def _flash(self, q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry) -> Tensor:
        """CPU route (:class:`_FarBandAttention`). q, k, v (B, H, N, d) -> (B, H, N, d)."""
        b, heads, n, _ = q.shape
        budget = self._block_budget(q.device)
        rows = max(64, 6 * geom.band)  # band keys are ~(rows + 2 band) of N: keep their share small
        while rows > 1 and b * heads * rows * (rows + 2 * geom.band) > budget:
            rows //= 2
        q = self._prescaled_queries(q, k)  # strided (B, H, N, d) views are fine for the kernels
        return _FarBandAttention.apply(q, k, v, geom, min(rows, n))

    def _eager(self, q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry) -> Tensor:
        """Exact query-chunked route (any device). q, k, v (B, H, N, d) -> (B, H, N, d)."""
        b, heads, n, d = q.shape
        q = self._prescaled_queries(q, k)  # (B, H, N, d)
        k_t = k.transpose(-2, -1).contiguous()  # (B, H, d, N); matmul would copy it per block
        v = v.contiguous()
        rows = max(1, min(n, self._block_budget(q.device) // max(1, b * heads * n)))
        use_checkpoint = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        out: Tensor | None = None  # (B, H, N, d), written block by block
        for start in range(0, n, rows):
            sl = slice(start, min(n, start + rows))
            args = (q[:, :, sl], k_t, v, geom.nb_index[sl], geom.nb_factor[sl])
            blk = checkpoint(_attend_block, *args, use_reentrant=False) if use_checkpoint else _attend_block(*args)
            if out is None:
                if sl.stop == n:
                    return blk
                # One output buffer: keeping per-block outputs alive between the big transient
                # blocks fragments the CPU heap (RSS was seen to grow by ~N^2 floats).
                out = blk.new_empty(b, heads, n, blk.shape[-1])
            out[:, :, sl] = blk
        assert out is not None
        return out


# ----------------------------------------------------------------------------------------
# Plain references (tests and benchmarks only; the module never calls them).


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

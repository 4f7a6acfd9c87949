"""The CPU "flash" route of LPA: far keys through the fused flash kernel, the band explicit.

Input queries are pre-scaled by ``clip * head_scale / sqrt(d)``, which makes ``q . k`` the
exact logit of every key at ``D = clip``.  Per block of query rows, the keys split into a
band ``[a, b)`` holding all the rows' neighbours (``|n - m| <= band``) and the far ranges
outside it:

* far keys are all at ``D = clip``: PyTorch's fused CPU flash-attention kernel handles
  them and returns their log-sum-exp;
* the band's logits are computed explicitly and rescaled at the neighbours;
* the parts are merged through their log-sum-exps -- a softmax over disjoint key sets:
  nothing is subtracted, so no cancellation however large the self-similarity.

Backward: the flash backward kernel, given the merged output and log-sum-exp, yields the
exact gradients of each far part; the band is differentiated by hand.  Saved for backward:
q, k, v, output, log-sum-exp -- O(N d), no O(N^2) tensor.  A block holds at most
``budget`` band logits (B * heads * rows * band keys), down to one query row.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from epng.model.lpa.geometry import GridGeometry, rescale_neighbours


def flash_available(device: torch.device) -> bool:
    """PyTorch's fused CPU flash-attention kernels (forward returning the log-sum-exp, backward)."""
    ops = torch.ops.aten
    return device.type == "cpu" and all(
        hasattr(ops, name)
        for name in (
            "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_flash_attention_for_cpu_backward",
        )
    )


def _blocks(n: int, rows: int, band: int) -> Iterator[tuple[int, int, int, int, list[tuple[int, int]]]]:
    """Query blocks [s, e) with their key band [a, b) (all neighbours) and far key ranges."""
    for s in range(0, n, rows):
        e = min(n, s + rows)
        a, b = max(0, s - band), min(n, e + band)
        yield s, e, a, b, [(lo, hi) for lo, hi in ((0, a), (b, n)) if hi > lo]


class _FarBandAttention(torch.autograd.Function):
    """Exact LPA attention on pre-scaled queries (see the module docstring)."""

    @staticmethod
    def forward(ctx: FunctionCtx, q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry, rows: int) -> Tensor:
        # q (B, H, N, d) pre-scaled by clip * head_scale / sqrt(d); k, v (B, H, N, d); same dtype.
        with torch.autocast("cpu", enabled=False):
            return _FarBandAttention._forward(ctx, q, k, v, geom, rows)

    @staticmethod
    def _forward(ctx: FunctionCtx, q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry, rows: int) -> Tensor:
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        n = q.shape[2]
        acc = torch.promote_types(q.dtype, torch.float32)
        out = torch.empty_like(q)  # (B, H, N, d)
        lse = q.new_empty(q.shape[:3], dtype=acc)  # (B, H, N)
        for s, e, a, b, far in _blocks(n, rows, geom.band):
            qb = q[:, :, s:e]  # (B, H, c, d)
            logits = torch.matmul(qb, k[:, :, a:b].transpose(-2, -1)).to(acc)  # (B, H, c, L)
            rescale_neighbours(logits, geom.nb_index[s:e] - a, geom.nb_factor[s:e])
            peak = logits.amax(dim=-1, keepdim=True)  # (B, H, c, 1)
            weights = logits.sub_(peak).exp_()  # in place: one exp pass gives softmax and lse
            norm = weights.sum(dim=-1, keepdim=True)  # (B, H, c, 1)
            lse_parts = [(peak + norm.log()).squeeze(-1)]  # each (B, H, c)
            out_parts = [torch.matmul(weights.to(v.dtype), v[:, :, a:b]) / norm]
            del logits, weights
            for lo, hi in far:
                o, part_lse = flash(qb, k[:, :, lo:hi], v[:, :, lo:hi], 0.0, False, scale=1.0)
                out_parts.append(o)
                lse_parts.append(part_lse.to(acc))
            total = torch.logsumexp(torch.stack(lse_parts), dim=0)  # (B, H, c)
            blk = sum(torch.exp(p - total).unsqueeze(-1) * o.to(acc) for p, o in zip(lse_parts, out_parts))
            out[:, :, s:e] = blk
            lse[:, :, s:e] = total
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.geom, ctx.rows = geom, rows
        return out

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
        with torch.autocast("cpu", enabled=False):
            return _FarBandAttention._backward(ctx, grad)

    @staticmethod
    def _backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
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
            rescale_neighbours(logits, idx, fac)
            p = torch.exp(logits - lb.unsqueeze(-1))  # (B, H, c, L) true probabilities
            del logits
            dv[:, :, a:b] += torch.matmul(p.transpose(-2, -1), gb.to(acc))
            dp = torch.matmul(gb, vb.transpose(-2, -1)).to(acc)  # (B, H, c, L)
            ds = rescale_neighbours(p.mul_(dp.sub_(delta[:, :, s:e].unsqueeze(-1))), idx, fac)
            dq[:, :, s:e] += torch.matmul(ds, kb.to(acc))
            dk[:, :, a:b] += torch.matmul(ds.transpose(-2, -1), qb.to(acc))
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None


def band_flash_attention(q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry, budget: int) -> Tensor:
    """q (B, H, N, d) pre-scaled by ``clip * head_scale / sqrt(d)``; k, v (B, H, N, d) -> (B, H, N, d)."""
    b, heads, n, _ = q.shape
    rows = max(64, 6 * geom.band)  # band keys are ~(rows + 2 band) of N: keep their share small
    while rows > 1 and b * heads * rows * (rows + 2 * geom.band) > budget:
        rows //= 2
    return _FarBandAttention.apply(q, k, v, geom, min(rows, n))

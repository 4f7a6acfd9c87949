"""The "eager" route of LPA: query-chunked attention in plain PyTorch ops (any device).

Input queries are pre-scaled by ``clip * head_scale / sqrt(d)``, so ``q . k`` is already
the logit of every key at ``D = clip``.  Per block of query rows: one matmul against all
keys, the K neighbour logits of each row rescaled in place through the cached (N, K)
neighbour table, a plain softmax (on bf16/fp16 logits it accumulates in fp32) and the
value matmul.  A block holds at most ``budget`` logits (B * heads * rows * N), down to one
query row.  Under autograd each block is checkpointed: its logits are recomputed in the
backward instead of kept.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from epng.model.lpa.geometry import GridGeometry, rescale_neighbours


def _attend_block(q_blk: Tensor, k_t: Tensor, v: Tensor, nb_index: Tensor, nb_factor: Tensor) -> Tensor:
    """One block of query rows.

    q_blk (B, H, c, d) pre-scaled queries; k_t (B, H, d, N); v (B, H, N, d);
    nb_index (c, K); nb_factor (c, K) = D / clip.  Returns (B, H, c, d).
    """
    logits = torch.matmul(q_blk, k_t)  # (B, H, c, N) in q's dtype: correct wherever D = clip
    rescale_neighbours(logits, nb_index, nb_factor)
    # bf16/fp16 logits: PyTorch's softmax accumulates in fp32 and rounds only its output
    # (bit-identical to an fp32 softmax rounded to bf16, without an fp32 copy of the block).
    attn = torch.softmax(logits, dim=-1)  # (B, H, c, N)
    return torch.matmul(attn.to(v.dtype), v)  # (B, H, c, d)


def eager_attention(q: Tensor, k: Tensor, v: Tensor, geom: GridGeometry, budget: int) -> Tensor:
    """q (B, H, N, d) pre-scaled by ``clip * head_scale / sqrt(d)``; k, v (B, H, N, d) -> (B, H, N, d)."""
    b, heads, n, _ = q.shape
    k_t = k.transpose(-2, -1).contiguous()  # (B, H, d, N); matmul would copy it per block
    v = v.contiguous()
    rows = max(1, min(n, budget // max(1, b * heads * n)))
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
            # blocks fragments the CPU heap (resident memory was seen to grow).
            out = blk.new_empty(b, heads, n, blk.shape[-1])
        out[:, :, sl] = blk
    assert out is not None
    return out

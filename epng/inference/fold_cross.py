"""The phrase cross-attention reassociated for inference: no (N, C) x (C, C) product per token.

`PhraseCrossAttention` projects every visual token with ``W_q`` and every attended value with
``W_out``. Both are linear, so with the P phrases' keys and values fixed per call::

    q_j k_j^T  = x (W_q,j^T k_j^T) + b_q,j k_j^T          # (N, C) x (C, P) per head j
    attn V W_out^T = sum_j attn_j (v_j W_out,j^T)         # (N, heads * P) x (heads * P, C)

The phrase-side products are computed once per call; the token side costs
``2 * N * C * heads * P`` multiply-adds instead of ``2 * N * C * C`` -- less whenever
``heads * P < C`` (e.g. 8 heads x 8 phrases against C = 768). The same function as the module
up to float rounding (the tests compare them); masking and the zero update of a sample
without phrases are the module's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from epng.model.communicator import Communicator, PhraseCrossAttention


class FoldedCrossAttention(nn.Module):
    """`PhraseCrossAttention` with the query and output projections moved to the phrase side."""

    def __init__(self, cross: PhraseCrossAttention) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = cross.q, cross.k, cross.v, cross.out
        self.num_heads = cross.num_heads

    def forward(self, x: Tensor, phrases: Tensor, phrase_mask: Tensor) -> Tensor:
        """x (B, N, C), phrases (B, P, C), phrase_mask (B, P) bool -> (B, N, C)."""
        b, p, c = phrases.shape
        heads = self.num_heads
        d = c // heads
        has_phrase = phrase_mask.any(dim=1)  # (B,)
        keep = phrase_mask | ~has_phrase[:, None]  # all-padding rows attend to everything, zeroed below
        k = self.k(phrases).view(b, p, heads, d) / math.sqrt(d)  # (B, P, h, d), the softmax scale folded in
        v = self.v(phrases).view(b, p, heads, d)  # (B, P, h, d)
        w_q = self.q.weight.view(heads, d, c)  # (h, d, C)
        m = torch.einsum("hdc,bphd->bchp", w_q, k).reshape(b, c, heads * p)  # (B, C, h*P)
        bias = torch.einsum("hd,bphd->bhp", self.q.bias.view(heads, d), k).reshape(b, 1, heads * p)
        logits = (torch.matmul(x, m) + bias).view(b, -1, heads, p)  # (B, N, h, P)
        logits = logits.masked_fill(~keep[:, None, None, :], float("-inf"))
        attn = torch.softmax(logits, dim=-1).reshape(b, -1, heads * p)  # (B, N, h*P)
        w_out = self.out.weight.view(c, heads, d)  # (C, h, d)
        values = torch.einsum("bphd,chd->bhpc", v, w_out).reshape(b, heads * p, c)  # (B, h*P, C)
        out = torch.matmul(attn, values) + self.out.bias  # (B, N, C)
        return out * has_phrase[:, None, None].to(out.dtype)


def fold_cross_attention(communicator: Communicator) -> int:
    """Replace every layer's cross-attention by its `FoldedCrossAttention` (in place); returns how many."""
    count = 0
    for layer in communicator.layers:
        if isinstance(layer.cross, PhraseCrossAttention):
            layer.cross = FoldedCrossAttention(layer.cross)
            count += 1
    return count

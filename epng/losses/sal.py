"""Bidirectional Semantic Alignment Loss (SAL): phrase -> pixels and pixel -> phrases contrastive terms.

At the stride-4 grid of ``pixel_embed``, with similarity ``s(i, j) = F_N^i . F^j / tau`` (plain
dot product, no L2 normalisation, as in the paper; the official code's scale 0.1 is tau = 10)
and the ground truth reduced to that grid by "any pixel positive" (max pooling):

* ``l_v`` (phrase as anchor): mean over phrases i with a positive cell of
  ``1/|G_i+| sum_{j in G_i+} -log softmax_{k in all pixels} s(i, k)[j]``;
* ``l_t`` (pixel as anchor): mean over pixels i with a positive phrase of
  ``1/|T_i+| sum_{j in T_i+} -log softmax_{k in real phrases} s(k, i)[j]``.

Both means pool the whole batch (each phrase, resp. each positive pixel, weighs the same);
padding phrases are never anchors, positives or softmax candidates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reduce_targets(gt_masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, P, H, W) ground truth -> (B, P, h, w) bool: a cell is positive if any of its pixels is."""
    return F.adaptive_max_pool2d(gt_masks.float(), tuple(size)) > 0.5


def sal_loss(
    pixel_embed: Tensor, phrase_embed: Tensor, gt_masks: Tensor, phrase_mask: Tensor, tau: float = 10.0
) -> tuple[Tensor, Tensor]:
    """pixel_embed (B, C, h, w), phrase_embed (B, P, C), gt_masks (B, P, H, W), phrase_mask (B, P)
    -> (l_v, l_t) scalars; a direction without any anchor gives 0 (still in the graph)."""
    phrase_mask = phrase_mask.bool()
    pos = reduce_targets(gt_masks, pixel_embed.shape[-2:]).flatten(2) & phrase_mask[..., None]  # (B, P, N)
    dtype = torch.promote_types(pixel_embed.dtype, torch.float32)
    pixel, phrase = pixel_embed.to(dtype).flatten(2), phrase_embed.to(dtype)
    with torch.autocast(pixel.device.type, enabled=False):  # similarities in >= float32 even under autocast
        sim = torch.einsum("bpc,bcn->bpn", phrase, pixel) / tau  # (B, P, N)

    # l_v: each phrase against all pixels of its image.
    n_pix = pos.sum(2)  # (B, P)
    nll_v = -torch.where(pos, F.log_softmax(sim, dim=2), 0.0).sum(2) / n_pix.clamp(min=1)  # (B, P)
    anchors_v = n_pix > 0
    l_v = nll_v[anchors_v].mean() if anchors_v.any() else sim.sum() * 0

    # l_t: each pixel against the real phrases of its image (images without any are dropped).
    keep = phrase_mask.any(1)
    sim_t = sim[keep].masked_fill(~phrase_mask[keep][..., None], float("-inf"))  # (B', P, N)
    pos_t = pos[keep]
    n_phr = pos_t.sum(1)  # (B', N)
    nll_t = -torch.where(pos_t, F.log_softmax(sim_t, dim=1), 0.0).sum(1) / n_phr.clamp(min=1)  # (B', N)
    anchors_t = n_phr > 0
    l_t = nll_t[anchors_t].mean() if anchors_t.any() else sim.sum() * 0
    return l_v, l_t

"""Per-pixel binary cross-entropy on mask logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def mask_bce_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean BCE over every pixel of every phrase: logits, targets (R, H, W) -> scalar.

    Computed from logits (log-sum-exp form); 0 (still in the graph) when R = 0.
    """
    if logits.numel() == 0:
        return logits.sum()
    return F.binary_cross_entropy_with_logits(logits, targets)

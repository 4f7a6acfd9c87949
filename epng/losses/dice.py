"""Dice loss: 1 - 2|M n G| / (|M| + |G|) per phrase with soft M = sigmoid(logits)."""

from __future__ import annotations

from torch import Tensor


def dice_loss(logits: Tensor, targets: Tensor, eps: float = 1.0) -> Tensor:
    """Mean over phrases of ``1 - (2 sum(M G) + eps) / (sum(M) + sum(G) + eps)``.

    logits, targets (R, H, W) -> scalar; ``eps`` smooths empty masks (an empty prediction of
    an empty mask costs 0). 0 (still in the graph) when R = 0.
    """
    if logits.shape[0] == 0:
        return logits.sum()
    probs = logits.sigmoid().flatten(1)  # (R, H*W)
    targets = targets.flatten(1)
    inter = (probs * targets).sum(1)
    return (1 - (2 * inter + eps) / (probs.sum(1) + targets.sum(1) + eps)).mean()

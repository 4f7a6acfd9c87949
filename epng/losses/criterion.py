"""`EPNGCriterion`: L = w_bce * BCE + w_dice * Dice + w_sal * (l_v + l_t), the paper's weights (2, 2, 1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from epng.losses.bce import mask_bce_loss
from epng.losses.dice import dice_loss
from epng.losses.masks import real_phrase_logits
from epng.losses.sal import reduce_targets, sal_loss

if TYPE_CHECKING:
    from epng.model.config import EPNGConfig
    from epng.model.head import EPNGOutput


class EPNGCriterion(nn.Module):
    """``criterion(out, gt_masks, phrase_mask) -> {"loss", "bce", "dice", "sal", "sal_v", "sal_t"}``.

    BCE and Dice compare the mask logits, upsampled bilinearly to the ground truth's
    resolution, over the real phrases only; SAL works at the stride-4 grid (`sal.py`).

    Each term is a mean over some units (phrases for BCE/Dice/l_v, positive pixels for
    l_t). With several processes, pass ``count_reducer`` (local counts -> their mean over
    processes): each term is then rescaled to ``local sum / mean count``, so that the
    average over processes that DDP takes of the gradients is exactly the gradient of the
    loss over the whole global batch, whatever each process holds.
    """

    def __init__(
        self, weights: tuple[float, float, float] = (2.0, 2.0, 1.0), tau: float = 10.0, dice_eps: float = 1.0
    ) -> None:
        super().__init__()
        self.weights = tuple(float(w) for w in weights)
        self.tau = tau
        self.dice_eps = dice_eps

    @classmethod
    def from_config(cls, config: EPNGConfig) -> EPNGCriterion:
        return cls(config.loss_weights, config.sal_tau, config.dice_eps)

    def forward(
        self,
        out: EPNGOutput,
        gt_masks: Tensor,
        phrase_mask: Tensor,
        count_reducer: Callable[[Tensor], Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """out: model output; gt_masks (B, P, H, W); phrase_mask (B, P) bool."""
        logits, targets = real_phrase_logits(out.mask_logits, gt_masks, phrase_mask)  # (R, H, W)
        bce = mask_bce_loss(logits, targets)
        dice = dice_loss(logits, targets, self.dice_eps)
        sal_v, sal_t = sal_loss(out.pixel_embed, out.phrase_embed, gt_masks, phrase_mask, self.tau)
        if count_reducer is not None:
            counts = self.unit_counts(gt_masks, phrase_mask, out.pixel_embed.shape[-2:])  # (4,)
            scale = counts / count_reducer(counts).clamp(min=1)
            bce, dice, sal_v, sal_t = bce * scale[0], dice * scale[1], sal_v * scale[2], sal_t * scale[3]
        sal = sal_v + sal_t
        w_bce, w_dice, w_sal = self.weights
        loss = w_bce * bce + w_dice * dice + w_sal * sal
        return {"loss": loss, "bce": bce, "dice": dice, "sal": sal, "sal_v": sal_v, "sal_t": sal_t}

    @staticmethod
    @torch.no_grad()
    def unit_counts(gt_masks: Tensor, phrase_mask: Tensor, grid: tuple[int, int]) -> Tensor:
        """How many units each term averages over: (real phrases, real phrases, l_v anchor
        phrases, l_t anchor pixels), float (4,)."""
        phrase_mask = phrase_mask.bool()
        pos = reduce_targets(gt_masks, tuple(grid)).flatten(2) & phrase_mask[..., None]  # (B, P, N)
        n_phrases = phrase_mask.sum()
        return torch.stack([n_phrases, n_phrases, pos.any(2).sum(), pos.any(1).sum()]).float()

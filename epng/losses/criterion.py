"""`EPNGCriterion`: L = w_bce * BCE + w_dice * Dice + w_sal * (l_v + l_t), spec weights (2, 2, 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from epng.losses.bce import mask_bce_loss
from epng.losses.dice import dice_loss
from epng.losses.masks import real_phrase_logits
from epng.losses.sal import sal_loss

if TYPE_CHECKING:
    from epng.model.config import EPNGConfig
    from epng.model.head import EPNGOutput


class EPNGCriterion(nn.Module):
    """``criterion(out, gt_masks, phrase_mask) -> {"loss", "bce", "dice", "sal", "sal_v", "sal_t"}``.

    BCE and Dice compare the mask logits, upsampled bilinearly to the ground truth's
    resolution, over the real phrases only; SAL works at the stride-4 grid (`sal.py`).
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

    def forward(self, out: EPNGOutput, gt_masks: Tensor, phrase_mask: Tensor) -> dict[str, Tensor]:
        """out: model output; gt_masks (B, P, H, W); phrase_mask (B, P) bool."""
        logits, targets = real_phrase_logits(out.mask_logits, gt_masks, phrase_mask)  # (R, H, W)
        bce = mask_bce_loss(logits, targets)
        dice = dice_loss(logits, targets, self.dice_eps)
        sal_v, sal_t = sal_loss(out.pixel_embed, out.phrase_embed, gt_masks, phrase_mask, self.tau)
        sal = sal_v + sal_t
        w_bce, w_dice, w_sal = self.weights
        loss = w_bce * bce + w_dice * dice + w_sal * sal
        return {"loss": loss, "bce": bce, "dice": dice, "sal": sal, "sal_v": sal_v, "sal_t": sal_t}

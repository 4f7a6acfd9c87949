"""Real-phrase mask logits at ground-truth resolution, shared by the BCE and Dice losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def real_phrase_logits(mask_logits: Tensor, gt_masks: Tensor, phrase_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Select the real phrases and upsample their logits bilinearly to the ground truth's size.

    mask_logits (B, P, h, w), gt_masks (B, P, H, W), phrase_mask (B, P) bool
    -> logits (R, H, W), targets (R, H, W), at least float32, R = number of real phrases.
    """
    phrase_mask = phrase_mask.bool()
    dtype = torch.promote_types(mask_logits.dtype, torch.float32)  # never below float32 (autocast)
    logits = mask_logits[phrase_mask].to(dtype)  # (R, h, w)
    targets = gt_masks[phrase_mask].to(dtype)  # (R, H, W)
    if logits.shape[-2:] != targets.shape[-2:] and logits.shape[0] > 0:
        logits = F.interpolate(logits[:, None], size=targets.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return logits, targets

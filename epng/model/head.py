"""Dense prediction: each phrase feature is a 1x1 kernel over the stride-4 pixel features.

The communicated map is upsampled from H/16 to H/4 by bilinear x4 only (no conv): a 1x1
kernel commutes with bilinear upsampling, so ``mask_logits`` equal the paper's
``Up4(F_N * F)`` (the logits of ``M = Up4(sigmoid(F_N * F))``), and ``pixel_embed`` is the
feature map SAL compares phrases with at H/4. A learnable scalar bias shifts all logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class EPNGOutput:
    """Model output (see docs/DESIGN.md, model contract)."""

    mask_logits: Tensor  # (B, P, H/4, W/4)
    pixel_embed: Tensor  # (B, C, H/4, W/4)
    phrase_embed: Tensor  # (B, P, C)


class DenseHead(nn.Module):
    """(B, C, H/16, W/16) map + (B, P, C) phrases -> `EPNGOutput` at stride 4."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, visual: Tensor, phrases: Tensor) -> EPNGOutput:
        pixel_embed = F.interpolate(visual, scale_factor=4, mode="bilinear", align_corners=False)  # (B, C, H/4, W/4)
        mask_logits = torch.einsum("bpc,bchw->bphw", phrases, pixel_embed) + self.bias  # (B, P, H/4, W/4)
        return EPNGOutput(mask_logits=mask_logits, pixel_embed=pixel_embed, phrase_embed=phrases)


def upsample_logits(mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of mask logits (B, P, h, w) -> (B, P, *size)."""
    return F.interpolate(mask_logits, size=tuple(size), mode="bilinear", align_corners=False)

"""Dense prediction: each phrase feature is a 1x1 kernel over the stride-4 pixel features.

Paper head (``mask_head="bilinear"``): the communicated map is upsampled from H/16 to H/4
by bilinear x4 only (no conv): a 1x1 kernel commutes with bilinear upsampling, so
``mask_logits`` equal the paper's ``Up4(F_N * F)`` (the logits of
``M = Up4(sigmoid(F_N * F))``), and ``pixel_embed`` is the feature map SAL compares phrases
with at H/4. ``mask_head="fpn"`` reaches H/4 through `FPNUpsampler` instead. A learnable
scalar bias shifts all logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from epng.model.config import EPNGConfig


@dataclass
class EPNGOutput:
    """Model output (see docs/DESIGN.md, model contract)."""

    mask_logits: Tensor  # (B, P, H/4, W/4)
    pixel_embed: Tensor  # (B, C, H/4, W/4)
    phrase_embed: Tensor  # (B, P, C)


class FPNUpsampler(nn.Module):
    """(B, C, H/16, W/16) + finer FPN maps [P3 (B, f, H/8, W/8), P2 (B, f, H/4, W/4)] -> (B, C, H/4, W/4).

    Per finer level: x2 bilinear, + a 1x1 projection of the FPN map, 3x3 conv + GroupNorm +
    ReLU; a final 1x1 conv keeps the pixel features signed (they meet phrase kernels and SAL).
    """

    def __init__(self, fpn_channels: int, channels: int, levels: int = 2) -> None:
        super().__init__()
        groups = math.gcd(32, channels)
        self.lateral = nn.ModuleList(nn.Conv2d(fpn_channels, channels, 1) for _ in range(levels))
        self.refine = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.GroupNorm(groups, channels), nn.ReLU()
            )
            for _ in range(levels)
        )
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, visual: Tensor, fine: tuple[Tensor, ...]) -> Tensor:
        if len(fine) != len(self.lateral):
            raise ValueError(f"FPNUpsampler expects {len(self.lateral)} finer FPN maps, got {len(fine)}")
        x = visual
        for skip, lateral, refine in zip(fine, self.lateral, self.refine):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = refine(x + lateral(skip))  # (B, C, h, w) at the skip's stride
        return self.out(x)


class DenseHead(nn.Module):
    """(B, C, H/16, W/16) map + (B, P, C) phrases (+ finer FPN maps) -> `EPNGOutput` at stride 4."""

    def __init__(self, config: EPNGConfig) -> None:
        super().__init__()
        self.upsampler = FPNUpsampler(config.fpn_channels, config.d_model) if config.mask_head == "fpn" else None
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, visual: Tensor, phrases: Tensor, fine: tuple[Tensor, ...] = ()) -> EPNGOutput:
        if self.upsampler is None:
            pixel_embed = F.interpolate(visual, scale_factor=4, mode="bilinear", align_corners=False)
        else:
            pixel_embed = self.upsampler(visual, fine)  # (B, C, H/4, W/4)
        mask_logits = torch.einsum("bpc,bchw->bphw", phrases, pixel_embed) + self.bias  # (B, P, H/4, W/4)
        return EPNGOutput(mask_logits=mask_logits, pixel_embed=pixel_embed, phrase_embed=phrases)

    def mask_logits(self, visual: Tensor, phrases: Tensor, fine: tuple[Tensor, ...] = ()) -> Tensor:
        """Inference-only logits (B, P, H/4, W/4) in fp32, the same numbers as ``forward`` up to rounding.

        Paper head: the 1x1 phrase kernels run on the stride-16 map and only the (B, P) logit
        maps are upsampled x4 -- a 1x1 kernel commutes with bilinear upsampling, so the
        (B, C, H/4, W/4) pixel features are never built. ``"fpn"`` head: its upsampler runs in
        the caller's precision (autocast applies). The phrase kernels always run in fp32.
        """
        pixels = visual if self.upsampler is None else self.upsampler(visual, fine)  # stride 16 | (B, C, H/4, W/4)
        with torch.autocast(pixels.device.type, enabled=False):
            logits = torch.einsum("bpc,bchw->bphw", phrases.float(), pixels.float()) + self.bias.float()
            if self.upsampler is None:
                logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
        return logits

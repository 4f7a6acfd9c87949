"""From stride-4 mask logits to binary masks at the original image resolution (spec 5.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def probabilities_at_original_size(
    mask_logits: torch.Tensor,
    input_size: tuple[int, int],
    valid_size: tuple[int, int],
    orig_size: tuple[int, int],
) -> torch.Tensor:
    """(P, h4, w4) logits of one sample -> (P, h, w) probabilities at the original resolution.

    The map covers the network input (``input_size``); the image occupies its top-left
    ``valid_size`` (the rest is padding). One bilinear resize maps the map so that the
    valid part lands exactly on ``orig_size``, then the padding is cropped off. With a
    square (stretch) resize ``valid_size == input_size`` and this is a plain resize to
    ``orig_size``. The *logits* are resized and then squashed, exactly as the BCE and Dice
    losses see them in training; resizing probabilities instead would move every boundary
    towards the side with the smaller |logit| (a systematic dilation of confident masks).
    """
    (in_h, in_w), (valid_h, valid_w), (h, w) = input_size, valid_size, orig_size
    full_h = max(round(h * in_h / valid_h), h)
    full_w = max(round(w * in_w / valid_w), w)
    logits = F.interpolate(mask_logits.float()[None], size=(full_h, full_w), mode="bilinear", align_corners=False)
    return torch.sigmoid(logits[0, :, :h, :w])  # (P, h, w)


def binary_masks(
    mask_logits: torch.Tensor,
    input_size: tuple[int, int],
    meta: list[dict],
    threshold: float = 0.5,
) -> list[torch.Tensor]:
    """(B, P, h4, w4) logits -> per sample a (P_b, h, w) bool mask of its real phrases, thresholded on the device."""
    masks = []
    for b, m in enumerate(meta):
        n = len(m["phrase_indices"])
        probs = probabilities_at_original_size(mask_logits[b, :n], input_size, m["valid_size"], m["orig_size"])
        masks.append(probs > threshold)
    return masks

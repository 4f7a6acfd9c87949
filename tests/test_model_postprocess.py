"""Post-processing resizes logits, as training does, so masks keep their trained boundaries."""

from __future__ import annotations

import torch

from epng.losses.masks import real_phrase_logits
from epng.model import EPNG


def test_boundary_sits_where_the_resized_logit_crosses_zero():
    # stride-4 logits [8, -2] resized to 8 pixels (align_corners=False): pixel x samples
    # s = (x + 0.5) / 4 - 0.5 between the two cells; 8 - 10 s > 0  <=>  x < 4.7.
    # Resizing probabilities instead (0.99966 -> 0.1192) would put the edge at x < 3.77.
    logits = torch.tensor([[[[8.0, -2.0]]]])  # (B=1, P=1, 1, 2)
    meta = [{"phrase_indices": [0], "orig_size": (1, 8), "valid_size": (1, 2)}]
    (mask,) = EPNG.postprocess_masks(logits, (1, 2), meta)
    assert mask[0, 0].tolist() == [True] * 5 + [False] * 3


def test_masks_are_the_sign_of_the_logits_the_loss_sees():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=gen) * 6  # (B, P, H/4, W/4)
    phrase_mask = torch.tensor([[True, True, False], [True, False, False]])
    gt = torch.zeros(2, 3, 32, 32, dtype=torch.bool)
    meta = [
        {"phrase_indices": list(range(int(n))), "orig_size": (32, 32), "valid_size": (32, 32)}
        for n in phrase_mask.sum(1)
    ]
    trained, _ = real_phrase_logits(logits, gt, phrase_mask)  # (R, 32, 32), as BCE / Dice see them
    masks = torch.cat(EPNG.postprocess_masks(logits, (32, 32), meta))
    assert masks.shape == trained.shape
    assert torch.equal(masks, trained > 0)

#!/usr/bin/env python
"""How well can a mask head draw the synthetic benchmark's masks at all?

For each phrase mask of ``--images`` synthetic images at ``--size`` px, free logits on a
grid of stride 16 (the paper's head: that grid, bilinear x4 to stride 4, then the
post-processing resize), 8 or 4 are fitted to the mask by BCE (Adam, ``--steps``), then
thresholded like a prediction. The mean IoU reached is an upper bound for any model whose
logits live on that grid: it says which ``mask_head`` a preset needs at a given input size.

    python scripts/mask_head_ceiling.py --size 128     # stride 16: ~0.71, stride 4: ~0.98
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torch.nn.functional as F

from epng.data.dataset import PNGDataset, collate_png
from epng.data.input_format import InputFormat
from epng.data.synth import generate_benchmark
from epng.model import load_tokenizer, preset_config


def render(logits: torch.Tensor, stride: int, size: int) -> torch.Tensor:
    """(B, P, size/stride, size/stride) logits -> (B, P, size, size), as the model's head and post-processing would."""
    if stride == 16:  # paper head: x4 to stride 4 first
        logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
    return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)


def ceiling(gt: torch.Tensor, phrase_mask: torch.Tensor, stride: int, steps: int) -> torch.Tensor:
    """Best-fit IoU per real phrase (R,) for logits on a grid of ``stride``."""
    size = gt.shape[-1]
    logits = torch.zeros(*gt.shape[:2], size // stride, size // stride, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.3)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(render(logits, stride, size), gt, reduction="none")
        loss = loss.mean((-1, -2))[phrase_mask].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pred, target = render(logits.detach(), stride, size) > 0, gt > 0.5
    inter = (pred & target).flatten(2).sum(-1)
    union = (pred | target).flatten(2).sum(-1).clamp(min=1)
    return (inter / union)[phrase_mask]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        generate_benchmark(root, n_train=args.images, n_val=1, size=args.size, seed=args.seed)
        data = PNGDataset(
            root,
            "train2017",
            InputFormat(load_tokenizer(preset_config("epng_lite0_minilm")), args.size),
            max_narratives=args.images,
        )
        batch = collate_png([data[i] for i in range(len(data))])
    gt, phrase_mask = batch["gt_masks"].float(), batch["phrase_mask"]
    print(f"{args.images} synthetic images at {args.size}^2, {int(phrase_mask.sum())} phrases")
    print("| logit grid stride | mean IoU ceiling | worst phrase |")
    print("|---|---|---|")
    for stride in (16, 8, 4):
        iou = ceiling(gt, phrase_mask, stride, args.steps)
        print(f"| {stride} | {iou.mean():.3f} | {iou.min():.3f} |")


if __name__ == "__main__":
    main()

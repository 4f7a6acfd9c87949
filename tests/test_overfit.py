"""The compact preset learns: 150 Adam steps on 4 synthetic 128² images reach mean IoU > 0.9
on them (about 30 s on the 2-core CI machine; the step count is fixed, nothing is timed)."""

from __future__ import annotations

import torch

from epng.data.dataset import PNGDataset, collate_png
from epng.data.inputs import model_inputs
from epng.data.synth import generate_benchmark
from epng.losses import EPNGCriterion
from epng.model import EPNG, build_epng

SIZE = 128
STEPS, DROP_AT = 150, 120  # lr 1e-3, then 1e-4 for the last 30 steps


def mean_iou(model, batch) -> float:
    """Mean over phrases of the IoU of the binary masks (original size) with the ground truth."""
    model.eval()
    with torch.no_grad():
        out = model(*model_inputs(batch))
    masks = EPNG.postprocess_masks(out.mask_logits, tuple(batch["images"].shape[-2:]), batch["meta"])
    model.train()
    ious = []
    for i, pred in enumerate(masks):
        gt = batch["gt_masks"][i, : pred.shape[0]]
        inter = (pred & gt).flatten(1).sum(1)
        union = (pred | gt).flatten(1).sum(1)
        ious += (inter / union.clamp(min=1)).tolist()
    return sum(ious) / len(ious)


def test_compact_preset_fits_four_images(tmp_path):
    torch.manual_seed(0)
    generate_benchmark(tmp_path, n_train=4, n_val=1, size=SIZE, seed=0)
    model = build_epng("epng_lite0_minilm", image_size=SIZE, dropout=0.0)
    data = PNGDataset(tmp_path, "train2017", model.input_format(SIZE), max_narratives=4)
    batch = collate_png([data[i] for i in range(len(data))])
    assert batch["phrase_mask"].sum() >= 10  # things and stuff, single and plural
    criterion = EPNGCriterion.from_config(model.config)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = mean_iou(model, batch)
    losses = []
    for step in range(STEPS):
        if step == DROP_AT:
            optimizer.param_groups[0]["lr"] = 1e-4
        loss = criterion(model(*model_inputs(batch)), batch["gt_masks"], batch["phrase_mask"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = mean_iou(model, batch)
    print(f"mean IoU {before:.3f} -> {after:.3f}, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.8 * losses[0]
    assert before < 0.3 and after > 0.9, (before, after)

"""Run a model over a split and score it with the official metric (the code of `epng score`)."""

from __future__ import annotations

from collections.abc import Callable
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from epng.data.dataset import PNGDataset
from epng.engine.distributed import DistContext, gather_objects
from epng.engine.postprocess import binary_masks
from epng.engine.precision import autocast_for
from epng.metrics.scorer import PNGEvaluator

# called with (meta of one sample, its (P, h, w) bool masks on the CPU)
PredictionHook = Callable[[dict, np.ndarray], None]


@torch.no_grad()
def evaluate_loader(
    model: torch.nn.Module,
    loader: DataLoader,
    dataset: PNGDataset,
    ctx: DistContext,
    amp: str = "none",
    on_prediction: PredictionHook | None = None,
    progress: bool = False,
) -> dict:
    """Metrics of ``model`` on ``dataset`` (this process's shard is what ``loader`` yields).

    Every process scores its own samples; the per-phrase IoUs (any number per process)
    are gathered and every process returns the same metrics over the whole split.
    Phrases without a prediction (e.g. truncated away) score 0 and are counted.
    """
    model.eval()
    device = next(model.parameters()).device
    evaluator = PNGEvaluator(dataset.narratives, dataset.panoptic, dataset.layout.panoptic_dir)
    for batch in tqdm(loader, desc="evaluate", disable=not (progress and ctx.is_main), dynamic_ncols=True):
        if batch["images"].shape[0] == 0:
            continue
        inputs = [batch[k].to(device, non_blocking=True) for k in ("images", "input_ids", "attention_mask", "phrase_token_mask", "phrase_mask")]
        with autocast_for(amp, device):
            out = model(*inputs)
        masks = binary_masks(out.mask_logits, tuple(batch["images"].shape[-2:]), batch["meta"])
        for meta, sample_masks in zip(batch["meta"], masks):
            sample_masks = sample_masks.cpu().numpy()
            for phrase_index, mask in zip(meta["phrase_indices"], sample_masks):
                evaluator.add_mask(meta["narrative"], phrase_index, mask, meta["image_id"])
            if on_prediction is not None:
                on_prediction(meta, sample_masks)
    if ctx.enabled:
        merged = PNGEvaluator(dataset.narratives, dataset.panoptic, dataset.layout.panoptic_dir)
        for part in gather_objects(evaluator.state_arrays(), ctx):
            merged.merge_arrays(part["narrative"], part["phrase_index"], part["iou"])
        evaluator = merged
    return evaluator.compute()

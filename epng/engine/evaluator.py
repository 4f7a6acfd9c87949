"""Run a model over a split and score it with the official metric (the code of `epng score`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from epng.data.dataset import PNGDataset, collate_png
from epng.data.items import image_path, png_path
from epng.data.options import ErrorMode
from epng.data.panoptic import phrase_masks
from epng.engine.distributed import DistContext, gather_objects
from epng.inference import Predictor
from epng.io.images import decode_image_file
from epng.io.json_file import write_json
from epng.io.panoptic_png import read_id_png
from epng.io.rle import encode_mask
from epng.metrics.plots import plot_recall_curves
from epng.metrics.png_metric import format_metrics_table
from epng.metrics.scorer import PNGEvaluator
from epng.viz import save_phrase_overlay, save_phrase_panels

# called with (meta of one sample, its (P, h, w) bool masks on the CPU, each phrase's IoU)
PredictionHook = Callable[[dict, np.ndarray, list[float]], None]


def dataset_for(
    model: torch.nn.Module, root: str | Path, split: str, max_length: int | None = None, **kwargs
) -> PNGDataset:
    """The split as ``model`` expects its input (`EPNG.input_format`; ``max_length`` is capped by
    the text encoder's). ``kwargs`` go to `PNGDataset`."""
    return PNGDataset(root, split, model.input_format(max_length=max_length), **kwargs)


def evaluate_loader(
    predictor: Predictor,
    loader: DataLoader,
    dataset: PNGDataset,
    ctx: DistContext,
    on_prediction: PredictionHook | None = None,
    progress: bool = False,
) -> PNGEvaluator:
    """Score ``predictor`` on ``dataset`` (this process's shard is what ``loader`` yields).

    Every process scores its own samples; the per-phrase IoUs (any number per process)
    are gathered, and every process returns an evaluator holding the whole split
    (``.compute()`` gives the metrics, ``.phrase_arrays()`` the per-phrase IoUs).
    Phrases without a prediction (e.g. truncated away) score 0 and are counted.
    """
    evaluator = PNGEvaluator(dataset.narratives, dataset.panoptic, dataset.layout.panoptic_dir)
    for batch in tqdm(loader, desc="evaluate", disable=not (progress and ctx.is_main), dynamic_ncols=True):
        if batch["images"].shape[0] == 0:
            continue
        masks = predictor.predict_torch(batch)
        for meta, sample_masks in zip(batch["meta"], masks):
            sample_masks = sample_masks.cpu().numpy()
            ious = [
                evaluator.add_mask(meta["narrative"], phrase_index, mask, meta["image_id"])
                for phrase_index, mask in zip(meta["phrase_indices"], sample_masks)
            ]
            if on_prediction is not None:
                on_prediction(meta, sample_masks, ious)
    if ctx.enabled:
        merged = PNGEvaluator(dataset.narratives, dataset.panoptic, dataset.layout.panoptic_dir)
        for part in gather_objects(evaluator.state_arrays(), ctx):
            merged.merge_arrays(part["narrative"], part["phrase_index"], part["iou"])
        evaluator = merged
    return evaluator


class PredictionWriter:
    """An ``on_prediction`` hook: writes every phrase's mask to ``predictions.jsonl`` (the
    format `epng score` reads) and, for the first ``n_overlays`` samples, two pictures under
    ``overlays/``: the narrative over the image with every phrase in its colour, and one panel
    per phrase (prediction vs ground-truth outline, IoU in the title)."""

    def __init__(self, out_dir: Path, dataset: PNGDataset, n_overlays: int = 8, append: bool = False):
        self.out_dir, self.dataset, self.n_overlays = out_dir, dataset, n_overlays
        self.path = out_dir / "predictions.jsonl"
        self._file = open(self.path, "a" if append else "w", encoding="utf-8")
        self.n_lines = 0
        self.overlays: list[Path] = []

    def __call__(self, meta: dict, masks: np.ndarray, ious: list[float]) -> None:
        for phrase_index, mask in zip(meta["phrase_indices"], masks):
            record = {
                "narrative": meta["narrative"],
                "image_id": meta["image_id"],
                "phrase_index": phrase_index,
                "segmentation": encode_mask(mask),
            }
            self._file.write(json.dumps(record) + "\n")
            self.n_lines += 1
        if len(self.overlays) < self.n_overlays:
            self._draw(meta, masks, ious)

    def _draw(self, meta: dict, masks: np.ndarray, ious: list[float]) -> None:
        narratives, layout, panoptic = self.dataset.narratives, self.dataset.layout, self.dataset.panoptic
        narrative = narratives[narratives.find(meta["narrative"])]
        phrases = {p.phrase_index: p for p in narrative.phrases}
        shown = [phrases[k] for k in meta["phrase_indices"]]
        image = decode_image_file(image_path(layout, panoptic, meta["image_id"])).permute(1, 2, 0).numpy()
        stem = self.out_dir / "overlays" / f"narrative_{meta['narrative']:06d}"
        texts = [p.text for p in shown]
        spans = [p.span for p in shown]
        self.overlays.append(save_phrase_overlay(image, masks, texts, f"{stem}.png", narrative.caption, spans))
        id_map = read_id_png(png_path(layout, panoptic, meta["image_id"]))
        gt = phrase_masks(id_map, [p.segment_ids for p in shown]) if shown else masks
        save_phrase_panels(image, masks, gt, texts, ious, f"{stem}_phrases.png")

    def flush(self) -> int:
        """Hand the lines written so far to the operating system; the file's size in bytes."""
        self._file.flush()
        return os.fstat(self._file.fileno()).st_size

    def close(self) -> None:
        self._file.close()


def evaluate_checkpoint(
    predictor: Predictor,
    data_root: str | Path,
    split: str,
    out_dir: str | Path,
    batch_size: int = 8,
    num_workers: int = 2,
    n_overlays: int = 8,
    mode: ErrorMode = "strict",
) -> dict:
    """`epng evaluate`: predictions.jsonl, metrics.json, recall curve and overlays under ``out_dir``.

    Re-run on the same ``out_dir`` after a kill, it continues where it stopped (`eval_resume`)."""
    from epng.engine.distributed import init_distributed
    from epng.engine.eval_resume import EvalProgress, evaluation_identity

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = init_distributed(predictor.device.type)
    dataset = dataset_for(predictor.model, data_root, split, mode=mode)
    progress = EvalProgress.start(out_dir, evaluation_identity(predictor, dataset, split, batch_size), ctx)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=progress.sampler(len(dataset), ctx),
        num_workers=num_workers,
        collate_fn=collate_png,
    )
    writer = PredictionWriter(out_dir, dataset, n_overlays, append=progress.resumed)
    try:
        batches = progress.track(loader, writer)
        evaluator = evaluate_loader(predictor, batches, dataset, ctx, on_prediction=writer, progress=True)
    finally:
        writer.close()
    progress.score_kept(evaluator)
    metrics = evaluator.compute()
    arrays = evaluator.phrase_arrays()
    write_json(out_dir / "metrics.json", metrics)
    plot_recall_curves(
        arrays["iou"], arrays["is_thing"], arrays["is_plural"], out_dir / "recall_curve.png", title=f"EPNG on {split}"
    )
    report = dataset.report()
    return {
        "metrics": metrics,
        "table": format_metrics_table(metrics, title=f"{split} ({report.summary()})"),
        "files": {
            "predictions": str(writer.path),
            "metrics": str(out_dir / "metrics.json"),
            "curve": str(out_dir / "recall_curve.png"),
            "overlays": [str(p) for p in writer.overlays],
        },
    }

"""Metric helpers that only the tests use: a mask IoU, an RLE's area, and oracle predictions files."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from epng.io.rle import decode_counts_string, encode_mask, normalize_rle
from epng.metrics.iou import intersection_union, iou_from_counts
from epng.metrics.scorer import PNGEvaluator


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two binary masks of the same shape (``ValueError`` otherwise). Both empty -> 1.0."""
    return iou_from_counts(*intersection_union(pred, gt))


def rle_area(segmentation: Any) -> int:
    """Number of foreground pixels of a (validated) RLE: the sum of its odd runs."""
    rle = normalize_rle(segmentation)
    runs = decode_counts_string(rle["counts"])
    return int(runs[1::2].sum())


def oracle_predictions(evaluator: PNGEvaluator, skip: Sequence[tuple[int, int]] = ()) -> Iterator[dict]:
    """Predictions that are the ground truth itself (AR 99.999, the formula's maximum).

    ``skip`` lists (narrative, phrase_index) pairs to leave out (to test missing phrases).
    """
    skipped = {(int(n), int(p)) for n, p in skip}
    # image by image, so that every panoptic PNG is decoded once
    for rec in sorted(evaluator.phrases(), key=lambda r: (r.image_id, r.narrative, r.phrase.phrase_index)):
        key = (rec.narrative, rec.phrase.phrase_index)
        if key in skipped:
            continue
        yield {
            "narrative": rec.narrative,
            "image_id": rec.image_id,
            "phrase_index": rec.phrase.phrase_index,
            "segmentation": encode_mask(evaluator.gt_mask(*key)),
        }


def write_predictions(predictions: Iterable[dict], path: str | Path) -> int:
    """Write predictions as JSON Lines; returns the number of lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for pred in predictions:
            f.write(json.dumps(pred, separators=(",", ":")) + "\n")
            n += 1
    return n


def write_oracle_predictions(data_root: str | Path, split: str, path: str | Path) -> int:
    """Write the ground truth of a split as a predictions file; returns the number of lines."""
    return write_predictions(oracle_predictions(PNGEvaluator.from_split(data_root, split)), path)

"""Intersection over union of two binary masks, the score of one phrase or expression."""

from __future__ import annotations

import numpy as np


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """(|P ∩ G|, |P ∪ G|) of two same-shape masks (anything non-zero is foreground)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    p, g = pred.astype(bool, copy=False), gt.astype(bool, copy=False)
    inter = int(np.count_nonzero(p & g))
    return inter, int(np.count_nonzero(p)) + int(np.count_nonzero(g)) - inter


def iou_from_counts(intersection: int, union: int) -> float:
    """I / U, and 1.0 when both masks are empty (U = 0): the prediction matches the empty truth."""
    return 1.0 if union == 0 else intersection / union

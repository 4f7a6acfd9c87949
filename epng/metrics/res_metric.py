"""Referring expression segmentation (RES) metrics: mIoU, oIoU and precision at IoU thresholds.

Per expression e with predicted mask P_e and ground truth G_e:
``I_e = |P_e ∩ G_e|``, ``U_e = |P_e ∪ G_e|``, ``IoU_e = I_e / U_e``.

* **mIoU** = mean over expressions of IoU_e;
* **oIoU** (overall IoU) = ΣI_e / ΣU_e, which weighs large objects more;
* **P@t** = fraction of expressions with IoU_e **≥** t, for t in 0.5, 0.6, 0.7, 0.8, 0.9.
  The comparison is done in exact integer arithmetic (``I_e · den ≥ num · U_e`` for
  t = num/den), so an IoU of exactly t counts, whatever its floating-point rounding.

All three are reported in percent. An expression whose prediction and ground truth are
both empty (U_e = 0) has IoU 1 and adds nothing to the oIoU sums; the RES datasets never
produce one (an empty ground truth is skipped as bad data).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from epng.metrics.iou import intersection_union, iou_from_counts

RES_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)


def _exact(t: float) -> Fraction:
    """The threshold as written in decimal (0.7 -> 7/10, not the binary double nearest to it)."""
    if not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"IoU thresholds must lie in [0, 1], got {t!r}")
    return Fraction(str(float(t)))


def threshold_key(t: float) -> str:
    """JSON key of a precision threshold: ``"0.5"``."""
    return f"{float(t):g}"


def res_metrics(
    intersections: Sequence[int], unions: Sequence[int], thresholds: Sequence[float] = RES_THRESHOLDS
) -> dict:
    """``{"n_expressions", "mIoU", "oIoU", "precision": {"0.5": ..., ...}}`` in percent.

    With no expression every value is 0.0 (and ``n_expressions`` 0).
    """
    inter = [int(v) for v in np.asarray(intersections).reshape(-1).tolist()]  # Python ints: no overflow
    union = [int(v) for v in np.asarray(unions).reshape(-1).tolist()]
    if len(inter) != len(union):
        raise ValueError(f"{len(inter)} intersections but {len(union)} unions")
    if any(not 0 <= i <= u for i, u in zip(inter, union)):
        raise ValueError("intersections must satisfy 0 <= I <= U")
    n = len(inter)
    fractions = [_exact(t) for t in thresholds]
    if n == 0:
        return {"n_expressions": 0, "mIoU": 0.0, "oIoU": 0.0, "precision": {threshold_key(t): 0.0 for t in thresholds}}
    ious = np.array([iou_from_counts(i, u) for i, u in zip(inter, union)], dtype=np.float64)
    total_u = sum(union)
    precision = {}
    for t, f in zip(thresholds, fractions):
        hits = sum(1 for i, u in zip(inter, union) if u == 0 or i * f.denominator >= u * f.numerator)
        precision[threshold_key(t)] = 100.0 * hits / n
    return {
        "n_expressions": n,
        "mIoU": 100.0 * float(ious.mean()),
        "oIoU": 100.0 * (sum(inter) / total_u if total_u else 1.0),
        "precision": precision,
    }


class RESMetric:
    """Accumulates per-expression intersections and unions; :meth:`compute` gives the metrics."""

    def __init__(self, thresholds: Sequence[float] = RES_THRESHOLDS):
        for t in thresholds:
            _exact(t)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.intersections: list[int] = []
        self.unions: list[int] = []

    def __len__(self) -> int:
        return len(self.intersections)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> float:
        """Score one expression; returns its IoU."""
        return self.add_counts(*intersection_union(pred, gt))

    def add_counts(self, intersection: int, union: int) -> float:
        intersection, union = int(intersection), int(union)
        if not 0 <= intersection <= union:
            raise ValueError(f"need 0 <= intersection <= union, got {intersection} and {union}")
        self.intersections.append(intersection)
        self.unions.append(union)
        return iou_from_counts(intersection, union)

    def ious(self) -> np.ndarray:
        inter = np.asarray(self.intersections, dtype=np.float64)
        union = np.asarray(self.unions, dtype=np.float64)
        return np.where(union == 0, 1.0, inter / np.maximum(union, 1))

    def compute(self) -> dict:
        return res_metrics(self.intersections, self.unions, self.thresholds)

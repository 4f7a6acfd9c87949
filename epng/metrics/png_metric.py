"""The official PNG metric: Average Recall over IoU thresholds.

Each grounded phrase scores the IoU of its predicted mask with its ground truth (at the
image's original resolution; a phrase without a prediction scores 0), and:

thresholds  t_i = i * 1e-5,  i = 0 ... 99999  (float64, computed exactly like that)
recall(t)   = fraction of phrases with IoU >= t
AR          = sum_{i=0}^{99998} (t_{i+1} - t_i) * recall(t_i)      (reported x 100)
acc@0.5     = fraction of phrases with IoU > 0.5                    (reported x 100)

Everything is vectorised: the phrases' IoUs are sorted once and the number of
IoUs at or above every threshold comes from one ``searchsorted`` over the grid.

Boundary rule: an IoU is a ratio of pixel counts, so it can lie *exactly* on a
threshold in exact arithmetic (3/10 on t_30000) while the two float64 values differ
by an ulp (``30000 * 1e-5 == 0.30000000000000004 > 3 / 10``). We compare with a
tolerance of ``BOUNDARY_TOL = 1e-13``: far above float64 rounding (~1e-16) and far
below the smallest gap between a threshold and an IoU that is not on it (at least
1 / (1e5 * union) > 1e-13 for any union below 1e8 pixels), so the result is the
exact-arithmetic value of the formula. IoU 1.0 is at or above every threshold and
adds t_99999 - t_0 = 0.99999; IoU 0.0 still adds (t_1 - t_0) since recall(0) = 1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

N_THRESHOLDS = 100_000
THRESHOLDS = np.arange(N_THRESHOLDS, dtype=np.int64).astype(np.float64) * 1e-5
THRESHOLDS.setflags(write=False)
_WEIGHTS = np.diff(THRESHOLDS)  # t_{i+1} - t_i for i = 0 ... 99998
_WEIGHTS.setflags(write=False)
BOUNDARY_TOL = 1e-13

METRIC_KEYS = (
    "ar",
    "ar_things",
    "ar_stuff",
    "ar_singulars",
    "ar_plurals",
    "acc_50",
    "n_phrases",
    "n_things",
    "n_stuff",
    "n_singulars",
    "n_plurals",
    "n_missing",
)


def check_ious(ious: Any) -> np.ndarray:
    """1-D float64 array of IoUs; raises ``ValueError`` on NaN or values outside [0, 1]."""
    arr = np.asarray(ious, dtype=np.float64).reshape(-1)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError("IoUs must be finite numbers (got NaN or inf)")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"IoUs must lie in [0, 1], got values in [{arr.min()}, {arr.max()}]")
    return arr


def _count_at_or_above(sorted_ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of IoUs >= each threshold (with the boundary tolerance)."""
    return sorted_ious.size - np.searchsorted(sorted_ious, thresholds - BOUNDARY_TOL, side="left")


def recall_curve(ious: Any) -> np.ndarray:
    """recall(t_i) for all 100,000 thresholds, as a float64 array in [0, 1].

    Raises ``ValueError`` for an empty set of IoUs (recall is undefined).
    """
    arr = check_ious(ious)
    if arr.size == 0:
        raise ValueError("recall is undefined for an empty set of phrases")
    counts = _count_at_or_above(np.sort(arr), THRESHOLDS)
    return counts / arr.size


def average_recall(ious: Any) -> float | None:
    """AR as a fraction in [0, 0.99999] (multiply by 100 to report); ``None`` for no phrases."""
    arr = check_ious(ious)
    if arr.size == 0:
        return None
    counts = _count_at_or_above(np.sort(arr), THRESHOLDS[:-1])
    return float(np.dot(_WEIGHTS, counts.astype(np.float64)) / arr.size)


def accuracy_at(ious: Any, threshold: float = 0.5) -> float | None:
    """Fraction of phrases with IoU strictly above ``threshold``; ``None`` for no phrases."""
    arr = check_ious(ious)
    if arr.size == 0:
        return None
    return float(np.count_nonzero(arr > threshold) / arr.size)


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def compute_metrics(ious: Any, is_thing: Any, is_plural: Any, n_missing: int = 0) -> dict:
    """The PNG metrics of a set of phrases (one entry per phrase in each array).

    ``ious``: IoU per phrase (missing predictions already set to 0);
    ``is_thing`` / ``is_plural``: bool per phrase; ``n_missing``: how many of the
    phrases had no prediction (reported only). AR and accuracy are in percent; the
    AR of an empty subset (and acc_50 when there is no phrase at all) is ``None``
    (``null`` in JSON). Keys: :data:`METRIC_KEYS`.
    """
    arr = check_ious(ious)
    thing = np.asarray(is_thing, dtype=bool).reshape(-1)
    plural = np.asarray(is_plural, dtype=bool).reshape(-1)
    if not (arr.shape == thing.shape == plural.shape):
        raise ValueError(
            f"ious, is_thing and is_plural must have one entry per phrase: {arr.size}, {thing.size}, {plural.size}"
        )
    n_missing = int(n_missing)
    if not 0 <= n_missing <= arr.size:
        raise ValueError(f"n_missing = {n_missing} is not between 0 and the number of phrases {arr.size}")
    return {
        "ar": _pct(average_recall(arr)),
        "ar_things": _pct(average_recall(arr[thing])),
        "ar_stuff": _pct(average_recall(arr[~thing])),
        "ar_singulars": _pct(average_recall(arr[~plural])),
        "ar_plurals": _pct(average_recall(arr[plural])),
        "acc_50": _pct(accuracy_at(arr, 0.5)),
        "n_phrases": int(arr.size),
        "n_things": int(thing.sum()),
        "n_stuff": int((~thing).sum()),
        "n_singulars": int((~plural).sum()),
        "n_plurals": int(plural.sum()),
        "n_missing": n_missing,
    }


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.2f}"


def format_metrics_table(metrics: dict, title: str | None = None) -> str:
    """A readable plain-text table of :func:`compute_metrics`' output ("—" for an empty subset)."""
    rows = [
        ("all", metrics["ar"], metrics["n_phrases"]),
        ("things", metrics["ar_things"], metrics["n_things"]),
        ("stuff", metrics["ar_stuff"], metrics["n_stuff"]),
        ("singulars", metrics["ar_singulars"], metrics["n_singulars"]),
        ("plurals", metrics["ar_plurals"], metrics["n_plurals"]),
    ]
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{'subset':<10} {'AR':>7} {'phrases':>9}")
    lines.append("-" * 28)
    for name, ar, n in rows:
        lines.append(f"{name:<10} {_fmt(ar):>7} {n:>9d}")
    lines.append("-" * 28)
    lines.append(f"{'acc@0.5':<10} {_fmt(metrics['acc_50']):>7}")
    n, missing = metrics["n_phrases"], metrics["n_missing"]
    share = f" ({100.0 * missing / n:.1f}%)" if n else ""
    lines.append(f"missing predictions: {missing} of {n} phrases{share} (scored IoU 0)")
    return "\n".join(lines)

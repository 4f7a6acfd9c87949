"""Recall-vs-IoU-threshold curves of the PNG metric (matplotlib, Agg canvas, no display needed).

The area under each curve (left Riemann sum over the 1e-5 grid) is the AR of
that subset, shown in the legend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from epng.metrics.png_metric import THRESHOLDS, average_recall, check_ious, recall_curve

# Plotted every _STEP-th threshold: 1,001 points per curve instead of 100,000.
_STEP = 100


def subset_curves(ious: Any, is_thing: Any, is_plural: Any) -> dict[str, np.ndarray]:
    """IoUs of the overall set and of the things / stuff / singulars / plurals subsets (empty ones left out)."""
    arr = check_ious(ious)
    thing = np.asarray(is_thing, dtype=bool).reshape(-1)
    plural = np.asarray(is_plural, dtype=bool).reshape(-1)
    subsets = {
        "all": arr,
        "things": arr[thing],
        "stuff": arr[~thing],
        "singulars": arr[~plural],
        "plurals": arr[plural],
    }
    return {name: values for name, values in subsets.items() if values.size}


def plot_recall_curves(
    ious: Any,
    is_thing: Any,
    is_plural: Any,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Plot recall(t) against the IoU threshold t for all phrases and each subset; save to ``path``.

    The file format follows the suffix (``.png``, ``.pdf``, ``.svg`` ...). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = subset_curves(ious, is_thing, is_plural)
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.append(THRESHOLDS[::_STEP], 1.0)
    styles = {
        "all": dict(color="black", linewidth=2.2),
        "things": dict(color="tab:blue", linestyle="--"),
        "stuff": dict(color="tab:green", linestyle="--"),
        "singulars": dict(color="tab:orange", linestyle=":"),
        "plurals": dict(color="tab:red", linestyle=":"),
    }
    for name, values in curves.items():
        recall = recall_curve(values)
        # recall at IoU threshold 1.0 is the share of perfect masks
        y = np.append(recall[::_STEP], np.count_nonzero(values >= 1.0) / values.size)
        ar = 100.0 * average_recall(values)
        ax.step(x, y, where="post", label=f"{name}: AR {ar:.1f} (n={values.size})", **styles[name])
    if not curves:
        ax.text(0.5, 0.5, "no phrases", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("IoU threshold t")
    ax.set_ylabel("recall (fraction of phrases with IoU ≥ t)")
    ax.set_title(title or "PNG recall vs IoU threshold")
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower left", fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path

"""Overlay pictures: each phrase's mask in its own colour, its words in a legend."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# distinct, colour-blind-friendly-ish colours (RGB 0..1), cycled
PALETTE = np.array(
    [
        (0.90, 0.10, 0.10),
        (0.10, 0.45, 0.90),
        (0.10, 0.70, 0.20),
        (0.95, 0.60, 0.05),
        (0.60, 0.20, 0.80),
        (0.05, 0.75, 0.75),
        (0.90, 0.30, 0.65),
        (0.55, 0.45, 0.15),
        (0.40, 0.40, 0.40),
        (0.75, 0.80, 0.10),
    ]
)


def save_phrase_overlay(
    image: np.ndarray,
    masks: np.ndarray,
    labels: Sequence[str],
    path: str | Path,
    title: str | None = None,
    alpha: float = 0.5,
    gt_masks: np.ndarray | None = None,
) -> Path:
    """image (h, w, 3) uint8; masks (P, h, w) bool; one label per mask -> PNG at ``path``.

    Each mask is tinted and outlined in its phrase's colour; ``gt_masks`` (P, h, w), when
    given, are outlined dashed in white on top (ground truth to compare with)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    h, w = image.shape[:2]
    blended = image.astype(np.float32) / 255.0
    for k, mask in enumerate(masks):
        colour = PALETTE[k % len(PALETTE)]
        blended[mask] = (1 - alpha) * blended[mask] + alpha * colour
    fig_w = 7.0
    fig = Figure(figsize=(fig_w, fig_w * h / w + 0.4 + 0.25 * ((len(labels) + 1) // 2)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(blended)
    for k, mask in enumerate(masks):
        if mask.any() and not mask.all():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[PALETTE[k % len(PALETTE)]], linewidths=1.0)
    if gt_masks is not None:
        for gt in gt_masks:
            if gt.any() and not gt.all():
                ax.contour(gt.astype(np.float32), levels=[0.5], colors=["white"], linewidths=1.5, linestyles="dashed")
    ax.set_axis_off()
    if title:
        ax.set_title(textwrap.fill(title, 90), fontsize=8)
    handles = [
        Patch(color=PALETTE[k % len(PALETTE)], label=textwrap.shorten(label, 40)) for k, label in enumerate(labels)
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(labels) + 1) // 2), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path

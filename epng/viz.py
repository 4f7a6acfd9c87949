"""Pictures a person reads at a glance: each phrase in its own colour, in the image and in the narrative.

* `composite`: the image with every phrase's mask tinted in its colour and outlined in it, so
  overlapping masks stay visible (numpy only; the app shows the same pixels).
* `save_phrase_overlay`: the narrative above the image, wrapped to the image's width, each
  phrase highlighted in its mask's colour; then the composite.
* `save_phrase_panels`: one panel per phrase -- its prediction tinted, the ground truth
  outlined dashed in white -- with the phrase and its IoU as the panel title (evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

_Lines = list[list[tuple[str, int | None, float]]]  # per line: (text, phrase or None, x in pixels) per unit

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
FONT_SIZE = 10  # points, at DPI
DPI = 100


def phrase_colour(k: int) -> np.ndarray:
    """RGB (3,) in [0, 1] of phrase ``k``."""
    return PALETTE[k % len(PALETTE)]


def mask_outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """(h, w) bool -> the mask's pixels within ``width`` of its border (a morphological inner edge)."""
    inner = mask.copy()
    for _ in range(width):
        padded = np.pad(inner, 1, mode="constant", constant_values=False)
        inner = (
            padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        )  # erosion by a 4-neighbour cross
    return mask & ~inner


def composite(
    image: np.ndarray,
    masks: np.ndarray,
    alpha: float = 0.5,
    outline: int = 2,
    colours: Sequence[int] | None = None,
) -> np.ndarray:
    """image (h, w, 3) uint8 + masks (P, h, w) bool -> (h, w, 3) uint8: each mask tinted with its
    phrase's colour (``colours[p]``, default ``p``; blended in order), then every outline drawn
    opaque on top. Pixels outside every mask are the input's."""
    colours = range(len(masks)) if colours is None else colours
    out = image.astype(np.float32) / 255.0
    for k, mask in zip(colours, masks):
        out[mask] = (1 - alpha) * out[mask] + alpha * phrase_colour(k)
    if outline > 0:
        for k, mask in zip(colours, masks):
            out[mask_outline(mask, outline)] = phrase_colour(k)
    return np.round(out * 255.0).astype(np.uint8)


def caption_pieces(caption: str, spans: Sequence[tuple[int, int]]) -> list[tuple[str, int | None]]:
    """Split ``caption`` into (text, phrase index or None) pieces by the phrases' character spans;
    where spans overlap, the earlier-starting phrase keeps the shared characters (a phrase
    left with none is left out)."""
    order = sorted(range(len(spans)), key=lambda k: spans[k])
    pieces, pos = [], 0
    for k in order:
        start, end = spans[k]
        if start < pos:  # overlapping spans: the earlier one keeps the shared characters
            start = pos
        if start > pos:
            pieces.append((caption[pos:start], None))
        if end > start:
            pieces.append((caption[start:end], k))
        pos = max(pos, end)
    if pos < len(caption):
        pieces.append((caption[pos:], None))
    return pieces


def _layout_words(
    pieces: Sequence[tuple[str, int | None]], width_px: float, renderer: RendererBase, prop: FontProperties
) -> _Lines:
    """Greedy word wrap of the pieces into lines of at most ``width_px``: (text, phrase, x) per
    unit. A phrase (drawn bold) stays one unit (one highlight box) unless it is wider than a line."""
    bold = prop.copy()
    bold.set_weight("bold")

    def width(text: str, phrase: bool = False) -> float:
        return renderer.get_text_width_height_descent(text, bold if phrase else prop, ismath=False)[0] + 2 * phrase

    space = width("a a") - width("aa")
    lines: _Lines = [[]]
    x = 0.0
    for text, k in pieces:
        whole = k is not None and width(text.strip(), True) <= width_px
        units = [text] if whole else text.split(" ")
        for i, unit in enumerate(units):
            if whole:
                x += space * (len(unit) - len(unit.lstrip(" ")))
                unit = unit.strip()
            elif i > 0:
                x += space
            if not unit:
                continue
            w = width(unit, k is not None)
            if x > 0 and x + w > width_px:
                lines.append([])
                x = 0.0
            lines[-1].append((unit, k, x))
            x += w
            if whole:
                x += space * (len(text) - len(text.rstrip(" ")))
    return [line for line in lines if line] or [[]]


def _figure(width_px: int, height_px: int) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _draw_caption(
    fig: Figure, lines: _Lines, top_px: float, margin_px: float, line_px: float, prop: FontProperties
) -> None:
    height = fig.get_figheight() * DPI
    width = fig.get_figwidth() * DPI
    for row, line in enumerate(lines):
        y = 1.0 - (top_px + (row + 0.5) * line_px) / height
        for word, k, x in line:
            style = {}
            if k is not None:
                style = {"bbox": {"facecolor": phrase_colour(k), "alpha": 0.35, "edgecolor": "none", "pad": 1.0}}
                style["color"] = tuple(0.6 * phrase_colour(k))  # a darker shade of the mask colour
                style["fontweight"] = "bold"
            fig.text((margin_px + x) / width, y, word, fontproperties=prop, va="center", ha="left", **style)


def save_phrase_overlay(
    image: np.ndarray,
    masks: np.ndarray,
    phrases: Sequence[str],
    path: str | Path,
    caption: str | None = None,
    spans: Sequence[tuple[int, int]] | None = None,
    width_px: int = 720,
) -> Path:
    """image (h, w, 3) uint8; masks (P, h, w) bool; one phrase per mask -> PNG at ``path``
    (the figure of `render_phrase_overlay`)."""
    fig = render_phrase_overlay(image, masks, phrases, caption, spans, width_px)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def render_phrase_overlay(
    image: np.ndarray,
    masks: np.ndarray,
    phrases: Sequence[str],
    caption: str | None = None,
    spans: Sequence[tuple[int, int]] | None = None,
    width_px: int = 720,
) -> Figure:
    """A matplotlib figure: the narrative (``caption``, phrases at ``spans``) above the image,
    wrapped to its width, each phrase highlighted in its mask's colour (without a caption the
    phrases are listed); below it the `composite` of the masks."""
    from matplotlib.font_manager import FontProperties

    if caption is None or spans is None:
        caption = "   ".join(phrases)
        spans, pos = [], 0
        for p in phrases:
            spans.append((pos, pos + len(p)))
            pos += len(p) + 3
    h, w = image.shape[:2]
    img_w = width_px
    img_h = max(1, round(h * img_w / w))
    margin, line_px = 8.0, FONT_SIZE * 1.9
    fig = _figure(img_w, img_h)
    prop = FontProperties(size=FONT_SIZE)
    lines = _layout_words(caption_pieces(caption, spans), img_w - 2 * margin, fig.canvas.get_renderer(), prop)
    text_h = math.ceil(2 * margin + len(lines) * line_px)
    fig.set_size_inches(img_w / DPI, (img_h + text_h) / DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, img_h / (img_h + text_h)))
    ax.imshow(composite(image, masks), interpolation="nearest")
    ax.set_axis_off()
    _draw_caption(fig, lines, margin, margin, line_px, prop)
    return fig


def save_phrase_panels(
    image: np.ndarray,
    masks: np.ndarray,
    gt_masks: np.ndarray,
    phrases: Sequence[str],
    ious: Sequence[float],
    path: str | Path,
    columns: int = 3,
    panel_px: int = 300,
) -> Path:
    """One panel per phrase: its predicted mask tinted in its colour, the ground truth outlined
    dashed in white, ``"<phrase> -- IoU <x>"`` above; a grid of ``columns`` panels per row."""
    import textwrap

    n = max(1, len(phrases))
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    h, w = image.shape[:2]
    cell_h = round(panel_px * h / w)
    title_px = 2 * FONT_SIZE * 1.6
    fig = _figure(cols * panel_px, rows * (cell_h + int(title_px)))
    total_h = fig.get_figheight() * DPI
    for k in range(len(phrases)):
        r, c = divmod(k, cols)
        bottom = 1.0 - ((r + 1) * (cell_h + title_px)) / total_h
        ax = fig.add_axes((c / cols, bottom, 1.0 / cols, cell_h / total_h))
        ax.imshow(composite(image, masks[k : k + 1], colours=[k]), interpolation="nearest")
        gt = gt_masks[k]
        if gt.any() and not gt.all():
            ax.contour(gt.astype(np.float32), levels=[0.5], colors=["white"], linewidths=1.5, linestyles="dashed")
        ax.set_axis_off()
        title = textwrap.shorten(phrases[k], 36, placeholder="…") + f" — IoU {100 * ious[k]:.1f}"
        ax.set_title(title, fontsize=FONT_SIZE, color=tuple(0.6 * phrase_colour(k)), fontweight="bold", pad=4)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path

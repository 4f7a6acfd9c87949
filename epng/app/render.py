"""What the app shows of a grounding result, in pure numpy: each phrase's mask tinted and
outlined in the phrase's colour on the image, and the narrative with each phrase highlighted
in that same colour.

Phrase ``k`` always gets colour ``k`` of `epng.viz.PALETTE` (cycled), so the page, the
overlay and the PNGs of ``epng predict`` agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from epng.viz import PALETTE

ALPHA = 0.5  # weight of the phrase colour inside its mask
OUTLINE_WIDTH = 2  # pixels


def phrase_colours(n: int) -> np.ndarray:
    """(n, 3) uint8: the RGB colour of phrases 0 .. n-1."""
    return np.round(PALETTE[np.arange(n) % len(PALETTE)] * 255).astype(np.uint8)


def hex_colour(rgb: Sequence[int]) -> str:
    """(r, g, b) 0..255 -> ``"#rrggbb"``."""
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def phrase_label(k: int) -> str:
    """The label of phrase ``k`` on the page (its number, counted from 1)."""
    return str(k + 1)


def mask_outline(mask: np.ndarray, width: int = OUTLINE_WIDTH) -> np.ndarray:
    """(h, w) bool -> (h, w) bool: the mask pixels at most ``width`` 4-neighbour steps away from
    a pixel outside the mask; pixels beyond the image border count as outside."""
    inner = mask.astype(bool)
    for _ in range(width):
        padded = np.pad(inner, 1, constant_values=False)
        inner = (
            padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        )  # one erosion step
    return mask.astype(bool) & ~inner


def composite(
    image: np.ndarray,
    masks: np.ndarray,
    colours: np.ndarray | None = None,
    alpha: float = ALPHA,
    outline_width: int = OUTLINE_WIDTH,
) -> np.ndarray:
    """image (h, w, 3) uint8 + masks (P, h, w) bool -> (h, w, 3) uint8.

    Inside mask ``k`` the pixels are blended towards colour ``k`` (``colours`` (P, 3) uint8,
    default `phrase_colours`) with weight ``alpha``, later phrases over earlier ones; then the
    outline of every mask (`mask_outline`) is painted in its colour. Pixels outside every mask
    are left exactly as they are.
    """
    if colours is None:
        colours = phrase_colours(len(masks))
    out = image.astype(np.float32)  # (h, w, 3)
    for mask, colour in zip(masks, colours):
        out[mask] = (1.0 - alpha) * out[mask] + alpha * colour.astype(np.float32)
    for mask, colour in zip(masks, colours):
        out[mask_outline(mask, outline_width)] = colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def highlight_segments(caption: str, spans: Sequence[tuple[int, int]]) -> list[tuple[str, str | None]]:
    """The caption cut into (text, label) pieces: phrase ``k``'s span carries `phrase_label` (k),
    the text between phrases ``None``. Where spans overlap, the later-starting one keeps only
    its part after the earlier one ends (and is left out when nothing remains)."""
    pieces: list[tuple[str, str | None]] = []
    cursor = 0
    for k in sorted(range(len(spans)), key=lambda i: spans[i]):
        start, end = max(spans[k][0], cursor), spans[k][1]
        if start >= end:
            continue
        if start > cursor:
            pieces.append((caption[cursor:start], None))
        pieces.append((caption[start:end], phrase_label(k)))
        cursor = end
    if cursor < len(caption):
        pieces.append((caption[cursor:], None))
    return pieces


def colour_map(n: int) -> dict[str, str]:
    """`phrase_label` -> ``"#rrggbb"`` colour of phrases 0 .. n-1 (for the highlighted narrative)."""
    return {phrase_label(k): hex_colour(c) for k, c in enumerate(phrase_colours(n))}

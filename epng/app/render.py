"""What the page needs beside `epng.viz.composite`: phrase colours as hex strings and labels,
and the narrative cut into highlighted pieces.

Phrase ``k`` always gets colour ``k`` of `epng.viz.PALETTE` (cycled), so the page, the
overlay and the PNGs of ``epng predict`` agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from epng.viz import PALETTE, caption_pieces


def phrase_colours(n: int) -> np.ndarray:
    """(n, 3) uint8: the RGB colour of phrases 0 .. n-1."""
    return np.round(PALETTE[np.arange(n) % len(PALETTE)] * 255).astype(np.uint8)


def hex_colour(rgb: Sequence[int]) -> str:
    """(r, g, b) 0..255 -> ``"#rrggbb"``."""
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def phrase_label(k: int) -> str:
    """The label of phrase ``k`` on the page (its number, counted from 1)."""
    return str(k + 1)


def highlight_segments(caption: str, spans: Sequence[tuple[int, int]]) -> list[tuple[str, str | None]]:
    """The caption cut into (text, label) pieces for the page: phrase ``k``'s span carries
    `phrase_label` (k), the text between phrases ``None`` (`epng.viz.caption_pieces`)."""
    return [(text, None if k is None else phrase_label(k)) for text, k in caption_pieces(caption, spans)]


def colour_map(n: int) -> dict[str, str]:
    """`phrase_label` -> ``"#rrggbb"`` colour of phrases 0 .. n-1 (for the highlighted narrative)."""
    return {phrase_label(k): hex_colour(c) for k, c in enumerate(phrase_colours(n))}

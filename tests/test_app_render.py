"""The page's colours and highlighted narrative (its pictures are `epng.viz.composite`, tested in test_viz)."""

from __future__ import annotations

import numpy as np

from epng.app.render import colour_map, hex_colour, highlight_segments, phrase_colours
from epng.viz import PALETTE


def test_phrase_colours_are_the_palette_cycled():
    colours = phrase_colours(len(PALETTE) + 2)
    assert colours.dtype == np.uint8
    for k, colour in enumerate(colours):
        assert tuple(colour) == tuple(int(round(v * 255)) for v in PALETTE[k % len(PALETTE)])
    assert hex_colour((230, 26, 0)) == "#e61a00"
    assert colour_map(2) == {"1": hex_colour(colours[0]), "2": hex_colour(colours[1])}


def test_highlight_segments_cover_the_caption_and_label_every_phrase():
    caption = "A red ball lies on the green grass."
    spans = [(23, 34), (2, 10)]  # given out of order
    pieces = highlight_segments(caption, spans)
    assert "".join(text for text, _ in pieces) == caption
    assert pieces == [
        ("A ", None),
        ("red ball", "2"),
        (" lies on the ", None),
        ("green grass", "1"),
        (".", None),
    ]


def test_highlight_segments_clip_overlapping_spans():
    caption = "the red ball"
    pieces = highlight_segments(caption, [(4, 12), (8, 12), (0, 7)])
    assert "".join(text for text, _ in pieces) == caption
    assert pieces == [("the red", "3"), (" ball", "1")]  # phrase 2 lies inside phrase 1: left out

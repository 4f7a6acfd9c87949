"""The app's pictures and highlighted text, against independent per-pixel computations."""

from __future__ import annotations

import numpy as np
import pytest

from epng.app.render import (
    colour_map,
    composite,
    hex_colour,
    highlight_segments,
    mask_outline,
    phrase_colours,
)
from epng.viz import PALETTE


def blob_masks(h: int = 14, w: int = 17) -> np.ndarray:
    """(3, h, w): a disc, a rectangle touching the image border, and one overlapping both."""
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 6) ** 2 + (xx - 6) ** 2 <= 16
    rect = (yy >= 8) & (xx >= 10)
    band = (yy >= 5) & (yy <= 9) & (xx >= 4)
    return np.stack([disc, rect, band])


def outline_by_hand(mask: np.ndarray, width: int) -> np.ndarray:
    """Mask pixels with a pixel outside the mask (or outside the image) within ``width`` steps."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            for dy in range(-width, width + 1):
                for dx in range(-width, width + 1):
                    if abs(dy) + abs(dx) > width:
                        continue
                    qy, qx = y + dy, x + dx
                    if not (0 <= qy < h and 0 <= qx < w) or not mask[qy, qx]:
                        out[y, x] = True
    return out


def test_phrase_colours_are_the_palette_cycled():
    colours = phrase_colours(len(PALETTE) + 2)
    assert colours.dtype == np.uint8
    for k, colour in enumerate(colours):
        assert tuple(colour) == tuple(int(round(v * 255)) for v in PALETTE[k % len(PALETTE)])
    assert hex_colour((230, 26, 0)) == "#e61a00"
    assert colour_map(2) == {"1": hex_colour(colours[0]), "2": hex_colour(colours[1])}


@pytest.mark.parametrize("width", [1, 2])
def test_outline_is_the_mask_border(width):
    for mask in blob_masks():
        got = mask_outline(mask, width)
        np.testing.assert_array_equal(got, outline_by_hand(mask, width))
        assert got.any() and not (got & ~mask).any()
    assert not mask_outline(np.zeros((5, 6), bool)).any()
    full = np.ones((6, 6), bool)
    assert mask_outline(full, 1).sum() == 20  # the image's border ring


def test_composite_tints_inside_outlines_the_border_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    masks = blob_masks()
    image = rng.integers(0, 256, (*masks.shape[1:], 3), dtype=np.uint8)
    colours = phrase_colours(len(masks))
    got = composite(image, masks, alpha=0.5, outline_width=1)
    h, w = masks.shape[1:]
    for y in range(h):
        for x in range(w):
            expected = [float(v) for v in image[y, x]]
            for k in range(len(masks)):  # later phrases tint over earlier ones
                if masks[k, y, x]:
                    expected = [0.5 * v + 0.5 * float(c) for v, c in zip(expected, colours[k])]
            for k in range(len(masks)):  # outlines last, the later phrase's on top
                if outline_by_hand(masks[k], 1)[y, x]:
                    expected = [float(c) for c in colours[k]]
            assert tuple(got[y, x]) == tuple(round(v) for v in expected), (y, x)
    outside = ~masks.any(axis=0)
    np.testing.assert_array_equal(got[outside], image[outside])
    # inside the first mask only (not on its outline), pixels move halfway towards its colour
    only0 = masks[0] & ~masks[1] & ~masks[2] & ~outline_by_hand(masks[0], 1)
    assert only0.any()
    dist_before = np.abs(image[only0].astype(int) - colours[0].astype(int))
    dist_after = np.abs(got[only0].astype(int) - colours[0].astype(int))
    assert (dist_after <= (dist_before + 1) // 2).all()


def test_composite_of_no_mask_is_the_image():
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(composite(image, np.zeros((0, 4, 5), bool)), image)
    np.testing.assert_array_equal(composite(image, np.zeros((2, 4, 5), bool)), image)


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

"""Overlay pictures (the CLI's and the app's): composite pixels against a per-pixel hand computation,
the narrative never cut off."""

from __future__ import annotations

import numpy as np
import pytest

from epng.viz import PALETTE, caption_pieces, composite, mask_outline, render_phrase_overlay, save_phrase_panels


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
    colours = [PALETTE[k] * 255 for k in range(len(masks))]  # float RGB, as composite blends
    got = composite(image, masks, alpha=0.5, outline=1)
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
            assert np.abs(got[y, x].astype(float) - np.round(expected)).max() <= 1, (y, x)
    outside = ~masks.any(axis=0)
    np.testing.assert_array_equal(got[outside], image[outside])
    # inside the first mask only (not on its outline), pixels move halfway towards its colour
    only0 = masks[0] & ~masks[1] & ~masks[2] & ~outline_by_hand(masks[0], 1)
    assert only0.any()
    dist_before = np.abs(image[only0].astype(float) - colours[0])
    dist_after = np.abs(got[only0].astype(float) - colours[0])
    assert (dist_after <= dist_before / 2 + 1).all()


def test_composite_of_no_mask_is_the_image():
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(composite(image, np.zeros((0, 4, 5), bool)), image)
    np.testing.assert_array_equal(composite(image, np.zeros((2, 4, 5), bool)), image)


def test_caption_pieces_follow_the_spans():
    caption = "a red ball on the grass"
    pieces = caption_pieces(caption, [(18, 23), (2, 10)])
    assert pieces == [("a ", None), ("red ball", 1), (" on the ", None), ("grass", 0)]
    assert "".join(text for text, _ in pieces) == caption


def test_a_long_narrative_wraps_inside_the_figure():
    image = np.zeros((40, 60, 3), np.uint8)
    caption = " ".join(["there is a [red ball] near the big tree"] * 12).replace("[", "").replace("]", "")
    spans = [
        (i, i + 8)
        for i in range(caption.find("red ball"), len(caption), len("there is a red ball near the big tree") + 1)
    ]
    masks = np.zeros((len(spans), 40, 60), bool)
    fig = render_phrase_overlay(image, masks, ["red ball"] * len(spans), caption, spans, width_px=300)
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    for text in fig.texts:
        ext = text.get_window_extent(renderer)
        assert box.x0 <= ext.x0 and ext.x1 <= box.x1 + 1 and box.y0 <= ext.y0 and ext.y1 <= box.y1 + 1, text.get_text()
    assert "".join(t.get_text() for t in fig.texts).replace(" ", "") == caption.replace(" ", "")
    assert fig.get_figheight() * 100 > 40 * 300 / 60 + 5 * 19  # several caption lines above the image


def test_panels_file(tmp_path):
    image = np.full((30, 40, 3), 128, np.uint8)
    masks = np.zeros((4, 30, 40), bool)
    masks[:, 5:20, 5:25] = True
    path = save_phrase_panels(image, masks, masks, ["a", "b", "c", "d"], [1.0, 0.5, 0.25, 0.0], tmp_path / "p.png")
    from PIL import Image

    assert Image.open(path).size == (900, 2 * (225 + 32))  # 3 columns x 2 rows of 300 px panels with titles

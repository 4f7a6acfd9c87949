"""Overlay pictures: composite pixels against a hand computation, the narrative never cut off."""

from __future__ import annotations

import numpy as np

from epng.viz import PALETTE, _caption_pieces, composite, mask_outline, render_phrase_overlay, save_phrase_panels


def test_outline_is_the_inner_border():
    mask = np.zeros((7, 7), bool)
    mask[1:6, 2:6] = True
    edge = mask_outline(mask, 1)
    expected = mask.copy()
    expected[2:5, 3:5] = False  # interior pixels: all four neighbours inside
    assert np.array_equal(edge, expected)


def test_composite_tints_inside_outlines_border_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:12, 3:15] = True
    masks[1, 8:18, 10:25] = True  # overlaps the first
    out = composite(image, masks, alpha=0.5, outline=1)
    outside = ~masks.any(0)
    assert np.array_equal(out[outside], image[outside])
    inner0 = masks[0] & ~masks[1] & ~mask_outline(masks[0], 1)
    expected = np.round((0.5 * image[inner0] / 255.0 + 0.5 * PALETTE[0]) * 255).astype(np.uint8)
    assert np.abs(out[inner0].astype(int) - expected).max() <= 1
    border1 = mask_outline(masks[1], 1)
    assert np.array_equal(
        out[border1], np.broadcast_to(np.round(PALETTE[1] * 255).astype(np.uint8), out[border1].shape)
    )


def test_caption_pieces_follow_the_spans():
    caption = "a red ball on the grass"
    pieces = _caption_pieces(caption, [(18, 23), (2, 10)])
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

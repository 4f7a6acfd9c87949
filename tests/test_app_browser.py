"""The app in a real headless Chromium: upload a picture, type a narrative, press Ground, and
read the masks and the highlighted phrases back from the page."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers_app import (
    browser_missing,
    ground_in_browser,
    headless_chromium,
    save_full_page,
    served_app,
    set_threshold_in_browser,
    show_phrase_in_browser,
    synthetic_scene,
    tiny_checkpoint,
)

from epng.app.render import phrase_colours
from epng.inference import Predictor
from epng.viz import composite

THRESHOLD = 0.35  # typed into the page after grounding at the default 0.5

# gradio's queue calls pandas options that pandas deprecates: not this project's warnings
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


def test_ground_in_a_headless_browser(tmp_path):
    reason = browser_missing()
    if reason:
        print(f"skipping the browser test: {reason}")
        pytest.skip(reason)
    pytest.importorskip("gradio")
    start = time.perf_counter()
    checkpoint = tiny_checkpoint(tmp_path / "model")
    picture, narrative = synthetic_scene(tmp_path / "scene.png", 3, 128)  # its own narrative, [bracketed]
    predictor = Predictor.from_pretrained(checkpoint, device="cpu", precision="fp32")
    model_calls = []
    predict = predictor.predict
    predictor.predict = lambda *args, **kwargs: model_calls.append(args) or predict(*args, **kwargs)
    expected = Predictor.from_pretrained(checkpoint, device="cpu", precision="fp32").predict(narrative, image=picture)
    covered = expected.masks.any(axis=0)
    assert len(expected.phrases) >= 2 and ((expected.probabilities > THRESHOLD) != expected.masks).any()
    assert 0 < covered.mean() < 1, "the random model should predict partial masks at 0.5"
    with served_app(predictor, tmp_path / "examples") as url, headless_chromium() as driver:
        page = ground_in_browser(driver, url, picture, narrative)
        assert page.message == "" and page.latency.startswith("Latency: ")
        # the masks are drawn where the model predicts them, and nowhere else
        assert page.overlay.shape == expected.image.shape
        assert (page.overlay[covered] != expected.image[covered]).any(axis=-1).all()
        np.testing.assert_array_equal(page.overlay[~covered], expected.image[~covered])
        np.testing.assert_array_equal(page.overlay, composite(expected.image, expected.masks))
        # every phrase highlighted, numbered, in its mask's colour
        colours = phrase_colours(len(expected.phrases))
        assert page.phrases == [(p, str(k + 1), tuple(colours[k].tolist())) for k, p in enumerate(expected.phrases)]
        # a new threshold redraws the masks from the same probabilities; a click on a phrase shows it alone
        masks = expected.probabilities > THRESHOLD
        lowered = set_threshold_in_browser(driver, THRESHOLD)
        np.testing.assert_array_equal(lowered, composite(expected.image, masks))
        k = 1
        only = show_phrase_in_browser(driver, k)
        np.testing.assert_array_equal(only, composite(expected.image, masks[k : k + 1], colours=[k]))
        assert len(model_calls) == 1  # the redraws did not run the model
        shot = save_full_page(driver, tmp_path / "app.png")
    assert shot.stat().st_size > 0
    print(f"\nbrowser test: {time.perf_counter() - start:.1f} s; screenshot {shot}")

"""The app served on a loopback port, driven by `gradio_client`: concurrent requests give what
a direct `Predictor.predict` gives, bad input gives a readable message, and the server lives on."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="gradio not installed (pip install 'epng[app]')")
gradio_client = pytest.importorskip("gradio_client")

from helpers_app import served_app, synthetic_scene, tiny_checkpoint  # noqa: E402

from epng.app.grounding import GENERIC_ERROR  # noqa: E402
from epng.app.render import phrase_colours  # noqa: E402
from epng.app.server import SHOW_ALL, overlay  # noqa: E402
from epng.inference import Predictor  # noqa: E402
from epng.viz import composite  # noqa: E402

REQUESTS = [  # (picture, narrative, threshold): two pictures interleaved, so a mixed-up image state shows
    (0, "A [red diamond] lies below the [sky].", 0.5),
    (1, "There is a [square] on the [road].", 0.3),
    (0, "In the middle we can see a [large yellow star]. The [star] is to the right.", 0.7),
    (1, "We can see a [small green square] in this image.", 0.5),
    (0, "At the top we can see a [red circle].", 0.4),
    (1, "The [circle] is at the bottom, the [road] behind it.", 0.6),
    (0, "At the bottom there is a [small purple diamond] and the [road].", 0.5),
    (1, "In the background we can see a [road].", 0.45),
    (0, "[Sky], [star], [circle] and [diamond].", 0.55),
    (1, "There is a small green square on the road.", 0.5),  # no brackets: the extracted noun phrases
]

# gradio's queue calls pandas options that pandas deprecates: not this project's warnings
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("app_server")
    checkpoint = tiny_checkpoint(root / "model")
    pictures = [synthetic_scene(root / "scene3.png", 3, 96)[0], synthetic_scene(root / "scene1.png", 1, 80)[0]]
    server_predictor = Predictor.from_pretrained(checkpoint, device="cpu", precision="fp32")
    reference = Predictor.from_pretrained(checkpoint, device="cpu", precision="fp32")
    with served_app(server_predictor, root / "examples") as url:
        client = gradio_client.Client(url, verbose=False, download_files=str(root / "downloads"))
        yield client, pictures, reference, server_predictor, root


def ground(client, picture, narrative, threshold):
    image = None if picture is None else gradio_client.handle_file(str(picture))
    return client.predict(image, narrative, threshold, api_name="/ground")


def test_concurrent_requests_equal_direct_predictions(setup):
    client, pictures, reference, _, _ = setup
    start = time.perf_counter()
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        futures = [pool.submit(ground, client, pictures[p], text, thr) for p, text, thr in REQUESTS]
        results = [f.result(timeout=120) for f in futures]
    wall = time.perf_counter() - start
    latencies = []
    for (p, text, thr), (picture, highlighted, show, latency, message, *_) in zip(REQUESTS, results):
        assert message == "", message
        expected = reference.predict(text, image=str(pictures[p]), threshold=thr)
        got = np.asarray(Image.open(picture).convert("RGB"))
        np.testing.assert_array_equal(got, composite(expected.image, expected.masks))
        assert (got[expected.masks.any(axis=0)] != expected.image[expected.masks.any(axis=0)]).any(axis=-1).all()
        tokens = [(t["token"], t["class_or_confidence"]) for t in highlighted["value"]]
        assert "".join(t for t, _ in tokens) == expected.caption
        assert [t for t, label in tokens if label] == expected.phrases
        assert [label for _, label in tokens if label] == [str(k + 1) for k in range(len(expected.phrases))]
        colours = phrase_colours(len(expected.phrases))
        assert highlighted["color_map"] == {str(k + 1): "#" + bytes(c.tolist()).hex() for k, c in enumerate(colours)}
        assert [value for _, value in show["choices"]] == [SHOW_ALL, *range(len(expected.phrases))]
        assert latency.startswith("Latency: ") and f"({len(expected.phrases)} phrases)" in latency
        latencies.append(float(latency.split()[1]))
    print(
        f"\n{len(REQUESTS)} concurrent requests in {wall:.2f} s; model latency per request (ms): "
        f"median {np.median(latencies):.1f}, min {min(latencies):.1f}, max {max(latencies):.1f}"
    )


def test_overlay_rethresholds_and_shows_one_phrase(setup):
    _, pictures, reference, _, _ = setup
    prediction = reference.predict("a [red circle] under the [sky] and a [star]", image=str(pictures[0]))
    thr = float(np.median(prediction.probabilities))
    masks = prediction.probabilities > thr
    np.testing.assert_array_equal(overlay(prediction, thr), composite(prediction.image, masks))
    only = overlay(prediction, thr, 1)
    np.testing.assert_array_equal(only, composite(prediction.image, masks[1:2], colours=[1]))
    assert overlay(None, 0.5) is None


def big_png(path: Path) -> Path:
    Image.new("L", (4200, 4100)).save(path)  # 17 megapixels, a small file
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("no image", "no image: upload a picture or pick an example first"),
        ("empty text", "the narrative is empty"),
        ("no phrase", "no noun phrase found"),
        ("unbalanced", "unbalanced square brackets"),
        ("not an image", "notes.png: not an image this app can read"),
        (
            "huge image",
            "huge.png: the pixel count of the 4,200 x 4,100 image is 17,220,000, over the limit of 16,000,000",
        ),
        ("bad threshold", "the threshold must lie between 0 and 1"),
    ],
)
def test_bad_input_gets_a_readable_message_and_the_server_lives_on(setup, case, message, monkeypatch):
    client, pictures, _, _, root = setup
    notes = root / "notes.png"
    notes.write_text("this is not a picture")
    picture, text, thr = pictures[0], "a [red circle]", 0.5
    if case == "no image":
        picture = None
    elif case == "empty text":
        text = "   "
    elif case == "no phrase":
        text = "It is over there."  # no noun phrase to extract
    elif case == "unbalanced":
        text = "a [red circle"
    elif case == "not an image":
        picture = notes
    elif case == "huge image":  # the one input-limit policy, here set through its environment variable
        monkeypatch.setenv("EPNG_MAX_IMAGE_PIXELS", "16000000")
        picture = big_png(root / "huge.png")
    elif case == "bad threshold":
        thr = 1.5
    result = ground(client, picture, text, thr)
    assert result[0] is None and message in result[4] and "Traceback" not in result[4]
    assert ground(client, pictures[1], "a [square]", 0.5)[4] == ""  # still answering


def test_unexpected_error_gets_the_generic_message_and_a_logged_traceback(setup, monkeypatch, caplog):
    client, pictures, _, server_predictor, _ = setup

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail")

    monkeypatch.setattr(server_predictor, "predict", broken)
    with caplog.at_level(logging.ERROR, logger="epng.app"):
        result = ground(client, pictures[0], "a [red circle]", 0.5)
    assert result[4] == f"⚠️ {GENERIC_ERROR}" and "internal detail" not in result[4]
    assert any("internal detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    monkeypatch.undo()
    assert ground(client, pictures[0], "a [red circle]", 0.5)[4] == ""

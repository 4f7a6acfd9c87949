"""The web page: upload an image (or pick an example), type a narrative, press Ground.

``build_app(predictor)`` makes the Gradio page, ``launch(predictor, host, port)`` serves it.
The model runs on one queue with a concurrency limit of 1 and is never reloaded; moving the
threshold or choosing which phrase to show redraws the last result without the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from epng.app.examples import Example, load_examples
from epng.app.grounding import Grounder, user_message
from epng.app.render import colour_map, highlight_segments
from epng.errors import EPNGError
from epng.inference import Prediction, Predictor
from epng.viz import composite

log = logging.getLogger("epng.app")

SHOW_ALL = -1
MAX_FILE_SIZE = "50mb"
TITLE = "EPNG: ground a narrative in an image"
INTRO = (
    "# EPNG: ground a narrative in an image\n"
    "Upload a picture (or pick an example below), write a narrative and press **Ground**: its noun "
    "phrases are found for you. To ground only some, mark them with square brackets, e.g. "
    "`a [red circle] on the grass`. "
    "Each phrase's mask is drawn in the colour its words are highlighted in; click a phrase "
    "(or choose it under *Show*) to see its mask alone."
)


def upload_path(payload: dict[str, Any] | str | None) -> str | None:
    """The server-side path of an uploaded file as the page sends it (a FileData dict, or a path)."""
    if isinstance(payload, dict):
        return payload.get("path")
    return payload


def overlay(prediction: Prediction | None, threshold: float, show: int = SHOW_ALL) -> np.ndarray | None:
    """The picture of ``prediction`` at ``threshold``: every mask, or only phrase ``show``."""
    if prediction is None:
        return None
    masks = prediction.probabilities > threshold  # (P, h, w)
    if show != SHOW_ALL and 0 <= show < len(masks):
        return composite(prediction.image, masks[show : show + 1], colours=[show])
    return composite(prediction.image, masks)


def show_choices(phrases: Sequence[str]) -> list[tuple[str, int]]:
    """The *Show* radio: "all", then one entry per phrase, numbered as on the page."""
    return [("all", SHOW_ALL)] + [(f"{k + 1}: {p if len(p) <= 40 else p[:39] + '…'}", k) for k, p in enumerate(phrases)]


def build_app(predictor: Predictor, examples: Sequence[Example] | None = None) -> gr.Blocks:
    """The page, grounding with ``predictor`` (``examples``: default `load_examples`)."""
    grounder = Grounder(predictor)
    examples = load_examples() if examples is None else list(examples)

    # raw inputs (``preprocess=False``): the app opens the upload itself
    def ground(
        image: dict[str, Any] | str | None, caption: str | None, threshold: float
    ) -> tuple[
        np.ndarray | None, gr.HighlightedText | list[tuple[str, str | None]], gr.Radio, str, str, Prediction | None
    ]:
        try:
            prediction = grounder.ground(upload_path(image), caption, threshold)
        except Exception as err:  # the page shows one line; the server log keeps the traceback
            if isinstance(err, EPNGError):
                log.info("bad input: %s", err)
            else:
                log.exception("grounding failed")
            message = user_message(err)
            gr.Warning(message)
            return None, [], gr.Radio(choices=show_choices([]), value=SHOW_ALL), "", f"⚠️ {message}", None
        pieces = highlight_segments(prediction.caption, prediction.spans)
        highlighted = gr.HighlightedText(value=pieces, color_map=colour_map(len(prediction.phrases)))
        latency = f"Latency: {prediction.seconds * 1000:.1f} ms ({len(prediction.phrases)} phrases)"
        return (
            overlay(prediction, threshold),
            highlighted,
            gr.Radio(choices=show_choices(prediction.phrases), value=SHOW_ALL),
            latency,
            "",
            prediction,
        )

    def redraw(prediction: Prediction | None, threshold: float, show: int | str | None) -> np.ndarray | None:
        return overlay(prediction, threshold, SHOW_ALL if show is None else int(show))

    def pick_phrase(evt: gr.SelectData) -> int | dict:  # a phrase number, or `gr.skip()`
        label = evt.value[1] if isinstance(evt.value, (list, tuple)) and len(evt.value) > 1 else None
        return int(label) - 1 if label else gr.skip()

    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], elem_id="epng-image")
                caption = gr.Textbox(
                    label="Narrative",
                    lines=4,
                    placeholder="A [red circle] lies on the [grass] under the [sky].",
                    elem_id="epng-narrative",
                )
                threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Threshold", elem_id="epng-threshold")
                button = gr.Button("Ground", variant="primary", elem_id="epng-ground")
                if examples:
                    gr.Examples([[str(e.image), e.narrative] for e in examples], inputs=[image, caption])
            with gr.Column():
                message = gr.Markdown(elem_id="epng-message")
                picture = gr.Image(label="Masks", type="numpy", format="png", interactive=False, elem_id="epng-overlay")
                phrases = gr.HighlightedText(label="Phrases", elem_id="epng-phrases", show_legend=False)
                show = gr.Radio(choices=show_choices([]), value=SHOW_ALL, label="Show", elem_id="epng-show")
                latency = gr.Markdown(elem_id="epng-latency")
        state = gr.State()
        button.click(
            ground,
            [image, caption, threshold],
            [picture, phrases, show, latency, message, state],
            api_name="ground",
            preprocess=False,  # a file that is not an image reaches `Grounder`, which says so
            concurrency_limit=1,
            concurrency_id="model",
        )
        threshold.change(redraw, [state, threshold, show], picture, api_name=False)
        show.change(redraw, [state, threshold, show], picture, api_name=False)
        phrases.select(pick_phrase, None, show, api_name=False)
    app.queue(default_concurrency_limit=1)
    return app


def launch(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    block: bool = True,
    quiet: bool = False,
    examples_dir: str | Path | None = None,
) -> gr.Blocks:
    """Serve the page on ``host:port``; ``block=False`` returns at once (stop it with ``.close()``)."""
    examples = load_examples(examples_dir)
    app = build_app(predictor, examples)
    app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        share=False,
        quiet=quiet,
        ssr_mode=False,
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=sorted({str(e.image.parent) for e in examples}),
    )
    return app

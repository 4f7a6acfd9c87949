"""Synthetic PNG benchmark: shapes on textured stuff, with Localized-Narratives-style captions.

``generate_benchmark(out_dir, n_train, n_val, size, seed)`` writes the real on-disk
layout (:class:`epng.data.layout.SplitLayout`) so that every command treats it like the
real benchmark. ``scene`` draws the scenes (with ``textures`` and ``shapes``),
``wording`` puts things into words (``referring_descriptions`` / ``unique_descriptions``
give, per thing, the descriptions that identify it uniquely), ``narrative`` tells the
captions (as ``chunks``), ``writer`` writes the files; ``refer`` writes a RefCOCO-style
dataset of the same scenes.
"""

from epng.data.synth.chunks import render, utterance
from epng.data.synth.narrative import make_narratives
from epng.data.synth.scene import (
    COLOURS,
    SIZES,
    STUFF_CLASSES,
    THING_CLASSES,
    Scene,
    Stuff,
    Thing,
    categories,
    make_scene,
)
from epng.data.synth.wording import (
    ThingDescription,
    absolute_position,
    referring_descriptions,
    relative_position,
    unique_descriptions,
)
from epng.data.synth.writer import SPLITS, SynthSummary, generate_benchmark, image_rng, synth_image

__all__ = [
    "COLOURS",
    "SIZES",
    "SPLITS",
    "STUFF_CLASSES",
    "THING_CLASSES",
    "Scene",
    "Stuff",
    "SynthSummary",
    "Thing",
    "ThingDescription",
    "absolute_position",
    "categories",
    "generate_benchmark",
    "image_rng",
    "make_narratives",
    "make_scene",
    "referring_descriptions",
    "relative_position",
    "render",
    "synth_image",
    "unique_descriptions",
    "utterance",
]

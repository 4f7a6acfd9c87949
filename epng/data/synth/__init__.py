"""Synthetic PNG benchmark: shapes on textured stuff, with Localized-Narratives-style captions.

``generate_benchmark(out_dir, n_train, n_val, size, seed)`` writes the real on-disk
layout (spec PNG_BENCHMARK.md section 1) so that every command treats it like
the real benchmark. ``scene`` holds the scene objects and the attribute/position
wording (``referring_descriptions`` / ``unique_descriptions`` give, per thing, the
descriptions that identify it uniquely), ``narrative`` the captions, ``writer`` the files.
"""

from epng.data.synth.narrative import make_narratives, render, utterance
from epng.data.synth.scene import (
    COLOURS,
    SIZES,
    STUFF_CLASSES,
    THING_CLASSES,
    Scene,
    Stuff,
    Thing,
    ThingDescription,
    absolute_position,
    categories,
    make_scene,
    referring_descriptions,
    relative_position,
    unique_descriptions,
)
from epng.data.synth.writer import SPLITS, SynthSummary, generate_benchmark, image_rng, synth_image

__all__ = [
    "COLOURS", "SIZES", "SPLITS", "STUFF_CLASSES", "THING_CLASSES", "Scene", "Stuff", "SynthSummary", "Thing",
    "ThingDescription", "absolute_position", "categories", "generate_benchmark", "image_rng", "make_narratives",
    "make_scene", "referring_descriptions", "relative_position", "render", "synth_image", "unique_descriptions",
    "utterance",
]

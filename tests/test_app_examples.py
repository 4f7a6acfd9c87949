"""The app's example scenes: the synthetic images and their narratives with [bracketed] phrases."""

from __future__ import annotations

import numpy as np
from PIL import Image

from epng.app.examples import INDICES, SEED, SIZE, SPLIT, bracketed_narrative, load_examples
from epng.data.captions import parse_bracketed
from epng.data.synth import synth_image


def test_bracketed_narrative_marks_exactly_the_grounded_noun_chunks():
    record = {
        "caption": "There's a red ball. It is on the grass.",
        "segments": [
            {"utterance": "there 's a", "segment_ids": [], "noun": False},
            {"utterance": "red ball", "segment_ids": ["7"], "noun": True},
            {"utterance": ".", "segment_ids": [], "noun": False},
            {"utterance": "it", "segment_ids": ["7"], "noun": True},
            {"utterance": "is on the", "segment_ids": [], "noun": False},
            {"utterance": "grass", "segment_ids": [], "noun": True},  # not grounded
            {"utterance": ".", "segment_ids": [], "noun": False},
        ],
    }
    assert bracketed_narrative(record) == "There's a [red ball]. [It] is on the grass."


def test_examples_are_the_synth_scenes_written_once(tmp_path):
    examples = load_examples(tmp_path)
    assert len(examples) == len(INDICES)
    for example, index in zip(examples, INDICES):
        _, scene, records = synth_image(SEED, SPLIT, index, SIZE)
        np.testing.assert_array_equal(np.asarray(Image.open(example.image)), scene.image)
        caption, spans = parse_bracketed(example.narrative)
        assert caption == records[0]["caption"]
        grounded = [c for c in records[0]["segments"] if c["noun"] and c["segment_ids"]]
        assert [caption[s:e].lower() for s, e in spans] == [c["utterance"] for c in grounded]
    stamps = [e.image.stat().st_mtime_ns for e in examples]
    again = load_examples(tmp_path)
    assert again == examples and [e.image.stat().st_mtime_ns for e in again] == stamps  # reused, not rewritten

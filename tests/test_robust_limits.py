"""Bounded untrusted input: one policy of limits (epng.io.limits) in every reader, refused before decoding."""

from __future__ import annotations

import json
import pickle
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import epng.io.limits
from epng.cli.main import main
from epng.data.dataset import PNGDataset, SkippedSample
from epng.data.input_format import InputFormat
from epng.data.items import validate_items
from epng.data.narrative_table import NarrativeView
from epng.data.panoptic import PanopticIndex
from epng.data.png_format import load_narratives
from epng.data.refer_pickle import load_refs_pickle
from epng.errors import BadItemError, ConfigError, DataError, InputLimitError, PredictionError
from epng.io.image_header import open_image_header
from epng.io.images import decode_image_file
from epng.io.json_file import load_json
from epng.io.limits import InputLimits, current_limits, parse_assignments, using_limits
from epng.io.panoptic_png import read_id_png
from epng.metrics.predictions import iter_prediction_lines

# --------------------------------------------------------------------------- a decompression bomb


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A valid-looking 8-bit RGB PNG that declares ``width x height`` pixels in a few kilobytes
    (its IDAT holds only the first rows: a reader that decodes it allocates everything first)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * ((1 + 3 * width) * 4), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))
    return path


def limits(**changes) -> InputLimits:
    return InputLimits().updated(changes)


# --------------------------------------------------------------------------- the policy


def test_limits_come_from_the_defaults_the_environment_and_the_command(monkeypatch):
    monkeypatch.delenv("EPNG_MAX_IMAGE_PIXELS", raising=False)
    assert current_limits() == InputLimits()
    assert InputLimits().max_image_pixels == 64_000_000
    monkeypatch.setenv("EPNG_MAX_IMAGE_PIXELS", "1_000")
    assert current_limits().max_image_pixels == 1000
    assert parse_assignments(["max_caption_chars=7"]) == InputLimits(max_image_pixels=1000, max_caption_chars=7)
    with using_limits(InputLimits(max_image_pixels=5)):
        assert current_limits().max_image_pixels == 5
    assert current_limits().max_image_pixels == 1000
    monkeypatch.setenv("EPNG_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match=r"EPNG_MAX_IMAGE_PIXELS: max_image_pixels='lots'"):
        current_limits()
    monkeypatch.delenv("EPNG_MAX_IMAGE_PIXELS")
    with pytest.raises(ConfigError, match=r"unknown input limit\(s\) \['max_pixels'\]"):
        parse_assignments(["max_pixels=3"])
    with pytest.raises(ConfigError, match="must be a positive integer"):
        InputLimits(max_caption_chars=0)


def test_training_config_has_a_limits_section_over_the_environment(monkeypatch):
    from epng.engine.config import input_limits, load_config

    monkeypatch.setenv("EPNG_MAX_CAPTION_CHARS", "123")
    cfg = load_config("demo_cpu", ["limits.max_image_pixels=4096"])
    assert input_limits(cfg) == InputLimits(max_image_pixels=4096, max_caption_chars=123)
    assert input_limits(load_config("demo_cpu", ["limits.max_caption_chars=9"])).max_caption_chars == 9
    with pytest.raises(ConfigError, match="max_image_bytes=-1"):
        load_config("demo_cpu", ["limits.max_image_bytes=-1"])


# --------------------------------------------------------------------------- images


def test_a_huge_png_of_a_few_kilobytes_is_refused_without_decoding_its_pixels(tmp_path, monkeypatch):
    """Both decoders (torchvision's for images, PIL's for panoptic PNGs) are replaced by traps:
    the readers refuse from the header, naming the file and the limit, and never reach them."""
    import epng.io.images
    from epng.inference import load_image

    def trap(*args, **kwargs):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(epng.io.images, "decode_image", trap)
    monkeypatch.setattr(ImageFile.ImageFile, "load", trap)
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 4096
    for read in (decode_image_file, read_id_png, load_image):
        with pytest.raises(InputLimitError) as err:
            read(bomb)
        message = str(err.value)
        assert message.startswith(f"{bomb}: ") and "2,500,000,000" in message and "max_image_pixels" in message


def test_the_pixel_limit_is_read_from_the_header_and_applies_to_arrays(tmp_path, monkeypatch):
    from epng.inference import load_image

    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(path)
    with pytest.raises(InputLimitError, match=r"photo\.png: the pixel count of the 300 x 200 image is 60,000"):
        decode_image_file(path, limits(max_image_pixels=59_999))
    assert decode_image_file(path, limits(max_image_pixels=60_000)).shape == (3, 200, 300)
    with pytest.raises(InputLimitError, match=r"photo\.png: the file size in bytes is"):
        decode_image_file(path, limits(max_image_bytes=path.stat().st_size - 1))
    with using_limits(limits(max_image_pixels=59_999)):
        with pytest.raises(InputLimitError, match="the image array: the pixel count of the 300 x 200 image"):
            load_image(np.zeros((200, 300, 3), np.uint8))
    # a limit above PIL's own decompression-bomb threshold (twice 89,478,485 pixels) is honoured
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    big = bomb_png(tmp_path / "big.png", 15_000, 12_000)
    with open_image_header(big, limits(max_image_pixels=180_000_000)) as header:
        assert header.size == (15_000, 12_000)
    with pytest.raises(InputLimitError, match="is 180,000,000, over the limit of 179,999,999"):
        read_id_png(big, limits(max_image_pixels=179_999_999))


def test_the_data_layer_counts_an_oversized_image_or_png_as_over_limit(synthetic, tokenizer):
    image = bomb_png(synthetic.image_file(synthetic.image_ids[0]))  # a PNG named .jpg
    dataset = PNGDataset(synthetic.root, synthetic.split, InputFormat(tokenizer, 32), mode="skip")
    item = dataset[0]
    assert isinstance(item, SkippedSample) and item.reason == "over an input limit"
    assert str(image) in item.message and "max_image_pixels" in item.message
    strict = PNGDataset(synthetic.root, synthetic.split, InputFormat(tokenizer, 32), mode="strict")
    with pytest.raises(BadItemError, match=rf"{image}: the pixel count the image declares is 2,500,000,000"):
        strict[0]
    png = bomb_png(synthetic.png_file(synthetic.image_ids[1]), 20_000, 20_000)
    panoptic = PanopticIndex(synthetic.panoptic_json)
    narratives, _ = load_narratives(synthetic.narratives_json, panoptic)
    problems = validate_items(strict.layout, panoptic, NarrativeView.from_narratives(narratives), deep=True)
    assert [(p.reason, p.path) for p in problems] == [
        ("over an input limit", str(image)),
        ("over an input limit", str(png)),
    ]


# --------------------------------------------------------------------------- captions and files


def test_the_data_layer_refuses_captions_over_the_character_limit(synthetic):
    panoptic = PanopticIndex(synthetic.panoptic_json)
    caption = synthetic.records[0]["caption"]
    with using_limits(limits(max_caption_chars=len(caption) - 1)):
        with pytest.raises(BadItemError, match=rf"record 0 .*caption's length in characters is {len(caption)}"):
            load_narratives(synthetic.narratives_json, panoptic)
        narratives, report = load_narratives(synthetic.narratives_json, panoptic, mode="skip")
    assert narratives == [] and report.skipped == {"over an input limit": 2}
    with using_limits(limits(max_caption_chars=len(caption))):
        assert len(load_narratives(synthetic.narratives_json, panoptic)[0]) == 2


def test_annotation_files_are_bounded_before_they_are_read(tmp_path):
    data = tmp_path / "narratives.json"
    data.write_text(json.dumps([{"caption": "x" * 100}]))
    refs = tmp_path / "refs(unc).p"
    refs.write_bytes(pickle.dumps([{"sent": "x" * 100}], protocol=2))
    small = limits(max_annotation_bytes=50)
    for read, path in ((load_json, data), (load_refs_pickle, refs)):
        with pytest.raises(
            InputLimitError, match=rf"{re.escape(str(path))}: the file size in bytes is 1.*max_annotation"
        ):
            read(path, small)
        assert read(path, limits(max_annotation_bytes=path.stat().st_size))


def test_prediction_lines_are_bounded(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"a": 1}\n' + '{"b": "' + "x" * 20 + '"}\n')
    assert [n for n, _ in iter_prediction_lines(path, limits(max_prediction_line_chars=29))] == [1, 2]
    with pytest.raises(PredictionError, match=r"predictions\.jsonl: line 2: longer than 28 characters"):
        list(iter_prediction_lines(path, limits(max_prediction_line_chars=28)))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from epng.model import build_epng

    path = tmp_path_factory.mktemp("tiny") / "model"
    build_epng("epng_lite0_minilm", image_size=64, backbone_weights="none").save_pretrained(path)
    return path


def test_epng_predict_and_score_refuse_with_one_line_and_exit_2(
    tmp_path, tiny_checkpoint, capsys, synthetic, monkeypatch
):
    monkeypatch.setattr(epng.io.limits, "_active", None)  # --limit sets this process's limits: undone after the test
    bomb = bomb_png(tmp_path / "bomb.png")
    args = ["predict", "--checkpoint", str(tiny_checkpoint), "--image", str(bomb), "--caption", "a [cat]"]
    assert main([*args, "--output", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"epng predict: error: {bomb}: ")
    assert "max_image_pixels" in err
    # --limit sets a limit for the command (here: a line limit that the scorer's file breaks)
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"narrative": 0}\n')
    score = ["score", "--data-root", str(synthetic.root), "--split", synthetic.split, "--predictions", str(predictions)]
    assert main([*score, "--limit", "max_prediction_line_chars=5"]) == 2
    assert "line 1: longer than 5 characters" in capsys.readouterr().err
    assert main([*score, "--limit", "pixels=5"]) == 2
    assert "unknown input limit(s) ['pixels']" in capsys.readouterr().err


def test_the_predictor_bounds_captions_in_characters_then_word_pieces(tiny_checkpoint, monkeypatch):
    from epng.inference import Predictor

    predictor = Predictor.from_pretrained(tiny_checkpoint, device="cpu")
    image = np.zeros((40, 60, 3), np.uint8)
    caption = "a [red ball] lies on the green grass near the old wooden fence"
    plain = caption.replace("[", "").replace("]", "")
    n_pieces = len(predictor.tokenizer(plain, add_special_tokens=False)["input_ids"])
    with using_limits(limits(max_caption_word_pieces=n_pieces - 1)):
        with pytest.raises(InputLimitError, match=rf"length in word pieces is {n_pieces}, over the limit of"):
            predictor.predict(caption, image=image)
    with using_limits(limits(max_caption_word_pieces=n_pieces)):
        assert predictor.predict(caption, image=image).phrases == ["red ball"]

    def no_tokenizer(self):
        raise AssertionError("a caption over the character limit must be refused before it is tokenized")

    monkeypatch.setattr(Predictor, "tokenizer", property(no_tokenizer))
    with using_limits(limits(max_caption_chars=len(caption) - 1)):  # the caption as given, brackets included
        with pytest.raises(InputLimitError, match=rf"length in characters is {len(caption)}, over the limit"):
            predictor.predict(caption, image=image)


def test_unreadable_json_is_a_data_error_naming_the_file(tmp_path):
    cases = {
        "latin1.json": '["caf\xe9"]'.encode("latin-1"),
        "deep.json": b"[" * 100_000 + b"]" * 100_000,
        "long_int.json": b"[" + b"9" * 5000 + b"]",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=rf"{name}: (not UTF-8 text|invalid JSON)"):
            load_json(tmp_path / name)
    with pytest.raises(DataError, match="cannot read the file"):
        load_json(tmp_path)


def test_write_json_replaces_the_whole_file_or_nothing(tmp_path):
    import json

    from epng.io.json_file import write_json

    path = tmp_path / "out" / "metrics.json"
    write_json(path, {"ar": 70.5, "n": [1, 2]})
    assert path.read_text() == json.dumps({"ar": 70.5, "n": [1, 2]}, indent=2) + "\n"
    write_json(path, {"é": 1}, indent=None)
    assert path.read_text() == '{"\\u00e9":1}\n'
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})  # not JSON: refused, the old file kept
    assert json.loads(path.read_text()) == {"é": 1}
    write_json(path, {"path": tmp_path}, default=str)
    assert json.loads(path.read_text()) == {"path": str(tmp_path)}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no temporary file left

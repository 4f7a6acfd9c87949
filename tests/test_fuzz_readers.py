"""Property-based tests of the readers of untrusted files: given damaged input, a reader either succeeds
or raises the project's own error naming the file, in one line; never another exception."""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_fuzz import damaged_bytes, examples, json_values, mutated_json
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from epng.data.items import load_item_arrays
from epng.data.layout import split_layout
from epng.data.panoptic import PanopticIndex
from epng.data.png_format import load_narratives
from epng.data.refer_pickle import load_refs_pickle
from epng.errors import BadItemError, DataError, PredictionError
from epng.io.images import decode_image_file
from epng.io.limits import InputLimits, using_limits
from epng.io.panoptic_png import id_to_rgb, read_id_png
from epng.io.rle import encode_mask
from epng.metrics.scorer import PNGEvaluator, evaluate_predictions

SMALL = InputLimits(max_image_pixels=2**20)  # damaged headers may declare any size: keep decoding cheap


def assert_names(err: Exception, path: Path) -> None:
    message = str(err)
    assert str(path) in message and "\n" not in message, message


def image_bytes(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


images = st.builds(
    image_bytes,
    st.integers(1, 12)
    .flatmap(lambda h: st.integers(1, 12).map(lambda w: (h, w)))
    .map(lambda hw: np.random.default_rng(hw[0] * 13 + hw[1]).integers(0, 256, (*hw, 3), dtype=np.uint8)),
    st.sampled_from(["PNG", "JPEG", "GIF", "WEBP"]),
)


# found by this test: a damaged PNG (a bad filter byte) on which torchvision's PNG decoder crashes the
# process with a segmentation fault; PNGs are therefore decoded by PIL
CRASHED_TORCHVISION = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000020000000c0802000000c7defb030000005f49444154789c015400abff00f8"
    "e8296bf6ff0018f887d47f42859d59157eff9db92ee83a0db25c0f010a9960bd182d04cdc7c4faf3380047c5903fcf0a04f2"
    "d3a475bb97022be02110ac580227c4555950030403d02c43faf501d45827fdf0c8012e1757cf333b0423d91c19ed92590524"
    "abf73e5e7a0000000049454e44ae426082"
)


@examples(60)
@given(data=images.flatmap(damaged_bytes), suffix=st.sampled_from([".jpg", ".png", ".gif", ".bin"]))
@example(data=CRASHED_TORCHVISION, suffix=".png")
def test_image_files(data, suffix):
    with tempfile.TemporaryDirectory() as tmp, using_limits(SMALL):
        path = Path(tmp) / f"image{suffix}"  # the suffix is often the wrong one
        path.write_bytes(data)
        try:
            image = decode_image_file(path)
        except DataError as err:
            assert_names(err, path)
        else:
            assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3


def _id_png(mode: str, ids: np.ndarray) -> bytes:
    rgb = id_to_rgb(ids)
    image = Image.fromarray(rgb)
    image = image if mode == "RGB" else image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def panoptic_item(synthetic):
    """The synthetic benchmark's layout, panoptic index and first narrative."""
    panoptic = PanopticIndex(synthetic.panoptic_json)
    narratives, _ = load_narratives(synthetic.narratives_json, panoptic)
    return synthetic, split_layout(synthetic.root, synthetic.split), panoptic, narratives[0]


@examples(40)
@given(
    mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "I;16", "1"]),
    size=st.sampled_from([(24, 32), (32, 24), (1, 1), (24, 31)]),  # the json says 24 x 32
    id_pool=st.sampled_from(["json", "absent", "mixed"]),
    seed=st.integers(0, 2**16),
    damage=st.booleans(),
    data=st.data(),
)
def test_panoptic_pngs(panoptic_item, mode, size, id_pool, seed, damage, data):
    """Wrong mode, wrong size, ids absent from the json, damaged bytes: the item loads or is a
    BadItemError naming the PNG; reading the PNG alone gives an id map or a DataError."""
    synthetic, layout, panoptic, narrative = panoptic_item
    image_id = narrative.image_id
    known = list(panoptic.image(image_id).segment_category)
    pool = {"json": known + [0], "absent": [7, 123456, 2**24 - 1], "mixed": known + [7, 2**24 - 1]}[id_pool]
    ids = np.random.default_rng(seed).choice(pool, size=size)
    content = _id_png(mode, ids)
    if damage:
        content = data.draw(damaged_bytes(content))
    path = synthetic.png_file(image_id)
    path.write_bytes(content)
    try:
        id_map = read_id_png(path)
    except DataError as err:
        assert_names(err, path)
    else:
        assert id_map.dtype == np.int64 and id_map.ndim == 2
    try:
        image, id_map = load_item_arrays(layout, panoptic, narrative)
    except BadItemError as err:
        assert_names(err, path)
        assert err.reason and err.path == str(path)
    else:
        assert id_map.shape == (24, 32) and tuple(image.shape) == (3, 24, 32)


@examples(60)
@given(data=st.data(), mode=st.sampled_from(["strict", "skip"]))
def test_narratives_json(synthetic, data, mode):
    """Wrong types (or missing keys) at every level of the narratives file."""
    panoptic = PanopticIndex(synthetic.panoptic_json)
    records = data.draw(mutated_json(synthetic.records))
    synthetic.narratives_json.write_text(json.dumps(records))
    try:
        narratives, report = load_narratives(synthetic.narratives_json, panoptic, mode)
    except DataError as err:
        assert_names(err, synthetic.narratives_json)
        if mode == "skip":  # skip mode leaves bad records out; only a file that is not a list stops it
            assert not isinstance(records, list)
    else:
        assert report.n_records == len(records)
        assert all(n.phrases for n in narratives)


def test_what_the_fuzzing_found_in_narratives_and_predictions(synthetic, tmp_path):
    """Values Python's json accepts but int() or json.loads cannot take: an infinite image id or
    segment id (OverflowError), an integer literal over Python's digit limit, deep nesting."""
    panoptic = PanopticIndex(synthetic.panoptic_json)
    synthetic.narratives_json.write_text(json.dumps([dict(synthetic.records[0], image_id=float("inf"))]))
    narratives, report = load_narratives(synthetic.narratives_json, panoptic, "skip")
    assert narratives == [] and report.skipped == {"malformed record": 1}
    chunk = dict(synthetic.records[0]["segments"][1], segment_ids=[float("inf")])
    records = [dict(synthetic.records[0], segments=[synthetic.records[0]["segments"][0], chunk])]
    synthetic.narratives_json.write_text(json.dumps(records))
    with pytest.raises(BadItemError, match=r"non-integer segment id \[inf\]"):
        load_narratives(synthetic.narratives_json, panoptic)
    synthetic.write_records(synthetic.records)
    evaluator = PNGEvaluator.from_split(synthetic.root, synthetic.split)
    for line in ('{"narrative": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000):
        path = tmp_path / "p.jsonl"
        path.write_text(line + "\n")
        with pytest.raises(PredictionError, match=rf"{path}: line 1: invalid JSON"):
            evaluate_predictions(synthetic.root, synthetic.split, path, evaluator=evaluator)


def _valid_lines(synthetic) -> list[dict]:
    lines = []
    for index, rec in enumerate(synthetic.records):
        grounded = [c for c in rec["segments"] if c["noun"] and c["segment_ids"]]
        for k in range(len(grounded)):
            mask = np.random.default_rng(index * 10 + k).random((24, 32)) > 0.5
            seg = encode_mask(mask)
            lines.append({"narrative": index, "image_id": rec["image_id"], "phrase_index": k, "segmentation": seg})
    return lines


@examples(60)
@given(data=st.data())
def test_predictions_jsonl(synthetic, tmp_path, data):
    """Valid lines, lines with a node of any depth changed, and junk lines: the file is scored or
    refused with a PredictionError naming the file and the line."""
    valid = _valid_lines(synthetic)
    lines = []
    for entry in valid:
        kind = data.draw(st.sampled_from(["valid", "valid", "mutated", "json", "junk", "drop"]))
        if kind == "valid":
            lines.append(json.dumps(entry).encode())
        elif kind == "mutated":
            lines.append(json.dumps(data.draw(mutated_json(entry))).encode())
        elif kind == "json":
            lines.append(json.dumps(data.draw(json_values)).encode())
        elif kind == "junk":
            lines.append(data.draw(st.binary(max_size=40)).replace(b"\n", b" "))
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(b"\n".join(lines))
    evaluator = PNGEvaluator.from_split(synthetic.root, synthetic.split)
    try:
        evaluate_predictions(synthetic.root, synthetic.split, path, evaluator=evaluator)
    except PredictionError as err:
        message = str(err)
        assert message.startswith(f"{path}: line ") and "\n" not in message, message
    else:
        assert 0 <= len(evaluator) <= len(valid)


REFS = [
    {"ref_id": 1, "ann_id": 10, "image_id": 5, "split": "testA", "sentences": [{"sent": "the man", "tokens": ["x"]}]},
    {"ref_id": 2, "ann_id": 11, "image_id": 5, "split": "val", "sentences": [{"sent": b"caf\xc3\xa9", "sent_id": 3}]},
]
OPCODES = sorted({op.code.encode("latin-1") for op in pickletools.opcodes})


@examples(80)
@given(
    data=st.one_of(
        st.sampled_from([0, 2, 4, 5])
        .map(lambda protocol: pickle.dumps(REFS, protocol=protocol))
        .flatmap(damaged_bytes),
        st.lists(st.tuples(st.sampled_from(OPCODES), st.binary(max_size=9)), max_size=24).map(
            lambda ops: b"\x80\x04" + b"".join(op + arg for op, arg in ops) + b"."
        ),
    )
)
def test_refs_pickles(data):
    """Damaged refs pickles and random opcode sequences through the restricted unpickler."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "refs(unc).p"
        path.write_bytes(data)
        try:
            refs = load_refs_pickle(path)
        except DataError as err:
            assert_names(err, path)
        else:
            assert isinstance(refs, list)

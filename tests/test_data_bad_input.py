"""Bad input: strict mode raises DataError naming the file and the record; skip mode counts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from epng.data.dataset import PNGDataset, SkippedSample, collate_png
from epng.data.input_format import InputFormat
from epng.errors import DataError
from epng.io.panoptic_png import id_to_rgb


def make(info, tokenizer, mode, **kw):
    return PNGDataset(info.root, info.split, InputFormat(tokenizer, 32), mode=mode, **kw)


def record_ref(info, index: int) -> str:
    """The record reference every per-item message carries."""
    return f"record {index} of {info.narratives_json}"


def test_missing_image(synthetic, tokenizer):
    path = synthetic.image_file(synthetic.image_ids[1])
    path.unlink()
    with pytest.raises(DataError) as err:
        make(synthetic, tokenizer, "strict")
    assert str(path) in str(err.value) and record_ref(synthetic, 1) in str(err.value)
    ds = make(synthetic, tokenizer, "skip")
    assert len(ds) == 1 and ds.narratives[0].index == 0
    rep = ds.report()
    assert rep.skipped["missing image"] == 1 and str(path) in rep.examples["missing image"]


def test_missing_png(synthetic, tokenizer):
    path = synthetic.png_file(synthetic.image_ids[0])
    path.unlink()
    with pytest.raises(DataError) as err:
        make(synthetic, tokenizer, "strict")
    assert str(path) in str(err.value) and record_ref(synthetic, 0) in str(err.value)
    ds = make(synthetic, tokenizer, "skip")
    assert [n.index for n in ds.narratives] == [1]
    assert ds.report().skipped["missing panoptic PNG"] == 1


def test_corrupt_image_lazy_and_deep(synthetic, tokenizer):
    path = synthetic.image_file(synthetic.image_ids[0])
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    # strict: construction only stats files; the item raises when read
    ds = make(synthetic, tokenizer, "strict")
    with pytest.raises(DataError) as err:
        ds[0]
    assert str(path) in str(err.value) and record_ref(synthetic, 0) in str(err.value)
    assert "corrupt" in str(err.value)
    ds[1]  # the good one still loads
    # strict + deep validation: found at construction
    with pytest.raises(DataError, match=re.escape(str(path))):
        make(synthetic, tokenizer, "strict", validate="deep")
    # skip, lazy: a SkippedSample that collate drops and counts
    ds = make(synthetic, tokenizer, "skip")
    item = ds[0]
    assert isinstance(item, SkippedSample) and item.reason == "corrupt image" and str(path) in item.message
    batch = collate_png([item, ds[1]])
    assert batch["n_skipped"] == 1 and len(batch["meta"]) == 1 and batch["meta"][0]["narrative"] == 1
    ds.note_skipped(batch)
    assert ds.report().skipped == {"corrupt image": 1}
    # skip, deep: dropped and counted at construction
    ds = make(synthetic, tokenizer, "skip", validate="deep")
    assert len(ds) == 1 and ds.report().skipped == {"corrupt image": 1}


def test_segment_not_in_panoptic_json(synthetic, tokenizer):
    records = synthetic.records
    records[1]["segments"][3]["segment_ids"] = ["424242"]
    synthetic.write_records(records)
    with pytest.raises(DataError) as err:
        make(synthetic, tokenizer, "strict")
    msg = str(err.value)
    assert str(synthetic.narratives_json) in msg and "record 1" in msg and "424242" in msg
    assert str(synthetic.panoptic_json) in msg
    ds = make(synthetic, tokenizer, "skip")
    assert len(ds) == 1 and ds.report().n_skipped == 1


def test_segment_without_pixels_in_png(synthetic, tokenizer):
    image_id = synthetic.image_ids[1]
    a, b, c = (int(s) for ch in synthetic.records[1]["segments"] for s in ch["segment_ids"])
    ids = np.full((24, 32), c, dtype=np.int64)  # segment b painted over
    ids[:, :16] = a
    png = synthetic.png_file(image_id)
    Image.fromarray(id_to_rgb(ids)).save(png)
    ds = make(synthetic, tokenizer, "strict")
    with pytest.raises(DataError) as err:
        ds[1]
    msg = str(err.value)
    assert str(png) in msg and record_ref(synthetic, 1) in msg and str(b) in msg and "'people'" in msg
    ds = make(synthetic, tokenizer, "skip")
    assert ds[1].reason == "segment id not in the PNG"
    ds = make(synthetic, tokenizer, "skip", validate="deep")
    assert len(ds) == 1 and ds.report().skipped == {"segment id not in the PNG": 1}


def test_png_size_mismatch(synthetic, tokenizer):
    png = synthetic.png_file(synthetic.image_ids[0])
    Image.fromarray(id_to_rgb(np.zeros((10, 10), dtype=np.int64))).save(png)
    with pytest.raises(DataError, match=r"10x10 but the panoptic json says 24x32"):
        make(synthetic, tokenizer, "strict")[0]


def test_utterance_not_in_caption(synthetic, tokenizer):
    records = synthetic.records
    records[0]["segments"][3]["utterance"] = "moon"
    synthetic.write_records(records)
    with pytest.raises(DataError) as err:
        make(synthetic, tokenizer, "strict")
    msg = str(err.value)
    assert str(synthetic.narratives_json) in msg and "record 0" in msg and "'moon'" in msg
    ds = make(synthetic, tokenizer, "skip")
    assert ds.report().skipped["not found in the caption"] == 1


def test_empty_caption(synthetic, tokenizer):
    records = synthetic.records
    records[1]["caption"] = "   "
    synthetic.write_records(records)
    with pytest.raises(DataError, match=rf"{re.escape(str(synthetic.narratives_json))}: record 1 .*empty caption"):
        make(synthetic, tokenizer, "strict")
    assert make(synthetic, tokenizer, "skip").report().skipped["empty caption"] == 1


def test_image_without_panoptic_annotation(synthetic, tokenizer):
    records = synthetic.records
    records[0]["image_id"] = "555"
    synthetic.write_records(records)
    with pytest.raises(DataError, match=r"record 0 \(image 555\).*no panoptic annotation"):
        make(synthetic, tokenizer, "strict")


@pytest.mark.parametrize("mode", ["strict", "skip"])
def test_non_list_json(synthetic, tokenizer, mode):
    synthetic.write_records({"image_id": "1"})
    with pytest.raises(DataError, match=rf"{re.escape(str(synthetic.narratives_json))}: expected a JSON list"):
        make(synthetic, tokenizer, mode)


def test_missing_folder_is_an_error_in_both_modes(synthetic, tokenizer):
    for p in synthetic.root.joinpath("images", synthetic.split).iterdir():
        p.unlink()
    synthetic.root.joinpath("images", synthetic.split).rmdir()
    for mode in ("strict", "skip"):
        with pytest.raises(DataError, match="folder not found"):
            make(synthetic, tokenizer, mode)


def test_every_item_bad_in_skip_mode(synthetic, tokenizer):
    for image_id in synthetic.image_ids:
        synthetic.png_file(image_id).unlink()
    with pytest.raises(DataError, match="no usable narrative"):
        make(synthetic, tokenizer, "skip")

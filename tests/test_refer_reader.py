"""The refer reader, the RES dataset + collate, and their handling of bad input (synthetic refer data)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from epng.data.input_format import InputFormat
from epng.data.refer import ReferData
from epng.data.refer_dataset import ReferDataset, collate_refer
from epng.data.refer_layout import refer_layout
from epng.data.refer_pickle import load_refs_pickle
from epng.data.segmentation import decode_segmentation
from epng.data.skips import BAD_SEGMENTATION, MISSING_ANNOTATION, MISSING_IMAGE
from epng.data.synth.refer import generate_refer, mask_polygons
from epng.data.synth.scene import make_scene
from epng.data.synth.writer import image_rng
from epng.errors import ConfigError, DataError
from epng.io.rle import encode_mask, polygons_to_mask

N_IMAGES, SIZE, SEED = 6, 64, 3


@pytest.fixture(scope="module")
def refer_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refer")
    generate_refer(root, ("refcoco", "refcocog"), n_images=N_IMAGES, size=SIZE, seed=SEED)
    return root


@pytest.fixture
def copy_root(refer_root, tmp_path) -> Path:
    """A private copy to break."""
    dst = tmp_path / "refer"
    shutil.copytree(refer_root, dst)
    return dst


def _scene(k: int):
    h, w = (SIZE, SIZE * 4 // 3) if k % 2 == 0 else (SIZE * 4 // 3, SIZE)
    return make_scene(image_rng(SEED, "refer-train2014", k), h, w)


# --------------------------------------------------------------------------- reading


def test_layout_and_names(tmp_path):
    layout = refer_layout(tmp_path, "refcoco+")
    assert layout.refs_file == tmp_path / "refcoco+" / "refs(unc).p"
    assert layout.instances_file == tmp_path / "refcoco+" / "instances.json"
    assert layout.image_file(581857) == tmp_path / "images" / "train2014" / "COCO_train2014_000000581857.jpg"
    assert refer_layout(tmp_path, "refcocog").refs_file.name == "refs(umd).p"
    other = refer_layout(tmp_path, "refcoco", image_dir="/coco/train2014")
    assert other.image_file(1) == Path("/coco/train2014/COCO_train2014_000000000001.jpg")
    with pytest.raises(ConfigError, match="unknown refer dataset"):
        refer_layout(tmp_path, "refclef")
    with pytest.raises(ConfigError, match="unknown split_by"):
        refer_layout(tmp_path, "refcoco", "umd")


def test_every_sentence_is_one_expression(refer_root):
    refer = ReferData.load(refer_root, "refcoco")
    refs = load_refs_pickle(refer.layout.refs_file)
    for split in ("val", "testA", "testB"):
        exprs, report = refer.expressions(split)
        split_refs = [r for r in refs if r["split"] == split]
        want = [(r["ref_id"], s["sent_id"], s["sent"]) for r in split_refs for s in r["sentences"]]
        assert [(e.ref_id, e.sent_id, e.text) for e in exprs] == want
        assert [e.index for e in exprs] == list(range(len(exprs)))
        assert report.n_refs == len(split_refs) and report.n_expressions == len(want) and not report.skipped
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        refer.expressions("test")
    with pytest.raises(DataError, match="no usable expression in split 'train'"):
        refer.expressions("train")  # a valid name with no refs in this file


def test_masks_are_the_objects_visible_pixels_in_every_format(refer_root):
    refer = ReferData.load(refer_root, "refcoco")
    forms = set()
    for ann_id, ann in refer.annotations.items():
        k, index = ann["image_id"] - 100_000, ann_id % 100 - 1
        scene = _scene(k)
        thing = scene.things[index]
        expected = scene.id_map == thing.segment_id
        seg = ann["segmentation"]
        forms.add("polygon" if isinstance(seg, list) else "rle" if isinstance(seg["counts"], str) else "list")
        mask = refer.mask(ann_id)
        assert mask.shape == refer.image_size(ann["image_id"]) == expected.shape
        np.testing.assert_array_equal(mask, expected)  # exact, whatever the form
        assert ann["area"] == int(expected.sum())
    assert forms == {"polygon", "rle", "list"}


def test_polygon_and_rle_of_one_mask_decode_to_the_same_pixels():
    """Polygons traced along pixel edges and an RLE of the same mask decode to identical pixels (exact)."""
    for k in range(8):
        scene = _scene(k)
        for t in scene.things:
            mask = scene.id_map == t.segment_id
            polygons = mask_polygons(mask)
            if polygons is None:  # only masks with holes have no polygon form
                continue
            size = mask.shape
            from_poly = decode_segmentation(polygons, size)
            from_rle = decode_segmentation(encode_mask(mask), size)
            np.testing.assert_array_equal(from_poly, from_rle)
            np.testing.assert_array_equal(from_poly, mask)
    # a simple shape: a rectangle with integer corners covers exactly its pixels
    rect = [[2.0, 1.0, 7.0, 1.0, 7.0, 4.0, 2.0, 4.0]]
    expected = np.zeros((6, 9), dtype=bool)
    expected[1:4, 2:7] = True
    np.testing.assert_array_equal(polygons_to_mask(rect, 6, 9), expected)
    np.testing.assert_array_equal(decode_segmentation(encode_mask(expected), (6, 9)), expected)
    # a mask with a hole has no polygon form (a union of polygons would fill it)
    ring = np.ones((5, 5), dtype=bool)
    ring[2, 2] = False
    assert mask_polygons(ring) is None


def test_uncompressed_rle_and_degenerate_polygons():
    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 1] = mask[2, 3] = True  # column-major runs: 3 bg, 1 fg, 7 bg, 1 fg
    np.testing.assert_array_equal(decode_segmentation({"size": [3, 4], "counts": [3, 1, 7, 1]}, (3, 4)), mask)
    poly = [[1.0, 0.0, 2.0, 0.0, 2.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]  # the 2-point one has no area
    np.testing.assert_array_equal(decode_segmentation(poly, (3, 4)), mask & (np.arange(3)[:, None] == 0))
    for bad in (
        [[1.0, 2.0, 3.0]],
        [[0, 0, "x", 1, 2, 2]],
        [[0, 0, float("nan"), 1, 2, 2]],
        "abc",
        {"size": [3, 5], "counts": [15]},
    ):
        with pytest.raises(ValueError):
            decode_segmentation(bad, (3, 4))


# --------------------------------------------------------------------------- bad input


def _rewrite_refs(root: Path, dataset: str, edit) -> None:
    path = refer_layout(root, dataset).refs_file
    refs = load_refs_pickle(path)
    edit(refs)
    path.write_bytes(pickle.dumps(refs, protocol=2))


def _first(refs, split="testA"):
    return next(r for r in refs if r["split"] == split)


def test_missing_dataset_and_files(tmp_path, copy_root):
    with pytest.raises(DataError, match="refer dataset folder not found") as err:
        ReferData.load(tmp_path, "refcoco")
    assert str(tmp_path / "refcoco") in str(err.value)
    (copy_root / "refcoco" / "instances.json").unlink()
    with pytest.raises(DataError, match="instances.json: file not found"):
        ReferData.load(copy_root, "refcoco")
    (copy_root / "refcocog" / "instances.json").write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        ReferData.load(copy_root, "refcocog")


def test_ref_pointing_to_a_missing_annotation(copy_root):
    state = {}

    def edit(refs):
        ref = _first(refs)
        ref["ann_id"] = 999_999_999
        state.update(ref_id=ref["ref_id"], n=len(ref["sentences"]))

    _rewrite_refs(copy_root, "refcoco", edit)
    refer = ReferData.load(copy_root, "refcoco")
    with pytest.raises(DataError) as err:
        refer.expressions("testA")
    msg = str(err.value)
    assert f"ref {state['ref_id']}" in msg and "refs(unc).p" in msg and "annotation 999999999" in msg
    exprs, report = refer.expressions("testA", mode="skip")
    assert report.skipped == {MISSING_ANNOTATION: state["n"]}
    assert all(e.ref_id != state["ref_id"] for e in exprs) and exprs


def test_missing_image_strict_and_skip(copy_root):
    refer = ReferData.load(copy_root, "refcoco")
    exprs, _ = refer.expressions("testB")
    gone = refer.image_file(exprs[0].image_id)
    n_lost = sum(e.image_id == exprs[0].image_id for e in exprs)
    assert 0 < n_lost < len(exprs)
    gone.unlink()
    with pytest.raises(DataError) as err:
        refer.expressions("testB")
    msg = str(err.value)
    assert str(gone) in msg and "image file not found" in msg and f"ref {exprs[0].ref_id}" in msg
    kept, report = refer.expressions("testB", mode="skip")
    assert report.skipped == {MISSING_IMAGE: n_lost} and len(kept) == len(exprs) - n_lost


def test_image_dir_option(copy_root):
    elsewhere = copy_root / "coco" / "train2014"
    shutil.move(copy_root / "images" / "train2014", elsewhere)
    with pytest.raises(DataError, match="image file not found"):
        ReferData.load(copy_root, "refcoco").expressions("val")
    refer = ReferData.load(copy_root, "refcoco", image_dir=elsewhere)
    exprs, report = refer.expressions("val")
    assert exprs and not report.skipped and refer.image_file(exprs[0].image_id).parent == elsewhere


def test_bad_segmentation_and_malformed_refs(copy_root):
    refer_path = copy_root / "refcoco" / "instances.json"
    inst = json.loads(refer_path.read_text())
    refs = load_refs_pickle(refer_layout(copy_root, "refcoco").refs_file)
    target = _first(refs, "val")
    for ann in inst["annotations"]:
        if ann["id"] == target["ann_id"]:
            ann["segmentation"] = {"size": [1, 1], "counts": [1]}  # wrong size
    refer_path.write_text(json.dumps(inst))

    def edit(refs):
        r = _first(refs, "val")
        refs.append({"ref_id": 5000, "split": "val", "sentences": [{"sent": "x"}]})  # no ann_id / image_id
        refs.append("not a dict")
        assert r["ref_id"] == target["ref_id"]

    _rewrite_refs(copy_root, "refcoco", edit)
    refer = ReferData.load(copy_root, "refcoco")
    with pytest.raises(DataError, match=f"ref {target['ref_id']} .*bad segmentation.*does not match"):
        refer.expressions("val")
    exprs, report = refer.expressions("val", mode="skip")
    assert report.skipped[BAD_SEGMENTATION] == len(target["sentences"])
    assert report.skipped["malformed ref"] == 2
    assert "ref 5000" in report.examples["malformed ref"] or "entry" in report.examples["malformed ref"]
    assert exprs


# --------------------------------------------------------------------------- dataset and collate


def test_dataset_batches_follow_the_png_contract(refer_root, tokenizer):
    ds = ReferDataset.from_root(refer_root, "refcocog", "test", InputFormat(tokenizer, (48, 40)), mode="strict")
    assert len(ds) == ds.report().n_expressions > 0
    batch = collate_refer([ds[i] for i in range(3)])
    b, t = batch["input_ids"].shape
    assert batch["images"].shape == (3, 3, 48, 40) and batch["images"].dtype == torch.float32
    assert batch["phrase_token_mask"].shape == (3, 1, t) and batch["phrase_mask"].all()
    assert batch["gt_masks"].shape == (3, 1, 48, 40) and batch["n_skipped"] == 0
    for i in range(3):
        e = ds.expressions[i]
        enc = tokenizer(e.text)["input_ids"]
        n = len(enc)
        assert batch["input_ids"][i, :n].tolist() == enc
        # the phrase is every word piece of the expression: all but [CLS] and [SEP]
        assert batch["phrase_token_mask"][i, 0].nonzero().flatten().tolist() == list(range(1, n - 1))
        meta = batch["meta"][i]
        assert meta["narrative"] == i and meta["image_id"] == e.image_id and meta["phrase_indices"] == [0]
        gt = ds.gt_mask(i)
        assert meta["orig_size"] == gt.shape == ds.refer.image_size(e.image_id)
        assert meta["valid_size"] == (48, 40)
        # the input-size ground truth is the nearest-neighbour resize of the original mask
        from epng.data.transforms import resize_id_map

        expected = resize_id_map(torch.from_numpy(gt.astype(np.int32)), (48, 40)).float()
        assert torch.equal(batch["gt_masks"][i, 0], expected)


def test_dataset_lazy_bad_image_strict_and_skip(copy_root, tokenizer):
    ds = ReferDataset.from_root(copy_root, "refcoco", "testA", InputFormat(tokenizer, 32))
    path = ds.image_file(0)
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="corrupt or unsupported image") as err:
        ds[0]
    assert str(path) in str(err.value) and f"ref {ds.expressions[0].ref_id}" in str(err.value)
    ds = ReferDataset.from_root(copy_root, "refcoco", "testA", InputFormat(tokenizer, 32), mode="skip")
    batch = collate_refer([ds[i] for i in range(len(ds))])
    bad = sum(ds.expressions[i].image_id == ds.expressions[0].image_id for i in range(len(ds)))
    assert batch["n_skipped"] == bad and batch["images"].shape[0] == len(ds) - bad
    ds.note_skipped(batch)
    assert ds.report().skipped == {"corrupt image": bad}

"""Scoring predictions files against a benchmark split: oracle, empty, missing, bad lines, IoUs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_dataset import SAMPLE_DIR, TINY_PHRASES, make_sample_benchmark, make_tiny_benchmark, tiny_gt
from helpers_metrics import oracle_predictions, write_oracle_predictions, write_predictions

from epng.errors import PredictionError
from epng.io.panoptic_png import read_id_png
from epng.io.rle import decode_rle, encode_mask
from epng.metrics.png_metric import average_recall
from epng.metrics.scorer import PNGEvaluator, evaluate_predictions, score_predictions

SPLIT = "val2017"
SIZES = {0: (6, 8), 1: (5, 7), 3: (6, 8)}
IMAGE = {0: 11, 1: 22, 3: 11}


@pytest.fixture()
def tiny(tmp_path):
    return make_tiny_benchmark(tmp_path / "bench")


def pred(narrative, phrase_index, mask, image_id=None):
    return {
        "narrative": narrative,
        "image_id": IMAGE[narrative] if image_id is None else image_id,
        "phrase_index": phrase_index,
        "segmentation": encode_mask(mask),
    }


def test_oracle_scores_full_marks(tiny, tmp_path):
    path = tmp_path / "oracle.jsonl"
    n = write_oracle_predictions(tiny, SPLIT, path)
    assert n == len(TINY_PHRASES)
    m = score_predictions(tiny, SPLIT, path)
    for key in ("ar", "ar_things", "ar_stuff", "ar_singulars", "ar_plurals"):
        assert m[key] == pytest.approx(100.0, abs=0.01)
        assert m[key] == pytest.approx(99.999, abs=1e-9)
    assert m["acc_50"] == 100.0
    assert (m["n_phrases"], m["n_things"], m["n_stuff"], m["n_singulars"], m["n_plurals"], m["n_missing"]) == (
        7,
        3,
        4,
        4,
        3,
        0,
    )


def test_oracle_masks_are_the_independent_ground_truth(tiny):
    ev = PNGEvaluator.from_split(tiny, SPLIT)
    for p in oracle_predictions(ev):
        assert np.array_equal(decode_rle(p["segmentation"]), tiny_gt(p["narrative"], p["phrase_index"]))
    for (n, k), (segments, thing, plural) in TINY_PHRASES.items():
        phrase = ev.phrase(n, k)
        assert (phrase.segment_ids, phrase.is_thing, phrase.is_plural) == (segments, thing, plural)


def test_empty_masks_score_zero(tiny):
    preds = [pred(n, k, np.zeros(SIZES[n], bool)) for (n, k) in TINY_PHRASES]
    m = score_predictions(tiny, SPLIT, preds)
    for key in ("ar", "ar_things", "ar_stuff", "ar_singulars", "ar_plurals"):
        assert m[key] == pytest.approx(0.0, abs=0.01)
        assert m[key] == pytest.approx(0.001, abs=1e-9)  # recall(t_0 = 0) = 1
    assert m["acc_50"] == 0.0 and m["n_missing"] == 0


def test_missing_phrase_counts_and_scores_zero(tiny):
    ev = PNGEvaluator.from_split(tiny, SPLIT)
    preds = list(oracle_predictions(ev, skip=[(3, 1)]))
    m = score_predictions(tiny, SPLIT, preds)
    assert m["n_missing"] == 1 and m["n_phrases"] == 7
    assert m["ar"] == pytest.approx(100 * average_recall([1.0] * 6 + [0.0]), abs=1e-9)
    assert m["ar_plurals"] == pytest.approx(100 * average_recall([1.0, 1.0, 0.0]), abs=1e-9)
    assert m["ar_stuff"] == pytest.approx(99.999, abs=1e-9)
    assert m["acc_50"] == pytest.approx(600 / 7)
    none = score_predictions(tiny, SPLIT, [])
    assert none["n_missing"] == 7 and none["ar"] == pytest.approx(0.001, abs=1e-9)


def test_ious_match_numpy(tiny):
    rng = np.random.default_rng(0)
    preds, expected = [], {}
    for n, k in TINY_PHRASES:
        mask = rng.random(SIZES[n]) < 0.5
        gt = tiny_gt(n, k)
        expected[(n, k)] = np.logical_and(mask, gt).sum() / np.logical_or(mask, gt).sum()
        preds.append(pred(n, k, mask))
    ev = evaluate_predictions(tiny, SPLIT, preds)
    arrays = ev.phrase_arrays()
    keys = [(r.narrative, r.phrase.phrase_index) for r in ev.phrases()]
    got = dict(zip(keys, arrays["iou"]))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-15)
    m = ev.compute()
    assert m["ar"] == pytest.approx(100 * average_recall(list(expected.values())), abs=1e-12)


def test_uncompressed_counts_and_string_image_id(tiny):
    ev = PNGEvaluator.from_split(tiny, SPLIT)
    preds = []
    for p in oracle_predictions(ev):
        mask = tiny_gt(p["narrative"], p["phrase_index"])
        flat = mask.T.reshape(-1).astype(np.int8)  # column-major runs
        change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])) != 0)
        runs = np.diff(np.concatenate([[0], change])).tolist()
        p["segmentation"] = {"size": list(mask.shape), "counts": runs}
        p["image_id"] = str(p["image_id"])
        preds.append(p)
    m = score_predictions(tiny, SPLIT, preds)
    assert m["ar"] == pytest.approx(99.999, abs=1e-9)


def test_extra_keys_and_blank_lines(tiny, tmp_path):
    ev = PNGEvaluator.from_split(tiny, SPLIT)
    path = tmp_path / "p.jsonl"
    lines = [json.dumps({**p, "score": 0.9}) for p in oracle_predictions(ev)]
    path.write_text("\n".join(lines[:3]) + "\n\n   \n" + "\n".join(lines[3:]) + "\n")
    assert score_predictions(tiny, SPLIT, path)["ar"] == pytest.approx(99.999, abs=1e-9)


def _good_line(narrative=0, phrase_index=0, **overrides):
    p = pred(narrative, phrase_index, tiny_gt(narrative, phrase_index))
    p.update(overrides)
    return json.dumps(p)


BAD_CASES = {
    "invalid JSON": ('{"narrative": 0,', "invalid JSON"),
    "not an object": ("[1, 2]", "expected a JSON object"),
    "missing key": (json.dumps({"narrative": 0, "image_id": 11, "phrase_index": 0}), "missing key 'segmentation'"),
    "unknown narrative": (_good_line().replace('"narrative": 0', '"narrative": 9'), "unknown narrative 9"),
    "negative narrative": (_good_line().replace('"narrative": 0', '"narrative": -1'), "unknown narrative -1"),
    "narrative without phrases": (
        _good_line().replace('"narrative": 0', '"narrative": 2'),
        "narrative 2 has no grounded",
    ),
    "non-integer narrative": (
        _good_line().replace('"narrative": 0', '"narrative": "0"'),
        "'narrative' must be an integer",
    ),
    "image mismatch": (_good_line(image_id=22), "image_id 22 does not match narrative 0"),
    "bad image_id": (_good_line(image_id=[11]), "'image_id' must be an integer"),
    "unknown phrase": (_good_line().replace('"phrase_index": 0', '"phrase_index": 3'), "unknown phrase_index 3"),
    "float phrase": (
        _good_line().replace('"phrase_index": 0', '"phrase_index": 0.0'),
        "'phrase_index' must be an integer",
    ),
    "wrong size": (
        _good_line(segmentation=encode_mask(np.zeros((8, 6), bool))),
        r"size \[8, 6\] does not match .* \[6, 8\]",
    ),
    "bad counts sum": (_good_line(segmentation={"size": [6, 8], "counts": "0`0"}), "bad segmentation"),
    "bad counts char": (_good_line(segmentation={"size": [6, 8], "counts": "0\u007f"}), "outside the RLE alphabet"),
    "counts too long": (_good_line(segmentation={"size": [6, 8], "counts": [10, 40]}), "add up to 50"),
    "segmentation not RLE": (_good_line(segmentation=[[0, 0, 1, 1, 2, 2]]), "COCO RLE object"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_prediction_names_the_line(tiny, tmp_path, case):
    bad, message = BAD_CASES[case]
    lines = [_good_line(0, 0), _good_line(1, 0), "", bad, _good_line(3, 2)]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PredictionError, match=message) as info:
        score_predictions(tiny, SPLIT, path)
    assert f"{path}: line 4: " in str(info.value)


def test_duplicate_prediction_names_both_lines(tiny, tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join([_good_line(0, 1), _good_line(1, 0), _good_line(0, 1)]) + "\n")
    with pytest.raises(
        PredictionError, match=r"line 3: duplicate prediction for narrative 0, phrase_index 1 \(first given on line 1\)"
    ):
        score_predictions(tiny, SPLIT, path)


def test_bad_iterable_entry_names_its_position(tiny):
    preds = [json.loads(_good_line(0, 0)), {"narrative": 0}]
    with pytest.raises(PredictionError, match="predictions: line 2: missing keys"):
        score_predictions(tiny, SPLIT, preds)


def test_missing_predictions_file(tiny, tmp_path):
    with pytest.raises(PredictionError, match="not found"):
        score_predictions(tiny, SPLIT, tmp_path / "nope.jsonl")


def test_evaluator_feeding_and_merging(tiny):
    keys = sorted(TINY_PHRASES)
    full = PNGEvaluator.from_split(tiny, SPLIT)
    ranks = [PNGEvaluator.from_split(tiny, SPLIT) for _ in range(2)]
    rng = np.random.default_rng(5)
    for i, (n, k) in enumerate(keys[:-1]):  # the last phrase stays missing
        mask = rng.random(SIZES[n]) < 0.5
        iou = full.add_mask(n, k, mask, image_id=IMAGE[n])
        assert ranks[i % 2].add_rle(n, k, encode_mask(mask)) == iou
    with pytest.raises(PredictionError, match="duplicate"):
        full.add_mask(*keys[0], np.zeros(SIZES[keys[0][0]], bool))
    with pytest.raises(PredictionError, match="does not match the image's original size"):
        full.add_mask(*keys[-1], np.zeros((2, 2), bool))
    state = ranks[1].state_arrays()
    assert set(state) == {"narrative", "phrase_index", "iou"}
    ranks[0].merge_arrays(state["narrative"], state["phrase_index"], state["iou"])
    assert len(ranks[0]) == len(full) == len(keys) - 1
    assert ranks[0].compute() == full.compute()
    assert full.compute()["n_missing"] == 1
    # an evaluator without PNGs still merges and computes
    light = PNGEvaluator(full.narratives.values())
    s = full.state_arrays()
    light.merge_arrays(s["narrative"], s["phrase_index"], s["iou"])
    assert light.compute() == full.compute()
    with pytest.raises(PredictionError, match="not in"):
        PNGEvaluator(full.narratives.values()).add_iou(0, 0, 1.5)


def test_each_png_decoded_once(tiny, monkeypatch):
    import epng.metrics.scorer as scorer

    calls = []

    def counting_read(path):
        calls.append(path.name)
        return read_id_png(path)

    monkeypatch.setattr(scorer, "read_id_png", counting_read)
    ev = PNGEvaluator.from_split(tiny, SPLIT, cache_size=1)
    preds = list(oracle_predictions(ev))
    preds = preds[::-1]  # file order interleaves the images
    calls.clear()
    evaluate_predictions(tiny, SPLIT, preds, evaluator=PNGEvaluator.from_split(tiny, SPLIT, cache_size=1))
    assert sorted(calls) == ["000000000011.png", "000000000022.png"]


@pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason=f"real COCO panoptic sample not found at {SAMPLE_DIR}")
def test_real_coco_sample(tmp_path):
    info = make_sample_benchmark(tmp_path / "coco")
    root = info["root"]
    ev = PNGEvaluator.from_split(root, SPLIT)
    oracle = list(oracle_predictions(ev))
    assert len(oracle) == len(info["phrases"]) == 8
    m = score_predictions(root, SPLIT, oracle)
    for key in ("ar", "ar_things", "ar_stuff", "ar_singulars", "ar_plurals"):
        assert m[key] == pytest.approx(100.0, abs=0.01)
    assert (m["n_things"], m["n_stuff"], m["n_singulars"], m["n_plurals"]) == (4, 4, 4, 4)
    # a shifted prediction: the scorer's IoU equals a direct numpy computation on the PNG
    rng = np.random.default_rng(0)
    preds, expected = [], []
    for p in oracle:
        n, k = p["narrative"], p["phrase_index"]
        segments = info["phrases"][(n, k)][0]
        ids = read_id_png(SAMPLE_DIR / "panoptic" / f"{p['image_id']:012d}.png")
        gt = np.isin(ids, segments)
        mask = np.roll(gt, int(rng.integers(5, 40)), axis=1) | (rng.random(gt.shape) < 0.01)
        expected.append(np.logical_and(mask, gt).sum() / np.logical_or(mask, gt).sum())
        preds.append({**p, "segmentation": encode_mask(mask)})
    path = tmp_path / "shifted.jsonl"
    write_predictions(preds, path)
    scored = evaluate_predictions(root, SPLIT, path)
    got = dict(zip([(r.narrative, r.phrase.phrase_index) for r in scored.phrases()], scored.phrase_arrays()["iou"]))
    for p, value in zip(preds, expected):
        assert got[(p["narrative"], p["phrase_index"])] == pytest.approx(value, abs=1e-15)
    assert 0.0 < min(expected) and max(expected) < 1.0

"""`epng score` end to end on the tiny benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_dataset import make_tiny_benchmark
from helpers_metrics import oracle_predictions, write_predictions
from PIL import Image

from epng.cli.main import COMMANDS, main
from epng.metrics.png_metric import METRIC_KEYS
from epng.metrics.scorer import PNGEvaluator

SPLIT = "val2017"


@pytest.fixture()
def bench(tmp_path):
    root = make_tiny_benchmark(tmp_path / "bench")
    ev = PNGEvaluator.from_split(root, SPLIT)
    preds = list(oracle_predictions(ev, skip=[(0, 0)]))  # a missing thing plural
    path = tmp_path / "preds.jsonl"
    write_predictions(preds, path)
    return root, path


def test_score_is_registered():
    assert COMMANDS["score"] == "epng.cli.score"


def test_score_writes_metrics_and_curve(bench, tmp_path, capsys):
    root, preds = bench
    out, curve = tmp_path / "out" / "metrics.json", tmp_path / "out" / "curve.png"
    rc = main(
        [
            "score",
            "--data-root",
            str(root),
            "--split",
            SPLIT,
            "--predictions",
            str(preds),
            "--out",
            str(out),
            "--curve",
            str(curve),
        ]
    )
    assert rc == 0
    metrics = json.loads(out.read_text())
    assert tuple(metrics) == METRIC_KEYS
    assert metrics["n_phrases"] == 7 and metrics["n_missing"] == 1
    assert metrics["ar_stuff"] == pytest.approx(99.999, abs=1e-9)
    assert metrics["ar_things"] == pytest.approx(100 * (2 * 0.99999 + 0.00001) / 3, abs=1e-9)
    text = capsys.readouterr().out
    for word in ("all", "things", "stuff", "singulars", "plurals", "acc@0.5", "missing predictions: 1 of 7"):
        assert word in text
    with Image.open(curve) as im:
        assert im.size[0] > 100 and im.size[1] > 100
        assert np.asarray(im.convert("L")).std() > 0  # something was drawn


def test_score_empty_subset_is_null(tmp_path, capsys):
    root = make_tiny_benchmark(tmp_path / "bench")
    # keep only narrative 1 (a singular thing): no stuff, no plurals
    narratives = json.loads((root / "annotations" / f"png_coco_{SPLIT}.json").read_text())
    for k in (0, 3):
        for chunk in narratives[k]["segments"]:
            chunk["segment_ids"] = []
    (root / "annotations" / f"png_coco_{SPLIT}.json").write_text(json.dumps(narratives))
    preds = tmp_path / "p.jsonl"
    write_predictions(oracle_predictions(PNGEvaluator.from_split(root, SPLIT)), preds)
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "score",
                "--data-root",
                str(root),
                "--predictions",
                str(preds),
                "--out",
                str(out),
                "--curve",
                str(tmp_path / "c.png"),
            ]
        )
        == 0
    )
    raw = out.read_text()
    metrics = json.loads(raw)
    assert metrics["ar_stuff"] is None and metrics["ar_plurals"] is None and "null" in raw
    assert metrics["n_stuff"] == 0 and metrics["n_plurals"] == 0 and metrics["n_phrases"] == 1
    assert "—" in capsys.readouterr().out


def test_score_bad_line_exits_2(bench, tmp_path, capsys):
    root, preds = bench
    lines = preds.read_text().splitlines()
    lines.insert(
        1, '{"narrative": 1, "image_id": 22, "phrase_index": 0, "segmentation": {"size": [5, 7], "counts": "zz"}}'
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    rc = main(["score", "--data-root", str(root), "--predictions", str(bad)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("epng score: error: ") and f"{bad}: line 2: " in err
    assert len(err.splitlines()) == 1


def test_score_missing_data_root(tmp_path, capsys):
    rc = main(["score", "--data-root", str(tmp_path / "nope"), "--predictions", str(tmp_path / "p.jsonl")])
    assert rc == 2
    assert "not a directory" in capsys.readouterr().err

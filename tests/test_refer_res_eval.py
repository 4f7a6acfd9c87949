"""`epng res-eval` end to end on a tiny synthetic refer set, and the evaluation loop against exact expectations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from epng.cli.main import main
from epng.data.input_format import InputFormat
from epng.data.refer import ReferData
from epng.data.refer_dataset import ReferDataset
from epng.data.synth.refer import generate_refer
from epng.engine.res_eval import RESOptions, evaluate_pairs, evaluate_res, input_settings
from epng.errors import DataError
from epng.inference import Predictor
from epng.model import build_epng

KEYS = ("0.5", "0.6", "0.7", "0.8", "0.9")


@pytest.fixture(scope="module")
def refer_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refer")
    generate_refer(root, ("refcoco",), n_images=4, size=64, seed=11)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from epng.model import build_epng

    torch.manual_seed(0)
    model = build_epng("epng_lite0_minilm", backbone_weights="none", text_weights="random")
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_pretrained(path)
    return path


class ConstantPredictor(Predictor):
    """Predicts the same logit everywhere: the exact metric values follow from the ground-truth areas."""

    def __init__(self, logit: float, **config):
        model = build_epng("epng_lite0_minilm", backbone_weights="none", text_weights="random", **config)
        super().__init__(model, precision="fp32")
        self.logit = logit
        self.calls = []

    def mask_logits(self, images, input_ids, attention_mask, phrase_token_mask, phrase_mask):
        self.calls.append((tuple(images.shape), torch.is_grad_enabled()))
        b, p = phrase_mask.shape
        h, w = images.shape[-2:]
        return torch.full((b, p, h // 4, w // 4), self.logit)


def _gt_areas(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    refer = ReferData.load(root, "refcoco")
    exprs, _ = refer.expressions(split)
    area = np.array([refer.mask(e.ann_id).sum() for e in exprs], dtype=np.int64)
    pixels = np.array([np.prod(refer.image_size(e.image_id)) for e in exprs], dtype=np.int64)
    return area, pixels


@pytest.mark.parametrize("resize", ["square", "letterbox"])
def test_full_and_empty_predictions_give_the_exact_metrics(refer_root, tokenizer, resize):
    area, pixels = _gt_areas(refer_root, "testA")
    full = ConstantPredictor(20.0, image_size=96, resize=resize)
    results, missing = evaluate_pairs(full, refer_root, [("refcoco", "testA")], RESOptions(batch_size=3))
    m = results[0].metrics
    assert not missing and m["n_expressions"] == len(area) and m["image_size"] == [96, 96] and m["resize"] == resize
    assert m["image_size_from"] == m["resize_from"] == "checkpoint config"
    # the whole image predicted: I = object area, U = image area, at the original resolution
    assert m["mIoU"] == pytest.approx(100 * np.mean(area / pixels))
    assert m["oIoU"] == pytest.approx(100 * area.sum() / pixels.sum())
    for k in KEYS:
        assert m["precision"][k] == pytest.approx(100 * np.mean(area / pixels >= float(k)))
    assert all(shape == (shape[0], 3, 96, 96) and not grad for shape, grad in full.calls)  # batched, no gradient
    empty = ConstantPredictor(-20.0)
    ds = ReferDataset(ReferData.load(refer_root, "refcoco"), "testA", InputFormat(tokenizer, 32))
    m = evaluate_res(empty, ds, RESOptions(batch_size=4))
    assert m["mIoU"] == m["oIoU"] == 0.0 and all(v == 0.0 for v in m["precision"].values())


def test_skip_mode_counts_bad_images(refer_root, tokenizer, tmp_path):
    import shutil

    root = tmp_path / "refer"
    shutil.copytree(refer_root, root)
    refer = ReferData.load(root, "refcoco")
    exprs, _ = refer.expressions("testB")
    refer.image_file(exprs[0].image_id).write_bytes(b"\xff\xd8 truncated jpeg")
    bad = sum(e.image_id == exprs[0].image_id for e in exprs)
    model = ConstantPredictor(20.0, image_size=32)
    with pytest.raises(DataError, match="corrupt or unsupported image"):
        evaluate_pairs(model, root, [("refcoco", "testB")], RESOptions())
    options = RESOptions(mode="skip", batch_size=2)
    results, _ = evaluate_pairs(model, root, [("refcoco", "testB")], options, output=tmp_path / "o")
    m = results[0].metrics
    assert m["n_skipped"] == bad and m["skipped"] == {"corrupt image": bad}
    assert m["n_expressions"] == len(exprs) - bad
    assert len((tmp_path / "o" / "refcoco_testB" / "predictions.jsonl").read_text().splitlines()) == len(exprs) - bad


def test_input_settings_precedence():
    assert input_settings(SimpleNamespace()) == input_settings(SimpleNamespace(image_size=None, resize=None))
    s = input_settings(SimpleNamespace())
    assert (s.image_size, s.resize, s.image_size_from, s.resize_from) == ((640, 640), "square", "default", "default")
    s = input_settings(SimpleNamespace(image_size=[320, 480], resize="letterbox"))
    assert (s.image_size, s.resize, s.image_size_from) == ((320, 480), "letterbox", "checkpoint config")
    s = input_settings(SimpleNamespace(image_size=320, resize="letterbox"), image_size=64, resize="square")
    assert (s.image_size, s.resize) == ((64, 64), "square")
    assert s.image_size_from == s.resize_from == "command line"


def _decode_gt(ann: dict, h: int, w: int) -> np.ndarray:
    """Ground truth straight from instances.json with pycocotools (independent of epng's reader)."""
    seg = ann["segmentation"]
    if isinstance(seg, list) or isinstance(seg["counts"], list):
        rles = mask_utils.frPyObjects(seg, h, w)
        rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs numpy 2
def test_res_eval_end_to_end(refer_root, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "res-eval",
            "--checkpoint",
            str(checkpoint),
            "--refer-root",
            str(refer_root),
            "--all",
            "--image-size",
            "64",
            "--output",
            str(out),
            "--overlays",
            "2",
            "--batch-size",
            "4",
            "--num-workers",
            "0",
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    assert "mIoU" in printed and "oIoU" in printed and "P@0.9" in printed
    assert "refcoco+ testA: not evaluated" in printed and "refcocog test: not evaluated" in printed
    summary = json.loads((out / "res_summary.json").read_text())
    assert [(r["dataset"], r["split"]) for r in summary["results"]] == [("refcoco", "testA"), ("refcoco", "testB")]
    assert [(m["dataset"], m["split"]) for m in summary["missing"]] == [
        ("refcoco+", "testA"),
        ("refcoco+", "testB"),
        ("refcocog", "test"),
    ]

    instances = json.loads((refer_root / "refcoco" / "instances.json").read_text())
    anns = {a["id"]: a for a in instances["annotations"]}
    sizes = {im["id"]: (im["height"], im["width"]) for im in instances["images"]}
    for result in summary["results"]:
        pair = out / f"refcoco_{result['split']}"
        metrics = json.loads((pair / "metrics.json").read_text())
        assert metrics == result
        for key in ("n_expressions", "mIoU", "oIoU", "precision", "threshold", "image_size", "resize", "n_skipped"):
            assert key in metrics
        assert metrics["image_size"] == [64, 64] and metrics["threshold"] == 0.5 and metrics["n_skipped"] == 0
        values = [metrics["mIoU"], metrics["oIoU"], *metrics["precision"].values()]
        assert all(0.0 <= v <= 100.0 for v in values) and list(metrics["precision"]) == list(KEYS)

        # recompute every IoU from the written masks and the ground truth decoded independently
        lines = [json.loads(line) for line in (pair / "predictions.jsonl").read_text().splitlines()]
        assert len(lines) == metrics["n_expressions"] > 0
        inter, union = [], []
        for line in lines:
            h, w = sizes[line["image_id"]]
            seg = line["segmentation"]
            assert seg["size"] == [h, w]  # predictions at the original resolution
            pred = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
            gt = _decode_gt(anns[line["ann_id"]], h, w)
            inter.append(int((pred & gt).sum()))
            union.append(int((pred | gt).sum()))
            assert (line["intersection"], line["union"]) == (inter[-1], union[-1])
        inter, union = np.array(inter), np.array(union)
        iou = inter / union
        assert metrics["mIoU"] == pytest.approx(100 * iou.mean())
        assert metrics["oIoU"] == pytest.approx(100 * inter.sum() / union.sum())
        for k in KEYS:
            assert metrics["precision"][k] == pytest.approx(100 * np.mean(iou >= float(k)))
        overlays = sorted((pair / "overlays").glob("*.png"))
        assert len(overlays) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in overlays)


def test_res_eval_single_pair_and_errors(refer_root, checkpoint, tmp_path, capsys):
    args = [
        "res-eval",
        "--checkpoint",
        str(checkpoint),
        "--refer-root",
        str(refer_root),
        "--image-size",
        "32",
        "--num-workers",
        "0",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert main([*args, "--dataset", "refcoco", "--split", "val", "--threshold", "0.3"]) == 0
    assert re.search(r"^refcoco\s+val\s+\d+\s", capsys.readouterr().out, re.M)
    for extra, message in (
        (["--all", "--split", "testA"], "--all evaluates the five standard pairs"),
        (["--dataset", "refcoco", "--split", "test"], "unknown split 'test'"),
        (["--dataset", "refcocog"], "refer dataset folder not found"),
        (["--overlays", "2"], "--overlays needs --output"),
        (["--threshold", "1.5"], "--threshold"),
    ):
        assert main([*args, *extra]) == 2, extra
        assert message in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["res-eval", "--checkpoint", str(empty), "--refer-root", str(refer_root)]) == 2
    assert "no config.json" in capsys.readouterr().err

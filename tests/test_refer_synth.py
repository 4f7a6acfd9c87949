"""`epng synth-refer`: the synthetic refer-format dataset is deterministic, well formed and unambiguous."""

from __future__ import annotations

import io
import json
import pickletools
import re

import pytest

from epng.cli.main import main
from epng.data.refer import ReferData
from epng.data.refer_pickle import load_refs_pickle
from epng.data.synth.refer import generate_refer
from epng.errors import ConfigError


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_laid_out_like_refer(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_refer(a, ("refcoco", "refcoco+", "refcocog"), n_images=4, size=48, seed=5)
    generate_refer(b, ("refcoco", "refcoco+", "refcocog"), n_images=4, size=48, seed=5)
    files = _files(a)
    assert files == _files(b)
    assert set(files) == {
        "refcoco/refs(unc).p",
        "refcoco/instances.json",
        "refcoco+/refs(unc).p",
        "refcoco+/instances.json",
        "refcocog/refs(umd).p",
        "refcocog/instances.json",
        *(f"images/train2014/COCO_train2014_{100_000 + k:012d}.jpg" for k in range(4)),
    }
    generate_refer(b, ("refcoco",), n_images=4, size=48, seed=6, overwrite=True)
    assert _files(b)["refcoco/refs(unc).p"] != files["refcoco/refs(unc).p"]


def test_refs_are_protocol_2_plain_data_and_each_expression_is_unique(tmp_path):
    generate_refer(tmp_path, ("refcoco", "refcoco+", "refcocog"), n_images=6, size=64, seed=1)
    for dataset, split_by, splits in (
        ("refcoco", "unc", {"val", "testA", "testB"}),
        ("refcoco+", "unc", {"val", "testA", "testB"}),
        ("refcocog", "umd", {"val", "test"}),
    ):
        raw = (tmp_path / dataset / f"refs({split_by}).p").read_bytes()
        ops = [op.name for op, _, _ in pickletools.genops(io.BytesIO(raw))]
        assert ops[0] == "PROTO" and raw[1] == 2
        assert not {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ"} & set(ops)
        refs = load_refs_pickle(tmp_path / dataset / f"refs({split_by}).p")
        assert {r["split"] for r in refs} == splits
        assert len({r["ann_id"] for r in refs}) == len(refs)  # one ref per object
        assert [r["ref_id"] for r in refs] == list(range(len(refs)))
        texts = [s["sent"] for r in refs for s in r["sentences"]]
        assert len(texts) == len({s["sent_id"] for r in refs for s in r["sentences"]})
        for r in refs:
            assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
            assert all(s["tokens"] == s["sent"].split() for s in r["sentences"])
            # within an image, no sentence names two different objects
            others = [s["sent"] for o in refs if o["image_id"] == r["image_id"] and o is not r for s in o["sentences"]]
            assert not {s["sent"] for s in r["sentences"]} & set(others)
        if dataset == "refcoco+":
            assert not any(re.search(r"\b(left|right|top|bottom|middle)\b", t) for t in texts)
        if dataset == "refcocog":
            assert all(t.startswith("the ") for t in texts)
        inst = json.loads((tmp_path / dataset / "instances.json").read_text())
        assert {im["id"] for im in inst["images"]} >= {r["image_id"] for r in refs}
        ReferData.load(tmp_path, dataset).expressions(sorted(splits)[0])


def test_bad_arguments_and_overwrite(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset"):
        generate_refer(tmp_path, ("refclef",))
    with pytest.raises(ConfigError, match="--size"):
        generate_refer(tmp_path, size=8)
    generate_refer(tmp_path, n_images=1, size=48)
    with pytest.raises(ConfigError, match="already exists"):
        generate_refer(tmp_path, n_images=1, size=48)


def test_cli(tmp_path, capsys):
    out = tmp_path / "syn"
    args = ["synth-refer", "--out", str(out), "--datasets", "refcoco,refcocog", "--images", "3", "--size", "48"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "refcoco (unc): refs val" in text and "refcocog (umd)" in text
    assert (out / "refcocog" / "refs(umd).p").is_file()
    assert main(["synth-refer", "--out", str(out), "--images", "3", "--size", "48"]) == 2
    assert "already exists" in capsys.readouterr().err

"""`epng synth`: layout, determinism, panoptic correctness and narrative properties."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from epng.cli.main import main
from epng.data.layout import SplitLayout
from epng.data.panoptic import PanopticIndex
from epng.data.png_format import load_narratives, locate_utterances
from epng.data.synth import (
    generate_benchmark,
    image_rng,
    make_scene,
    referring_descriptions,
    unique_descriptions,
)

SPLITS = ("train2017", "val2017")


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _decode(path: Path) -> np.ndarray:
    """Segment ids from a panoptic PNG, computed here independently of epng.data.panoptic."""
    with Image.open(path) as im:
        assert im.mode == "RGB"
        rgb = np.array(im, dtype=np.uint32)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    summary = generate_benchmark(root, n_train=40, n_val=12, size=128, seed=5)
    assert summary.splits["train2017"].images == 40 and summary.splits["val2017"].images == 12
    return root


@pytest.fixture(scope="module")
def parsed(bench):
    out = {}
    for split in SPLITS:
        layout = SplitLayout(bench, split)
        index = PanopticIndex(layout.panoptic_json)
        narratives, report = load_narratives(layout.narratives_json, index, mode="strict")
        records = json.loads(layout.narratives_json.read_text())
        out[split] = (layout, index, narratives, report, records)
    return out


def test_layout_matches_the_real_benchmark(bench, parsed):
    for split in SPLITS:
        layout, index, _, _, _ = parsed[split]
        for p in layout.required_paths():
            assert p.exists(), p
        panoptic = json.loads(layout.panoptic_json.read_text())
        assert {"images", "annotations", "categories"} <= panoptic.keys()
        ids = [im["id"] for im in panoptic["images"]]
        assert len(set(ids)) == len(ids) == len(panoptic["annotations"])
        for im in panoptic["images"]:
            with Image.open(layout.image_dir / im["file_name"]) as jpg:
                assert jpg.format == "JPEG" and jpg.size == (im["width"], im["height"])
            assert layout.panoptic_png(im["id"]).is_file()
        for ann in panoptic["annotations"]:
            assert ann["file_name"] == layout.panoptic_png(ann["image_id"]).name
        cats = panoptic["categories"]
        assert len({c["id"] for c in cats}) == len(cats)
        assert {c["isthing"] for c in cats} == {0, 1}
        for c in cats:
            assert {"id", "name", "supercategory", "isthing", "color"} <= c.keys()
    train_ids = set(parsed["train2017"][1].images)
    val_ids = set(parsed["val2017"][1].images)
    assert not train_ids & val_ids


def test_bbox_and_area_match_the_written_png(parsed):
    n_segments = 0
    channels_used = np.zeros(3, bool)
    for split in SPLITS:
        layout, index, _, _, _ = parsed[split]
        panoptic = json.loads(layout.panoptic_json.read_text())
        for ann in panoptic["annotations"]:
            ids = _decode(layout.panoptic_dir / ann["file_name"])
            listed = {s["id"] for s in ann["segments_info"]}
            assert len(listed) == len(ann["segments_info"])
            present = set(np.unique(ids).tolist()) - {0}
            assert present == listed, "every pixel is a listed segment or void, every listed segment has pixels"
            assert (ids == 0).mean() < 0.05
            for seg in ann["segments_info"]:
                ys, xs = np.nonzero(ids == seg["id"])
                bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                assert seg["bbox"] == bbox and seg["area"] == len(xs) and seg["iscrowd"] == 0
                channels_used |= np.array([seg["id"] % 256, seg["id"] // 256 % 256, seg["id"] // 65536]) > 0
                n_segments += 1
            things = [s for s in ann["segments_info"] if index.categories[s["category_id"]]["isthing"]]
            assert things, "every image has at least one thing"
    assert n_segments > 100 and channels_used.all()


def test_narratives_parse_strictly_and_are_well_formed(parsed):
    stats = dict(coref=0, stuff=0, ungrounded=0, plural=0, non_noun=0, split_punct=0, two_narratives=0, narratives=0)
    for split in SPLITS:
        layout, index, narratives, report, records = parsed[split]
        assert report.n_skipped == 0 and len(narratives) == len(records)
        per_image: dict[str, int] = {}
        for rec in records:
            assert re.fullmatch(r"\d+", rec["image_id"]) and isinstance(rec["annotator_id"], int)
            assert rec["caption"][0].isupper() and rec["caption"].endswith(".")
            per_image[rec["image_id"]] = per_image.get(rec["image_id"], 0) + 1
            utts = [c["utterance"] for c in rec["segments"]]
            spans = locate_utterances(rec["caption"], utts)
            assert len(spans) == len(utts)
            image = index.image(int(rec["image_id"]))
            ids = _decode(layout.panoptic_dir / image.png_name)
            seen: set[str] = set()
            for c in rec["segments"]:
                assert set(c) == {"utterance", "segment_ids", "plural", "noun"}
                assert c["utterance"] == c["utterance"].lower() and c["utterance"].strip() == c["utterance"] != ""
                assert all(isinstance(s, str) for s in c["segment_ids"])
                if " ." in c["utterance"] or " 's" in c["utterance"]:
                    stats["split_punct"] += 1
                if not c["noun"]:
                    assert not c["segment_ids"]
                    stats["non_noun"] += 1
                    continue
                if not c["segment_ids"]:
                    stats["ungrounded"] += 1
                    continue
                segs = [int(s) for s in c["segment_ids"]]
                assert len(set(segs)) == len(segs)
                for s in segs:
                    assert (ids == s).any(), f"segment {s} of {c['utterance']!r} has no pixels"
                assert c["plural"] == (len(segs) >= 2)
                stats["plural"] += c["plural"]
                if not index.is_thing(int(rec["image_id"]), segs[-1]):
                    stats["stuff"] += 1
                if seen & set(c["segment_ids"]):
                    stats["coref"] += 1
                seen |= set(c["segment_ids"])
        stats["two_narratives"] += sum(n >= 2 for n in per_image.values())
        stats["narratives"] += len(records)
    for key, value in stats.items():
        assert value > 0, f"no {key} in the sample: {stats}"


def test_grounded_phrases_of_the_parser(parsed):
    _, _, narratives, _, _ = parsed["train2017"]
    phrases = [p for n in narratives for p in n.phrases]
    assert any(p.is_thing for p in phrases) and any(not p.is_thing for p in phrases)
    assert any(p.is_plural for p in phrases)
    texts = {p.text.lower() for p in phrases}
    assert "it" in texts or "they" in texts


def test_deterministic_and_independent_of_split_sizes(tmp_path):
    a = generate_benchmark(tmp_path / "a", n_train=6, n_val=3, size=96, seed=11)
    generate_benchmark(tmp_path / "b", n_train=6, n_val=3, size=96, seed=11)
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert da == db and len(da) == 4 + 2 * 9
    assert a.images == 9
    # image i depends only on (seed, split, i)
    generate_benchmark(tmp_path / "c", n_train=3, n_val=1, size=96, seed=11)
    dc = _digests(tmp_path / "c")
    for name, digest in dc.items():
        if not name.endswith(".json"):
            assert da[name] == digest, name
    # another seed gives other images
    generate_benchmark(tmp_path / "d", n_train=3, n_val=1, size=96, seed=12)
    dd = _digests(tmp_path / "d")
    assert all(dd[n] != dc[n] for n in dc if n.endswith(".jpg"))


def test_unique_descriptions_identify_exactly_one_thing():
    checked = 0
    for i in range(40):
        scene = make_scene(image_rng(0, "train2017", i), 160)
        descs = unique_descriptions(scene)
        assert set(descs) == {t.index for t in scene.things if t.area > 0}
        texts = [d.text for d in descs.values() if d is not None]
        assert len(set(texts)) == len(texts)
        for t in scene.things:
            for d in referring_descriptions(scene, t):
                assert d.thing == t.index and d.shape == t.shape
                same = [
                    o
                    for o in scene.things
                    if o.shape == d.shape
                    and (d.colour is None or o.colour == d.colour)
                    and (d.size is None or o.size == d.size)
                ]
                if d.position is None:
                    assert same == [t]
                else:
                    assert len(same) >= 2 and t in same
                    x = t.centroid[0]
                    others = [o.centroid[0] for o in same if o is not t]
                    if d.position == "on the left":
                        assert x < min(others)
                    if d.position == "on the right":
                        assert x > max(others)
                checked += 1
    assert checked > 40


def test_cli_writes_and_refuses_to_clobber(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["synth", "--out", str(out), "--train", "2", "--val", "1", "--size", "64", "--quiet"]) == 0
    assert "val2017: 1 images" in capsys.readouterr().out
    before = _digests(out)
    assert main(["synth", "--out", str(out), "--train", "1", "--val", "1", "--size", "64"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _digests(out) == before
    assert (
        main(["synth", "--out", str(out), "--train", "1", "--val", "1", "--size", "64", "--quiet", "--overwrite"]) == 0
    )
    assert len(list((out / "images" / "train2017").iterdir())) == 1
    assert main(["synth", "--out", str(tmp_path / "x"), "--size", "8"]) == 2
    assert "--size" in capsys.readouterr().err

"""`epng check-data` and epng.data.check."""

from __future__ import annotations

import shutil
import time

import numpy as np
from PIL import Image

from epng.cli.main import main
from epng.data.check import check_data
from epng.io.panoptic_png import id_to_rgb


def run_cli(capsys, *args):
    code = main(["check-data", *map(str, args)])
    return code, capsys.readouterr().out


def test_real_root_passes(real_root, capsys):
    code, out = run_cli(capsys, "--data-root", real_root, "--deep")
    assert code == 0, out
    assert "all checks passed" in out
    assert "3 records, 2 narratives with 15 grounded phrases (things 8, stuff 7; singular 11, plural 4)" in out
    assert "1 records without a grounded phrase" in out


def test_missing_paths_listed(real_root, capsys):
    shutil.rmtree(real_root / "annotations" / "panoptic_segmentation")
    (real_root / "annotations" / "panoptic_val2017.json").unlink()
    code, out = run_cli(capsys, "--data-root", real_root, "--split", "val2017", "--split", "train2017")
    assert code == 1
    assert str(real_root / "annotations" / "panoptic_segmentation" / "val2017") in out
    assert str(real_root / "annotations" / "panoptic_val2017.json") in out
    for p in ("images/train2017", "annotations/png_coco_train2017.json", "annotations/panoptic_train2017.json"):
        assert str(real_root / p) in out
    assert "problem(s) found" in out


def test_no_narratives_and_no_root(tmp_path, capsys):
    (tmp_path / "annotations").mkdir()
    code, out = run_cli(capsys, "--data-root", tmp_path)
    assert code == 1 and "png_coco_<split>.json" in out
    code, out = run_cli(capsys, "--data-root", tmp_path / "nowhere")
    assert code == 1 and "benchmark root not found" in out


def test_bad_records_and_files_counted(synthetic, capsys):
    records = synthetic.records
    records[0]["segments"][1]["utterance"] = "cats"  # not in the caption
    synthetic.write_records(records + [dict(records[1], caption="")])  # empty caption (record 2)
    missing = synthetic.image_file(synthetic.image_ids[1])
    missing.unlink()
    result = check_data(synthetic.root)
    assert not result.ok
    counts = {i.what: i.count for i in result.splits[0].issues}
    text = result.format()
    assert "1 narrative record(s) unusable: not found in the caption" in text
    assert "1 narrative record(s) unusable: empty caption" in text
    assert "'cats'" in text and "record 2" in text
    assert "missing image: 1 file(s), 1 narrative(s) affected" in text and str(missing) in text
    # records 0 and 2 fail to parse; of the parsed ones only record 1 uses the missing image
    assert counts == {
        "1 narrative record(s) unusable: not found in the caption": 1,
        "1 narrative record(s) unusable: empty caption": 1,
        "missing image: 1 file(s), 1 narrative(s) affected": 1,
    }


def test_deep_finds_corrupt_image_and_empty_segment(synthetic, capsys):
    bad_jpg = synthetic.image_file(synthetic.image_ids[0])
    bad_jpg.write_bytes(b"\xff\xd8\xff garbage")
    a, b, c = (int(s) for ch in synthetic.records[1]["segments"] for s in ch["segment_ids"])
    ids = np.full((24, 32), a, dtype=np.int64)
    ids[12:] = c  # b has no pixel left
    Image.fromarray(id_to_rgb(ids)).save(synthetic.png_file(synthetic.image_ids[1]))
    code, out = run_cli(capsys, "--data-root", synthetic.root)
    assert code == 0, out  # files exist: the shallow check passes
    code, out = run_cli(capsys, "--data-root", synthetic.root, "--deep")
    assert code == 1
    assert "corrupt image: 1 file(s)" in out and str(bad_jpg) in out
    assert "segment id not in the PNG" in out and str(b) in out
    assert str(synthetic.png_file(synthetic.image_ids[1])) in out


def test_250_images_deep_is_fast(tmp_path, build_synthetic, capsys):
    info = build_synthetic(tmp_path / "big", n_images=250)
    start = time.perf_counter()
    result = check_data(info.root, deep=True)
    elapsed = time.perf_counter() - start
    assert result.ok, result.format()
    assert "250 narratives" in result.format()
    assert elapsed < 10, f"check-data --deep took {elapsed:.1f} s on 250 images"

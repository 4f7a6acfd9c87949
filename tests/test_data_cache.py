"""The memory-mapped split cache: equal to a straightforward parse, rebuilt when its inputs change
or a file is damaged, built once under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from epng.data.dataset import PNGDataset, collate_png
from epng.data.input_format import InputFormat
from epng.data.panoptic import PanopticIndex
from epng.data.png_format import load_narratives
from epng.errors import DataError

SPLIT = "train2017"


@pytest.fixture(autouse=True)
def no_cache_from_the_environment(monkeypatch):
    monkeypatch.delenv("EPNG_CACHE", raising=False)


def copy_root(src: Path, dst: Path) -> Path:
    """A benchmark root with its own json files and the image / PNG folders of ``src`` linked."""
    (dst / "annotations" / "panoptic_segmentation").mkdir(parents=True)
    (dst / "images").mkdir()
    for name in (f"png_coco_{SPLIT}.json", f"panoptic_{SPLIT}.json"):
        shutil.copy(src / "annotations" / name, dst / "annotations" / name)
    (dst / "images" / SPLIT).symlink_to(src / "images" / SPLIT)
    (dst / "annotations" / "panoptic_segmentation" / SPLIT).symlink_to(
        src / "annotations" / "panoptic_segmentation" / SPLIT
    )
    return dst


def dataset(root: Path, tokenizer, cache: Path | None, max_length: int = 512, **kw) -> PNGDataset:
    return PNGDataset(root, SPLIT, InputFormat(tokenizer, 32, max_length=max_length), cache_dir=cache, **kw)


def expected_encoding(tokenizer, narrative, max_length: int) -> dict:
    """Word pieces of a narrative and of each of its phrases, one tokenizer call and plain loops."""
    kw = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    enc = tokenizer(narrative.caption, truncation=True, max_length=max_length, **kw)
    full = tokenizer(narrative.caption, **kw, verbose=False)

    def pieces(e, span):
        return [
            t
            for t, ((s, end), sp) in enumerate(zip(e["offset_mapping"], e["special_tokens_mask"]))
            if not sp and end > s and s < span[1] and end > span[0] and span[1] > span[0]
        ]

    per_phrase = [pieces(enc, p.span) for p in narrative.phrases]
    kept = [k for k, t in enumerate(per_phrase) if t]
    return {
        "input_ids": enc["input_ids"],
        "tokens": [per_phrase[k] for k in kept],
        "kept": kept,
        "lost": [k for k, t in enumerate(per_phrase) if not t],
        "truncated": [
            k for k, (t, p) in enumerate(zip(per_phrase, narrative.phrases)) if not t and pieces(full, p.span)
        ],
    }


def item_state(ds: PNGDataset, i: int) -> tuple:
    s = ds[i]
    return (
        s.narrative,
        s.input_ids.tolist(),
        [t.tolist() for t in s.phrase_tokens],
        s.phrase_segments,
        s.phrase_indices,
        s.truncated_phrase_indices,
        s.image.numpy().tobytes(),
    )


@pytest.mark.parametrize("max_length", [512, 24])
def test_cache_equals_the_plain_parse_item_by_item(synth_dataset, tokenizer, tmp_path, max_length):
    layout_root = synth_dataset
    panoptic = PanopticIndex(layout_root / "annotations" / f"panoptic_{SPLIT}.json")
    narratives, _ = load_narratives(layout_root / "annotations" / f"png_coco_{SPLIT}.json", panoptic)
    built = dataset(layout_root, tokenizer, tmp_path / "cache", max_length=max_length)
    cached = dataset(layout_root, tokenizer, tmp_path / "cache", max_length=max_length)
    memory = dataset(layout_root, tokenizer, None, max_length=max_length)
    assert (built.cache_status, cached.cache_status, memory.cache_status) == ("built", "loaded", "memory")
    assert len(cached) == len(narratives) > 0
    n_truncated = 0
    for i, narrative in enumerate(narratives):
        assert cached.narratives[i] == narrative  # caption, spans, segment ids, thing / plural flags
        exp = expected_encoding(tokenizer, narrative, max_length)
        sample = cached[i]
        assert sample.input_ids.tolist() == exp["input_ids"]
        assert [t.tolist() for t in sample.phrase_tokens] == exp["tokens"]
        assert sample.phrase_indices == exp["kept"] and sample.truncated_phrase_indices == exp["lost"]
        assert sample.phrase_segments == [narrative.phrases[k].segment_ids for k in exp["kept"]]
        batch = collate_png([sample])
        assert batch["attention_mask"][0].tolist() == [1] * len(exp["input_ids"])
        assert item_state(memory, i) == item_state(cached, i)
        n_truncated += len(exp["truncated"])
    assert cached.report().n_truncated_phrases == n_truncated == memory.report().n_truncated_phrases
    assert (n_truncated > 0) == (max_length == 24)
    arrays = cached.narratives
    assert arrays.is_thing.tolist() == [p.is_thing for n in narratives for p in n.phrases]
    assert arrays.is_plural.tolist() == [p.is_plural for n in narratives for p in n.phrases]


def test_changed_json_tokenizer_or_max_length_rebuilds(synth_dataset, tokenizer, tmp_path):
    from transformers import AutoTokenizer

    root, cache = copy_root(synth_dataset, tmp_path / "root"), tmp_path / "cache"
    first = dataset(root, tokenizer, cache)
    assert first.cache_status == "built" and dataset(root, tokenizer, cache).cache_status == "loaded"

    records = json.loads((root / "annotations" / f"png_coco_{SPLIT}.json").read_text())
    records[0]["caption"] = records[0]["caption"].swapcase()  # utterances match whatever the case
    (root / "annotations" / f"png_coco_{SPLIT}.json").write_text(json.dumps(records))
    changed = dataset(root, tokenizer, cache)
    assert changed.cache_status == "built"
    assert changed.narratives[0].caption == records[0]["caption"] != first.narratives[0].caption

    other = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    other.add_tokens(["qzxv"])
    assert dataset(root, other, cache).cache_status == "built"
    assert dataset(root, tokenizer, cache, max_length=64).cache_status == "built"
    assert dataset(root, tokenizer, cache).cache_status == "loaded"  # the changed json's cache is still there
    assert len(list(cache.iterdir())) == 4


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cache_file_is_detected_and_rebuilt(synth_dataset, tokenizer, tmp_path, damage):
    cache = tmp_path / "cache"
    good = dataset(synth_dataset, tokenizer, cache)
    expected = [item_state(good, i) for i in range(len(good))]
    path = good.cache_folder / "tokens.input_ids.npy"
    del good  # it maps the file that is damaged in place below
    data = path.read_bytes()
    path.write_bytes(data[:-7] if damage == "truncate" else data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    with pytest.warns(UserWarning, match="rebuilding"):
        again = dataset(synth_dataset, tokenizer, cache)
    assert again.cache_status.startswith("rebuilt") and str(path) in again.cache_status
    assert path.read_bytes() == data
    assert [item_state(again, i) for i in range(len(again))] == expected


def test_strict_and_skip_read_one_cache_with_the_plain_messages(synth_dataset, tokenizer, tmp_path):
    root, cache = copy_root(synth_dataset, tmp_path / "root"), tmp_path / "cache"
    records = json.loads((root / "annotations" / f"png_coco_{SPLIT}.json").read_text())
    records[1]["caption"] = " "
    (root / "annotations" / f"png_coco_{SPLIT}.json").write_text(json.dumps(records))
    with pytest.raises(DataError) as plain:
        dataset(root, tokenizer, None)
    with pytest.raises(DataError) as cached:
        dataset(root, tokenizer, cache)
    assert str(cached.value) == str(plain.value) and "record 1" in str(plain.value)
    skip = dataset(root, tokenizer, cache, mode="skip")
    assert skip.cache_status == "loaded"
    assert skip.report() == dataset(root, tokenizer, None, mode="skip").report()
    assert skip.report().skipped["empty caption"] == 1 and 1 not in skip.narratives.record_index


def test_a_cache_dir_that_cannot_be_written_is_a_clear_error(synth_dataset, tokenizer, tmp_path):
    from epng.errors import ConfigError

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write the data cache"):
        dataset(synth_dataset, tokenizer, blocker / "cache")


RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
from transformers import AutoTokenizer
from epng.data.dataset import PNGDataset
from epng.data.input_format import InputFormat

root, cache, tok_path, out = sys.argv[1:5]
dist.init_process_group("gloo")
ds = PNGDataset(root, "train2017", InputFormat(AutoTokenizer.from_pretrained(tok_path), 32), cache_dir=cache)
first = ds[0]
state = {"status": ds.cache_status, "n": len(ds), "ids": first.input_ids.tolist(), "folder": str(ds.cache_folder)}
with open(f"{out}/rank{dist.get_rank()}.json", "w") as f:
    json.dump(state, f)
dist.destroy_process_group()
"""


def test_two_torchrun_processes_build_once_and_both_read(synth_dataset, tokenizer, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(port), str(script), str(synth_dataset), str(cache), tokenizer.name_or_path]
    cmd += [str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["status"] for r in ranks] == ["built", "loaded"]
    assert ranks[0]["folder"] == ranks[1]["folder"] and [p.name for p in cache.iterdir()] == [
        Path(ranks[0]["folder"]).name
    ]
    plain = dataset(synth_dataset, tokenizer, None)
    assert ranks[0]["n"] == ranks[1]["n"] == len(plain)
    assert ranks[0]["ids"] == ranks[1]["ids"] == plain[0].input_ids.tolist()
    assert np.array_equal(
        PNGDataset(synth_dataset, SPLIT, InputFormat(tokenizer, 32), cache_dir=cache).narratives.record_index,
        plain.narratives.record_index,
    )


def test_utterances_are_located_in_ascii_captions_as_character_by_character():
    from epng.data.png_format import locate_utterances

    def by_hand(caption: str, utterances: list[str]) -> list[tuple[int, int]]:
        kept = [(i, c.lower()) for i, c in enumerate(caption) if not c.isspace()]
        norm = "".join(c for _, c in kept)
        spans, cursor = [], 0
        for u in utterances:
            needle = "".join(u.split()).lower()
            if not needle:
                start = kept[cursor][0] if cursor < len(kept) else len(caption)
                spans.append((start, start))
                continue
            found = norm.index(needle, cursor)
            spans.append((kept[found][0], kept[found + len(needle) - 1][0] + 1))
            cursor = found + len(needle)
        return spans

    rng = np.random.default_rng(0)
    alphabet = list("abcXYZ .,'\t\n\r\x0b\x1c\x1f")  # with every kind of ASCII whitespace
    for _ in range(300):
        caption = "".join(rng.choice(alphabet, size=int(rng.integers(1, 40))))
        cuts = sorted(rng.integers(0, len(caption) + 1, size=4).tolist())
        utterances = [caption[a:b].upper() for a, b in zip([0] + cuts, cuts + [len(caption)])]
        assert locate_utterances(caption, utterances) == by_hand(caption, utterances), repr(caption)


def test_prepare_builds_the_cache_a_job_then_maps(synth_dataset, tmp_path, capsys):
    from epng.cli.main import main
    from epng.model import preset_config
    from epng.model.text_encoder import load_tokenizer

    args = ["prepare", "--data-root", str(synth_dataset), "--split", SPLIT, "--preset", "epng_lite0_minilm"]
    assert main([*args, "--cache-dir", str(tmp_path)]) == 0
    assert f"{SPLIT}: built {tmp_path}" in capsys.readouterr().out
    config = preset_config("epng_lite0_minilm")
    job = PNGDataset(
        synth_dataset,
        SPLIT,
        InputFormat(load_tokenizer(config), max_length=config.max_text_length),
        cache_dir=tmp_path,
    )
    assert job.cache_status == "loaded"
    assert main(args) == 2 and "EPNG_CACHE" in capsys.readouterr().err  # no cache dir given

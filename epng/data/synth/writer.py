"""Write a synthetic benchmark in the real on-disk layout (:class:`epng.data.layout.SplitLayout`)."""

from __future__ import annotations

import json
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from epng.data.layout import SplitLayout
from epng.data.synth.narrative import make_narratives
from epng.data.synth.scene import Scene, categories, make_scene
from epng.errors import ConfigError
from epng.io.panoptic_png import id_to_rgb
from epng.io.json_file import write_json

SPLITS = ("train2017", "val2017")
#: first image id of each split; image ids are ``base + index`` (so independent of the split sizes)
ID_BASE = {"train2017": 1, "val2017": 10_000_001}
MAX_IMAGES = 10_000_000
MIN_SIZE, MAX_SIZE = 64, 2048
JPEG_QUALITY = 92
TWO_NARRATIVES = 0.25  # share of images with a second narrative


@dataclass
class SplitSummary:
    split: str
    images: int = 0
    narratives: int = 0
    grounded_phrases: int = 0
    segments: int = 0


@dataclass
class SynthSummary:
    out_dir: Path
    size: int
    seed: int
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images(self) -> int:
        return sum(s.images for s in self.splits.values())

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    def lines(self) -> list[str]:
        out = [
            f"{s.split}: {s.images} images, {s.narratives} narratives, {s.grounded_phrases} grounded phrases, "
            f"{s.segments} segments"
            for s in self.splits.values()
        ]
        out.append(
            f"wrote {self.out_dir} ({self.size} px, seed {self.seed}) in {self.seconds:.1f} s "
            f"({self.images_per_second:.0f} images/s)"
        )
        return out


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: a function of (seed, split, index) only."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def image_id(split: str, index: int) -> int:
    return ID_BASE[split] + index


def synth_image(seed: int, split: str, index: int, size: int) -> tuple[int, Scene, list[dict]]:
    """(image id, scene, narrative records) of one synthetic image."""
    rng = image_rng(seed, split, index)
    scene = make_scene(rng, size)
    iid = image_id(split, index)
    records = make_narratives(scene, rng, iid, 2 if rng.random() < TWO_NARRATIVES else 1)
    return iid, scene, records


def _check_args(n_train: int, n_val: int, size: int, seed: int) -> None:
    for name, n in (("train", n_train), ("val", n_val)):
        if not isinstance(n, int) or not 0 <= n <= MAX_IMAGES:
            raise ConfigError(f"--{name} must be an integer in [0, {MAX_IMAGES}], got {n!r}")
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"--size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] pixels, got {size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed!r}")


def _targets(layout: SplitLayout) -> list[Path]:
    return [layout.image_dir, layout.panoptic_dir, layout.narratives_json, layout.panoptic_json]


def _prepare(out_dir: Path, overwrite: bool) -> None:
    existing = []
    for split in SPLITS:
        for p in _targets(SplitLayout(out_dir, split)):
            if p.is_file() or (p.is_dir() and any(p.iterdir())):
                existing.append(p)
    if existing and not overwrite:
        raise ConfigError(
            f"{out_dir} already holds benchmark files (e.g. {existing[0]}); "
            "choose another --out or pass --overwrite to replace them"
        )
    for p in existing:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def write_split(
    out_dir: Path,
    split: str,
    n_images: int,
    size: int,
    seed: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> SplitSummary:
    layout = SplitLayout(out_dir, split)
    layout.image_dir.mkdir(parents=True, exist_ok=True)
    layout.panoptic_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, narratives = [], [], []
    summary = SplitSummary(split)
    for index in range(n_images):
        iid, scene, records = synth_image(seed, split, index, size)
        file_name = f"{iid:012d}.jpg"
        png_path = layout.panoptic_png(iid)
        Image.fromarray(scene.image).save(
            layout.image_dir / file_name, format="JPEG", quality=JPEG_QUALITY, subsampling=0
        )
        Image.fromarray(id_to_rgb(scene.id_map)).save(png_path, format="PNG", compress_level=1)
        images.append({"id": iid, "file_name": file_name, "height": scene.height, "width": scene.width, "license": 0})
        segs = scene.segments()
        annotations.append(
            {
                "image_id": iid,
                "file_name": png_path.name,
                "segments_info": [
                    {
                        "id": s.segment_id,
                        "category_id": s.category_id,
                        "iscrowd": 0,
                        "bbox": list(s.bbox),
                        "area": s.area,
                    }
                    for s in segs
                ],
            }
        )
        narratives += records
        summary.images += 1
        summary.segments += len(segs)
        summary.narratives += len(records)
        summary.grounded_phrases += sum(1 for r in records for c in r["segments"] if c["noun"] and c["segment_ids"])
        if progress is not None:
            progress(split, index + 1, n_images)
    write_json(
        layout.panoptic_json,
        {
            "info": {
                "description": "EPNG synthetic shapes benchmark (epng synth)",
                "version": "1.0",
                "size": size,
                "seed": seed,
            },
            "licenses": [{"id": 0, "name": "generated", "url": ""}],
            "images": images,
            "annotations": annotations,
            "categories": categories(),
        },
        indent=None,
    )
    write_json(layout.narratives_json, narratives, indent=None)
    return summary


def generate_benchmark(
    out_dir: str | Path,
    n_train: int = 400,
    n_val: int = 100,
    size: int = 256,
    seed: int = 0,
    *,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> SynthSummary:
    """Write a synthetic PNG benchmark (splits ``train2017`` and ``val2017``) under ``out_dir``.

    Deterministic: the same arguments give byte-identical files, and image ``i`` of a
    split depends only on (seed, split, i), not on the split sizes. Raises
    :class:`ConfigError` on bad arguments, or when ``out_dir`` already holds
    benchmark files and ``overwrite`` is false.
    """
    _check_args(n_train, n_val, size, seed)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    _prepare(out, overwrite)
    summary = SynthSummary(out, size, seed)
    start = time.perf_counter()
    for split, n in zip(SPLITS, (n_train, n_val)):
        summary.splits[split] = write_split(out, split, n, size, seed, progress)
    summary.seconds = time.perf_counter() - start
    return summary

"""A synthetic RefCOCO-style dataset in the "refer" layout (:mod:`epng.data.refer_layout`), for RES tests.

``generate_refer(out_dir, datasets=("refcoco",), n_images=12, size=256, seed=0)`` draws
``n_images`` synthetic scenes (:func:`epng.data.synth.make_scene`) and writes, for each
dataset::

    <out>/<dataset>/refs(<split_by>).p     protocol-2 pickle of plain dicts (refs)
    <out>/<dataset>/instances.json         COCO instances of every visible thing
    <out>/images/train2014/COCO_train2014_<image_id:012d>.jpg   (shared by the datasets)

Every visible thing that some wording singles out (:func:`referring_descriptions`) gets
one ref whose sentences are up to three such wordings, so each expression refers to
exactly one object: RefCOCO uses them all ("large red circle on the left"), RefCOCO+ only
those without a position word (as the real RefCOCO+ bans location words), RefCOCOg
longer sentences ("the large red circle on the left that is in the sky"). Images are
assigned to a dataset's splits round-robin (image k -> ``splits[k % len(splits)]``).

Segmentations cycle through the three COCO forms: polygons, compressed RLE and
uncompressed RLE (``counts`` a list). A polygon is the exact pixel-edge outline of the
object's visible pixels (:func:`mask_polygons`), checked to decode (pycocotools) to the
very same pixels; an object whose outline cannot be written as polygons (a hole, where a
smaller shape lies wholly inside it) is written as a compressed RLE instead. So every
annotation decodes exactly to the object's visible pixels, whatever its form.

Deterministic: the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from epng.data.refer_layout import IMAGE_SUBDIR, image_file_name
from epng.data.synth.scene import Scene, categories, make_scene
from epng.data.synth.wording import ThingDescription, referring_descriptions, stuff_relation
from epng.data.synth.writer import JPEG_QUALITY, image_rng
from epng.errors import ConfigError
from epng.io.rle import encode_mask, encode_mask_uncompressed, polygons_to_mask

#: dataset -> (split_by, splits written)
SYNTH_REFER_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "refcoco": ("unc", ("val", "testA", "testB")),
    "refcoco+": ("unc", ("val", "testA", "testB")),
    "refcocog": ("umd", ("val", "test")),
}
IMAGE_ID_BASE = 100_000
MAX_SENTENCES = 3
SEG_FORMS = ("polygon", "rle", "rle_uncompressed")


# --------------------------------------------------------------------------- masks -> polygons

_RIGHT = {(1, 0): (0, 1), (0, 1): (-1, 0), (-1, 0): (0, -1), (0, -1): (1, 0)}  # y points down


def _outline_loops(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """Closed loops of pixel-corner points (x, y) around the foreground, clockwise on screen for
    outer boundaries and counter-clockwise for holes; pixel (r, c) spans [c, c+1] x [r, r+1]."""
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    fg = m[1:-1, 1:-1]
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}  # start corner -> directions
    sides = (
        (~m[:-2, 1:-1], (0, 0), (1, 0)),  # background above: top edge, east
        (~m[1:-1, 2:], (1, 0), (0, 1)),  # background right: right edge, south
        (~m[2:, 1:-1], (1, 1), (-1, 0)),  # background below: bottom edge, west
        (~m[1:-1, :-2], (0, 1), (0, -1)),  # background left: left edge, north
    )
    for open_side, (ox, oy), d in sides:
        rows, cols = np.nonzero(fg & open_side)
        for r, c in zip(rows.tolist(), cols.tolist()):
            edges.setdefault((c + ox, r + oy), []).append(d)
    loops = []
    for start in sorted(edges):
        while edges.get(start):
            d0 = edges[start].pop(0)
            loop, d = [start], d0
            v = (start[0] + d[0], start[1] + d[1])
            while True:
                outs = edges[v] + ([d0] if v == start else [])
                right = _RIGHT[d]
                # right turn first (pixels that touch only at a corner get separate loops);
                # the loop closes when that rule picks its first edge again
                nd = next(c for c in (right, d, (-right[0], -right[1])) if c in outs)
                if v == start and nd == d0:
                    break
                edges[v].remove(nd)
                if nd != d:
                    loop.append(v)
                d = nd
                v = (v[0] + d[0], v[1] + d[1])
            if d == d0:  # the start is no corner
                loop = loop[1:]
            loops.append(loop)
    return loops


def _collinear(a, b, c) -> bool:
    return (b[0] - a[0]) * (c[1] - b[1]) == (b[1] - a[1]) * (c[0] - b[0])


def _signed_area2(loop: list[tuple[int, int]]) -> int:
    xs = np.array([p[0] for p in loop], dtype=np.int64)
    ys = np.array([p[1] for p in loop], dtype=np.int64)
    return int((xs * np.roll(ys, -1) - np.roll(xs, -1) * ys).sum())


def mask_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """COCO polygons that pycocotools decodes to exactly ``mask``, or None when there are none
    (an empty mask, a mask with holes, or an outline that does not round-trip).

    Each polygon is the pixel-edge outline of one 4-connected component, its vertices at
    pixel corners (x, y integers), collinear points dropped.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    loops = _outline_loops(mask)
    if any(_signed_area2(loop) <= 0 for loop in loops):  # a hole (counter-clockwise loop)
        return None
    polygons = [[float(v) for p in loop for v in p] for loop in loops]
    if any(len(p) < 6 for p in polygons):  # pragma: no cover - a pixel outline has >= 4 corners
        return None
    if not np.array_equal(polygons_to_mask(polygons, *mask.shape), mask):
        return None
    return polygons


# --------------------------------------------------------------------------- wording


def _sentences(dataset: str, scene: Scene, options: list[ThingDescription]) -> list[str]:
    if dataset == "refcoco+":
        options = [d for d in options if d.position is None]
    texts: list[str] = []
    for d in options:
        if dataset == "refcocog":
            t = scene.things[d.thing]
            text = f"the {d.text}"
            if t.on_stuff >= 0 and scene.stuff[t.on_stuff].area > 0:
                text += f" that is {stuff_relation(scene.stuff[t.on_stuff])} {scene.stuff[t.on_stuff].name}"
        else:
            text = d.text
        if text not in texts:
            texts.append(text)
    return texts[:MAX_SENTENCES]


# --------------------------------------------------------------------------- writer


@dataclass
class ReferSynthSummary:
    out_dir: Path
    n_images: int
    size: int
    seed: int
    refs: dict[str, dict[str, int]] = field(default_factory=dict)  # dataset -> split -> refs
    sentences: dict[str, int] = field(default_factory=dict)
    segmentation_forms: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = []
        for ds, per_split in self.refs.items():
            split_by = SYNTH_REFER_DATASETS[ds][0]
            parts = ", ".join(f"{s} {n}" for s, n in per_split.items())
            out.append(f"{ds} ({split_by}): refs {parts}; {self.sentences[ds]} expressions")
        forms = ", ".join(f"{k} {v}" for k, v in self.segmentation_forms.items())
        out.append(
            f"wrote {self.out_dir} ({self.n_images} images, {self.size} px, seed {self.seed}; "
            f"segmentations: {forms}) in {self.seconds:.1f} s"
        )
        return out


def _image_shape(index: int, size: int) -> tuple[int, int]:
    """Landscape and portrait images alternate (height, width), as in COCO."""
    long = size * 4 // 3
    return (size, long) if index % 2 == 0 else (long, size)


def _check(datasets, n_images, size, seed) -> None:
    for d in datasets:
        if d not in SYNTH_REFER_DATASETS:
            raise ConfigError(f"unknown dataset {d!r}; expected some of {', '.join(SYNTH_REFER_DATASETS)}")
    if not datasets:
        raise ConfigError("no dataset to write")
    if not isinstance(n_images, int) or not 1 <= n_images <= 1_000_000:
        raise ConfigError(f"--images must be an integer in [1, 1000000], got {n_images!r}")
    if not isinstance(size, int) or not 48 <= size <= 2048:
        raise ConfigError(f"--size must be an integer in [48, 2048] pixels, got {size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {seed!r}")


def generate_refer(
    out_dir: str | Path,
    datasets: tuple[str, ...] | list[str] = ("refcoco",),
    n_images: int = 12,
    size: int = 256,
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> ReferSynthSummary:
    """Write a synthetic refer-format dataset (see the module docstring); returns counts.

    Raises :class:`ConfigError` on bad arguments, or when a dataset's files already
    exist under ``out_dir`` and ``overwrite`` is false.
    """
    datasets = list(dict.fromkeys(datasets))
    _check(datasets, n_images, size, seed)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    for ds in datasets:
        split_by = SYNTH_REFER_DATASETS[ds][0]
        for p in (out / ds / f"refs({split_by}).p", out / ds / "instances.json"):
            if p.exists() and not overwrite:
                raise ConfigError(f"{p} already exists; choose another --out or pass --overwrite")
    start = time.perf_counter()
    image_dir = out.joinpath(*IMAGE_SUBDIR)
    image_dir.mkdir(parents=True, exist_ok=True)
    summary = ReferSynthSummary(out, n_images, size, seed, segmentation_forms={f: 0 for f in SEG_FORMS})

    images, annotations = [], []
    things_of: list[tuple[int, Scene, dict[int, int]]] = []  # (image id, scene, thing index -> ann id)
    for k in range(n_images):
        h, w = _image_shape(k, size)
        scene = make_scene(image_rng(seed, "refer-train2014", k), h, w)
        iid = IMAGE_ID_BASE + k
        Image.fromarray(scene.image).save(
            image_dir / image_file_name(iid), format="JPEG", quality=JPEG_QUALITY, subsampling=0
        )
        images.append({"id": iid, "file_name": image_file_name(iid), "height": h, "width": w, "license": 0})
        ann_ids: dict[int, int] = {}
        for t in scene.things:
            if t.area == 0:
                continue
            ann_id = iid * 100 + t.index + 1
            mask = scene.id_map == t.segment_id
            form = SEG_FORMS[(k + t.index) % len(SEG_FORMS)]
            segmentation: object = None
            if form == "polygon":
                segmentation = mask_polygons(mask)
                if segmentation is None:
                    form = "rle"
            if form == "rle":
                segmentation = encode_mask(mask)
            elif form == "rle_uncompressed":
                segmentation = encode_mask_uncompressed(mask)
            summary.segmentation_forms[form] += 1
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": iid,
                    "category_id": t.category_id,
                    "iscrowd": 0,
                    "area": t.area,
                    "bbox": [float(v) for v in t.bbox],
                    "segmentation": segmentation,
                }
            )
            ann_ids[t.index] = ann_id
        things_of.append((iid, scene, ann_ids))

    instances = {
        "info": {"description": "EPNG synthetic refer dataset (epng synth-refer)", "size": size, "seed": seed},
        "licenses": [{"id": 0, "name": "generated", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [c for c in categories() if c["isthing"]],
    }
    for ds in datasets:
        split_by, splits = SYNTH_REFER_DATASETS[ds]
        refs, sent_id = [], 0
        summary.refs[ds] = {s: 0 for s in splits}
        for k, (iid, scene, ann_ids) in enumerate(things_of):
            split = splits[k % len(splits)]
            for t in scene.things:
                if t.index not in ann_ids:
                    continue
                texts = _sentences(ds, scene, referring_descriptions(scene, t))
                if not texts:
                    continue
                sentences = []
                for text in texts:
                    sentences.append({"tokens": text.split(), "raw": text, "sent_id": sent_id, "sent": text})
                    sent_id += 1
                ann_id = ann_ids[t.index]
                refs.append(
                    {
                        "sent_ids": [s["sent_id"] for s in sentences],
                        "file_name": f"COCO_train2014_{iid:012d}_{ann_id}.jpg",
                        "ann_id": ann_id,
                        "ref_id": len(refs),
                        "image_id": iid,
                        "split": split,
                        "sentences": sentences,
                        "category_id": t.category_id,
                    }
                )
                summary.refs[ds][split] += 1
        summary.sentences[ds] = sent_id
        ds_dir = out / ds
        ds_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(ds_dir / f"refs({split_by}).p", pickle.dumps(refs, protocol=2))
        _write_atomic(
            ds_dir / "instances.json", json.dumps(instances, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        )
    summary.seconds = time.perf_counter() - start
    return summary


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)

#!/usr/bin/env python
"""Write a PNG split of real size by replicating the narratives of an `epng synth` split.

The new root links the source's image and panoptic PNG folders and writes two json files:

* ``png_coco_<split>.json``: ``--narratives`` records, copies of the source records in turn;
* ``panoptic_<split>.json``: ``--images`` image entries (copies of the source images in
  turn, each with a new id and the file names of its source, so no image is copied on
  disk), and the copy of each record refers to a copy of its own image. With
  ``--images 0`` the source images are kept and only the narratives are replicated.

    epng synth --out /tmp/synth
    python scripts/make_large_split.py --src /tmp/synth --out /tmp/png133k --narratives 133000 --images 118287
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve(), target_is_directory=True)


def make_large_split(src: Path, out: Path, split: str, n_narratives: int, n_images: int) -> tuple[int, int]:
    """Write the replicated split under ``out``; returns (records, images) written."""
    records = json.loads((src / "annotations" / f"png_coco_{split}.json").read_text(encoding="utf-8"))
    panoptic = json.loads((src / "annotations" / f"panoptic_{split}.json").read_text(encoding="utf-8"))
    if not records:
        raise SystemExit(f"{src}: no narrative in png_coco_{split}.json")
    src_images = {int(im["id"]): im for im in panoptic["images"]}
    src_anns = {int(a["image_id"]): a for a in panoptic["annotations"]}
    order = sorted(src_anns)  # source images with an annotation, copied in this order
    slot = {image_id: k for k, image_id in enumerate(order)}
    n_src = len(order)

    if n_images:
        if n_images < n_src:
            raise SystemExit(f"--images {n_images}: at least the {n_src} source images are needed")
        images, anns = [], []
        for j in range(n_images):
            source = order[j % n_src]
            images.append({**src_images[source], "id": j + 1})
            anns.append({**copy.deepcopy(src_anns[source]), "image_id": j + 1})
        panoptic = {**panoptic, "images": images, "annotations": anns}
        copies = -(-n_images // n_src)

        def new_image_id(source: int, rep: int) -> int:
            k = slot[source]
            c = rep % copies
            while k + c * n_src >= n_images:  # the last copy round is incomplete
                c -= 1
            return k + c * n_src + 1
    else:

        def new_image_id(source: int, rep: int) -> int:
            return source

    out_records = []
    for i in range(n_narratives):
        rec = records[i % len(records)]
        out_records.append({**rec, "image_id": str(new_image_id(int(rec["image_id"]), i // len(records)))})
    ann = out / "annotations"
    _write(ann / f"png_coco_{split}.json", out_records)
    _write(ann / f"panoptic_{split}.json", panoptic)
    _link(src / "images" / split, out / "images" / split)
    _link(src / "annotations" / "panoptic_segmentation" / split, ann / "panoptic_segmentation" / split)
    return len(out_records), len(panoptic["annotations"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, type=Path, help="an `epng synth` root")
    parser.add_argument("--out", required=True, type=Path, help="the root to write")
    parser.add_argument("--split", default="train2017")
    parser.add_argument("--narratives", type=int, default=133_000)
    parser.add_argument("--images", type=int, default=0, help="image entries in the panoptic json (0: the source's)")
    args = parser.parse_args(argv)
    n_records, n_images = make_large_split(args.src, args.out, args.split, args.narratives, args.images)
    sizes = {p.name: p.stat().st_size / 2**20 for p in (args.out / "annotations").glob("*.json")}
    print(
        f"{args.out}: {n_records} narratives, {n_images} images; "
        + ", ".join(f"{k} {v:.0f} MiB" for k, v in sizes.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

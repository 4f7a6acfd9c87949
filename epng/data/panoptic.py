"""COCO panoptic annotations: the json index of images and segments, and what an id map says about segments.

The panoptic json lists ``images`` (id, file name, size), ``categories`` (with
``isthing``) and one ``annotations`` entry per image: the file name of its panoptic PNG
and its ``segments_info`` (segment id -> category id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epng.errors import DataError
from epng.io.json_file import load_json


def _lookup(wanted: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel id of ``flat``: its position in the sorted unique ``wanted`` and whether it is there."""
    pos = np.searchsorted(wanted, flat)
    np.minimum(pos, wanted.size - 1, out=pos)
    return pos, wanted[pos] == flat


def phrase_masks(id_map: np.ndarray, segment_sets: Sequence[Iterable[int]]) -> np.ndarray:
    """``(P, h, w)`` bool: mask ``p`` is the union of the pixels of the segment ids in ``segment_sets[p]``.

    This is the ground truth of a grounded phrase, at the id map's resolution. Void (0) is
    background unless listed; an id that is absent gives no pixel, an empty set an empty
    mask. One sorted lookup of the map serves all phrases.
    """
    ids = np.asarray(id_map)
    h, w = ids.shape
    sets = [np.asarray(list(s), dtype=np.int64) for s in segment_sets]
    wanted = np.unique(np.concatenate(sets)) if sets else np.zeros(0, dtype=np.int64)
    if wanted.size == 0:
        return np.zeros((len(sets), h, w), dtype=bool)
    pos, hit = _lookup(wanted, ids.reshape(-1).astype(np.int64, copy=False))
    pos[~hit] = wanted.size  # the last column: "none of the listed segments"
    member = np.zeros((len(sets), wanted.size + 1), dtype=bool)
    for p, segments in enumerate(sets):
        member[p, np.searchsorted(wanted, segments)] = True
    return member[:, pos].reshape(len(sets), h, w)


def segment_pixel_counts(id_map: np.ndarray, segment_ids: Iterable[int]) -> dict[int, int]:
    """Number of pixels of each of ``segment_ids`` in ``id_map`` (0 for an absent id)."""
    wanted = np.unique(np.asarray(list(segment_ids), dtype=np.int64))
    if wanted.size == 0:
        return {}
    pos, hit = _lookup(wanted, np.asarray(id_map).reshape(-1))
    counts = np.bincount(pos[hit], minlength=wanted.size)
    return {int(s): int(c) for s, c in zip(wanted, counts)}


@dataclass(frozen=True)
class PanopticImage:
    """One image of the panoptic json: its file, size, and segment id -> category id."""

    image_id: int
    file_name: str
    height: int
    width: int
    png_name: str
    segment_category: dict[int, int]


class PanopticIndex:
    """Index of a COCO panoptic json: images, their segments and the categories."""

    def __init__(self, json_path: str | Path):
        self.path = Path(json_path)
        data = load_json(self.path)
        if not isinstance(data, dict):
            raise DataError(f"{self.path}: expected a COCO panoptic json object, got {type(data).__name__}")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DataError(f"{self.path}: missing or malformed '{key}' list")
        try:
            self.categories: dict[int, dict] = {int(c["id"]): c for c in data["categories"]}
            images = {int(im["id"]): im for im in data["images"]}
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{self.path}: malformed category or image entry ({err!r})") from None
        self.images: dict[int, PanopticImage] = {}
        for i, ann in enumerate(data["annotations"]):
            try:
                image_id = int(ann["image_id"])
                im = images[image_id]
                segments = {int(s["id"]): int(s["category_id"]) for s in ann["segments_info"]}
                entry = PanopticImage(
                    image_id=image_id,
                    file_name=str(im["file_name"]),
                    height=int(im["height"]),
                    width=int(im["width"]),
                    png_name=str(ann["file_name"]),
                    segment_category=segments,
                )
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(f"{self.path}: annotations[{i}] is malformed ({err!r})") from None
            unknown = sorted(c for c in segments.values() if c not in self.categories)
            if unknown:
                raise DataError(f"{self.path}: annotations[{i}] uses unknown category ids {unknown}")
            self.images[image_id] = entry

    def image(self, image_id: int) -> PanopticImage:
        try:
            return self.images[image_id]
        except KeyError:
            raise DataError(f"{self.path}: image {image_id} has no panoptic annotation") from None

    def is_thing(self, image_id: int, segment_id: int) -> bool:
        category = self.image(image_id).segment_category[segment_id]
        return bool(self.categories[category]["isthing"])

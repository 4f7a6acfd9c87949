"""COCO panoptic annotations: the json index of images and segments, and what an id map says about segments.

The panoptic json lists ``images`` (id, file name, size), ``categories`` (with
``isthing``) and one ``annotations`` entry per image: the file name of its panoptic PNG
and its ``segments_info`` (segment id -> category id).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epng.data.columns import StringColumn, offsets_of
from epng.errors import DataError
from epng.io.json_file import is_int, load_json


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


#: the arrays of a :class:`PanopticIndex`, one entry per annotated image (ascending id) or per segment
PANOPTIC_ARRAYS = (
    "image_ids",
    "heights",
    "widths",
    "file_names",
    "file_name_offsets",
    "png_names",
    "png_name_offsets",
    "segment_offsets",
    "segment_ids",
    "segment_categories",
)


class PanopticIndex:
    """Index of a COCO panoptic json: images, their segments and the categories.

    The images and segments are held in flat arrays (:data:`PANOPTIC_ARRAYS`, see
    :meth:`arrays`), so an index of a hundred thousand images is a few arrays that a
    cache can memory-map (:meth:`from_arrays`); :meth:`image` and :attr:`images` build a
    :class:`PanopticImage` on access. An image id annotated twice keeps its last annotation.
    """

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
        entries: dict[int, tuple] = {}
        for i, ann in enumerate(data["annotations"]):
            try:
                image_id = int(ann["image_id"])
                im = images[image_id]
                segments = {int(s["id"]): int(s["category_id"]) for s in ann["segments_info"]}
                entry = (str(im["file_name"]), int(im["height"]), int(im["width"]), str(ann["file_name"]), segments)
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(f"{self.path}: annotations[{i}] is malformed ({err!r})") from None
            unknown = sorted(c for c in segments.values() if c not in self.categories)
            if unknown:
                raise DataError(f"{self.path}: annotations[{i}] uses unknown category ids {unknown}")
            entries[image_id] = entry
        ids = sorted(entries)
        rows = [entries[i] for i in ids]
        files, pngs = StringColumn.from_strings(r[0] for r in rows), StringColumn.from_strings(r[3] for r in rows)
        self._set_arrays(
            {
                "image_ids": np.asarray(ids, dtype=np.int64),
                "heights": np.asarray([r[1] for r in rows], dtype=np.int64),
                "widths": np.asarray([r[2] for r in rows], dtype=np.int64),
                "file_names": files.data,
                "file_name_offsets": files.offsets,
                "png_names": pngs.data,
                "png_name_offsets": pngs.offsets,
                "segment_offsets": offsets_of([len(r[4]) for r in rows]),
                "segment_ids": np.asarray([s for r in rows for s in r[4]], dtype=np.int64),
                "segment_categories": np.asarray([c for r in rows for c in r[4].values()], dtype=np.int64),
            }
        )

    @classmethod
    def from_arrays(cls, json_path: str | Path, arrays: dict[str, np.ndarray], categories: dict[int, dict]):
        """The index that :meth:`arrays` and :attr:`categories` describe (e.g. memory-mapped from a cache)."""
        index = cls.__new__(cls)
        index.path = Path(json_path)
        index.categories = {int(k): v for k, v in categories.items()}
        index._set_arrays(arrays)
        return index

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self._arrays = {name: arrays[name] for name in PANOPTIC_ARRAYS}
        a = self._arrays
        self._ids = a["image_ids"]
        self._files = StringColumn(a["file_names"], a["file_name_offsets"])
        self._pngs = StringColumn(a["png_names"], a["png_name_offsets"])
        self._thing = {c: bool(v["isthing"]) for c, v in self.categories.items()}
        self.images: Mapping[int, PanopticImage] = _Images(self)

    def arrays(self) -> dict[str, np.ndarray]:
        """The flat arrays of the index (:data:`PANOPTIC_ARRAYS`)."""
        return dict(self._arrays)

    def position(self, image_id: int) -> int:
        """Row of ``image_id`` in :meth:`arrays`, or -1 when it has no annotation."""
        k = int(np.searchsorted(self._ids, image_id))
        return k if k < len(self._ids) and self._ids[k] == image_id else -1

    def _segments_at(self, k: int) -> dict[int, int]:
        a = self._arrays
        s, e = int(a["segment_offsets"][k]), int(a["segment_offsets"][k + 1])
        return dict(zip(a["segment_ids"][s:e].tolist(), a["segment_categories"][s:e].tolist()))

    def _image_at(self, k: int) -> PanopticImage:
        a = self._arrays
        return PanopticImage(
            image_id=int(self._ids[k]),
            file_name=self._files[k],
            height=int(a["heights"][k]),
            width=int(a["widths"][k]),
            png_name=self._pngs[k],
            segment_category=self._segments_at(k),
        )

    def segments(self, image_id: int) -> dict[int, int] | None:
        """Segment id -> category id of an image, or None when it has no annotation."""
        k = self.position(image_id)
        return None if k < 0 else self._segments_at(k)

    def image(self, image_id: int) -> PanopticImage:
        k = self.position(image_id)
        if k < 0:
            raise DataError(f"{self.path}: image {image_id} has no panoptic annotation")
        return self._image_at(k)

    def file_names(self, image_ids: np.ndarray) -> list[tuple[str, str]]:
        """(image file name, panoptic PNG file name) of each of ``image_ids``, in one pass over the names."""
        k = np.minimum(np.searchsorted(self._ids, image_ids), max(len(self._ids) - 1, 0))
        absent = np.flatnonzero(self._ids[k] != image_ids) if len(self._ids) else np.arange(len(image_ids))
        if len(absent):
            raise DataError(f"{self.path}: image {int(image_ids[absent[0]])} has no panoptic annotation")
        return list(zip(self._files.take(k), self._pngs.take(k)))

    def category_is_thing(self, category_id: int) -> bool:
        return self._thing[category_id]

    def is_thing(self, image_id: int, segment_id: int) -> bool:
        return self.category_is_thing(self.image(image_id).segment_category[segment_id])


class _Images(Mapping):
    """Image id -> :class:`PanopticImage` of an index, built on access."""

    def __init__(self, index: PanopticIndex):
        self._index = index

    def __getitem__(self, image_id: int) -> PanopticImage:
        k = self._index.position(image_id) if is_int(image_id) else -1
        if k < 0:
            raise KeyError(image_id)
        return self._index._image_at(k)

    def __iter__(self) -> Iterator[int]:
        return iter(self._index._ids.tolist())

    def __len__(self) -> int:
        return len(self._index._ids)

"""COCO panoptic annotations: the json index and the id-encoded PNGs (spec section 3)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from epng.errors import DataError


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64 segment ids, id = R + 256*G + 256^2*B (0 = void)."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer segment ids -> (H, W, 3) uint8, the inverse of :func:`rgb_to_id`."""
    ids = ids.astype(np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256**3:
        raise ValueError("segment ids must lie in [0, 256**3)")
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)


def read_id_png(path: Path) -> np.ndarray:
    """Decode a panoptic PNG into an (H, W) int64 segment-id map."""
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: panoptic PNG not found") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable panoptic PNG ({err})") from None
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise DataError(f"{path}: panoptic PNG decoded to an unexpected shape {rgb.shape}")
    return rgb_to_id(rgb)


def phrase_gt_mask(id_map: np.ndarray, segment_ids) -> np.ndarray:
    """Ground truth of one phrase: ``(h, w)`` bool, the union of the pixels of its segments
    (spec section 4). Void (0) is background; an id that is absent gives no pixel."""
    ids = np.asarray(list(segment_ids), dtype=np.int64)
    return np.isin(np.asarray(id_map), ids)


def segment_pixel_counts(id_map: np.ndarray, segment_ids) -> dict[int, int]:
    """Number of pixels of each of ``segment_ids`` in ``id_map`` (0 for an absent id)."""
    wanted = np.unique(np.asarray(list(segment_ids), dtype=np.int64))
    if wanted.size == 0:
        return {}
    flat = np.asarray(id_map).reshape(-1)
    pos = np.searchsorted(wanted, flat)
    np.minimum(pos, wanted.size - 1, out=pos)
    hit = wanted[pos] == flat
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


def load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err})") from None

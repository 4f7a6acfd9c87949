"""COCO segmentations (polygons, compressed or uncompressed RLE) validated and decoded to masks.

A segmentation is either a list of polygons (each a flat list of ``x, y`` pixel
coordinates; fewer than 3 points have no area and are dropped) or an RLE dict
``{"size": [h, w], "counts": ...}`` of the image's size. Every problem raises
:class:`InvalidRLE` (a ``ValueError``) with a one-line description.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np

from epng.io.rle import InvalidRLE, decode_rle, normalize_rle, polygons_to_mask


def _check_polygons(segmentation: list) -> list[list[float]]:
    """Validated polygons (lists of x, y pairs); polygons of fewer than 3 points have no area and are dropped."""
    polygons = []
    for k, poly in enumerate(segmentation):
        numbers = isinstance(poly, (list, tuple)) and all(isinstance(v, Real) and not isinstance(v, bool) for v in poly)
        if not numbers:
            raise InvalidRLE(f"polygon {k} is not a list of numbers")
        if len(poly) % 2:
            raise InvalidRLE(f"polygon {k} has an odd number of coordinates ({len(poly)})")
        if not all(math.isfinite(v) for v in poly):
            raise InvalidRLE(f"polygon {k} has a non-finite coordinate")
        if len(poly) >= 6:
            polygons.append([float(v) for v in poly])
    if not polygons:
        raise InvalidRLE("no polygon with at least 3 points")
    return polygons


def check_segmentation(segmentation: Any, size: tuple[int, int]) -> None:
    """Raise :class:`InvalidRLE` (a ``ValueError``) unless ``segmentation`` is polygons or a valid RLE of ``size``."""
    if isinstance(segmentation, list):
        _check_polygons(segmentation)
    elif isinstance(segmentation, dict):
        normalize_rle(segmentation, size)
    else:
        raise InvalidRLE(f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}")


def decode_segmentation(segmentation: Any, size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool mask of a COCO segmentation (polygons, compressed or uncompressed RLE) at ``size``."""
    h, w = int(size[0]), int(size[1])
    if isinstance(segmentation, dict):
        return decode_rle(segmentation, (h, w))
    if not isinstance(segmentation, list):
        raise InvalidRLE(f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}")
    return polygons_to_mask(_check_polygons(segmentation), h, w)

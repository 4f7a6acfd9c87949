"""Panoptic PNGs: a segment-id map stored as RGB pixels, ``id = R + 256 G + 256^2 B`` (0 = void)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from epng.errors import DataError


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64 segment ids."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer segment ids in [0, 256**3) -> (H, W, 3) uint8 pixels, the inverse of :func:`rgb_to_id`.

    R, G, B are the three low bytes of the id as a little-endian uint32.
    """
    ids = np.asarray(ids)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256**3:
        raise ValueError("segment ids must lie in [0, 256**3)")
    h, w = ids.shape
    return np.ascontiguousarray(ids.astype("<u4").view(np.uint8).reshape(h, w, 4)[..., :3])


def read_id_png(path: str | Path) -> np.ndarray:
    """Decode a panoptic PNG into an (H, W) int64 segment-id map; :class:`DataError` naming the
    file when it is missing or cannot be decoded."""
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

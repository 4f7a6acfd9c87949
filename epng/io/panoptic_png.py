"""Panoptic PNGs: a segment-id map stored as RGB pixels, ``id = R + 256 G + 256^2 B`` (0 = void)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from epng.errors import DataError
from epng.io.image_header import open_image_header
from epng.io.limits import InputLimits


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


def read_id_png(path: str | Path, limits: InputLimits | None = None) -> np.ndarray:
    """Decode a panoptic PNG into an (H, W) int64 segment-id map; :class:`DataError` naming the
    file when it is missing, cannot be decoded, or declares more pixels than the input limits
    allow (checked on its header, before decoding)."""
    with open_image_header(path, limits, "panoptic PNG not found", "unreadable panoptic PNG") as image:
        try:
            rgb = np.asarray(image.convert("RGB"))
        except Exception as err:  # PIL's decoders raise many types on damaged files
            raise DataError(f"{path}: unreadable panoptic PNG ({err})") from None
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise DataError(f"{path}: panoptic PNG decoded to an unexpected shape {rgb.shape}")
    return rgb_to_id(rgb)

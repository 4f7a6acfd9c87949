"""COCO masks: run-length encoding (RLE) with validation, and polygons, over ``pycocotools.mask``.

A COCO RLE is ``{"size": [h, w], "counts": ...}``; the runs alternate background /
foreground, start with background and walk the mask in column-major (Fortran)
order. ``counts`` comes in two forms, both accepted here:

* **compressed**: a string (or bytes) in COCO's LEB128-like text code, the form
  written by :func:`encode_mask` and by ``pycocotools.mask.encode``;
* **uncompressed**: a list of non-negative integer run lengths.

``pycocotools`` trusts its input: a compressed string whose runs add up to more
than ``h * w`` makes its decoder write past the mask buffer, and characters outside
the code's alphabet are silently mis-decoded. :func:`normalize_rle` therefore
parses the counts here first (vectorised with numpy) and checks them before
anything reaches pycocotools. Every problem raises :class:`InvalidRLE` (a
``ValueError``) with a one-line description.

COCO also writes a mask as polygons (lists of ``x, y`` pixel-corner coordinates);
:func:`polygons_to_mask` rasterises them the way COCO does, through pycocotools.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from epng.io.json_file import is_int

# The text code stores 5 bits per character, so a 32-bit run length needs at most
# 7 characters (the top bit of the last character's payload is a sign bit).
_MAX_CHARS_PER_NUMBER = 7
_MAX_RUN = 2**32 - 1  # pycocotools stores run lengths as uint32


class InvalidRLE(ValueError):
    """A segmentation that is not a valid COCO RLE of the expected size."""


def check_size(size: Any, expected: tuple[int, int] | None = None) -> tuple[int, int]:
    """Validate an RLE ``size`` ([h, w], non-negative integers), optionally against ``expected``."""
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(is_int(v) for v in size):
        raise InvalidRLE(f"'size' must be a list of two integers [height, width], got {size!r}")
    h, w = int(size[0]), int(size[1])
    if h < 0 or w < 0:
        raise InvalidRLE(f"'size' must not be negative, got {[h, w]}")
    if expected is not None and (h, w) != (int(expected[0]), int(expected[1])):
        raise InvalidRLE(
            f"RLE size [{h}, {w}] does not match the image's original size [{int(expected[0])}, {int(expected[1])}]"
        )
    return h, w


def decode_counts_string(counts: str | bytes) -> np.ndarray:
    """Run lengths (int64) of a compressed COCO counts string, validated character by character.

    Mirrors pycocotools' ``rleFrString``: each number is a little-endian sequence of
    5-bit groups in characters ``'0'..'o'`` (value + 48), bit 0x20 means "more
    characters follow", bit 0x10 of the last group is the sign; from the fourth
    number on, each value is a difference to the run two places before.
    Raises :class:`InvalidRLE` on a character outside the alphabet, a number cut off
    at the end of the string, an over-long number, or a negative / too large run.
    """
    if isinstance(counts, str):
        try:
            raw = counts.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidRLE("'counts' contains non-ASCII characters") from None
    elif isinstance(counts, (bytes, bytearray)):
        raw = bytes(counts)
    else:
        raise InvalidRLE(f"'counts' must be a string or a list of integers, got {type(counts).__name__}")
    if not raw:
        return np.zeros(0, dtype=np.int64)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    bad = np.flatnonzero((c < 0) | (c > 63))
    if bad.size:
        pos = int(bad[0])
        raise InvalidRLE(
            f"'counts' has character {chr(raw[pos])!r} at position {pos}, outside the RLE alphabet '0'..'o'"
        )
    more = (c & 0x20) != 0
    if more[-1]:
        raise InvalidRLE("'counts' ends in the middle of a number (truncated string)")
    ends = np.flatnonzero(~more)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > _MAX_CHARS_PER_NUMBER:
        k = int(np.argmax(lengths > _MAX_CHARS_PER_NUMBER))
        raise InvalidRLE(
            f"'counts' number {k} spans {int(lengths[k])} characters (at most {_MAX_CHARS_PER_NUMBER} fit a run length)"
        )
    shift = 5 * (np.arange(c.size, dtype=np.int64) - np.repeat(starts, lengths))
    x = np.add.reduceat((c & 0x1F) << shift, starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] |= np.left_shift(np.int64(-1), 5 * lengths[negative])
    # Undo the delta coding: run m (m >= 3) is stored relative to run m - 2.
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    # pycocotools adds the *stored* (uint32) previous run, so the cumulative sums
    # above equal its result exactly as long as every partial run is in range.
    if runs.min() < 0:
        k = int(np.argmax(runs < 0))
        raise InvalidRLE(f"'counts' decodes to a negative run length at run {k}")
    if runs.max() > _MAX_RUN:
        raise InvalidRLE("'counts' decodes to a run length above 2**32 - 1")
    return runs


def encode_counts_string(runs: np.ndarray | list[int]) -> str:
    """Compressed COCO counts string of a list of run lengths (the inverse of :func:`decode_counts_string`)."""
    runs = np.asarray(runs, dtype=np.int64)
    out = bytearray()
    for m, value in enumerate(runs.tolist()):
        x = value - int(runs[m - 2]) if m > 2 else value
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(c + 48)
    return out.decode("ascii")


def normalize_rle(segmentation: Any, expected_size: tuple[int, int] | None = None) -> dict:
    """Validate a COCO RLE and return it in compressed form, ready for pycocotools.

    Returns ``{"size": [h, w], "counts": bytes}``. ``counts`` may be a compressed
    string / bytes or an uncompressed list of run lengths; either way the run
    lengths must be non-negative and add up to exactly ``h * w``. Keys other than
    ``size`` and ``counts`` are ignored. With ``expected_size`` the size must match.
    """
    if not isinstance(segmentation, dict):
        raise InvalidRLE(f"expected a COCO RLE object {{'size', 'counts'}}, got {type(segmentation).__name__}")
    for key in ("size", "counts"):
        if key not in segmentation:
            raise InvalidRLE(f"segmentation has no '{key}'")
    h, w = check_size(segmentation["size"], expected_size)
    counts = segmentation["counts"]
    if isinstance(counts, (list, tuple)):
        if not all(is_int(v) for v in counts):
            raise InvalidRLE("uncompressed 'counts' must be a list of integers")
        runs = np.asarray(counts, dtype=np.int64) if counts else np.zeros(0, dtype=np.int64)
        if runs.size and runs.min() < 0:
            raise InvalidRLE("uncompressed 'counts' has a negative run length")
        if runs.size and runs.max() > _MAX_RUN:
            raise InvalidRLE("uncompressed 'counts' has a run length above 2**32 - 1")
        _check_total(runs, h, w)
        return {"size": [h, w], "counts": encode_counts_string(runs).encode("ascii")}
    runs = decode_counts_string(counts)
    _check_total(runs, h, w)
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    return {"size": [h, w], "counts": raw}


def _check_total(runs: np.ndarray, h: int, w: int) -> None:
    total = int(runs.sum())
    if total != h * w:
        raise InvalidRLE(f"'counts' run lengths add up to {total}, not height * width = {h} * {w} = {h * w}")


def decode_rle(segmentation: Any, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Validate and decode a COCO RLE into an (h, w) bool mask."""
    rle = normalize_rle(segmentation, expected_size)
    h, w = rle["size"]
    if h * w == 0:
        return np.zeros((h, w), dtype=bool)
    with warnings.catch_warnings():
        # pycocotools' Cython decoder trips numpy 2's __array__(copy=...) deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = mask_utils.decode(rle)
    return mask.astype(bool, copy=False)


def encode_mask(mask: np.ndarray) -> dict:
    """Encode an (h, w) binary mask as a JSON-ready compressed RLE ``{"size": [h, w], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (h, w) mask, got shape {mask.shape}")
    h, w = mask.shape
    if h * w == 0:
        return {"size": [int(h), int(w)], "counts": encode_counts_string([h * w])}
    rle = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(h), int(w)], "counts": rle["counts"].decode("ascii")}


def encode_mask_uncompressed(mask: np.ndarray) -> dict:
    """Encode an (h, w) binary mask as an uncompressed RLE ``{"size": [h, w], "counts": [run, ...]}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (h, w) mask, got shape {mask.shape}")
    h, w = mask.shape
    flat = (mask != 0).reshape(-1, order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:  # the runs start with background
        runs = [0] + runs
    return {"size": [int(h), int(w)], "counts": runs}


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (their union) with pycocotools, as an (h, w) bool mask.

    The polygons are not validated here: pass lists of at least 3 finite ``x, y`` pairs.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # see decode_rle
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        mask = mask_utils.decode(rle)
    return mask.astype(bool, copy=False)

"""The files of a PNG item: the image and the panoptic PNG of a narrative, found, loaded and checked.

An item is good when its image file and panoptic PNG exist, are within the input limits
(:mod:`epng.io.limits`, checked on the file headers before decoding) and decode, both have the
size the panoptic json gives, and every segment id of every grounded phrase has pixels
in the PNG (at original resolution). A bad item raises (or is reported as) a
:class:`BadItemError` whose ``reason`` is one of the skip reasons of
:mod:`epng.data.skips` and whose ``path`` is the file at fault.

Only decoding imports torch (:mod:`epng.io.images`), so checking that files exist stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from epng.data.layout import SplitLayout
from epng.data.narrative_table import NarrativeView
from epng.data.panoptic import PanopticImage, PanopticIndex, segment_pixel_counts
from epng.data.png_format import Narrative
from epng.data.skips import (
    CORRUPT_IMAGE,
    CORRUPT_PNG,
    MISSING_IMAGE,
    MISSING_PNG,
    OVER_LIMIT,
    SEGMENT_WITHOUT_PIXELS,
    SIZE_MISMATCH,
)
from epng.errors import BadItemError, DataError, InputLimitError
from epng.io.panoptic_png import read_id_png

if TYPE_CHECKING:
    import torch


@dataclass
class ItemProblem:
    """A bad item found by :func:`validate_items`."""

    narrative: int  # record index in the narratives json
    image_id: int
    reason: str
    message: str
    path: str = ""  # the file at fault


def image_path(layout: SplitLayout, panoptic: PanopticIndex, image_id: int) -> Path:
    """The image file of an image: the ``file_name`` of its entry in the panoptic json."""
    return layout.image_dir / panoptic.image(image_id).file_name


def png_path(layout: SplitLayout, panoptic: PanopticIndex, image_id: int) -> Path:
    """The panoptic PNG of an image: the ``file_name`` of its panoptic annotation (COCO
    standard; ``<image_id:012d>.png`` in the real benchmark)."""
    return layout.panoptic_dir / panoptic.image(image_id).png_name


def _where(layout: SplitLayout, index: int, image_id: int) -> str:
    return f"[narrative record {index} of {layout.narratives_json}, image {image_id}]"


def load_item_arrays(
    layout: SplitLayout, panoptic: PanopticIndex, narrative: Narrative
) -> tuple[torch.Tensor, np.ndarray]:
    """Decode and check the image and id map of one narrative (what ``PNGDataset`` reads).

    Returns ``(image, id_map)``: ``(3, h, w)`` uint8 tensor and ``(h, w)`` int64 array.
    Raises :class:`BadItemError` naming the file and the record when the item is bad.
    """
    from epng.io.images import decode_image_file  # torch: only when decoding

    info = panoptic.image(narrative.image_id)
    where = _where(layout, narrative.index, narrative.image_id)
    img_file, png_file = image_path(layout, panoptic, info.image_id), png_path(layout, panoptic, info.image_id)
    try:
        image = decode_image_file(img_file)
    except DataError as err:
        reason = _reason(err, img_file, MISSING_IMAGE, CORRUPT_IMAGE)
        raise BadItemError(f"{err} {where}", reason, str(img_file)) from None
    try:
        id_map = read_id_png(png_file)
    except DataError as err:
        reason = _reason(err, png_file, MISSING_PNG, CORRUPT_PNG)
        raise BadItemError(f"{err} {where}", reason, str(png_file)) from None
    _check_sizes(info, img_file, tuple(image.shape[-2:]), png_file, id_map.shape, where)
    _check_segments(narrative, id_map, png_file, where)
    return image, id_map


def _reason(err: DataError, path: Path, missing: str, corrupt: str) -> str:
    """The skip reason of a file that did not decode."""
    if isinstance(err, InputLimitError):
        return OVER_LIMIT
    return missing if not path.is_file() else corrupt


def _check_sizes(info: PanopticImage, img_file: Path, img_hw, png_file: Path, png_hw, where: str) -> None:
    expected = (info.height, info.width)
    for path, what, hw in ((img_file, "image", img_hw), (png_file, "panoptic PNG", png_hw)):
        if tuple(hw) != expected:
            message = (
                f"{path}: {what} is {hw[0]}x{hw[1]} but the panoptic json says {expected[0]}x{expected[1]} {where}"
            )
            raise BadItemError(message, SIZE_MISMATCH, str(path))


def _check_segments(
    narrative: Narrative, id_map: np.ndarray, png_file: Path, where: str, counts: dict[int, int] | None = None
) -> None:
    if counts is None:
        counts = segment_pixel_counts(id_map, {s for p in narrative.phrases for s in p.segment_ids})
    for phrase in narrative.phrases:
        absent = [s for s in phrase.segment_ids if counts.get(s, 0) == 0]
        if absent:
            message = (
                f"{png_file}: segment ids {absent} of segments[{phrase.chunk_index}] {phrase.text!r} "
                f"have no pixel in the panoptic PNG {where}"
            )
            raise BadItemError(message, SEGMENT_WITHOUT_PIXELS, str(png_file))


def validate_items(
    layout: SplitLayout,
    panoptic: PanopticIndex,
    narratives: NarrativeView,
    deep: bool = False,
) -> list[ItemProblem]:
    """The bad items among ``narratives``, one problem per bad narrative, in record order.

    Checks that every image file and panoptic PNG exists; with ``deep`` also everything
    :func:`load_item_arrays` checks. Files are checked once per image, and ``deep``
    decodes each image and PNG once. Only ``deep`` builds the narratives' objects.
    """
    image_ids, records = narratives.image_id, narratives.record_index
    images, image_of = np.unique(image_ids, return_inverse=True)  # image_of: (n,) position in `images`
    image_dir, panoptic_dir = str(layout.image_dir), str(layout.panoptic_dir)
    missing: dict[int, tuple[str, Path, str]] = {}  # position in `images` -> (reason, path, message)
    for u, (file_name, png_name) in enumerate(panoptic.file_names(images)):
        if not os.path.isfile(os.path.join(image_dir, file_name)):
            path = layout.image_dir / file_name
            missing[u] = (MISSING_IMAGE, path, f"{path}: image file not found")
        elif not os.path.isfile(os.path.join(panoptic_dir, png_name)):
            path = layout.panoptic_dir / png_name
            missing[u] = (MISSING_PNG, path, f"{path}: panoptic PNG not found")
    problems: list[ItemProblem] = []
    for k in np.flatnonzero(np.isin(image_of, list(missing))).tolist():
        reason, path, message = missing[int(image_of[k])]
        index, image_id = int(records[k]), int(image_ids[k])
        where = _where(layout, index, image_id)
        problems.append(ItemProblem(index, image_id, reason, f"{message} {where}", str(path)))
    if deep:
        order = np.argsort(image_of, kind="stable")
        bounds = np.searchsorted(image_of[order], np.arange(len(images) + 1)).tolist()
        for u, image_id in enumerate(images.tolist()):
            if u not in missing:
                group = [narratives[k] for k in order[bounds[u] : bounds[u + 1]].tolist()]
                problems += _deep_problems(layout, panoptic.image(image_id), group)
    problems.sort(key=lambda p: p.narrative)
    return problems


def _deep_problems(layout: SplitLayout, info: PanopticImage, group: list[Narrative]) -> list[ItemProblem]:
    """Decode the image and PNG of ``info`` once and check them for every narrative of ``group``."""
    from epng.io.images import decode_image_file  # torch: only when decoding

    img_file, png_file = layout.image_dir / info.file_name, layout.panoptic_dir / info.png_name

    def fail(reason: str, path: Path, message: str) -> list[ItemProblem]:
        return [
            ItemProblem(n.index, n.image_id, reason, f"{message} {_where(layout, n.index, n.image_id)}", str(path))
            for n in group
        ]

    try:
        image_hw = tuple(decode_image_file(img_file).shape[-2:])
    except DataError as err:
        return fail(_reason(err, img_file, MISSING_IMAGE, CORRUPT_IMAGE), img_file, str(err))
    try:
        id_map = read_id_png(png_file)
    except DataError as err:
        return fail(_reason(err, png_file, MISSING_PNG, CORRUPT_PNG), png_file, str(err))
    counts = segment_pixel_counts(id_map, {s for n in group for p in n.phrases for s in p.segment_ids})
    problems = []
    for n in group:
        where = _where(layout, n.index, n.image_id)
        try:
            _check_sizes(info, img_file, image_hw, png_file, id_map.shape, where)
            _check_segments(n, id_map, png_file, where, counts)
        except BadItemError as err:
            problems.append(ItemProblem(n.index, n.image_id, err.reason, str(err), err.path))
    return problems

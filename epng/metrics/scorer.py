"""Scoring phrase predictions against a PNG benchmark split.

Every grounded phrase scores the IoU of its predicted mask with its ground truth, the
union of its segments in the panoptic PNG, at the image's original resolution; a phrase
without a prediction scores IoU 0 and is counted in ``n_missing``; an empty ground truth
(a data defect) scores 1.0 against an empty prediction and 0.0 otherwise.

:class:`PNGEvaluator` holds the per-phrase IoUs and can be fed masks, RLEs or IoUs
directly (the evaluation loop) and merged across processes (distributed evaluation);
:func:`score_predictions` is the entry point for a predictions file
(:mod:`epng.metrics.predictions`), all of whose lines are validated before any mask is scored.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epng.data.layout import split_layout
from epng.data.narrative_table import NarrativeView
from epng.data.options import ErrorMode
from epng.data.panoptic import PanopticIndex, phrase_masks
from epng.data.png_format import GroundedPhrase, Narrative, load_narratives
from epng.errors import DataError, PredictionError
from epng.io.json_file import is_int
from epng.io.panoptic_png import read_id_png
from epng.io.rle import InvalidRLE, decode_rle
from epng.metrics.iou import intersection_union, iou_from_counts
from epng.metrics.png_metric import compute_metrics
from epng.metrics.predictions import read_predictions


@dataclass(frozen=True)
class PhraseRecord:
    """One grounded phrase of the benchmark, as the evaluator indexes it."""

    narrative: int
    image_id: int
    phrase: GroundedPhrase


class PNGEvaluator:
    """Accumulates one IoU per grounded phrase of a fixed set of narratives.

    Feed it with :meth:`add_mask` (binary mask at original size), :meth:`add_rle`
    or :meth:`add_iou`; each (narrative, phrase_index) may be given once. Phrases
    never given score 0 and are counted as missing by :meth:`compute`.

    Ground-truth masks come from the panoptic PNGs (``panoptic_dir`` /
    the json's ``file_name``); the last ``cache_size`` decoded id maps are kept, so
    feeding the phrases image by image decodes every PNG once. Without
    ``panoptic_dir`` only :meth:`add_iou` / :meth:`merge_arrays` work.

    Distributed evaluation: every process feeds its shard, gathers
    :meth:`state_arrays` (three equal-length 1-D arrays) and process 0 calls
    :meth:`merge_arrays` with the others' arrays, then :meth:`compute`.
    """

    def __init__(
        self,
        narratives: Iterable[Narrative] | NarrativeView,
        panoptic: PanopticIndex | None = None,
        panoptic_dir: str | Path | None = None,
        *,
        n_records: int | None = None,
        cache_size: int = 4,
    ):
        # A NarrativeView (a dataset's narratives) is used as is: nothing per narrative is held in memory.
        view = narratives if isinstance(narratives, NarrativeView) else NarrativeView.from_narratives(narratives)
        self._view = view.select(np.diff(view.phrase_offsets) > 0)
        self.narratives = self._view.by_record()  # record index -> Narrative, built on access
        self._offsets = self._view.phrase_offsets  # phrases of narrative k: [o[k], o[k + 1])
        self._last: Narrative | None = None  # the narrative looked up last (phrases come narrative by narrative)
        self.panoptic = panoptic
        self.panoptic_dir = None if panoptic_dir is None else Path(panoptic_dir)
        self.n_records = n_records
        self.cache_size = max(1, int(cache_size))
        self._id_maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self._iou = np.full(int(self._offsets[-1]), np.nan)  # one IoU per phrase, NaN until given

    @classmethod
    def from_split(cls, data_root: str | Path, split: str, mode: ErrorMode = "strict", **kwargs) -> PNGEvaluator:
        """Evaluator over every narrative with a grounded phrase in ``data_root`` / ``split``."""
        layout = split_layout(data_root, split)
        panoptic = PanopticIndex(layout.panoptic_json)
        narratives, report = load_narratives(layout.narratives_json, panoptic, mode)
        return cls(narratives, panoptic, layout.panoptic_dir, n_records=report.n_records, **kwargs)

    # ----------------------------------------------------------------- lookup
    def _position(self, narrative: int, image_id: int | None = None) -> int:
        """Position of record ``narrative`` among the narratives; PredictionError if unknown or mismatched."""
        if not is_int(narrative):
            raise PredictionError(f"'narrative' must be an integer record index, got {narrative!r}")
        k = self._view.find(int(narrative))
        if k < 0:
            if self.n_records is not None and not 0 <= narrative < self.n_records:
                raise PredictionError(
                    f"unknown narrative {narrative}: the narratives file has records 0..{self.n_records - 1}"
                )
            raise PredictionError(
                f"narrative {narrative} has no grounded noun phrase (or was skipped), nothing to predict"
            )
        found = int(self._view.image_id[k])
        if image_id is not None and int(image_id) != found:
            raise PredictionError(
                f"image_id {image_id} does not match narrative {narrative}, which is about image {found}"
            )
        return k

    def image_id_of(self, narrative: int) -> int:
        """The image of the narrative with record index ``narrative`` (PredictionError if unknown)."""
        return int(self._view.image_id[self._position(narrative)])

    def narrative(self, narrative: int, image_id: int | None = None) -> Narrative:
        """The narrative with record index ``narrative``; raises PredictionError if unknown or mismatched."""
        k = self._position(narrative, image_id)
        if self._last is None or self._last.index != narrative:
            self._last = self._view[k]
        return self._last

    def _phrase_position(self, narrative: int, phrase_index: int, image_id: int | None = None) -> int:
        """Position of a phrase in the per-phrase arrays; raises PredictionError if unknown."""
        k = self._position(narrative, image_id)
        if not is_int(phrase_index):
            raise PredictionError(f"'phrase_index' must be an integer, got {phrase_index!r}")
        n = int(self._offsets[k + 1] - self._offsets[k])
        if not 0 <= phrase_index < n:
            raise PredictionError(
                f"unknown phrase_index {phrase_index}: narrative {narrative} has {n} grounded phrases (0..{n - 1})"
            )
        return int(self._offsets[k]) + int(phrase_index)

    def phrase(self, narrative: int, phrase_index: int, image_id: int | None = None) -> GroundedPhrase:
        self._phrase_position(narrative, phrase_index, image_id)
        return self.narrative(narrative).phrases[int(phrase_index)]

    def image_size(self, image_id: int) -> tuple[int, int]:
        """Original (height, width) of an image, from the panoptic json."""
        if self.panoptic is None:
            raise RuntimeError("this PNGEvaluator has no panoptic index")
        image = self.panoptic.image(int(image_id))
        return image.height, image.width

    def id_map(self, image_id: int) -> np.ndarray:
        """The (h, w) segment-id map of an image (LRU-cached)."""
        image_id = int(image_id)
        cached = self._id_maps.get(image_id)
        if cached is not None:
            self._id_maps.move_to_end(image_id)
            return cached
        if self.panoptic is None or self.panoptic_dir is None:
            raise RuntimeError("this PNGEvaluator has no panoptic PNGs: only add_iou / merge_arrays are available")
        image = self.panoptic.image(image_id)
        path = self.panoptic_dir / image.png_name
        ids = read_id_png(path)
        if ids.shape != (image.height, image.width):
            raise DataError(
                f"{path}: panoptic PNG is {ids.shape[0]}x{ids.shape[1]} "
                f"but {self.panoptic.path} says {image.height}x{image.width}"
            )
        self._id_maps[image_id] = ids
        while len(self._id_maps) > self.cache_size:
            self._id_maps.popitem(last=False)
        return ids

    def gt_mask(self, narrative: int, phrase_index: int) -> np.ndarray:
        """(h, w) bool ground truth of a phrase: the union of its segments."""
        record = self.narrative(narrative)
        phrase = self.phrase(narrative, phrase_index)
        return phrase_masks(self.id_map(record.image_id), [phrase.segment_ids])[0]

    # --------------------------------------------------------------- feeding
    def _key(self, narrative: int, phrase_index: int, image_id: int | None) -> int:
        pos = self._phrase_position(narrative, phrase_index, image_id)
        if not np.isnan(self._iou[pos]):
            raise PredictionError(f"duplicate prediction for narrative {narrative}, phrase_index {phrase_index}")
        return pos

    def add_iou(self, narrative: int, phrase_index: int, iou: float, image_id: int | None = None) -> None:
        """Record a precomputed IoU for a phrase."""
        pos = self._key(narrative, phrase_index, image_id)
        iou = float(iou)
        if not 0.0 <= iou <= 1.0:  # also rejects NaN
            raise PredictionError(f"IoU {iou} for narrative {narrative}, phrase_index {phrase_index} is not in [0, 1]")
        self._iou[pos] = iou

    def add_mask(self, narrative: int, phrase_index: int, mask: np.ndarray, image_id: int | None = None) -> float:
        """Score a binary (h, w) mask at the image's original size; returns its IoU (only the IoU is kept)."""
        pos = self._key(narrative, phrase_index, image_id)
        mask = np.asarray(mask)
        size = self.image_size(self.narrative(narrative).image_id)
        if mask.shape != size:
            raise PredictionError(f"mask shape {tuple(mask.shape)} does not match the image's original size {size}")
        iou = iou_from_counts(*intersection_union(mask, self.gt_mask(narrative, phrase_index)))
        self._iou[pos] = iou
        return iou

    def add_rle(self, narrative: int, phrase_index: int, segmentation: dict, image_id: int | None = None) -> float:
        """Score a COCO RLE at the image's original size (validated first); returns its IoU."""
        record = self.narrative(narrative, image_id)
        try:
            mask = decode_rle(segmentation, self.image_size(record.image_id))
        except InvalidRLE as err:
            raise PredictionError(f"bad segmentation: {err}") from None
        return self.add_mask(narrative, phrase_index, mask, image_id)

    # --------------------------------------------------------- distribution
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The IoUs received so far as ``{"narrative": int64, "phrase_index": int64, "iou": float64}`` arrays."""
        given = np.flatnonzero(~np.isnan(self._iou))
        owner = np.searchsorted(self._offsets, given, side="right") - 1
        return {
            "narrative": self._view.record_index[owner].astype(np.int64),
            "phrase_index": (given - self._offsets[owner]).astype(np.int64),
            "iou": self._iou[given].astype(np.float64),
        }

    def merge_arrays(self, narrative: Any, phrase_index: Any, iou: Any) -> None:
        """Add IoUs gathered from another evaluator (e.g. another process); duplicates raise."""
        narrative = np.asarray(narrative, dtype=np.int64).reshape(-1)
        phrase_index = np.asarray(phrase_index, dtype=np.int64).reshape(-1)
        iou = np.asarray(iou, dtype=np.float64).reshape(-1)
        if not (narrative.shape == phrase_index.shape == iou.shape):
            raise ValueError("narrative, phrase_index and iou must have the same length")
        known = self._view.record_index
        if len(narrative) and len(known):  # all at once when every entry is good
            k = np.minimum(np.searchsorted(known, narrative), len(known) - 1)
            count = self._offsets[k + 1] - self._offsets[k]
            pos = self._offsets[k] + phrase_index
            ok = (known[k] == narrative) & (phrase_index >= 0) & (phrase_index < count) & (iou >= 0.0) & (iou <= 1.0)
            if ok.all() and np.isnan(self._iou[pos]).all() and len(np.unique(pos)) == len(pos):
                self._iou[pos] = iou
                return
        for n, p, v in zip(narrative.tolist(), phrase_index.tolist(), iou.tolist()):  # to raise on the first bad one
            self.add_iou(n, p, v)

    # ---------------------------------------------------------------- result
    def phrases(self) -> Iterator[PhraseRecord]:
        """Every grounded phrase, in (narrative index, phrase_index) order."""
        for record in self._view:
            for phrase in record.phrases:
                yield PhraseRecord(record.index, record.image_id, phrase)

    def phrase_arrays(self) -> dict[str, np.ndarray]:
        """Per phrase (in :meth:`phrases` order): ``iou`` (0 when missing), ``is_thing``, ``is_plural``, ``missing``."""
        missing = np.isnan(self._iou)
        return {
            "iou": np.where(missing, 0.0, self._iou),
            "is_thing": np.asarray(self._view.is_thing, dtype=bool),
            "is_plural": np.asarray(self._view.is_plural, dtype=bool),
            "missing": missing,
        }

    @property
    def n_phrases(self) -> int:
        return len(self._iou)

    def __len__(self) -> int:
        """Number of phrases scored so far."""
        return int((~np.isnan(self._iou)).sum())

    def compute(self) -> dict:
        """The metrics dict of :func:`epng.metrics.png_metric.compute_metrics` over all phrases."""
        arrays = self.phrase_arrays()
        return compute_metrics(
            arrays["iou"], arrays["is_thing"], arrays["is_plural"], n_missing=int(arrays["missing"].sum())
        )


def evaluate_predictions(
    data_root: str | Path,
    split: str,
    predictions: str | Path | Iterable[dict],
    *,
    evaluator: PNGEvaluator | None = None,
) -> PNGEvaluator:
    """Validate and score all predictions; returns the filled :class:`PNGEvaluator`.

    All lines are validated first (so a bad line fails fast, before any mask is
    decoded); masks are then scored image by image, each panoptic PNG decoded once,
    one prediction mask in memory at a time.
    """
    if evaluator is None:
        evaluator = PNGEvaluator.from_split(data_root, split)
    checked = read_predictions(evaluator, predictions)
    by_image: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for key in checked:
        by_image[evaluator.image_id_of(key[0])].append(key)
    for image_id in sorted(by_image):
        for key in sorted(by_image[image_id]):
            line_no, rle = checked.pop(key)
            try:
                evaluator.add_rle(key[0], key[1], rle)
            except PredictionError as err:  # not expected after validation; keep the line number anyway
                raise PredictionError(f"line {line_no}: {err}") from None
    return evaluator


def score_predictions(data_root: str | Path, split: str, predictions: str | Path | Iterable[dict]) -> dict:
    """Metrics (see :func:`epng.metrics.png_metric.compute_metrics`) of a predictions file or iterable of dicts."""
    return evaluate_predictions(data_root, split, predictions).compute()

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
        narratives: Iterable[Narrative],
        panoptic: PanopticIndex | None = None,
        panoptic_dir: str | Path | None = None,
        *,
        n_records: int | None = None,
        cache_size: int = 4,
    ):
        self.narratives: dict[int, Narrative] = {}
        for narrative in narratives:
            if narrative.index in self.narratives:
                raise ValueError(f"narrative index {narrative.index} given twice")
            if narrative.phrases:
                self.narratives[narrative.index] = narrative
        self.panoptic = panoptic
        self.panoptic_dir = None if panoptic_dir is None else Path(panoptic_dir)
        self.n_records = n_records
        self.cache_size = max(1, int(cache_size))
        self._id_maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self._ious: dict[tuple[int, int], float] = {}

    @classmethod
    def from_split(cls, data_root: str | Path, split: str, mode: ErrorMode = "strict", **kwargs) -> PNGEvaluator:
        """Evaluator over every narrative with a grounded phrase in ``data_root`` / ``split``."""
        layout = split_layout(data_root, split)
        panoptic = PanopticIndex(layout.panoptic_json)
        narratives, report = load_narratives(layout.narratives_json, panoptic, mode)
        return cls(narratives, panoptic, layout.panoptic_dir, n_records=report.n_records, **kwargs)

    # ----------------------------------------------------------------- lookup
    def narrative(self, narrative: int, image_id: int | None = None) -> Narrative:
        """The narrative with record index ``narrative``; raises PredictionError if unknown or mismatched."""
        if not is_int(narrative):
            raise PredictionError(f"'narrative' must be an integer record index, got {narrative!r}")
        found = self.narratives.get(int(narrative))
        if found is None:
            if self.n_records is not None and not 0 <= narrative < self.n_records:
                raise PredictionError(
                    f"unknown narrative {narrative}: the narratives file has records 0..{self.n_records - 1}"
                )
            raise PredictionError(
                f"narrative {narrative} has no grounded noun phrase (or was skipped), nothing to predict"
            )
        if image_id is not None and int(image_id) != found.image_id:
            raise PredictionError(
                f"image_id {image_id} does not match narrative {narrative}, which is about image {found.image_id}"
            )
        return found

    def phrase(self, narrative: int, phrase_index: int, image_id: int | None = None) -> GroundedPhrase:
        record = self.narrative(narrative, image_id)
        if not is_int(phrase_index):
            raise PredictionError(f"'phrase_index' must be an integer, got {phrase_index!r}")
        if not 0 <= phrase_index < len(record.phrases):
            raise PredictionError(
                f"unknown phrase_index {phrase_index}: narrative {narrative} has {len(record.phrases)} "
                f"grounded phrases (0..{len(record.phrases) - 1})"
            )
        return record.phrases[int(phrase_index)]

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
    def _key(self, narrative: int, phrase_index: int, image_id: int | None) -> tuple[int, int]:
        self.phrase(narrative, phrase_index, image_id)
        key = (int(narrative), int(phrase_index))
        if key in self._ious:
            raise PredictionError(f"duplicate prediction for narrative {key[0]}, phrase_index {key[1]}")
        return key

    def add_iou(self, narrative: int, phrase_index: int, iou: float, image_id: int | None = None) -> None:
        """Record a precomputed IoU for a phrase."""
        key = self._key(narrative, phrase_index, image_id)
        iou = float(iou)
        if not 0.0 <= iou <= 1.0:  # also rejects NaN
            raise PredictionError(f"IoU {iou} for narrative {key[0]}, phrase_index {key[1]} is not in [0, 1]")
        self._ious[key] = iou

    def add_mask(self, narrative: int, phrase_index: int, mask: np.ndarray, image_id: int | None = None) -> float:
        """Score a binary (h, w) mask at the image's original size; returns its IoU."""
        key = self._key(narrative, phrase_index, image_id)
        record = self.narratives[key[0]]
        mask = np.asarray(mask)
        size = self.image_size(record.image_id)
        if mask.shape != size:
            raise PredictionError(f"mask shape {tuple(mask.shape)} does not match the image's original size {size}")
        iou = iou_from_counts(*intersection_union(mask, self.gt_mask(*key)))
        self._ious[key] = iou
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
        keys = sorted(self._ious)
        return {
            "narrative": np.asarray([k[0] for k in keys], dtype=np.int64),
            "phrase_index": np.asarray([k[1] for k in keys], dtype=np.int64),
            "iou": np.asarray([self._ious[k] for k in keys], dtype=np.float64),
        }

    def merge_arrays(self, narrative: Any, phrase_index: Any, iou: Any) -> None:
        """Add IoUs gathered from another evaluator (e.g. another process); duplicates raise."""
        narrative = np.asarray(narrative, dtype=np.int64).reshape(-1)
        phrase_index = np.asarray(phrase_index, dtype=np.int64).reshape(-1)
        iou = np.asarray(iou, dtype=np.float64).reshape(-1)
        if not (narrative.shape == phrase_index.shape == iou.shape):
            raise ValueError("narrative, phrase_index and iou must have the same length")
        for n, p, v in zip(narrative.tolist(), phrase_index.tolist(), iou.tolist()):
            self.add_iou(n, p, v)

    # ---------------------------------------------------------------- result
    def phrases(self) -> Iterator[PhraseRecord]:
        """Every grounded phrase, in (narrative index, phrase_index) order."""
        for index in sorted(self.narratives):
            record = self.narratives[index]
            for phrase in record.phrases:
                yield PhraseRecord(index, record.image_id, phrase)

    def phrase_arrays(self) -> dict[str, np.ndarray]:
        """Per phrase (in :meth:`phrases` order): ``iou`` (0 when missing), ``is_thing``, ``is_plural``, ``missing``."""
        ious, thing, plural, missing = [], [], [], []
        for rec in self.phrases():
            value = self._ious.get((rec.narrative, rec.phrase.phrase_index))
            ious.append(0.0 if value is None else value)
            missing.append(value is None)
            thing.append(rec.phrase.is_thing)
            plural.append(rec.phrase.is_plural)
        return {
            "iou": np.asarray(ious, dtype=np.float64),
            "is_thing": np.asarray(thing, dtype=bool),
            "is_plural": np.asarray(plural, dtype=bool),
            "missing": np.asarray(missing, dtype=bool),
        }

    @property
    def n_phrases(self) -> int:
        return sum(len(n.phrases) for n in self.narratives.values())

    def __len__(self) -> int:
        """Number of phrases scored so far."""
        return len(self._ious)

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
        by_image[evaluator.narratives[key[0]].image_id].append(key)
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

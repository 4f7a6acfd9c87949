"""The PNG ``Dataset`` and its collate function (batch contract: docs/DESIGN.md).

One item = one narrative (a record of ``png_coco_<split>.json`` with at least one
grounded noun phrase). A sample keeps the resized image, **one** resized segment-id map
and, per phrase, its segment-id set; the dense ``(B, P, H, W)`` ground truth is built
in :func:`collate_png`.

Bad input and the two modes
---------------------------
``mode="strict"`` raises :class:`DataError` (naming the file and the narrative record)
at the first bad item; ``mode="skip"`` leaves bad items out and counts them by reason.
Checks happen in two places:

* **At construction** (main process, cheap): the split's folders and json files exist
  (always an error, in both modes), every record parses (:func:`epng.data.png_format.parse_record`), and every
  referenced image file and panoptic PNG exists (one ``stat`` per image). With
  ``validate="deep"`` it also decodes every image and panoptic PNG once and checks sizes
  and that every referenced segment id has pixels, so that ``__getitem__`` never skips.
* **Lazily in** ``__getitem__`` (the default ``validate="files"``): a corrupt image or
  PNG, a size mismatch, or a segment id without pixels at original resolution. In skip
  mode ``__getitem__`` then returns a :class:`SkippedSample` instead of a
  :class:`PNGSample`; :func:`collate_png` drops it and returns the count and the reasons
  in the batch (``batch["n_skipped"]``, ``batch["skipped"]``). Collate runs inside the
  DataLoader worker, so these numbers travel to the main process with the batch; pass
  each batch to :meth:`PNGDataset.note_skipped` to fold them into
  :meth:`PNGDataset.report`. ``__getitem__`` itself does not count (a worker's counters
  would be lost), so nothing is counted twice.

The split is parsed and tokenized once, at construction, into flat arrays
(:mod:`epng.data.split_tables`): captions are tokenized in batches, and no per-narrative
Python object outlives a ``__getitem__``, so DataLoader workers share the arrays instead
of copying objects. With a cache dir (``cache_dir`` or ``$EPNG_CACHE``) the arrays are
kept on disk and memory-mapped by every process (:mod:`epng.data.cache`). Phrases that
get no word piece (lost to ``max_length``) are kept out of the model's phrase list,
listed in ``meta["truncated_phrase_indices"]`` and counted in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from epng.data.cache import cache_dir_from, cached_split_tables
from epng.data.input_format import InputFormat
from epng.data.inputs import batch_text_inputs
from epng.data.items import load_item_arrays, validate_items
from epng.data.layout import split_layout
from epng.data.narrative_table import NarrativeView
from epng.data.options import ERROR_MODES, VALIDATE_MODES, ErrorMode, ValidateMode, check_option
from epng.data.panoptic import phrase_masks
from epng.data.png_format import Narrative
from epng.data.skips import BAD_ITEM, NO_GROUNDED_PHRASE, SkipReport
from epng.data.split_tables import build_split_tables
from epng.data.tokenization import (
    PHRASE_EMPTY,
    PHRASE_PARTIAL,
    PHRASE_TRUNCATED,
)
from epng.errors import BadItemError, DataError

# --------------------------------------------------------------------------- records


@dataclass
class PNGSample:
    """One narrative ready for collate. Phrase lists cover the phrases the model sees
    (``phrase_indices``); ``truncated_phrase_indices`` are the others."""

    narrative: int
    image_id: int
    image: torch.Tensor  # float32 (3, H, W), normalised
    id_map: torch.Tensor  # int32 (H, W), resized segment ids, 0 = void/padding
    input_ids: torch.Tensor  # int64 (T,)
    phrase_tokens: list[torch.Tensor]  # int64 word-piece positions, one per model phrase
    phrase_segments: list[tuple[int, ...]]  # segment-id set, one per model phrase
    phrase_indices: list[int]
    truncated_phrase_indices: list[int]
    orig_size: tuple[int, int]
    valid_size: tuple[int, int]
    pad_token_id: int = 0


@dataclass
class SkippedSample:
    """What ``__getitem__`` returns in skip mode for a bad item (dropped by collate)."""

    narrative: int
    image_id: int
    reason: str
    message: str
    input_size: tuple[int, int] = (0, 0)


@dataclass
class DataReport(SkipReport):
    """Counts of one dataset: records, usable narratives, skips by reason (one example
    message each) and phrases lost to the encoder's ``max_length``. Records without a
    grounded phrase are counted in ``skipped`` but are no skip (``n_skipped`` leaves them out)."""

    not_skips: ClassVar[frozenset[str]] = frozenset({NO_GROUNDED_PHRASE})

    split: str = ""
    n_records: int = 0
    n_narratives: int = 0
    n_phrases: int = 0
    n_truncated_phrases: int = 0
    n_truncated_narratives: int = 0
    n_partial_phrases: int = 0  # phrases that kept only some of their word pieces
    n_empty_phrases: int = 0  # phrases whose span holds nothing the tokenizer keeps
    truncated_example: str = ""

    def summary(self) -> str:
        lines = [
            f"split {self.split}: {self.n_records} records, {self.n_narratives} narratives with "
            f"{self.n_phrases} grounded phrases used"
        ]
        if self.skipped.get(NO_GROUNDED_PHRASE):
            lines.append(f"  {self.skipped[NO_GROUNDED_PHRASE]} records without a grounded phrase (not evaluated)")
        lines += self.skip_lines()
        if self.n_truncated_phrases or self.n_partial_phrases or self.n_empty_phrases:
            lines.append(
                f"  {self.n_truncated_phrases} phrases in {self.n_truncated_narratives} narratives lost to max_length "
                f"(scored 0), {self.n_partial_phrases} partly truncated, {self.n_empty_phrases} without word pieces"
                + (f"; e.g. {self.truncated_example}" if self.truncated_example else "")
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------- dataset


class PNGDataset(torch.utils.data.Dataset):
    """Panoptic Narrative Grounding narratives of one split under a benchmark root.

    ``input_format``: the model's transform (input size, ``"square"`` (the paper's
    stretch) or ``"letterbox"`` resize, normalisation) and fast tokenizer with its
    ``max_length`` (``EPNG.input_format``).
    ``mode``: ``"strict"`` | ``"skip"`` and ``validate``: ``"files"`` | ``"deep"``, see the
    module docstring. ``max_narratives``: keep only the first N usable narratives.
    ``cache_dir``: where the parsed split is cached (default ``$EPNG_CACHE``; neither:
    parsed in memory), see :mod:`epng.data.cache`.

    ``narratives`` is a lazy ``Sequence[Narrative]`` (:class:`NarrativeView`);
    ``cache_status`` says where the tables came from: ``"memory"`` (no cache),
    ``"loaded"``, ``"built"`` or ``"rebuilt (why)"``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        input_format: InputFormat,
        mode: ErrorMode = "strict",
        validate: ValidateMode = "files",
        max_narratives: int | None = None,
        cache_dir: str | Path | None = None,
    ):
        check_option("mode", mode, ERROR_MODES)
        check_option("validate", validate, VALIDATE_MODES)
        self.layout = split_layout(root, split)
        self.mode = mode
        self.transform = input_format.transform
        self.max_length = max_length = input_format.max_length
        self.pad_token_id = input_format.pad_token_id
        tokenizer = input_format.tokenizer

        for path in (self.layout.image_dir, self.layout.panoptic_dir):
            if not path.is_dir():
                raise DataError(
                    f"{path}: folder not found (run `epng check-data --data-root {root}` for the full list)"
                )
        cache = cache_dir_from(cache_dir)
        self.cache_folder: Path | None = None
        if cache is None:
            tables, self.cache_status = build_split_tables(self.layout, tokenizer, max_length), "memory"
        else:
            tables, self.cache_status, self.cache_folder = cached_split_tables(
                self.layout, tokenizer, max_length, cache
            )
        self.panoptic = tables.panoptic
        self._alignment = tables.alignment
        load_report = tables.load_report
        if mode == "strict" and load_report.first_bad is not None:
            raise load_report.strict_error()
        self._report = DataReport(split=split, n_records=load_report.n_records)
        self._report.merge(load_report)

        narratives = NarrativeView(tables.narratives)
        if max_narratives is not None:
            narratives = narratives[:max_narratives]  # a prefix, e.g. for quick periodic validation
        problems = validate_items(self.layout, self.panoptic, narratives, deep=(validate == "deep"))
        if problems and mode == "strict":
            raise DataError(problems[0].message)
        for p in problems:
            self._report.add(p.reason, p.message)
        bad = np.isin(narratives.record_index, [p.narrative for p in problems])
        self.narratives: NarrativeView = narratives.select(~bad)
        if not len(self.narratives):
            raise DataError(f"{self.layout.narratives_json}: no usable narrative\n{self._report.summary()}")
        self._count_phrases()

    # ------------------------------------------------------------------ construction

    def _count_phrases(self) -> None:
        """Grounded phrases, and those that lost word pieces to ``max_length``, of the kept narratives."""
        rep, rows, status = self._report, self.narratives.rows, self._alignment.status
        offsets = self.narratives.table.phrase_offsets
        starts = offsets[:-1]  # every narrative has a phrase

        def per_narrative(flags: np.ndarray) -> np.ndarray:  # (n,) count of the kept narratives' flagged phrases
            return np.add.reduceat(flags.astype(np.int32), starts)[rows]

        truncated = per_narrative(status == PHRASE_TRUNCATED)
        rep.n_narratives = len(rows)
        rep.n_phrases = int(np.diff(offsets)[rows].sum())
        rep.n_truncated_phrases = int(truncated.sum())
        rep.n_truncated_narratives = int((truncated > 0).sum())
        rep.n_empty_phrases = int(per_narrative(status == PHRASE_EMPTY).sum())
        rep.n_partial_phrases = int(per_narrative(status == PHRASE_PARTIAL).sum())
        if rep.n_truncated_narratives:
            first = int(np.flatnonzero(truncated)[0])
            row = int(rows[first])
            lost = np.flatnonzero(status[offsets[row] : offsets[row + 1]] == PHRASE_TRUNCATED)
            rep.truncated_example = (
                f"record {self.narratives.record_index[first]} (image {self.narratives.image_id[first]}) loses "
                f"phrases {lost.tolist()} beyond {self.max_length} word pieces"
            )

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.narratives)

    def __getitem__(self, i: int) -> PNGSample | SkippedSample:
        narrative = self.narratives[i]
        try:
            image, id_map = load_item_arrays(self.layout, self.panoptic, narrative)
        except DataError as err:
            if self.mode == "strict":
                raise
            reason = err.reason if isinstance(err, BadItemError) else BAD_ITEM
            return SkippedSample(narrative.index, narrative.image_id, reason, str(err), self.transform.size)
        orig_size = (int(image.shape[-2]), int(image.shape[-1]))
        x, ids, valid = self.transform(image, torch.from_numpy(id_map))
        row = int(self.narratives.rows[i])
        al = self._alignment
        t0, t1 = al.token_offsets[row : row + 2].tolist()
        p0, p1 = self.narratives.table.phrase_offsets[row : row + 2].tolist()
        bounds = (al.piece_offsets[p0 : p1 + 1] - al.piece_offsets[p0]).tolist()  # pieces of phrase k: [b[k], b[k + 1])
        pieces = torch.from_numpy(al.pieces[al.piece_offsets[p0] : al.piece_offsets[p1]].astype(np.int64))
        kept = [k for k in range(p1 - p0) if bounds[k + 1] > bounds[k]]  # phrases with word pieces: the model's
        return PNGSample(
            narrative=narrative.index,
            image_id=narrative.image_id,
            image=x,
            id_map=ids.to(torch.int32),  # ids < 256**3 fit exactly
            input_ids=torch.from_numpy(al.input_ids[t0:t1].astype(np.int64)),
            phrase_tokens=[pieces[bounds[k] : bounds[k + 1]] for k in kept],
            phrase_segments=[narrative.phrases[k].segment_ids for k in kept],
            phrase_indices=kept,
            truncated_phrase_indices=[k for k in range(p1 - p0) if bounds[k + 1] == bounds[k]],
            orig_size=orig_size,
            valid_size=valid,
            pad_token_id=self.pad_token_id,
        )

    def narrative_of(self, i: int) -> Narrative:
        return self.narratives[i]

    # ------------------------------------------------------------------ counts

    def note_skipped(self, batch: dict) -> None:
        """Fold the lazy skips that ``collate_png`` reported in ``batch`` into :meth:`report`."""
        for s in batch.get("skipped", ()):
            self._report.add(s["reason"], s["message"])

    def report(self) -> DataReport:
        """Records, skips by reason (construction-time ones, plus lazy ones passed to
        :meth:`note_skipped`) and the truncated-phrase counts."""
        return self._report.copy()


# --------------------------------------------------------------------------- collate


def collate_png(samples: Sequence[PNGSample | SkippedSample | None]) -> dict:
    """Batch the samples as docs/DESIGN.md fixes; :class:`SkippedSample` (and ``None``) items
    are dropped and reported under ``"n_skipped"`` and ``"skipped"`` (a list of
    ``{"narrative", "image_id", "reason", "message"}``). A batch whose items were all
    skipped has ``B = 0``. ``P`` is at least 1 (all-padding when no sample has a phrase)."""
    kept = [s for s in samples if isinstance(s, PNGSample)]
    skipped = [s for s in samples if not isinstance(s, PNGSample)]
    skipped_info = [
        {"narrative": s.narrative, "image_id": s.image_id, "reason": s.reason, "message": s.message}
        for s in skipped
        if isinstance(s, SkippedSample)
    ]
    n_skipped = len(skipped)
    if kept:
        sizes = {tuple(s.image.shape[-2:]) for s in kept}
        if len(sizes) != 1:
            raise ValueError(f"samples of one batch must share the input size, got {sorted(sizes)}")
        h, w = sizes.pop()
    else:
        h, w = next((tuple(s.input_size) for s in skipped if isinstance(s, SkippedSample)), (0, 0))
    b = len(kept)
    pad_token_id = kept[0].pad_token_id if kept else 0
    text = batch_text_inputs([s.input_ids for s in kept], [s.phrase_tokens for s in kept], pad_token_id)
    p = text.phrase_mask.shape[1]
    images = torch.zeros((b, 3, h, w), dtype=torch.float32)
    gt_masks = torch.zeros((b, p, h, w), dtype=torch.bool)
    meta = []
    for i, s in enumerate(kept):
        n_ph = len(s.phrase_tokens)
        images[i] = s.image
        if n_ph:
            gt_masks[i, :n_ph] = torch.from_numpy(phrase_masks(s.id_map.numpy(), s.phrase_segments))
        meta.append(
            {
                "narrative": s.narrative,
                "image_id": s.image_id,
                "phrase_indices": list(s.phrase_indices),
                "orig_size": tuple(s.orig_size),
                "valid_size": tuple(s.valid_size),
                "truncated_phrase_indices": list(s.truncated_phrase_indices),
            }
        )
    return {
        "images": images,
        **text._asdict(),
        "gt_masks": gt_masks,
        "meta": meta,
        "n_skipped": n_skipped,
        "skipped": skipped_info,
    }

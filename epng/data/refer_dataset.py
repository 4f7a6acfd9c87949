"""RES samples (RefCOCO / RefCOCO+ / RefCOCOg) in the PNG batch contract (:func:`epng.data.dataset.collate_png`).

One item = one referring expression; the whole expression is the only phrase (its span
is the whole sentence, so the phrase feature is the mean of all its word pieces), and
its ground truth is the referred annotation's mask. Items are :class:`PNGSample` s whose
"id map" is that mask (1 = object, 0 = background/padding) with the phrase's segment set
``(1,)``, so :func:`epng.data.dataset.collate_png` batches them unchanged
(:data:`collate_refer` is that function). In a batch's ``meta``, ``narrative`` is the
expression's index in :attr:`ReferDataset.expressions` and ``phrase_indices`` is ``[0]``.

Modes as in :class:`epng.data.dataset.PNGDataset`: ``"strict"`` raises
:class:`DataError` at the first bad item; ``"skip"`` leaves bad refs out at construction
(counted in :meth:`ReferDataset.report`) and turns lazily found problems (a corrupt
image, a size that disagrees with ``instances.json``, an empty mask) into
:class:`SkippedSample` s that collate drops and reports; pass each batch to
:meth:`ReferDataset.note_skipped` to count them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from epng.data.dataset import PNGSample, SkippedSample, collate_png
from epng.data.input_format import InputFormat
from epng.data.options import ERROR_MODES, ErrorMode, check_option
from epng.data.refer import Expression, ReferData, ReferReport
from epng.data.skips import BAD_SEGMENTATION, CORRUPT_IMAGE, EMPTY_EXPRESSION, EMPTY_MASK, SIZE_MISMATCH
from epng.data.tokenization import align_phrases
from epng.errors import BadItemError, DataError
from epng.io.images import decode_image_file

#: batches RES samples exactly like PNG samples
collate_refer = collate_png

OBJECT_ID = 1  # the referred object's id in a sample's id map


class ReferDataset(torch.utils.data.Dataset):
    """The expressions of one split of a refer dataset, as single-phrase PNG samples.

    ``refer``: a loaded :class:`ReferData` (see :meth:`from_root` to load one);
    ``input_format``: the model's transform and tokenizer (``EPNG.input_format``).
    """

    def __init__(
        self,
        refer: ReferData,
        split: str,
        input_format: InputFormat,
        mode: ErrorMode = "strict",
    ):
        check_option("mode", mode, ERROR_MODES)
        tokenizer, max_length = input_format.tokenizer, input_format.max_length
        self.refer = refer
        self.split = split
        self.mode = mode
        self.transform = input_format.transform
        self.pad_token_id = input_format.pad_token_id
        expressions, self._report = refer.expressions(split, mode)
        self.n_partial = 0  # expressions cut by max_length (they keep their first word pieces)
        kept: list[Expression] = []
        self._input_ids: list[np.ndarray] = []
        self._pieces: list[np.ndarray] = []
        for e in expressions:
            alignment = align_phrases(tokenizer, e.text, [(0, len(e.text))], max_length)
            pieces = alignment.phrase_tokens[0]
            if not pieces:
                where = f"[ref {e.ref_id}, sentence {e.sent_id} of {refer.layout.refs_file}]"
                message = f"{where}: {e.text!r} has no word piece"
                if mode == "strict":
                    raise BadItemError(message, EMPTY_EXPRESSION)
                self._report.add(EMPTY_EXPRESSION, message)
                continue
            self.n_partial += bool(alignment.partial)
            kept.append(Expression(len(kept), e.ref_id, e.ann_id, e.image_id, e.sent_id, e.text, e.category_id))
            self._input_ids.append(np.asarray(alignment.input_ids, dtype=np.int32))
            self._pieces.append(np.asarray(pieces, dtype=np.int32))
        if not kept:
            raise DataError(
                f"{refer.layout.refs_file}: no usable expression in split {split!r}\n{self._report.summary()}"
            )
        self.expressions = kept
        self._report.n_expressions = len(kept)

    @classmethod
    def from_root(
        cls,
        root: str | Path,
        dataset: str,
        split: str,
        input_format: InputFormat,
        split_by: str | None = None,
        image_dir: str | Path | None = None,
        **kwargs,
    ) -> ReferDataset:
        """Load ``<root>/<dataset>`` (:meth:`ReferData.load`) and build the dataset of ``split``."""
        return cls(ReferData.load(root, dataset, split_by, image_dir), split, input_format, **kwargs)

    def __len__(self) -> int:
        return len(self.expressions)

    def gt_mask(self, i: int) -> np.ndarray:
        """(h, w) bool ground truth of expression ``i`` at the image's original resolution."""
        return self.refer.mask(self.expressions[i].ann_id)

    def image_file(self, i: int) -> Path:
        return self.refer.image_file(self.expressions[i].image_id)

    def _skip(self, e: Expression, reason: str, message: str) -> SkippedSample:
        if self.mode == "strict":
            raise BadItemError(message, reason)
        return SkippedSample(e.index, e.image_id, reason, message, self.transform.size)

    def __getitem__(self, i: int) -> PNGSample | SkippedSample:
        e = self.expressions[i]
        where = f"[ref {e.ref_id}, sentence {e.sent_id} of {self.refer.layout.refs_file}]"
        path = self.refer.image_file(e.image_id)
        try:
            image = decode_image_file(path)
        except DataError as err:
            return self._skip(e, CORRUPT_IMAGE, f"{err} {where}")
        orig_size = (int(image.shape[-2]), int(image.shape[-1]))
        expected = self.refer.image_size(e.image_id)
        if orig_size != tuple(expected):
            return self._skip(
                e,
                SIZE_MISMATCH,
                f"{path}: image is {orig_size[0]}x{orig_size[1]} but "
                f"instances.json says {expected[0]}x{expected[1]} {where}",
            )
        try:
            mask = self.refer.mask(e.ann_id)
        except DataError as err:
            return self._skip(e, BAD_SEGMENTATION, f"{err} {where}")
        if not mask.any():
            return self._skip(
                e,
                EMPTY_MASK,
                f"{self.refer.layout.instances_file}: annotation {e.ann_id} decodes to an empty mask {where}",
            )
        x, ids, valid = self.transform(image, torch.from_numpy(mask.astype(np.int32)))
        return PNGSample(
            narrative=e.index,
            image_id=e.image_id,
            image=x,
            id_map=ids,
            input_ids=torch.from_numpy(self._input_ids[i].astype(np.int64)),
            phrase_tokens=[torch.from_numpy(self._pieces[i].astype(np.int64))],
            phrase_segments=[(OBJECT_ID,)],
            phrase_indices=[0],
            truncated_phrase_indices=[],
            orig_size=orig_size,
            valid_size=valid,
            pad_token_id=self.pad_token_id,
        )

    # ------------------------------------------------------------------ counts

    def note_skipped(self, batch: dict) -> None:
        """Fold the lazy skips that :data:`collate_refer` reported in ``batch`` into :meth:`report`."""
        for s in batch.get("skipped", ()):
            self._report.add(s["reason"], s["message"])

    def report(self) -> ReferReport:
        """Refs, expressions and skips by reason (construction-time ones, plus lazy ones passed
        to :meth:`note_skipped`)."""
        return self._report.copy()

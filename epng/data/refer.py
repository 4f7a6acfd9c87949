"""Reader of the "refer" distribution of RefCOCO, RefCOCO+ and RefCOCOg (file layout: :mod:`epng.data.refer_layout`).

A ref is a dict ``{ref_id, ann_id, image_id, split, category_id, sentences: [{sent, raw,
tokens, sent_id}], ...}``; every sentence of a ref is one :class:`Expression`, grounded to
the mask of annotation ``ann_id`` (:mod:`epng.data.segmentation`, decoded at the image's
original resolution given by ``instances.json``). The refs pickle is read without
letting it run code (:mod:`epng.data.refer_pickle`).

Bad input: a missing or unreadable refs/instances file is always a :class:`DataError`;
unknown dataset / split_by / split names are a :class:`ConfigError`. A bad ref (missing
fields, an annotation or image that ``instances.json`` lacks, a malformed segmentation, a
missing image file, no usable sentence) raises a :class:`BadItemError` naming the file and
the ref in ``mode="strict"``, and is left out and counted by reason in ``mode="skip"``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epng.data.options import ERROR_MODES, ErrorMode, check_option
from epng.data.refer_layout import ReferLayout, refer_layout, resolve_names
from epng.data.refer_pickle import load_refs_pickle
from epng.data.segmentation import check_segmentation, decode_segmentation
from epng.data.skips import (
    BAD_SEGMENTATION,
    EMPTY_EXPRESSION,
    IMAGE_NOT_IN_INSTANCES,
    MALFORMED_REF,
    MISSING_ANNOTATION,
    MISSING_IMAGE,
    NO_SENTENCE,
    SkipReport,
)
from epng.errors import BadItemError, DataError
from epng.io.json_file import is_int, load_json
from epng.io.rle import InvalidRLE

MASK_CACHE = 64  # decoded masks kept per ReferData


@dataclass(frozen=True)
class Expression:
    """One referring expression (one sentence of a ref): the sample unit of RES."""

    index: int  # position in the split's expression list
    ref_id: int
    ann_id: int
    image_id: int
    sent_id: int
    text: str
    category_id: int | None = None


@dataclass
class ReferReport(SkipReport):
    """Counts of one split: refs, expressions kept, sentences left out by reason (one example message each)."""

    dataset: str = ""
    split_by: str = ""
    split: str = ""
    n_refs: int = 0
    n_sentences: int = 0
    n_expressions: int = 0

    def summary(self) -> str:
        head = (
            f"{self.dataset} ({self.split_by}) {self.split}: {self.n_refs} refs, {self.n_sentences} sentences, "
            f"{self.n_expressions} expressions used"
        )
        return "\n".join([head, *self.skip_lines()])


def _sentence_text(sentence: Any) -> str | None:
    """The expression of a sentence record: ``sent``, else ``raw``, else the joined ``tokens``."""
    if isinstance(sentence, str):
        return sentence
    if not isinstance(sentence, dict):
        return None
    for key in ("sent", "raw"):
        if isinstance(sentence.get(key), str):
            return sentence[key]
    tokens = sentence.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return " ".join(tokens)
    return None


class ReferData:
    """One refer dataset (refs of every split + instances) under a root.

    ``ReferData.load(root, "refcoco", split_by=None, image_dir=None)``; then
    :meth:`expressions` gives the samples of a split, :meth:`mask` the referred object's
    mask at original resolution and :meth:`image_file` its image.
    """

    def __init__(self, layout: ReferLayout, refs: list, instances: dict):
        self.layout = layout
        self.refs = refs
        where = layout.instances_file
        if not isinstance(instances, dict):
            raise DataError(f"{where}: expected a COCO instances object, got {type(instances).__name__}")
        for key in ("images", "annotations"):
            if not isinstance(instances.get(key), list):
                raise DataError(f"{where}: missing '{key}' list")
        self.images: dict[int, tuple[int, int]] = {}
        for k, im in enumerate(instances["images"]):
            ok = isinstance(im, dict) and all(is_int(im.get(k)) for k in ("id", "height", "width"))
            if not (ok and im["height"] > 0 and im["width"] > 0):
                raise DataError(f"{where}: images[{k}] needs integer 'id', 'height' > 0 and 'width' > 0")
            self.images[int(im["id"])] = (int(im["height"]), int(im["width"]))
        self.annotations: dict[int, dict] = {}
        for k, ann in enumerate(instances["annotations"]):
            if not (isinstance(ann, dict) and is_int(ann.get("id")) and is_int(ann.get("image_id"))):
                raise DataError(f"{where}: annotations[{k}] needs integer 'id' and 'image_id'")
            self.annotations[int(ann["id"])] = ann
        self.categories = {
            int(c["id"]): c.get("name", "")
            for c in instances.get("categories", [])
            if isinstance(c, dict) and is_int(c.get("id"))
        }
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()  # small LRU: refs have several sentences

    @classmethod
    def load(
        cls, root: str | Path, dataset: str, split_by: str | None = None, image_dir: str | Path | None = None
    ) -> ReferData:
        layout = refer_layout(root, dataset, split_by, image_dir)
        if not layout.dataset_dir.is_dir():
            raise DataError(
                f"{layout.dataset_dir}: refer dataset folder not found "
                f"(expected {layout.refs_file.name} and instances.json in it)"
            )
        refs = load_refs_pickle(layout.refs_file)
        instances = load_json(layout.instances_file)
        return cls(layout, refs, instances)

    @property
    def dataset(self) -> str:
        return self.layout.dataset

    @property
    def split_by(self) -> str:
        return self.layout.split_by

    def split_counts(self) -> Counter:
        """Refs per split value found in the refs file."""
        return Counter(r.get("split") for r in self.refs if isinstance(r, dict))

    def image_file(self, image_id: int) -> Path:
        return self.layout.image_file(image_id)

    def image_size(self, image_id: int) -> tuple[int, int]:
        """(height, width) of an image, from ``instances.json``."""
        return self.images[int(image_id)]

    def mask(self, ann_id: int) -> np.ndarray:
        """(h, w) bool mask of annotation ``ann_id`` at its image's original resolution (read-only)."""
        ann_id = int(ann_id)
        mask = self._masks.get(ann_id)
        if mask is None:
            mask = self._masks[ann_id] = self._decode_mask(ann_id)
            while len(self._masks) > MASK_CACHE:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(ann_id)
        return mask

    def _decode_mask(self, ann_id: int) -> np.ndarray:
        ann = self.annotations.get(ann_id)
        if ann is None:
            raise DataError(f"{self.layout.instances_file}: no annotation {ann_id}")
        size = self.images.get(int(ann["image_id"]))
        if size is None:
            raise DataError(
                f"{self.layout.instances_file}: annotation {ann_id} is of image {ann['image_id']}, "
                "which is not in 'images'"
            )
        try:
            mask = decode_segmentation(ann.get("segmentation"), size)
        except InvalidRLE as err:
            raise DataError(f"{self.layout.instances_file}: annotation {ann_id}: bad segmentation ({err})") from None
        mask.setflags(write=False)
        return mask

    def _where(self, k: int, ref: Any) -> str:
        rid = ref.get("ref_id") if isinstance(ref, dict) else None
        return f"[ref {rid if rid is not None else '?'} (entry {k}) of {self.layout.refs_file}]"

    def expressions(
        self, split: str, mode: ErrorMode = "strict", check_files: bool = True
    ) -> tuple[list[Expression], ReferReport]:
        """Every sentence of every ref of ``split`` as an :class:`Expression`, and the counts.

        ``mode="strict"`` raises :class:`DataError` at the first bad ref; ``"skip"`` leaves
        it out and counts it. With ``check_files`` every referenced image file must exist.
        Raises :class:`DataError` when the split ends up without any expression.
        """
        check_option("mode", mode, ERROR_MODES)
        resolve_names(self.dataset, self.split_by, split)
        report = ReferReport(self.dataset, self.split_by, split)
        out: list[Expression] = []
        file_ok: dict[int, bool] = {}
        seg_ok: dict[int, str | None] = {}

        def bad(reason: str, message: str, n: int) -> None:
            if mode == "strict":
                raise BadItemError(message, reason)
            report.add(reason, message, max(n, 1))

        for k, ref in enumerate(self.refs):
            if not isinstance(ref, dict) or ref.get("split") != split:
                if not isinstance(ref, dict):
                    bad(MALFORMED_REF, f"{self._where(k, ref)}: not a dict", 1)
                continue
            report.n_refs += 1
            where = self._where(k, ref)
            sentences = ref.get("sentences")
            n_sent = len(sentences) if isinstance(sentences, list) else 0
            report.n_sentences += n_sent
            missing = [f for f in ("ref_id", "ann_id", "image_id") if not is_int(ref.get(f))]
            if missing or not isinstance(sentences, list):
                what = f"integer {', '.join(missing)}" if missing else "a 'sentences' list"
                bad(MALFORMED_REF, f"{where}: needs {what}", n_sent)
                continue
            ann_id, image_id = int(ref["ann_id"]), int(ref["image_id"])
            ann = self.annotations.get(ann_id)
            if ann is None:
                bad(MISSING_ANNOTATION, f"{where}: annotation {ann_id} is not in {self.layout.instances_file}", n_sent)
                continue
            if int(ann["image_id"]) != image_id:
                bad(
                    MALFORMED_REF,
                    f"{where}: annotation {ann_id} belongs to image {ann['image_id']}, "
                    f"not to the ref's image {image_id}",
                    n_sent,
                )
                continue
            if image_id not in self.images:
                bad(
                    IMAGE_NOT_IN_INSTANCES,
                    f"{where}: image {image_id} is not in 'images' of {self.layout.instances_file}",
                    n_sent,
                )
                continue
            if ann_id not in seg_ok:
                try:
                    check_segmentation(ann.get("segmentation"), self.images[image_id])
                    seg_ok[ann_id] = None
                except InvalidRLE as err:
                    seg_ok[ann_id] = str(err)
            if seg_ok[ann_id] is not None:
                bad(
                    BAD_SEGMENTATION,
                    f"{where}: annotation {ann_id} of {self.layout.instances_file} has a bad "
                    f"segmentation ({seg_ok[ann_id]})",
                    n_sent,
                )
                continue
            if check_files:
                if image_id not in file_ok:
                    file_ok[image_id] = self.image_file(image_id).is_file()
                if not file_ok[image_id]:
                    bad(MISSING_IMAGE, f"{self.image_file(image_id)}: image file not found {where}", n_sent)
                    continue
            category = ref.get("category_id", ann.get("category_id"))
            for j, sentence in enumerate(sentences):
                text = _sentence_text(sentence)
                if text is None or not text.strip():
                    bad(EMPTY_EXPRESSION, f"{where}: sentence {j} has no text", 1)
                    continue
                sent_id = sentence.get("sent_id") if isinstance(sentence, dict) else None
                out.append(
                    Expression(
                        index=len(out),
                        ref_id=int(ref["ref_id"]),
                        ann_id=ann_id,
                        image_id=image_id,
                        sent_id=int(sent_id) if is_int(sent_id) else -1,
                        text=text.strip(),
                        category_id=int(category) if is_int(category) else None,
                    )
                )
            if not sentences:
                bad(NO_SENTENCE, f"{where}: no sentences", 0)
        report.n_expressions = len(out)
        if not out:
            found = ", ".join(f"{s}: {n}" for s, n in sorted(self.split_counts().items(), key=str)) or "none"
            raise DataError(
                f"{self.layout.refs_file}: no usable expression in split {split!r} "
                f"(refs per split: {found})" + (f"\n{report.summary()}" if report.skipped else "")
            )
        return out, report

"""Reader of the "refer" distribution of RefCOCO, RefCOCO+ and RefCOCOg (spec EPNG_MODEL.md section 4).

Layout (``root`` is the folder that holds one sub-folder per dataset)::

    <root>/<dataset>/refs(<split_by>).p     pickle (protocol 2, written by Python 2) of refs
    <root>/<dataset>/instances.json         COCO instances (images, annotations, categories)
    <image_dir>/COCO_train2014_<image_id:012d>.jpg   default image_dir: <root>/images/train2014

A ref is a dict ``{ref_id, ann_id, image_id, split, category_id, sentences: [{sent, raw,
tokens, sent_id}], ...}``; every sentence of a ref is one :class:`Expression`, grounded to
the mask of annotation ``ann_id`` (polygons, or an RLE with compressed or uncompressed
counts, decoded at the image's original resolution given by ``instances.json``).

The refs pickle is read by :class:`RestrictedUnpickler`, which builds only plain
containers, strings, numbers, booleans and ``None``: any reference to a global (a class
or function, the way a pickle runs code) is refused and reported as a :class:`DataError`
naming the file, before anything is called. Python 2 ``str`` objects arrive as ``bytes``
(``encoding="bytes"``) and are decoded as UTF-8, falling back to Latin-1, so text that
Python 2 stored as UTF-8 bytes is not garbled (which ``encoding="latin1"`` would do).

Bad input: a missing or unreadable refs/instances file is always a :class:`DataError`;
unknown dataset / split_by / split names are a :class:`ConfigError`. A bad ref (missing
fields, an annotation or image that ``instances.json`` lacks, a malformed segmentation, a
missing image file, no usable sentence) raises a :class:`DataError` naming the file and
the ref in ``mode="strict"``, and is left out and counted by reason in ``mode="skip"``.
"""

from __future__ import annotations

import io
import math
import pickle
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from epng.data.panoptic import load_json
from epng.data.png_format import ErrorMode
from epng.errors import ConfigError, DataError
from epng.metrics.rle import InvalidRLE, decode_rle, normalize_rle

#: dataset -> split_by -> splits found in its refs file
REFER_DATASETS: dict[str, dict[str, tuple[str, ...]]] = {
    "refcoco": {"unc": ("train", "val", "testA", "testB")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
}
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
#: the (dataset, split) pairs of the paper's zero-shot table
STANDARD_PAIRS: tuple[tuple[str, str], ...] = (
    ("refcoco", "testA"),
    ("refcoco", "testB"),
    ("refcoco+", "testA"),
    ("refcoco+", "testB"),
    ("refcocog", "test"),
)
IMAGE_SUBDIR = ("images", "train2014")
MASK_CACHE = 64  # decoded masks kept per ReferData

# skip reasons
MALFORMED_REF = "malformed ref"
MISSING_ANNOTATION = "missing annotation"
IMAGE_NOT_IN_INSTANCES = "image not in instances.json"
BAD_SEGMENTATION = "bad segmentation"
MISSING_IMAGE = "missing image"
NO_SENTENCE = "no usable sentence"
EMPTY_EXPRESSION = "empty expression"
CORRUPT_IMAGE = "corrupt image"
SIZE_MISMATCH = "size mismatch"
EMPTY_MASK = "empty mask"


# --------------------------------------------------------------------------- names and paths


def resolve_names(dataset: str, split_by: str | None = None, split: str | None = None) -> str:
    """Check ``dataset`` / ``split_by`` / ``split`` against :data:`REFER_DATASETS`; return the split_by."""
    if dataset not in REFER_DATASETS:
        raise ConfigError(f"unknown refer dataset {dataset!r}; expected one of {', '.join(REFER_DATASETS)}")
    split_bys = REFER_DATASETS[dataset]
    split_by = split_by or DEFAULT_SPLIT_BY[dataset]
    if split_by not in split_bys:
        raise ConfigError(f"unknown split_by {split_by!r} for {dataset}; expected one of {', '.join(split_bys)}")
    if split is not None and split not in split_bys[split_by]:
        raise ConfigError(
            f"unknown split {split!r} for {dataset} ({split_by}); expected one of {', '.join(split_bys[split_by])}"
        )
    return split_by


@dataclass(frozen=True)
class ReferLayout:
    """Paths of one refer dataset under ``root``."""

    root: Path
    dataset: str
    split_by: str
    image_dir: Path

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.dataset

    @property
    def refs_file(self) -> Path:
        return self.dataset_dir / f"refs({self.split_by}).p"

    @property
    def instances_file(self) -> Path:
        return self.dataset_dir / "instances.json"

    def image_file(self, image_id: int) -> Path:
        return self.image_dir / image_file_name(image_id)

    def missing(self) -> list[Path]:
        """The required files that do not exist (empty when the dataset is there)."""
        return [p for p in (self.refs_file, self.instances_file) if not p.is_file()]


def image_file_name(image_id: int) -> str:
    return f"COCO_train2014_{int(image_id):012d}.jpg"


def refer_layout(
    root: str | Path, dataset: str, split_by: str | None = None, image_dir: str | Path | None = None
) -> ReferLayout:
    """The layout of ``dataset`` under ``root``; images default to ``<root>/images/train2014``."""
    root = Path(root)
    split_by = resolve_names(dataset, split_by)
    images = Path(image_dir) if image_dir is not None else root.joinpath(*IMAGE_SUBDIR)
    return ReferLayout(root, dataset, split_by, images)


# --------------------------------------------------------------------------- the restricted unpickler


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle references a global (class or function); nothing was called."""

    def __init__(self, module: str, name: str):
        super().__init__(f"the pickle references {module}.{name}")
        self.module, self.name = module, name


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only lists, tuples, dicts, sets, strings, bytes, numbers, booleans and None.

    Those are made by opcodes that never call :meth:`find_class`; everything that needs a
    global (``GLOBAL``, ``STACK_GLOBAL``, ``EXT*`` opcodes, and hence every ``REDUCE`` /
    ``NEWOBJ`` / ``INST`` / ``OBJ``, which call what a global gave them) is refused here,
    and so are persistent ids. The refs files of the refer distribution need nothing else.
    """

    def find_class(self, module: str, name: str):  # noqa: D102 - documented above
        raise ForbiddenGlobal(module, name)

    def persistent_load(self, pid):  # noqa: D102
        raise pickle.UnpicklingError(f"the pickle uses a persistent id ({pid!r})")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; Python 2 ``str`` objects come back as bytes."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _text(value: Any) -> Any:
    """Python 2 byte strings -> str (UTF-8, else Latin-1), through lists, tuples and dicts (keys too)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_text(v) for v in value)
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    return value


def load_refs_pickle(path: str | Path) -> list:
    """The refs of a ``refs(<split_by>).p`` file, read with :class:`RestrictedUnpickler`.

    Raises :class:`DataError` naming the file when it is missing, not a pickle, truncated,
    references any global (it could run code: refused before anything is called), or is
    not a list of dicts.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: refs file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the refs file ({err})") from None
    try:
        refs = _text(restricted_loads(data))
    except ForbiddenGlobal as err:
        raise DataError(
            f"{path}: refused to load: the pickle references {err.module}.{err.name}, which could run code; "
            "a refs file may only hold plain lists, dicts, strings and numbers"
        ) from None
    except RecursionError:
        raise DataError(f"{path}: the pickle is nested too deeply") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, UnicodeError) as err:
        raise DataError(f"{path}: not a readable refs pickle ({type(err).__name__}: {err})") from None
    if not isinstance(refs, list):
        raise DataError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    return refs


# --------------------------------------------------------------------------- records


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
class ReferReport:
    """Counts of one split: refs, expressions kept, skips by reason (one example message each)."""

    dataset: str = ""
    split_by: str = ""
    split: str = ""
    n_refs: int = 0
    n_sentences: int = 0
    n_expressions: int = 0
    skipped: Counter = field(default_factory=Counter)  # sentences left out, by reason
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, message: str, n: int = 1) -> None:
        self.skipped[reason] += n
        self.examples.setdefault(reason, message)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {"n_refs": self.n_refs, "n_sentences": self.n_sentences, "n_expressions": self.n_expressions,
                "n_skipped": self.n_skipped, "skipped": dict(self.skipped), "examples": dict(self.examples)}

    def summary(self) -> str:
        lines = [f"{self.dataset} ({self.split_by}) {self.split}: {self.n_refs} refs, {self.n_sentences} sentences, "
                 f"{self.n_expressions} expressions used"]
        for reason, n in self.skipped.most_common():
            lines.append(f"  skipped {n} ({reason}), e.g. {self.examples.get(reason, '')}")
        return "\n".join(lines)


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


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


# --------------------------------------------------------------------------- segmentations


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
    polygons = _check_polygons(segmentation)
    import pycocotools.mask as mask_utils

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rles = mask_utils.frPyObjects(polygons, h, w)
        mask = mask_utils.decode(mask_utils.merge(rles))
    return mask.astype(bool, copy=False)


# --------------------------------------------------------------------------- the dataset files


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
            ok = isinstance(im, dict) and all(_is_int(im.get(k)) for k in ("id", "height", "width"))
            if not (ok and im["height"] > 0 and im["width"] > 0):
                raise DataError(f"{where}: images[{k}] needs integer 'id', 'height' > 0 and 'width' > 0")
            self.images[int(im["id"])] = (int(im["height"]), int(im["width"]))
        self.annotations: dict[int, dict] = {}
        for k, ann in enumerate(instances["annotations"]):
            if not (isinstance(ann, dict) and _is_int(ann.get("id")) and _is_int(ann.get("image_id"))):
                raise DataError(f"{where}: annotations[{k}] needs integer 'id' and 'image_id'")
            self.annotations[int(ann["id"])] = ann
        self.categories = {int(c["id"]): c.get("name", "") for c in instances.get("categories", [])
                           if isinstance(c, dict) and _is_int(c.get("id"))}
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()  # small LRU: refs have several sentences

    @classmethod
    def load(cls, root: str | Path, dataset: str, split_by: str | None = None,
             image_dir: str | Path | None = None) -> ReferData:
        layout = refer_layout(root, dataset, split_by, image_dir)
        if not layout.dataset_dir.is_dir():
            raise DataError(f"{layout.dataset_dir}: refer dataset folder not found "
                            f"(expected {layout.refs_file.name} and instances.json in it)")
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
            raise DataError(f"{self.layout.instances_file}: annotation {ann_id} is of image {ann['image_id']}, "
                            "which is not in 'images'")
        try:
            mask = decode_segmentation(ann.get("segmentation"), size)
        except InvalidRLE as err:
            raise DataError(f"{self.layout.instances_file}: annotation {ann_id}: bad segmentation ({err})") from None
        mask.setflags(write=False)
        return mask

    def _where(self, k: int, ref: Any) -> str:
        rid = ref.get("ref_id") if isinstance(ref, dict) else None
        return f"[ref {rid if rid is not None else '?'} (entry {k}) of {self.layout.refs_file}]"

    def expressions(self, split: str, mode: ErrorMode = "strict", check_files: bool = True
                    ) -> tuple[list[Expression], ReferReport]:
        """Every sentence of every ref of ``split`` as an :class:`Expression`, and the counts.

        ``mode="strict"`` raises :class:`DataError` at the first bad ref; ``"skip"`` leaves
        it out and counts it. With ``check_files`` every referenced image file must exist.
        Raises :class:`DataError` when the split ends up without any expression.
        """
        if mode not in ("strict", "skip"):
            raise ConfigError(f"mode must be 'strict' or 'skip', got {mode!r}")
        resolve_names(self.dataset, self.split_by, split)
        report = ReferReport(self.dataset, self.split_by, split)
        out: list[Expression] = []
        file_ok: dict[int, bool] = {}
        seg_ok: dict[int, str | None] = {}

        def bad(reason: str, message: str, n: int) -> None:
            if mode == "strict":
                raise DataError(message)
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
            missing = [f for f in ("ref_id", "ann_id", "image_id") if not _is_int(ref.get(f))]
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
                bad(MALFORMED_REF, f"{where}: annotation {ann_id} belongs to image {ann['image_id']}, "
                                   f"not to the ref's image {image_id}", n_sent)
                continue
            if image_id not in self.images:
                bad(IMAGE_NOT_IN_INSTANCES, f"{where}: image {image_id} is not in 'images' of "
                                            f"{self.layout.instances_file}", n_sent)
                continue
            if ann_id not in seg_ok:
                try:
                    check_segmentation(ann.get("segmentation"), self.images[image_id])
                    seg_ok[ann_id] = None
                except InvalidRLE as err:
                    seg_ok[ann_id] = str(err)
            if seg_ok[ann_id] is not None:
                bad(BAD_SEGMENTATION, f"{where}: annotation {ann_id} of {self.layout.instances_file} has a bad "
                                      f"segmentation ({seg_ok[ann_id]})", n_sent)
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
                out.append(Expression(
                    index=len(out), ref_id=int(ref["ref_id"]), ann_id=ann_id, image_id=image_id,
                    sent_id=int(sent_id) if _is_int(sent_id) else -1, text=text.strip(),
                    category_id=int(category) if _is_int(category) else None,
                ))
            if not sentences:
                bad(NO_SENTENCE, f"{where}: no sentences", 0)
        report.n_expressions = len(out)
        if not out:
            found = ", ".join(f"{s}: {n}" for s, n in sorted(self.split_counts().items(), key=str)) or "none"
            raise DataError(f"{self.layout.refs_file}: no usable expression in split {split!r} "
                            f"(refs per split: {found})" + (f"\n{report.summary()}" if report.skipped else ""))
        return out, report


def available_pairs(root: str | Path, pairs: Iterable[tuple[str, str]] = STANDARD_PAIRS
                    ) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Split ``pairs`` into those whose dataset files exist under ``root`` and the missing ones
    (``(dataset, split, reason)``)."""
    found, missing = [], []
    for dataset, split in pairs:
        layout = refer_layout(root, dataset)
        absent = layout.missing()
        if absent:
            missing.append((dataset, split, f"{absent[0]} not found"))
        else:
            found.append((dataset, split))
    return found, missing

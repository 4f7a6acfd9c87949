"""The PNG narratives format (``png_coco_<split>.json``) and grounded noun phrases.

The file is a JSON list of records ``{image_id, caption, segments: [{utterance,
segment_ids, noun, plural}, ...]}``; the utterances ("chunks") cover the caption in
order. Every chunk is located in the caption by its character span, and every chunk
with ``noun == true`` and a non-empty ``segment_ids`` becomes a :class:`GroundedPhrase`,
whose ground truth is the union of its segments. A record without a grounded phrase has
nothing to evaluate and is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from epng.data.options import ErrorMode
from epng.data.panoptic import PanopticIndex
from epng.data.skips import (
    EMPTY_CAPTION,
    MALFORMED_RECORD,
    MISSING_FIELD,
    NO_GROUNDED_PHRASE,
    NO_PANOPTIC_ANNOTATION,
    NOT_IN_CAPTION,
    OVER_LIMIT,
    UNKNOWN_SEGMENT_IDS,
    SkipReport,
)
from epng.errors import BadItemError, DataError, InputLimitError
from epng.io.json_file import load_json
from epng.io.limits import check_caption_chars


@dataclass(frozen=True)
class GroundedPhrase:
    """A noun phrase with ground truth. ``span`` is a [start, end) character range of the caption."""

    phrase_index: int
    chunk_index: int
    text: str
    span: tuple[int, int]
    segment_ids: tuple[int, ...]
    is_plural: bool  # two or more segments (the file's `plural` flag is not used)
    is_thing: bool  # isthing of the category of the last listed segment


@dataclass(frozen=True)
class Narrative:
    """One record of ``png_coco_<split>.json`` with its grounded phrases."""

    index: int  # position of the record in the json list
    image_id: int
    caption: str
    phrases: tuple[GroundedPhrase, ...]


@dataclass
class LoadReport(SkipReport):
    """The records of a narratives file, and those left out (by reason, records without a
    grounded phrase included)."""

    n_records: int = 0
    first_bad: tuple[str, str] | None = None  # (message, reason) of the first bad record, in skip mode

    def strict_error(self) -> BadItemError | None:
        """The error strict mode raises for these records (the first bad one), or None."""
        return None if self.first_bad is None else BadItemError(*self.first_bad)


_ASCII_SPACE = np.array([chr(c).isspace() for c in range(128)])


def _normalized(text: str) -> tuple[str, list[int]]:
    """``text`` without whitespace, each character lower-cased on its own, and the index in
    ``text`` of every character of the result."""
    if text.isascii():  # one character in, one out: the same result, without a loop in Python
        kept = np.flatnonzero(~_ASCII_SPACE[np.frombuffer(text.encode("ascii"), dtype=np.uint8)])
        return "".join(text.split()).lower(), kept.tolist()
    chars: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        if ch.isspace():
            continue
        for lc in ch.lower():
            chars.append(lc)
            index.append(i)
    return "".join(chars), index


def locate_utterances(caption: str, utterances: list[str]) -> list[tuple[int, int]]:
    """Character span of each utterance in ``caption``, found in order.

    Matching ignores case and all whitespace, so "cloudy ." matches "cloudy." and
    "do n't" matches "don't". An utterance that is empty after removing whitespace
    gets an empty span at the current position. Raises ``ValueError`` naming the
    first utterance that cannot be found after the previous one.
    """
    norm, norm_to_orig = _normalized(caption)

    spans: list[tuple[int, int]] = []
    cursor = 0  # position in `norm`
    for k, utterance in enumerate(utterances):
        needle = "".join(utterance.split()).lower()
        if not needle:
            start = norm_to_orig[cursor] if cursor < len(norm_to_orig) else len(caption)
            spans.append((start, start))
            continue
        found = norm.find(needle, cursor)
        if found < 0:
            raise ValueError(f"utterance {k} {utterance!r} not found in the caption after character {cursor}")
        end = found + len(needle)
        spans.append((norm_to_orig[found], norm_to_orig[end - 1] + 1))
        cursor = end
    return spans


def parse_record(index: int, record: object, panoptic: PanopticIndex, source: Path) -> Narrative:
    """Validate one json record and build its grounded phrases.

    Raises :class:`BadItemError` naming the file and the record, with the skip reason.
    """
    where = f"{source}: record {index}"
    if not isinstance(record, dict):
        raise BadItemError(f"{where}: expected an object, got {type(record).__name__}", MALFORMED_RECORD)
    try:
        image_id = int(record["image_id"])
        caption = record["caption"]
        chunks = record["segments"]
    except KeyError as err:
        raise BadItemError(f"{where}: missing field {err}", MISSING_FIELD) from None
    except (TypeError, ValueError, OverflowError):
        message = f"{where}: image_id {record.get('image_id')!r} is not an integer"
        raise BadItemError(message, MALFORMED_RECORD) from None
    where = f"{where} (image {image_id})"
    if not isinstance(caption, str) or not caption.strip():
        raise BadItemError(f"{where}: empty caption", EMPTY_CAPTION)
    try:
        check_caption_chars(caption, where)
    except InputLimitError as err:
        raise BadItemError(str(err), OVER_LIMIT) from None
    if not isinstance(chunks, list):
        raise BadItemError(f"{where}: 'segments' must be a list", MALFORMED_RECORD)
    for k, chunk in enumerate(chunks):
        if not isinstance(chunk, dict) or not isinstance(chunk.get("utterance"), str):
            raise BadItemError(f"{where}: segments[{k}] has no string 'utterance'", MALFORMED_RECORD)
        if not isinstance(chunk.get("segment_ids", []), list):
            raise BadItemError(f"{where}: segments[{k}].segment_ids must be a list", MALFORMED_RECORD)
    try:
        spans = locate_utterances(caption, [c["utterance"] for c in chunks])
    except ValueError as err:
        raise BadItemError(f"{where}: {err}", NOT_IN_CAPTION) from None

    segments = panoptic.segments(image_id)
    if segments is None:
        message = f"{where}: image {image_id} has no panoptic annotation in {panoptic.path}"
        raise BadItemError(message, NO_PANOPTIC_ANNOTATION)
    phrases: list[GroundedPhrase] = []
    for k, (chunk, span) in enumerate(zip(chunks, spans)):
        if not chunk.get("noun") or not chunk.get("segment_ids"):
            continue
        try:
            segment_ids = tuple(int(s) for s in chunk["segment_ids"])
        except (TypeError, ValueError, OverflowError):
            message = f"{where}: segments[{k}] has a non-integer segment id {chunk['segment_ids']!r}"
            raise BadItemError(message, MALFORMED_RECORD) from None
        missing = [s for s in segment_ids if s not in segments]
        if missing:
            message = (
                f"{where}: segments[{k}] {chunk['utterance']!r} uses segment ids {missing} "
                f"that are not in {panoptic.path}"
            )
            raise BadItemError(message, UNKNOWN_SEGMENT_IDS)
        phrases.append(
            GroundedPhrase(
                phrase_index=len(phrases),
                chunk_index=k,
                text=caption[span[0] : span[1]],
                span=span,
                segment_ids=segment_ids,
                is_plural=len(segment_ids) >= 2,
                is_thing=panoptic.category_is_thing(segments[segment_ids[-1]]),
            )
        )
    return Narrative(index=index, image_id=image_id, caption=caption, phrases=tuple(phrases))


def read_records(json_path: str | Path) -> list:
    """The records of ``png_coco_<split>.json``; :class:`DataError` unless the file holds a JSON list."""
    data = load_json(json_path)
    if not isinstance(data, list):
        raise DataError(f"{json_path}: expected a JSON list of narratives, got {type(data).__name__}")
    return data


def parse_records(
    records: list, panoptic: PanopticIndex, source: Path, report: LoadReport, mode: ErrorMode = "strict"
) -> Iterator[Narrative]:
    """The narratives with a grounded phrase among ``records``, in order (records without one are counted).

    ``mode="strict"`` raises the first bad record's :class:`BadItemError`; ``"skip"`` leaves
    it out and counts it in ``report`` (whose ``first_bad`` keeps the first one).
    """
    for index, record in enumerate(records):
        try:
            narrative = parse_record(index, record, panoptic, source)
        except BadItemError as err:
            if mode == "strict":
                raise
            report.add(err.reason, str(err))
            report.first_bad = report.first_bad or (str(err), err.reason)
            continue
        if narrative.phrases:
            yield narrative
        else:
            report.add(NO_GROUNDED_PHRASE, f"{source}: record {index} has no grounded noun phrase")


def load_narratives(
    json_path: str | Path, panoptic: PanopticIndex, mode: ErrorMode = "strict"
) -> tuple[list[Narrative], LoadReport]:
    """Parse ``png_coco_<split>.json``. Narratives without a grounded phrase are left out (and counted).

    ``mode="strict"`` raises :class:`DataError` on the first bad record; ``"skip"``
    leaves it out and counts it in the returned :class:`LoadReport`.
    """
    path = Path(json_path)
    records = read_records(path)
    report = LoadReport(n_records=len(records))
    return list(parse_records(records, panoptic, path, report, mode)), report

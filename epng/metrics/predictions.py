"""Reading a predictions file: JSON Lines, one object per grounded phrase, validated line by line.

::

    {"narrative": 12, "image_id": 139, "phrase_index": 0,
     "segmentation": {"size": [h, w], "counts": "..."}}

* ``narrative``: the record's index in ``png_coco_<split>.json`` (a JSON integer);
* ``image_id``: the narrative's COCO image id (an integer, or a string of digits as
  in the narratives file);
* ``phrase_index``: 0-based index among the narrative's grounded noun phrases;
* ``segmentation``: COCO RLE of the binary mask at the image's original (h, w);
  ``counts`` compressed (string) or uncompressed (list of run lengths).

Other keys (e.g. a score) are ignored; blank lines are skipped. Any bad line raises
:class:`PredictionError` naming the line (1-based), a line longer than the input limit
``max_prediction_line_chars`` (:mod:`epng.io.limits`) included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from epng.data.png_format import GroundedPhrase
from epng.errors import PredictionError
from epng.io.json_file import is_int
from epng.io.limits import InputLimits, current_limits, limit_hint
from epng.io.rle import InvalidRLE, normalize_rle

PREDICTION_KEYS = ("narrative", "image_id", "phrase_index", "segmentation")


class PhraseLookup(Protocol):
    """What validating a prediction needs from the benchmark (``PNGEvaluator`` provides it)."""

    def phrase(self, narrative: int, phrase_index: int, image_id: int | None = None) -> GroundedPhrase:
        """The phrase; raises :class:`PredictionError` when the benchmark has no such phrase."""
        ...

    def image_size(self, image_id: int) -> tuple[int, int]:
        """Original (height, width) of an image."""
        ...


def _image_id(value: Any) -> int:
    if is_int(value):
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise PredictionError(f"'image_id' must be an integer, got {value!r}")


def iter_prediction_lines(path: str | Path, limits: InputLimits | None = None) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed JSON value) of every non-blank line of a JSON Lines file;
    a line longer than ``max_prediction_line_chars`` is refused before it is parsed."""
    path = Path(path)
    max_chars = (limits or current_limits()).max_prediction_line_chars
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise PredictionError(f"{path}: predictions file not found") from None
    except OSError as err:
        raise PredictionError(f"{path}: cannot read the predictions file ({err})") from None
    with f:
        line_no = 0
        while True:
            try:
                line = f.readline(max_chars + 1)
            except UnicodeDecodeError:
                raise PredictionError(f"{path}: line {line_no + 1}: not valid UTF-8 text") from None
            if not line:
                return
            line_no += 1
            if len(line.rstrip("\r\n")) > max_chars:
                raise PredictionError(
                    f"{path}: line {line_no}: longer than {max_chars:,} characters, the limit "
                    f"{limit_hint('max_prediction_line_chars')}"
                )
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                raise PredictionError(
                    f"{path}: line {line_no}: invalid JSON ({err.msg} at column {err.colno})"
                ) from None
            except (ValueError, RecursionError) as err:  # a huge integer literal, a deeply nested value
                raise PredictionError(f"{path}: line {line_no}: invalid JSON ({type(err).__name__}: {err})") from None


def read_predictions(
    evaluator: PhraseLookup, predictions: str | Path | Iterable[dict]
) -> dict[tuple[int, int], tuple[int, dict]]:
    """Validate every prediction against the evaluator's benchmark without decoding masks.

    Returns ``{(narrative, phrase_index): (line number, normalized RLE)}``. Raises
    :class:`PredictionError` "<source>: line N: <problem>" on the first bad entry
    (for an iterable of dicts, N is the 1-based position and the source is
    "predictions").
    """
    if isinstance(predictions, (str, Path)):
        source = str(predictions)
        entries: Iterable[tuple[int, Any]] = iter_prediction_lines(predictions)
    else:
        source = "predictions"
        entries = enumerate(predictions, start=1)
    seen: dict[tuple[int, int], tuple[int, dict]] = {}
    for line_no, entry in entries:
        try:
            key, rle = _check_entry(evaluator, entry)
            if key in seen:
                raise PredictionError(
                    f"duplicate prediction for narrative {key[0]}, phrase_index {key[1]} "
                    f"(first given on line {seen[key][0]})"
                )
        except PredictionError as err:
            raise PredictionError(f"{source}: line {line_no}: {err}") from None
        seen[key] = (line_no, rle)
    return seen


def _check_entry(evaluator: PhraseLookup, entry: Any) -> tuple[tuple[int, int], dict]:
    if not isinstance(entry, dict):
        raise PredictionError(f"expected a JSON object, got {type(entry).__name__}")
    missing = [k for k in PREDICTION_KEYS if k not in entry]
    if missing:
        raise PredictionError(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)}")
    image_id = _image_id(entry["image_id"])
    narrative, phrase_index = entry["narrative"], entry["phrase_index"]
    evaluator.phrase(narrative, phrase_index, image_id)
    size = evaluator.image_size(image_id)
    try:
        rle = normalize_rle(entry["segmentation"], size)
    except InvalidRLE as err:
        raise PredictionError(f"bad segmentation: {err}") from None
    return (int(narrative), int(phrase_index)), rle

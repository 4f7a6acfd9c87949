"""Why a data item was left out (the skip reasons) and the counts that skip mode keeps.

Every reader of the data layer has two modes (:data:`epng.data.options.ErrorMode`):
``"strict"`` raises at the first bad item, ``"skip"`` leaves it out and counts it under
one of the reasons below, keeping one example message per reason.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

# a record of a PNG narratives file
MISSING_FIELD = "missing field"
EMPTY_CAPTION = "empty caption"
NOT_IN_CAPTION = "not found in the caption"
UNKNOWN_SEGMENT_IDS = "segment ids"
NO_PANOPTIC_ANNOTATION = "no panoptic annotation"
MALFORMED_RECORD = "malformed record"
NO_GROUNDED_PHRASE = "no grounded phrase"  # counted, but not a skip: there is nothing to evaluate
# the files of an item
MISSING_IMAGE = "missing image"
MISSING_PNG = "missing panoptic PNG"
CORRUPT_IMAGE = "corrupt image"
CORRUPT_PNG = "corrupt panoptic PNG"
SIZE_MISMATCH = "size mismatch"
SEGMENT_WITHOUT_PIXELS = "segment id not in the PNG"
BAD_ITEM = "bad item"  # a DataError without a reason of its own
OVER_LIMIT = "over an input limit"  # an image or caption over a bound of epng.io.limits
# a ref of a refer dataset
MALFORMED_REF = "malformed ref"
MISSING_ANNOTATION = "missing annotation"
IMAGE_NOT_IN_INSTANCES = "image not in instances.json"
BAD_SEGMENTATION = "bad segmentation"
NO_SENTENCE = "no usable sentence"
EMPTY_EXPRESSION = "empty expression"
EMPTY_MASK = "empty mask"

Report = TypeVar("Report", bound="SkipReport")


@dataclass
class SkipReport:
    """Items left out, counted by reason, with the first message of each reason as its example.

    Readers subclass it with their own counts; the two fields here are keyword-only, so
    a subclass's fields keep their positions in its constructor.
    """

    skipped: Counter = field(default_factory=Counter, kw_only=True)
    examples: dict[str, str] = field(default_factory=dict, kw_only=True)
    #: reasons that are counted in ``skipped`` but are not skips (left out of ``n_skipped``)
    not_skips: ClassVar[frozenset[str]] = frozenset()

    def add(self, reason: str, message: str, n: int = 1) -> None:
        self.skipped[reason] += n
        self.examples.setdefault(reason, message)

    def merge(self, other: SkipReport) -> None:
        """Add the counts (and the examples this report lacks) of ``other``."""
        for reason, n in other.skipped.items():
            self.add(reason, other.examples.get(reason, ""), n)

    @property
    def n_skipped(self) -> int:
        return sum(n for reason, n in self.skipped.items() if reason not in self.not_skips)

    def skip_lines(self) -> list[str]:
        """One indented line per skip reason, most frequent first: ``skipped N (reason), e.g. ...``."""
        return [
            f"  skipped {n} ({reason}), e.g. {self.examples.get(reason, '')}"
            for reason, n in self.skipped.most_common()
            if reason not in self.not_skips
        ]

    def copy(self: Report) -> Report:
        """An independent copy (the counters are copied too)."""
        return dataclasses.replace(self, skipped=Counter(self.skipped), examples=dict(self.examples))

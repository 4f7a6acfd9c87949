"""Which phrases of a caption to ground: marked with square brackets, or named in a list."""

from __future__ import annotations

import re
from collections.abc import Sequence

from epng.errors import ConfigError

_BRACKETED = re.compile(r"\[([^\[\]]*)\]")


def parse_bracketed(caption: str) -> tuple[str, list[tuple[int, int]]]:
    """``"a [red ball] on the [grass]"`` -> (``"a red ball on the grass"``, spans of the marked phrases)."""
    if caption.count("[") != caption.count("]"):
        raise ConfigError(f"unbalanced square brackets in the caption {caption!r}")
    clean, spans, last, length = [], [], 0, 0
    for match in _BRACKETED.finditer(caption):
        before = caption[last : match.start()]
        clean.append(before)
        length += len(before)
        phrase = match.group(1)
        if not phrase.strip():
            raise ConfigError(f"empty [] phrase in the caption {caption!r}")
        spans.append((length, length + len(phrase)))
        clean.append(phrase)
        length += len(phrase)
        last = match.end()
    clean.append(caption[last:])
    return "".join(clean), spans


def locate_phrases(caption: str, phrases: Sequence[str]) -> list[tuple[int, int]]:
    """Character span of the first case-insensitive occurrence of each phrase in ``caption``."""
    lowered = caption.lower()
    spans = []
    for phrase in phrases:
        if not phrase.strip():
            raise ConfigError("an empty --phrase was given")
        start = lowered.find(phrase.strip().lower())
        if start < 0:
            raise ConfigError(f"phrase {phrase!r} does not occur in the caption")
        spans.append((start, start + len(phrase.strip())))
    return spans

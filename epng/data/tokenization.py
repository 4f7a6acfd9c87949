"""Word-piece alignment of grounded phrases: each phrase gets exactly the word pieces of its own words.

Phrases are located in the caption by character span (``png_format.locate_utterances``);
here each span is mapped to the word pieces whose character offsets overlap it, using
the offsets that a *fast* tokenizer returns. Earlier public code indexed phrases by basic
(whitespace) tokens while the model read word pieces, so every phrase after a
multi-piece word was shifted; going through character offsets cannot shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from epng.errors import ConfigError

DEFAULT_MAX_LENGTH = 512


@dataclass(frozen=True)
class PhraseAlignment:
    """The encoder input of one caption and the word pieces of each phrase.

    ``phrase_tokens[k]`` lists (ascending) the positions in ``input_ids`` of the word
    pieces of phrase ``k``; it is empty for the phrases listed in ``truncated`` (all
    their pieces fell beyond ``max_length``) or in ``empty`` (the span is empty or holds
    nothing the tokenizer keeps). ``partial`` lists phrases that kept some but not all
    of their pieces.
    """

    input_ids: tuple[int, ...]
    attention_mask: tuple[int, ...]
    phrase_tokens: tuple[tuple[int, ...], ...]
    truncated: tuple[int, ...]
    empty: tuple[int, ...]
    partial: tuple[int, ...]

    @property
    def lost(self) -> tuple[int, ...]:
        """Phrases without any word piece (``truncated`` and ``empty``), ascending."""
        return tuple(sorted(self.truncated + self.empty))


def require_fast_tokenizer(tokenizer) -> None:
    """Raise :class:`ConfigError` unless ``tokenizer`` can return character offsets."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer; word-piece alignment "
            "needs return_offsets_mapping, load the tokenizer with use_fast=True"
        )


def _pieces_overlapping(offsets: Sequence[tuple[int, int]], special: Sequence[int], span: tuple[int, int]) -> list[int]:
    start, end = span
    if end <= start:
        return []
    return [t for t, ((s, e), sp) in enumerate(zip(offsets, special)) if not sp and e > s and s < end and e > start]


def align_phrases(
    tokenizer,
    caption: str,
    spans: Sequence[tuple[int, int]],
    max_length: int = DEFAULT_MAX_LENGTH,
) -> PhraseAlignment:
    """Tokenize ``caption`` (``[CLS] ... [SEP]``, truncated at ``max_length``) and map each
    character span ``[start, end)`` to the word pieces whose offset range overlaps it.

    Special tokens (offsets ``(0, 0)``) never belong to a phrase. A phrase whose pieces
    all fall beyond ``max_length`` is reported in ``truncated``.
    """
    require_fast_tokenizer(tokenizer)
    if max_length < 2:
        raise ConfigError(f"max_length must be at least 2, got {max_length}")
    kwargs = dict(
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_attention_mask=True,
        return_token_type_ids=False,
    )
    enc = tokenizer(caption, truncation=True, max_length=max_length, **kwargs)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    special = list(enc["special_tokens_mask"])

    full_offsets: list[tuple[int, int]] | None = None
    phrase_tokens: list[tuple[int, ...]] = []
    truncated: list[int] = []
    empty: list[int] = []
    partial: list[int] = []
    last_kept_end = max((e for (s, e), sp in zip(offsets, special) if not sp), default=0)
    for k, span in enumerate(spans):
        pieces = _pieces_overlapping(offsets, special, tuple(span))
        phrase_tokens.append(tuple(pieces))
        reaches_cut = span[1] > last_kept_end
        if not reaches_cut:
            if not pieces:
                empty.append(k)
            continue
        # The span reaches past the last kept piece: compare with the untruncated encoding.
        if full_offsets is None:
            full = tokenizer(caption, truncation=False, verbose=False, **kwargs)
            full_offsets = [tuple(o) for o in full["offset_mapping"]]
            full_special = list(full["special_tokens_mask"])
        n_full = len(_pieces_overlapping(full_offsets, full_special, tuple(span)))
        if n_full == 0:
            empty.append(k)
        elif not pieces:
            truncated.append(k)
        elif len(pieces) < n_full:
            partial.append(k)
    return PhraseAlignment(
        input_ids=tuple(int(i) for i in enc["input_ids"]),
        attention_mask=tuple(int(a) for a in enc["attention_mask"]),
        phrase_tokens=tuple(phrase_tokens),
        truncated=tuple(truncated),
        empty=tuple(empty),
        partial=tuple(partial),
    )

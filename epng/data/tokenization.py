"""Word-piece alignment of grounded phrases: each phrase gets exactly the word pieces of its own words.

Phrases are located in the caption by character span (``png_format.locate_utterances``);
here each span is mapped to the word pieces whose character offsets overlap it, using
the offsets that a *fast* tokenizer returns. Earlier public code indexed phrases by basic
(whitespace) tokens while the model read word pieces, so every phrase after a
multi-piece word was shifted; going through character offsets cannot shift.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import chain

import numpy as np

from epng.data.columns import concat_offsets, offsets_of
from epng.errors import ConfigError

DEFAULT_MAX_LENGTH = 512

#: the fate of a phrase's word pieces (:attr:`BatchAlignment.status`)
PHRASE_OK, PHRASE_TRUNCATED, PHRASE_EMPTY, PHRASE_PARTIAL = 0, 1, 2, 3


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


@dataclass(frozen=True)
class BatchAlignment:
    """The encoder inputs of N captions and the word pieces of their M phrases, as flat arrays.

    Caption ``i`` encodes to ``input_ids[token_offsets[i]:token_offsets[i + 1]]`` (no
    padding is stored, so its attention mask is all ones); phrase ``p`` has the word pieces
    at positions ``pieces[piece_offsets[p]:piece_offsets[p + 1]]`` of its caption's ids
    (ascending, none when it is lost) and ``status[p]`` is ``PHRASE_OK``,
    ``PHRASE_TRUNCATED`` (all pieces beyond ``max_length``), ``PHRASE_EMPTY`` (nothing
    the tokenizer keeps) or ``PHRASE_PARTIAL`` (some pieces beyond ``max_length``).
    """

    token_offsets: np.ndarray  # (N + 1,) int64
    input_ids: np.ndarray  # (T,) int32
    piece_offsets: np.ndarray  # (M + 1,) int64
    pieces: np.ndarray  # (K,) int32
    status: np.ndarray  # (M,) uint8

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def concat(cls, parts: Sequence[BatchAlignment]) -> BatchAlignment:
        """One alignment of the captions of ``parts``, in order."""
        if not parts:
            empty = np.zeros(1, dtype=np.int64)
            return cls(empty, np.zeros(0, np.int32), empty, np.zeros(0, np.int32), np.zeros(0, np.uint8))
        return cls(
            token_offsets=concat_offsets([p.token_offsets for p in parts]),
            input_ids=np.concatenate([p.input_ids for p in parts]),
            piece_offsets=concat_offsets([p.piece_offsets for p in parts]),
            pieces=np.concatenate([p.pieces for p in parts]),
            status=np.concatenate([p.status for p in parts]),
        )


def require_fast_tokenizer(tokenizer) -> None:
    """Raise :class:`ConfigError` unless ``tokenizer`` can return character offsets."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer; word-piece alignment "
            "needs return_offsets_mapping, load the tokenizer with use_fast=True"
        )


def tokenizer_fingerprint(tokenizer) -> str:
    """A hex digest of everything that decides how ``tokenizer`` encodes a caption: its class,
    its serialized Rust tokenizer (vocabulary, normalizer, pre-tokenizer, post-processor,
    added tokens) and its truncation side. Truncation and padding state left by earlier
    calls is not part of it."""
    require_fast_tokenizer(tokenizer)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    backend.pop("truncation", None)
    backend.pop("padding", None)
    described = {"class": type(tokenizer).__name__, "backend": backend, "side": tokenizer.truncation_side}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode("utf-8")).hexdigest()


def _encode(tokenizer, captions: Sequence[str], max_length: int | None) -> tuple[np.ndarray, ...]:
    """Token offsets ``(N + 1,)``, ids ``(T,)``, character offsets ``(T, 2)`` and special flags ``(T,)``
    of ``captions`` encoded as one batch (truncated at ``max_length`` unless it is None)."""
    kwargs = dict(
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    if max_length is None:
        enc = tokenizer(list(captions), truncation=False, verbose=False, **kwargs)
    else:
        enc = tokenizer(list(captions), truncation=True, max_length=max_length, **kwargs)
    offsets = offsets_of([len(ids) for ids in enc["input_ids"]])
    n = int(offsets[-1])
    ids = np.fromiter(chain.from_iterable(enc["input_ids"]), dtype=np.int64, count=n)
    chars = np.fromiter(chain.from_iterable(chain.from_iterable(enc["offset_mapping"])), dtype=np.int64, count=2 * n)
    special = np.fromiter(chain.from_iterable(enc["special_tokens_mask"]), dtype=bool, count=n)
    return offsets, ids, chars.reshape(n, 2), special


def _overlaps(
    offsets: np.ndarray, chars: np.ndarray, special: np.ndarray, spans: np.ndarray, owner: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per phrase (span ``spans[p]`` of caption ``owner[p]``): the number of its word pieces
    and, phrase after phrase, their positions in the caption's encoding (ascending).

    A piece belongs to a phrase when it is not special, not empty, and its character range
    overlaps the span; an empty span has no piece."""
    first = offsets[owner]
    n_tokens = offsets[owner + 1] - first
    pair_offsets = offsets_of(n_tokens)
    phrase = np.repeat(np.arange(len(owner), dtype=np.int64), n_tokens)  # one pair per (phrase, token)
    position = np.arange(pair_offsets[-1], dtype=np.int64) - pair_offsets[phrase]
    token = first[phrase] + position
    start, end = spans[phrase, 0], spans[phrase, 1]
    s, e = chars[token, 0], chars[token, 1]
    hit = ~special[token] & (e > s) & (s < end) & (e > start) & (end > start)
    return np.bincount(phrase[hit], minlength=len(owner)), position[hit]


def align_batch(
    tokenizer,
    captions: Sequence[str],
    spans: np.ndarray,
    phrase_offsets: np.ndarray,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> BatchAlignment:
    """:func:`align_phrases` for N captions at once, through the tokenizer's batch call.

    ``spans``: ``(M, 2)`` character spans of all phrases, caption after caption;
    ``phrase_offsets``: ``(N + 1,)``, the phrases of caption ``i`` being
    ``spans[phrase_offsets[i]:phrase_offsets[i + 1]]``.
    """
    require_fast_tokenizer(tokenizer)
    if max_length < 2:
        raise ConfigError(f"max_length must be at least 2, got {max_length}")
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    owner = np.repeat(np.arange(len(captions), dtype=np.int64), np.diff(phrase_offsets))
    offsets, ids, chars, special = _encode(tokenizer, captions, max_length)
    counts, pieces = _overlaps(offsets, chars, special, spans, owner)

    # A phrase whose span reaches past the end of the last kept piece, in a caption that may
    # have been cut (max_length pieces), is compared with the caption's untruncated encoding.
    ends = np.where(special, 0, chars[:, 1])
    last_end = np.zeros(len(captions), dtype=np.int64)
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    if len(nonempty):
        last_end[nonempty] = np.maximum.reduceat(ends, offsets[nonempty])
    status = np.where(counts == 0, PHRASE_EMPTY, PHRASE_OK).astype(np.uint8)
    cut = np.diff(offsets) >= max_length
    check = np.flatnonzero((spans[:, 1] > last_end[owner]) & cut[owner])
    if len(check):
        again, local_owner = np.unique(owner[check], return_inverse=True)
        full = _encode(tokenizer, [captions[i] for i in again], None)
        n_full, _ = _overlaps(full[0], full[2], full[3], spans[check], local_owner.reshape(-1))
        kept = counts[check]
        status[check] = np.select(
            [n_full == 0, kept == 0, kept < n_full], [PHRASE_EMPTY, PHRASE_TRUNCATED, PHRASE_PARTIAL], PHRASE_OK
        )
    return BatchAlignment(
        token_offsets=offsets,
        input_ids=ids.astype(np.int32),
        piece_offsets=offsets_of(counts),
        pieces=pieces.astype(np.int32),
        status=status,
    )


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
    batch = align_batch(tokenizer, [caption], np.asarray(spans).reshape(-1, 2), offsets_of([len(spans)]), max_length)
    ids = tuple(batch.input_ids.tolist())
    po = batch.piece_offsets
    status = batch.status.tolist()
    return PhraseAlignment(
        input_ids=ids,
        attention_mask=(1,) * len(ids),
        phrase_tokens=tuple(tuple(batch.pieces[po[k] : po[k + 1]].tolist()) for k in range(len(status))),
        truncated=tuple(k for k, s in enumerate(status) if s == PHRASE_TRUNCATED),
        empty=tuple(k for k, s in enumerate(status) if s == PHRASE_EMPTY),
        partial=tuple(k for k, s in enumerate(status) if s == PHRASE_PARTIAL),
    )

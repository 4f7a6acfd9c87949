"""`InputFormat`: how a model takes its input, shared by every dataset that feeds it.

A sample's image goes through the model's transform (input size, ``square`` or
``letterbox`` resize, the backbone's normalisation statistics) and its caption through the
model's fast tokenizer, cut at ``max_length`` word pieces (special tokens included).
``EPNG.input_format`` builds the format of a model; :class:`epng.data.dataset.PNGDataset`
and :class:`epng.data.refer_dataset.ReferDataset` take one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from epng.data.options import ResizeMode
from epng.data.tokenization import DEFAULT_MAX_LENGTH, require_fast_tokenizer
from epng.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ResizeNormalize
from epng.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True, eq=False)
class InputFormat:
    """``tokenizer``: a fast Hugging Face tokenizer (word-piece offsets are needed);
    ``image_size``: ``S`` or ``(H, W)``; ``resize``: ``"square"`` | ``"letterbox"``;
    ``mean``/``std``: RGB normalisation; ``max_length``: word pieces per caption, >= 2."""

    tokenizer: PreTrainedTokenizerBase
    image_size: int | Sequence[int] = 640
    resize: ResizeMode = "square"
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    max_length: int = DEFAULT_MAX_LENGTH

    def __post_init__(self) -> None:
        require_fast_tokenizer(self.tokenizer)
        if int(self.max_length) < 2:
            raise ConfigError(f"max_length must be >= 2 (the special tokens), got {self.max_length}")
        _ = self.transform  # size, resize mode and statistics are checked now, not at the first sample

    @cached_property
    def transform(self) -> ResizeNormalize:
        return ResizeNormalize(self.image_size, self.resize, self.mean, self.std)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

